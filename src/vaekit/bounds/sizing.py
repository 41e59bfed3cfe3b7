"""How big one decoder call may be: the bytes of activations a latent code costs, and a model's device and dtype.

:func:`bytes_per_row` measures the decoder (and a likelihood with networks of its own) on a probe of two
codes with forward hooks; a chunk of ``memory_budget // bytes_per_row`` codes then stays within the budget
(:data:`DEFAULT_MEMORY_BUDGET`, 256 MB of activations). On the CPU a chunk is further capped at
:data:`CPU_ROWS` rows, which keeps it in the cache. Used by the importance sampler
(:mod:`vaekit.evaluation`), the sum over every discrete code (:mod:`vaekit.bounds.enumeration`) and grid integration.
:func:`check_draws` refuses, before any work, a training batch whose draws cannot fit (:func:`vaekit.fit`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vaekit.resources import BUDGET_SOURCE, check_memory, memory_budget

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Default memory budget for the decoder activations of one chunk, bytes.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
#: Rows per decoder call on the CPU: big enough for fast matrix products, small enough for the cache.
CPU_ROWS = 4096


def model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of the model's first parameter (or buffer); the CPU and float32 for neither."""
    for p in model.parameters():
        return p.device, p.dtype
    for b in model.buffers():
        return b.device, b.dtype
    return torch.device("cpu"), torch.float32


@torch.inference_mode()
def bytes_per_row(model: LatentVariableModel, latent: int) -> int:
    """Bytes of decoder activations (every module's output, plus one more logit-sized temporary)
    for one latent code, measured by running the decoder on a probe with forward hooks. A likelihood
    with networks of its own (the autoregressive ``pixelcnn``) is probed too, by one log p(x|z) call."""
    device, dtype = model_device_dtype(model)
    decoder = getattr(model, "decoder", None)
    likelihood = getattr(model, "likelihood", None)
    z = torch.zeros(2, latent, device=device, dtype=dtype)
    probe_y = torch.zeros(2, dtype=torch.long, device=device) if getattr(model, "condition", 0) else None
    if not isinstance(decoder, torch.nn.Module):
        out = model.decode(z, probe_y)
        return 3 * out[0].numel() * out.element_size() + 64
    sizes: list[int] = []
    modules = list(decoder.modules())
    networked = isinstance(likelihood, torch.nn.Module) and any(True for _ in likelihood.children())
    if networked:
        modules += list(likelihood.modules())
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel() * o.element_size() // 2
                                                                    if isinstance(o, torch.Tensor) else 0))
             for m in modules]
    try:
        out = model.decode(z, probe_y)
        if networked:
            likelihood.log_prob(out.new_zeros(2, *likelihood.shape), out)
    finally:
        for h in hooks:
            h.remove()
    return int(sum(sizes) + 2 * out[0].numel() * out.element_size() + 64)


def device_budget(device: torch.device) -> tuple[int, str]:
    """The memory a batch may take on ``device`` and where that number comes from: half the GPU's memory on a GPU
    (unless $VAEKIT_MEMORY_BUDGET is set), else :func:`vaekit.resources.memory_budget`."""
    import os

    if device.type == "cuda" and not os.environ.get("VAEKIT_MEMORY_BUDGET", "").strip():
        try:
            return int(torch.cuda.get_device_properties(device).total_memory) // 2, "half the GPU's memory"
        except (RuntimeError, AssertionError, ValueError):
            pass
    return memory_budget(), BUDGET_SOURCE


def check_draws(model: LatentVariableModel, draws: int, batch_size: int, device: torch.device,
                names: tuple[str, str] = ("k", "batch_size")) -> None:
    """Refuse, before any work, ``draws`` x ``batch_size`` decoder rows (:func:`bytes_per_row` each, kept for the
    backward pass) that cannot fit the budget of ``device``: a :class:`~vaekit.errors.ConfigError` naming the
    arguments ``names`` that set them. A model the probe cannot measure is not refused."""
    if draws <= 1:
        return
    try:
        row = bytes_per_row(model, int(model.latent_size))
    except Exception:  # noqa: BLE001 - a model the probe cannot measure: no estimate, no refusal
        return
    budget, source = device_budget(device)
    k, b = names
    check_memory(draws * batch_size * row, f"{k}={draws} with {b}={batch_size} ({draws} x {batch_size} decoder rows "
                 f"of {row} bytes)", f"{k} or {b}", budget=budget, source=source)
