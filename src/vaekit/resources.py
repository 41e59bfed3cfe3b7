"""Resource bounds checked before any work: the memory a model's parameters imply, against a budget.

One estimate serves every place that sizes a model from a few numbers: ``model.json`` (a 600-byte file can
describe terabytes of weights), the settings of ``vaekit train`` (``--hidden``, ``--latent``,
``--conv-channels``) and the networks built from them. The count is of the weight matrices and biases of
vaekit's networks (MLP, conv, the two-level networks) and of the components whose size is a setting (a
flow's MADE layers, the VampPrior's pseudo-inputs); it is exact for the MLP, a close lower bound otherwise,
so that nothing that fits is refused. Memory is 4 bytes per parameter (float32) to hold a model, and
4 x that to train it (weights, gradients, Adam's two moments).

The budget is ``min(8 GiB, half of physical memory)``, or ``$VAEKIT_MEMORY_BUDGET`` bytes when set.
Pure arithmetic: this module imports no torch.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

from vaekit.errors import ConfigError

#: Bytes per parameter to hold a model (float32) and to train it (weights, gradients, Adam's two moments).
BYTES_PER_PARAMETER = 4
TRAINING_COPIES = 4
#: The budget's ceiling, bytes.
MAX_BUDGET = 8 * 2**30
#: Error messages of files and settings are cut to this many characters (a YAML alias bomb is one line too).
MAX_MESSAGE = 300
#: The most importance samples K per example (a command's ``--k``, :func:`vaekit.evaluate`'s ``k``): past it an
#: evaluation never ends.
MAX_SAMPLES = 10_000_000
#: Where :func:`memory_budget` comes from, as the errors say it.
BUDGET_SOURCE = "min(8 GB, half the RAM), or $VAEKIT_MEMORY_BUDGET"


def short(text: Any, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, at most ``limit`` characters (a cut is marked with an ellipsis)."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def physical_memory() -> int | None:
    """Bytes of physical memory (``os.sysconf``), or None where it is not known."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def memory_budget() -> int:
    """Bytes a model may take: ``$VAEKIT_MEMORY_BUDGET`` if set, else min(8 GiB, half of physical memory)."""
    env = os.environ.get("VAEKIT_MEMORY_BUDGET", "").strip()
    if env:
        try:
            value = int(float(env))
            if value > 0:
                return value
        except (ValueError, OverflowError):
            pass
    phys = physical_memory()
    return MAX_BUDGET if phys is None else min(MAX_BUDGET, phys // 2)


def gib(n: float) -> str:
    """Bytes as a short human size."""
    for unit, scale in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def check_samples(k: Any, name: str = "k") -> int:
    """``k`` importance samples per example as an int from 1 to :data:`MAX_SAMPLES`; else a
    :class:`~vaekit.errors.ConfigError` naming ``name`` (the argument, or the flag, that gave it)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= int(k) <= MAX_SAMPLES:
        raise ConfigError(f"{name} must be a whole number of samples per example from 1 to {MAX_SAMPLES:,}, got "
                          f"{short(repr(k), 40)}")
    return int(k)


#: The largest random seed (a command's ``--seed``, the ``seed`` of :func:`vaekit.evaluate`): torch's and numpy's
#: generators take 32-bit seeds.
MAX_SEED = 2**32 - 1


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as an int from 0 to :data:`MAX_SEED` (what ``--seed`` takes); else a
    :class:`~vaekit.errors.ConfigError` naming ``name``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise ConfigError(f"{name} must be a whole number from 0 to {MAX_SEED:,}, got {short(repr(seed), 40)}")
    return int(seed)


def check_batch_size(batch_size: Any, name: str = "batch_size") -> int | None:
    """``batch_size`` as an int >= 1 (what ``--batch-size`` takes), or None (chosen for the memory budget); else a
    :class:`~vaekit.errors.ConfigError` naming ``name``."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or int(batch_size) < 1:
        raise ConfigError(f"{name} must be a whole number of examples >= 1 (or None: chosen for the memory budget), "
                          f"got {short(repr(batch_size), 40)}")
    return int(batch_size)


def check_count(value: Any, name: str, low: int, high: int | None = None, unit: str = "", note: str = "") -> int:
    """``value`` as an int from ``low`` to ``high`` (no upper bound for None); else a
    :class:`~vaekit.errors.ConfigError` naming ``name`` (``unit``: what is counted; ``note``: e.g. what 0 means)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low or \
            (high is not None and int(value) > high):
        span = f">= {low:,}" if high is None else f"from {low:,} to {high:,}"
        raise ConfigError(f"{name} must be a whole number{' of ' + unit if unit else ''} {span}"
                          f"{' (' + note + ')' if note else ''}, got {short(repr(value), 40)}")
    return int(value)


def check_memory(need: float, what: str, lower: str, *, budget: int | None = None, source: str = BUDGET_SOURCE) -> None:
    """Raise :class:`~vaekit.errors.ConfigError` (one line, saying what to lower) when ``need`` bytes for ``what``
    would pass the memory budget (:func:`memory_budget` unless ``budget`` is given, ``source`` saying whence)."""
    budget = memory_budget() if budget is None else budget
    if need > budget:
        raise ConfigError(f"out of memory: {what} needs at least {gib(need)}, more than the memory budget of "
                          f"{gib(budget)} ({source}); lower {lower}")


# -- parameter counts --------------------------------------------------------------------------


def mlp_parameters(sizes: Sequence[int]) -> int:
    """Weights and biases of dense layers sizes[0] -> sizes[1] -> ... : sum_i (sizes[i] + 1) sizes[i+1]."""
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def _conv_stack(channels_in: int, channels: Sequence[int]) -> int:
    """4x4 convolutions channels_in -> channels[0] -> ...: 16 c_in c_out + c_out each."""
    total, c = 0, channels_in
    for ch in channels:
        total += 16 * c * ch + ch
        c = ch
    return total


def conv_encoder_parameters(shape: Sequence[int], out: int, channels: Sequence[int], hidden: int) -> int:
    """:class:`vaekit.nn.ConvEncoder`: stride-2 convolutions, then dense (C' H' W') -> hidden -> out."""
    c, h, w = (list(shape) + [1, 1])[:3] if len(shape) == 3 else (1, math.prod(shape), 1)
    for _ in channels:
        h, w = h // 2, w // 2
    width = (channels[-1] if channels else c) * max(h, 1) * max(w, 1)
    return _conv_stack(c, channels) + mlp_parameters([width, hidden, out])


def conv_decoder_parameters(latent: int, shape: Sequence[int], out_channels: int, channels: Sequence[int],
                            hidden: int) -> int:
    """:class:`vaekit.nn.ConvDecoder`: dense latent -> hidden -> start map, then transposed convolutions."""
    h, w = (shape[1], shape[2]) if len(shape) == 3 else (math.prod(shape), 1)
    n = len(channels)
    start = (channels[0] if channels else out_channels) * math.ceil(h / 2**n) * math.ceil(w / 2**n)
    return mlp_parameters([latent, hidden, start]) + _conv_stack(channels[0], [*channels[1:], out_channels]) \
        if channels else mlp_parameters([latent, hidden, start])


def network_parameters(net: Mapping[str, Any], role: str, shape: Sequence[int], latent: int, out: int) -> int:
    """Parameters of a network description (``{"name": "mlp" | "conv", ...}``) as encoder or decoder."""
    d = math.prod(shape)
    name = net.get("name")
    if name == "mlp":
        hidden = list(net.get("hidden") or [])
        sizes = [d, *hidden, out] if role == "encoder" else [latent, *reversed(hidden), out]
        return mlp_parameters(sizes)
    if name == "conv":
        channels, hidden = list(net.get("channels") or []), int(net.get("hidden") or 1)
        if role == "encoder":
            return conv_encoder_parameters(shape, out, channels, hidden)
        return conv_decoder_parameters(latent, shape, max(1, out // max(1, d)) * (shape[0] if len(shape) == 3 else 1),
                                       list(reversed(channels)), hidden)
    return 0  # a network of the user's own: already built, not ours to estimate


def component_parameters(kind: str, spec: Mapping[str, Any], latent: int, shape: Sequence[int]) -> int:
    """Parameters of a component whose size is a setting: an IAF's MADE layers, a VampPrior's pseudo-inputs."""
    name = spec.get("name")
    if kind == "posterior" and name == "iaf":
        steps, hidden, layers = int(spec.get("steps", 2)), int(spec.get("hidden", 320)), int(spec.get("layers", 2))
        context = int(spec.get("context", 0))
        return steps * mlp_parameters([latent + context, *([hidden] * layers), 2 * latent])
    if kind == "prior" and name == "vamp":
        return int(spec.get("components", 500)) * math.prod(shape)
    return 0


def spec_parameters(spec: Mapping[str, Any]) -> int:
    """Parameters of a model description (``model.json``, :meth:`describe`): vaekit's networks and components."""
    shape, latent = list(spec["shape"]), int(spec["latent"])
    d = math.prod(shape)
    total = component_parameters("prior", spec.get("prior") or {}, latent, shape)
    if spec.get("model") == "hvae":
        hidden = list(spec["hidden"])
        if spec.get("arch") == "conv":
            net = {"name": "conv", "channels": list(spec["conv_channels"]), "hidden": hidden[0]}
            h = hidden[0]
            total += 2 * network_parameters(net, "encoder", shape, latent, 2 * latent)  # q(z2|x) and q(z1|x)'s
            total += network_parameters(net, "decoder", shape, 2 * latent, d)
            return total + mlp_parameters([latent, h, 2 * latent]) + mlp_parameters([2 * h, h, 2 * latent])
        h = hidden[-1]
        return total + mlp_parameters([d, *hidden, 2 * latent]) + mlp_parameters([d, *hidden]) \
            + mlp_parameters([latent, *hidden, 2 * latent]) + mlp_parameters([2 * latent, *reversed(hidden), d]) \
            + mlp_parameters([latent, h]) + mlp_parameters([2 * h, h, 2 * latent])
    posterior = spec.get("posterior") or {}
    total += component_parameters("posterior", posterior, latent, shape)
    total += network_parameters(spec.get("encoder") or {}, "encoder", shape, latent, 2 * latent)
    outputs = int(spec.get("decoder_outputs") or d)  # the likelihood's parameters per image (256 D: categorical)
    total += network_parameters(spec.get("decoder") or {}, "decoder", shape, latent, outputs)
    return total


def check_parameters(parameters: int, what: str, lower: str, *, training: bool = False,
                     budget: int | None = None) -> None:
    """Raise ``ValueError`` (one line, saying what to lower) when ``parameters`` would not fit the budget.

    ``training``: the parameters are trained (weights, gradients and Adam's moments: 16 bytes each)."""
    budget = memory_budget() if budget is None else budget
    need = parameters * BYTES_PER_PARAMETER * (TRAINING_COPIES if training else 1)
    if need > budget:
        use = "to train" if training else "to hold"
        raise ValueError(f"out of memory: {what} has about {parameters:.3g} parameters: {gib(need)} {use}, over the "
                         f"memory budget of {gib(budget)} (min(8 GB, half the RAM), or $VAEKIT_MEMORY_BUDGET); "
                         f"lower {lower}")
