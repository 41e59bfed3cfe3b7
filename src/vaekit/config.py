"""Training configuration: one dataclass, read from TOML/YAML and CLI flags, validated.

Precedence: defaults < ``--config FILE`` < flags given on the command line. Unknown keys,
wrong types and out-of-range values raise :class:`vaekit.errors.ConfigError` naming the key
and what to fix.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from vaekit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class TrainConfig:
    # data
    dataset: str = "digits"
    data_dir: str | None = None
    binarize: str | None = None  # None (data set default) | dynamic | threshold
    # model
    model: str = "mlp"  # mlp | conv
    hidden: list[int] = field(default_factory=lambda: [400])
    latent: int = 40
    levels: int = 1  # stochastic layers: 1 (VAE) or 2 (hierarchical VAE)
    activation: str = "relu"
    likelihood: str | None = None  # None: bernoulli for binary data, gaussian otherwise
    prior: str = "standard"  # standard | vamp
    vamp_components: int = 500
    pixelcnn_layers: int = 6  # likelihood pixelcnn: masked convolutions
    pixelcnn_channels: int = 64  # likelihood pixelcnn: features per layer
    pixelcnn_params: int = 4  # likelihood pixelcnn: decoder outputs (conditioning channels) per pixel
    pixelcnn_kernel: int = 3  # likelihood pixelcnn: odd kernel size of the masked convolutions
    flow: str | None = None  # normalizing flow in q(z|x): None, iaf or planar (levels 1 only)
    flow_steps: int = 2  # flow steps
    flow_hidden: int = 320  # iaf: units per MADE hidden layer
    flow_layers: int = 2  # iaf: MADE hidden layers
    flow_context: int = 32  # size of the encoder's context vector h(x) for the flow (0: none)
    # objective
    objective: str = "elbo"  # elbo | iwae
    k: int = 1
    beta: float = 1.0
    warmup: int = 0  # KL warm-up epochs (beta ramps from beta/warmup to beta)
    encoder_noise: float = 0.0  # denoising encoder: it sees x + N(0, sigma^2) in training
    init_from: str | None = None  # start from this run's best weights (same architecture)
    train_only: str = "all"  # all | encoder: train only q(z|x); p(z) p(x|z) stays as init_from left it
    # optimisation
    epochs: int = 10
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "none"  # none | cosine | plateau
    weight_decay: float = 0.0
    clip_grad: float | None = None
    patience: int | None = None  # early stopping on the validation ELBO
    eval_batch_size: int = 1000
    # reproducibility and hardware
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | tf32 | bf16
    threads: int | None = None
    compile: bool = False

    CHOICES = {
        "model": ("mlp", "conv"),
        "activation": ("relu", "tanh", "elu", "gelu", "softplus", "gated"),
        "likelihood": (None, "bernoulli", "gaussian", "continuous-bernoulli", "pixelcnn"),
        "prior": ("standard", "vamp"),
        "flow": (None, "iaf", "planar"),
        "objective": ("elbo", "iwae"),
        "train_only": ("all", "encoder"),
        "lr_schedule": ("none", "cosine", "plateau"),
        "binarize": (None, "none", "static", "dynamic", "threshold"),
        "device": ("auto", "cpu", "cuda", "mps"),
        "precision": ("fp32", "tf32", "bf16"),
    }
    POSITIVE = ("latent", "levels", "vamp_components", "k", "epochs", "batch_size", "eval_batch_size", "threads",
                "pixelcnn_layers", "pixelcnn_channels", "pixelcnn_params", "pixelcnn_kernel", "flow_steps",
                "flow_hidden", "flow_layers")
    NONNEGATIVE = ("warmup", "patience", "seed", "flow_context")
    #: Upper bounds of the integer settings (2**31 - 1 unless listed): beyond them torch overflows.
    MAXIMUM = {"seed": 2**32 - 1, "threads": 1024, "levels": 2, "pixelcnn_layers": 64, "pixelcnn_channels": 4096,
               "pixelcnn_params": 256, "pixelcnn_kernel": 15, "flow_steps": 64, "flow_layers": 16}

    def __post_init__(self) -> None:
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fields() -> dict[str, Any]:
    hints = get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def validate(cfg: TrainConfig) -> None:
    """Check types and ranges; raise ConfigError saying what to fix."""
    for name, hint in _fields().items():  # null (YAML ~, JSON null) only where None means something
        if getattr(cfg, name) is None and "None" not in str(hint):
            raise ConfigError(f"{name} cannot be null; give a value or leave it out for the default")
    for name, choices in TrainConfig.CHOICES.items():
        value = getattr(cfg, name)
        if value not in choices:
            shown = ", ".join("(default)" if c is None else c for c in choices)
            raise ConfigError(f"{name} must be one of {shown}; got {value!r}")
    for names, low in ((TrainConfig.POSITIVE, 1), (TrainConfig.NONNEGATIVE, 0)):
        for name in names:
            value = getattr(cfg, name)
            high = TrainConfig.MAXIMUM.get(name, 2**31 - 1)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
            if value is not None and value > high:
                raise ConfigError(f"{name} must be an integer from {low} to {high}; got {value!r}")
    for name, low, strict in (("lr", 0.0, True), ("beta", 0.0, False), ("weight_decay", 0.0, False),
                              ("encoder_noise", 0.0, False),
                              ("clip_grad", 0.0, True)):
        value = getattr(cfg, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
            value <= low if strict else value < low
        ):
            raise ConfigError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}; got {value!r}")
    if not isinstance(cfg.hidden, list) or not cfg.hidden or any(
        isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= 2**31 - 1 for h in cfg.hidden
    ):
        raise ConfigError(
            f"hidden must be a non-empty list of integers >= 1 (e.g. [400] or 500,500); got {cfg.hidden!r}"
        )
    if cfg.pixelcnn_kernel % 2 != 1 or cfg.pixelcnn_kernel < 3:
        raise ConfigError(f"pixelcnn_kernel must be an odd integer >= 3 (3, 5, 7, ...); got {cfg.pixelcnn_kernel!r}")
    if cfg.flow is not None and cfg.levels != 1:
        raise ConfigError(f"flow {cfg.flow} is for the one-level VAE, but levels is {cfg.levels}; "
                          "use levels 1 with a flow, or leave flow out with levels 2")
    if cfg.init_from is not None and (not isinstance(cfg.init_from, str) or not cfg.init_from):
        raise ConfigError(f"init_from must be a run directory; got {cfg.init_from!r}")
    if cfg.train_only == "encoder" and cfg.init_from is None:
        raise ConfigError("train_only encoder keeps the generative model fixed, so it needs init_from: "
                          "a trained run to start from (--init-from RUN)")
    if cfg.train_only == "encoder" and cfg.prior == "vamp":
        raise ConfigError("train_only encoder would change the VampPrior too (its components are encoded "
                          "pseudo-inputs); use it with the standard prior")
    if not isinstance(cfg.dataset, str) or not cfg.dataset:
        raise ConfigError(f"dataset must be a data set name; got {cfg.dataset!r}")
    if not isinstance(cfg.compile, bool):
        raise ConfigError(f"compile must be true or false; got {cfg.compile!r}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Accept the values a TOML/YAML file naturally holds (ints for floats, '400,400' lists)."""
    text = str(hint)
    if "list[int]" in text:
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        if isinstance(value, str):
            try:
                return [int(v) for v in value.split(",")]
            except ValueError:
                raise ConfigError(f"{name} must be integers like 400 or 500,500; got {value!r}") from None
        return value
    if "float" in text and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if text.startswith("float") and isinstance(value, str):
        try:
            return float(value)  # YAML reads 1e-3 as a string
        except ValueError:
            raise ConfigError(f"{name} must be a number; got {value!r}") from None
    return value


