"""Saving and loading models: safetensors weights plus a JSON description (``model.json``).

Registered components and vaekit's networks rebuild from their names and settings. A network of the user's
own is recorded by its class name only and must be built again and passed to :func:`load_model`; nothing
named in a run folder is ever imported, so a run folder from a stranger cannot execute code. Run folders of
vaekit's first format (a flat ``ModelConfig``) still load.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from vaekit.components.posteriors import check_min_logvar
from vaekit.errors import CheckpointError, VaekitError, keywords_checked
from vaekit.io.checkpoint import (
    FORMAT,
    MODEL_CONFIG,
    MODEL_FILE,
    atomic_write_bytes,
    check_tensors,
    one_line,
    read_safetensors,
    safetensors_bytes,
    state_dict_tensors,
    write_failed,
)
from vaekit.models.base import MODELS, LatentVariableModel
from vaekit.resources import check_parameters, short, spec_parameters

MODEL_FORMAT = "vaekit-model-2"

_Model = TypeVar("_Model", bound="Persistent")


def save_model(model: Any, directory: Path) -> None:
    """Write ``model.safetensors`` (weights) and ``model.json`` (``model.describe()``) atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    data = safetensors_bytes(state_dict_tensors(model), {"format": FORMAT, "kind": "model"})
    text = json.dumps(model.describe(), indent=2) + "\n"
    for name, payload in ((MODEL_FILE, data), (MODEL_CONFIG, text.encode("utf-8"))):
        try:
            atomic_write_bytes(directory / name, payload)
        except OSError as exc:
            raise write_failed(directory / name, exc) from None


def _models() -> dict[str, type]:
    return MODELS