def from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a mapping, rejecting unknown keys with a suggestion."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source} must be a table of key = value settings")
    fields = _fields()
    clean: dict[str, Any] = {}
    for key, value in values.items():
        k = str(key).replace("-", "_")
        if k not in fields:
            import difflib

            close = difflib.get_close_matches(k, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown setting {key!r} in {source}{hint}")
        clean[k] = _coerce(k, value, fields[k])
    for k, hint in fields.items():
        if k in clean and clean[k] is not None:
            v = clean[k]
            t = str(hint)
            bad = (
                (t.startswith("int") and (isinstance(v, bool) or not isinstance(v, int)))
                or (t.startswith("str") and not isinstance(v, str))
                or (t.startswith("float") and (isinstance(v, bool) or not isinstance(v, (int, float))))
                or (t.startswith("bool") and not isinstance(v, bool))
            )
            if bad:
                raise ConfigError(f"{k} in {source} has the wrong type: {v!r} ({type(v).__name__})")
    return TrainConfig(**clean)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a dict (``[train]`` table optional)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {p} must end in .toml, .yaml, .yml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # the parsers' own errors (TOMLDecodeError, YAMLError, JSONDecodeError)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {p} is not valid {suffix[1:].upper()}: {first}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold key = value settings, not a {type(data).__name__}")
    if "train" in data and isinstance(data["train"], dict) and len(data) == 1:
        data = data["train"]
    return data


def resolve(file_values: dict[str, Any] | None, flag_values: dict[str, Any]) -> TrainConfig:
    """defaults < file < flags."""
    merged = dict(file_values or {})
    merged.update({k: v for k, v in flag_values.items() if v is not None})
    return from_dict(merged, source="the settings")