def legacy_spec(cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A first-format ``model.json`` (flat ModelConfig) as a description, and the renames of its weights."""
    known = {"shape", "latent", "arch", "hidden", "activation", "likelihood", "prior", "conv_channels", "levels",
             "min_logvar", "flow", "flow_steps", "flow_hidden", "flow_layers", "flow_context"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise TypeError(f"unknown settings {unknown[:3]}")
    arch, hidden = cfg.get("arch", "mlp"), cfg.get("hidden", [400])
    activation, channels = cfg.get("activation", "relu"), cfg.get("conv_channels", [32, 64])
    if arch not in ("mlp", "conv"):
        raise ValueError(f"arch must be mlp or conv, got {arch!r}")
    likelihood = {"name": cfg["likelihood"]} if isinstance(cfg.get("likelihood"), str) else \
        dict(cfg.get("likelihood") or {"name": "bernoulli"})
    likelihood.pop("shape", None)
    prior = {"name": cfg["prior"]} if isinstance(cfg.get("prior"), str) else \
        dict(cfg.get("prior") or {"name": "standard"})
    min_logvar = cfg.get("min_logvar", -12.0)
    if isinstance(min_logvar, bool) or not isinstance(min_logvar, (int, float)) or not math.isfinite(min_logvar):
        raise ValueError(f"min_logvar must be a finite number, got {min_logvar!r}")
    common = {"shape": cfg.get("shape", [1, 28, 28]), "latent": cfg.get("latent", 40),
              "prior": prior, "likelihood": likelihood}
    if int(cfg.get("levels", 1)) == 2:
        return {"format": MODEL_FORMAT, "model": "hvae", **common, "arch": arch, "hidden": hidden,
                "activation": activation, "conv_channels": channels, "min_logvar": min_logvar}, {}
    if cfg.get("flow"):
        posterior = {"name": cfg["flow"], "steps": cfg.get("flow_steps", 2), "hidden": cfg.get("flow_hidden", 320),
                     "layers": cfg.get("flow_layers", 2), "context": cfg.get("flow_context", 32),
                     "min_logvar": min_logvar}
    else:
        posterior = {"name": "gaussian", "min_logvar": min_logvar}
    if arch == "mlp":
        net = {"name": "mlp", "hidden": hidden, "activation": activation}
    else:
        width = hidden[0] if isinstance(hidden, list) and hidden else 256
        net = {"name": "conv", "channels": channels, "hidden": width, "activation": activation}
    spec = {"format": MODEL_FORMAT, "model": "vae", **common, "condition": 0, "posterior": posterior,
            "encoder": net, "decoder": net}
    return spec, {"flow.": "posterior_family.flow."}


_VAE_KEYS = {"format", "model", "shape", "latent", "condition", "posterior", "prior", "likelihood", "encoder",
             "decoder"}
_HVAE_KEYS = {"format", "model", "shape", "latent", "arch", "hidden", "activation", "conv_channels", "min_logvar",
              "prior", "likelihood"}
#: Bounds on sizes read from a file: a few hundred bytes of JSON must not ask for terabytes.
MAX_SIZE = 2**20
MAX_PIXELS = 2**26
#: A model description is a few hundred bytes; more than this is not a file vaekit wrote.
MAX_SPEC_BYTES = 2**20


def _count(value: Any, what: str, low: int = 1, high: int = MAX_SIZE) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}, got {value!r}")
    return value


def _counts(value: Any, what: str, allow_empty: bool = False) -> list[int]:
    if not isinstance(value, list) or (not value and not allow_empty) or len(value) > 64:
        raise ValueError(f"{what} must be a list of up to 64 integers, got {value!r}")
    return [_count(v, f"each of {what}") for v in value]


def _activation(value: Any) -> str:
    from vaekit.nn import ACTIVATIONS

    if value not in ACTIVATIONS and value != "gated":
        raise ValueError(f"unknown activation {value!r}")
    return value


def _network(spec: Any, role: str) -> None:
    if not isinstance(spec, dict) or spec.get("name") not in ("mlp", "conv", "custom"):
        raise ValueError(f"the {role} must be described as mlp, conv or custom, got {spec!r}")
    name = spec["name"]
    keys = {"mlp": {"name", "hidden", "activation"}, "conv": {"name", "channels", "hidden", "activation"},
            "custom": {"name", "class"}}[name]
    if set(spec) != keys:
        raise ValueError(f"the {name} {role} has the settings {sorted(spec)}, expected {sorted(keys)}")
    if name == "mlp":
        _counts(spec["hidden"], f"the {role}'s hidden sizes", allow_empty=True)  # []: linear
        _activation(spec["activation"])
    elif name == "conv":
        _counts(spec["channels"], f"the {role}'s channels")
        _count(spec["hidden"], f"the {role}'s hidden width")
        _activation(spec["activation"])
    elif not isinstance(spec["class"], str):
        raise ValueError(f"the {role}'s class must be a name, got {spec['class']!r}")


def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Validate a model description read from a file (types, sizes, registered names); raise ValueError."""
    from vaekit.components import kinds

    own = getattr(_models().get(spec.get("model")), "check_spec", None)  # a model kind that checks its own
    if own is not None:
        return own(spec)
    keys = _VAE_KEYS if spec.get("model") == "vae" else _HVAE_KEYS
    unknown, missing = sorted(set(spec) - keys), sorted(keys - set(spec) - {"condition", "min_logvar"})
    if unknown or missing:
        raise ValueError(f"unknown settings {unknown[:3]}" if unknown else f"missing settings {missing[:3]}")
    shape = _counts(spec["shape"], "shape")
    if len(shape) not in (1, 3) or math.prod(shape) > MAX_PIXELS:
        raise ValueError(f"shape must be (C, H, W) (or (D,)) of at most {MAX_PIXELS} values, got {shape}")
    _count(spec["latent"], "latent")
    _count(spec.get("condition", 0), "condition", 0, 2**16)
    registries = kinds()
    for kind in ("posterior", "prior", "likelihood") if spec["model"] == "vae" else ("prior", "likelihood"):
        if not isinstance(spec[kind], dict):
            raise ValueError(f"the {kind} must be a table with a name, got {spec[kind]!r}")
        spec[kind] = registries[kind].spec(spec[kind])  # ConfigError (a ValueError) for unknown names and keys
    if spec["model"] == "vae":
        _network(spec["encoder"], "encoder")
        _network(spec["decoder"], "decoder")
    else:
        if spec["arch"] not in ("mlp", "conv"):
            raise ValueError(f"arch must be mlp or conv, got {spec['arch']!r}")
        _counts(spec["hidden"], "hidden")
        _counts(spec["conv_channels"], "conv_channels")
        _activation(spec["activation"])
        check_min_logvar(spec.get("min_logvar", -12.0))
    return spec


def read_spec(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The model description in ``path/model.json`` and the weight renames it needs (first format only)."""
    from vaekit.io.files import read_text_capped

    cfg_path = path / MODEL_CONFIG
    try:
        cfg = json.loads(read_text_capped(cfg_path, MAX_SPEC_BYTES, "model description"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{cfg_path} is corrupt or from another version: {one_line(exc)}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} is corrupt: expected a JSON object, got a {type(cfg).__name__}")
    renames: dict[str, str] = {}
    if "format" not in cfg:
        try:
            cfg, renames = legacy_spec(cfg)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CheckpointError(f"{cfg_path} is corrupt or from another version: {one_line(exc)}") from None
    if cfg.get("format") != MODEL_FORMAT or cfg.get("model") not in _models():
        raise CheckpointError(f"{cfg_path} is a model of format {cfg.get('format')!r}, kind {cfg.get('model')!r}, "
                              f"which this vaekit cannot read (it reads {MODEL_FORMAT}: vae, hvae)")
    try:
        spec = check_spec(cfg)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{cfg_path} is corrupt or from another version: {short(one_line(exc))}") from None
    try:  # sizes against the memory they imply, before anything is allocated
        count = getattr(_models()[spec["model"]], "spec_parameters", None) or spec_parameters
        check_parameters(count(spec), "the model it describes", "its sizes (hidden, channels, latent, "
                         "flow, prior components)")
    except ValueError as exc:
        raise CheckpointError(f"{cfg_path}: {exc}") from None
    return spec, renames


def build_from_spec(spec: dict[str, Any], encoder: nn.Module | None = None,
                    decoder: nn.Module | None = None) -> LatentVariableModel:
    """The (untrained) model a description gives; user networks are passed in, never imported."""
    cls = _models()[spec["model"]]
    if spec["model"] == "vae":
        return cls.from_spec(spec, encoder=encoder, decoder=decoder)
    if encoder is not None or decoder is not None:
        raise CheckpointError("this run holds a two-level model built from vaekit's networks; "
                              "it takes no encoder or decoder")
    return cls.from_spec(spec)


def _renamed(tensors: dict[str, torch.Tensor], renames: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in tensors.items():
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


@keywords_checked
def load_model(path: str | Path, map_location: str | torch.device = "cpu", *, encoder: nn.Module | None = None,
               decoder: nn.Module | None = None) -> LatentVariableModel:
    """Rebuild a model from ``path`` (a run or model directory) without executing any code from it."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; give the run directory written by 'vaekit train'")
    cfg_path = path / MODEL_CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} not found; is {path} a vaekit run directory?")
    spec, renames = read_spec(path)
    custom = encoder is not None or decoder is not None
    try:
        if custom:  # user modules are built already: compare against them
            model = build_from_spec(spec, encoder, decoder)
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        else:
            with torch.device("meta"):  # the architecture alone, no memory: checked against the file first
                expected = {k: tuple(v.shape) for k, v in build_from_spec(spec).state_dict().items()}
    except VaekitError as exc:
        if custom or "of your own" in str(exc):
            raise
        raise CheckpointError(f"{cfg_path} is corrupt or from another version: {one_line(exc)}") from None
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"{cfg_path} is corrupt or from another version: {one_line(exc)}") from None
    tensors, _ = read_safetensors(path / MODEL_FILE)
    tensors = _renamed(tensors, renames)
    what = "the networks you passed" if custom else f"the model {cfg_path} describes"
    check_tensors(path / MODEL_FILE, tensors, expected, what)
    if not custom:
        model = build_from_spec(spec)
    model.load_state_dict(tensors)
    return model.to(map_location)


class Persistent:
    """What every saved model kind shares (a mixin of :class:`~vaekit.models.base.LatentVariableModel` subclasses):
    ``describe()`` is the format, the kind :func:`~vaekit.models.base.register_model` gave the class and the
    model's own settings (:meth:`own_description`); :meth:`save` and :meth:`load` write and read them with the weights.
    A model class keeps only what is its own: :meth:`own_description` and ``from_spec``."""

    #: The kind ``model.json`` names (set by ``register_model``).
    model_kind: str
    #: What :meth:`load` calls a model of this class when a folder holds another kind.
    noun: str = "model of this kind"

    def own_description(self) -> dict[str, Any]:
        """The model's own keys of ``model.json`` (all but ``format`` and ``model``), in the order written."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The JSON description saved as ``model.json``: what rebuilds the model (``from_spec``)."""
        return {"format": MODEL_FORMAT, "model": self.model_kind, **self.own_description()}

    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` and ``model.json`` into ``directory`` (atomically)."""
        save_model(self, Path(directory))

    @classmethod
    def load(cls: type[_Model], path: str | Path, map_location: str | torch.device = "cpu") -> _Model:
        """A trained model of this class from a run directory (its best weights) or a model directory: safetensors
        and JSON only, no code executed. A folder holding another kind is refused (``vaekit.load`` reads any)."""
        model = load_model(Path(path), map_location=map_location)
        if not isinstance(model, cls):
            raise CheckpointError(f"{path} holds a {type(model).__name__}, not a {cls.noun}; use vaekit.load, which "
                                  "reads any kind")
        return model
