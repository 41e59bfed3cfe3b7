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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from vaekit.errors import ConfigError, option
from vaekit.resources import short

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _flag(help: str, parse: str = "str", *, core: bool = False,
          applies: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """A setting's metadata: its help text and the parser of its ``--flag`` (a function of ``vaekit.commands._args``
    by name, or ``str``), from which the flags of ``vaekit train`` are made; whether a run's page always shows it
    (``core``) and when it does anything at all (``applies``: the run's config.json -> bool; a setting that does
    not apply is never shown)."""
    return {"help": help, "parse": parse, "core": core, "applies": applies}


def named(c: dict[str, Any], kind: str) -> str | None:
    """The name of the ``kind`` (family, objective) a run's config.json gives, written plain or as a table."""
    value = c.get(kind)
    return value.get("name") if isinstance(value, dict) else value


def _family_fact(c: dict[str, Any], fact: str, default: Any) -> Any:
    families = _registry("family")
    name = named(c, "family") or "vae"
    return getattr(families.entry(name).cls, fact, default) if name in families else default


def _by_gradient(c: dict[str, Any]) -> bool:
    """The trainer's settings apply (not exact EM, which uses none of them)."""
    return c.get("fit") != "em"


def _tempered(c: dict[str, Any]) -> bool:
    from vaekit.objectives.discrete import TEMPERED

    return c.get("estimator") in TEMPERED


#: The component kinds a model is made of, in the order they are settled.
KINDS = ("posterior", "prior", "likelihood")
#: Every registered kind a run names with its settings (``NAME`` + ``NAME_settings``): the family, the components
#: and the objective.
NAMED_KINDS = ("family", *KINDS, "objective")


@dataclass
class TrainConfig:
    # data
    dataset: str = field(default="digits", metadata=_flag(
        "data set: digits, binarized-mnist, mnist, mnist-grey, mnist-t10k, fashion-mnist, kmnist, cifar10, wine, "
        "images:DIR, npz:FILE, csv:FILE (vaekit data --help lists them all)", "str", core=True))
    data_dir: str | None = field(default=None, metadata=_flag(
        "folder holding the data set's files (default: $VAEKIT_DATA_DIR or the cache)", "str"))
    binarize: str | None = field(default=None, metadata=_flag(
        "none, static, dynamic or threshold (grey-level data: dynamic or threshold)", "str"))
    conditional: bool = field(default=False, metadata=_flag(
        "condition q(z|x, y) and p(x|z, y) on the data set's labels (a conditional VAE)", "store_true"))
    image_size: int | None = field(default=None, metadata=_flag(
        "images:DIR: resize the images to PX x PX (named data sets keep their native size)", "positive_int"))
    standardise: bool | None = field(default=None, metadata=_flag(
        "a table of real values (csv:FILE, a 2-D npy/npz array, wine, breast-cancer): standardise every split by "
        "the training split's mean and SD, figures reported in the original units (default: on for tables); "
        "--no-standardise keeps the raw values", "switch", applies=lambda c: c.get("standardise") is not None))
    label_column: str | None = field(default=None, metadata=_flag(
        "csv:FILE with a header row: the column holding class labels (the other columns are the features)", "str",
        applies=lambda c: c.get("label_column") is not None))
    limit: int | None = field(default=None, metadata=_flag(
        "a data set drawn from a factor grid (dsprites, shapes3d): use a fixed random subset of N of its images "
        "(the splits are carved from it)", "positive_int", core=True, applies=lambda c: c.get("limit") is not None))
    # model: the family, networks (model = mlp | conv), sizes, and the three components (names + settings)
    family: str = field(default="vae", metadata=_flag(
        "model family: {families} (default vae; bernoulli-mixture: --components K, --fit em|vae)", "str", core=True))
    family_settings: dict[str, Any] = field(default_factory=dict)
    model: str = field(default="mlp", metadata=_flag("mlp or conv", "str"))
    hidden: list[int] = field(default_factory=lambda: [400], metadata=_flag(
        "hidden layer sizes, e.g. 400 or 500,500", "int_list"))
    latent: int = field(default=40, metadata=_flag(
        "latent dimensions (default 40; per level with --levels 2)", "positive_int"))
    levels: int = field(default=1, metadata=_flag("stochastic layers: 1 (VAE) or 2 (hierarchical VAE)", "positive_int"))
    activation: str = field(default="relu", metadata=_flag(
        "relu, tanh, elu, gelu, softplus or gated (gated dense and conv layers)", "str"))
    conv_channels: list[int] = field(default_factory=lambda: [32, 64], metadata=_flag(
        "channels of the conv networks' stride-2 layers (default 32,64)", "int_list"))
    posterior: str = field(default="gaussian", metadata=_flag(
        "posterior family q(z|x): {posteriors} (default gaussian)", "str"))
    prior: str = field(default="standard", metadata=_flag("prior p(z): {priors} (default standard)", "str"))
    likelihood: str | None = field(default=None, metadata=_flag(
        "likelihood p(x|z): {likelihoods} (default: bernoulli for binary data, else gaussian)", "str"))
    posterior_settings: dict[str, Any] = field(default_factory=dict)
    prior_settings: dict[str, Any] = field(default_factory=dict)
    likelihood_settings: dict[str, Any] = field(default_factory=dict)
    components: int | None = field(default=None, metadata=_flag(
        "bernoulli-mixture: mixture components K (default 10)", "positive_int",
        core=True, applies=lambda c: _family_fact(c, "takes_components", False)))
    fit: str = field(default="vae", metadata=_flag(
        "bernoulli-mixture: vae (an amortized q(z|x), trained like any model; default) or em (exact EM)", "str",
        core=True, applies=lambda c: len(_family_fact(c, "fitters", ("vae",))) > 1))
    em_iterations: int = field(default=100, metadata=_flag(
        "--fit em: the most EM iterations (default 100)", "positive_int",
        core=True, applies=lambda c: c.get("fit") == "em"))
    # objective
    objective: str = field(default="elbo", metadata=_flag(
        "the training objective: {objectives} (default elbo; an autoencoder's own otherwise)", "str",
        core=True, applies=_by_gradient))
    objective_settings: dict[str, Any] = field(default_factory=dict)
    estimator: str | None = field(default=None, metadata=_flag(
        "the encoder's gradient estimator. Reparameterized latents: pathwise (default), stl (sticking the landing) "
        "or dreg (doubly reparameterized; importance-weighted objectives, e.g. --objective iwae). Discrete latents: "
        "enumerate, score, nvil, vimco (with --objective iwae), gumbel or straight-through (default: enumerate "
        "for at most 4,096 codes, else gumbel)", "str",
        core=True, applies=lambda c: c.get("estimator") is not None))
    temperature: float = field(default=1.0, metadata=_flag(
        "gumbel / straight-through: the starting temperature (default 1)", "positive_float",
        core=True, applies=_tempered))
    temperature_min: float = field(default=0.5, metadata=_flag(
        "gumbel / straight-through: the lowest temperature (default 0.5)", "positive_float",
        core=True, applies=_tempered))
    anneal_rate: float = field(default=1e-4, metadata=_flag(
        "gumbel / straight-through: r in tau = max(tau_min, tau_0 exp(-r step)) (default 1e-4)", "finite_float",
        core=True, applies=_tempered))
    k: int = field(default=1, metadata=_flag(
        "samples per example (IWAE k, or ELBO samples)", "positive_int", applies=_by_gradient))
    beta: float = field(default=1.0, metadata=_flag(
        "weight of the KL term (default 1)", "finite_float", applies=_by_gradient))
    warmup: int = field(default=0, metadata=_flag(
        "KL warm-up epochs (default 0)", "nonnegative_int", applies=_by_gradient))
    encoder_noise: float = field(default=0.0, metadata=_flag(
        "denoising encoder: train it on x + N(0, sigma^2) noise (default 0)", "finite_float", applies=_by_gradient))
    init_from: str | None = field(default=None, metadata=_flag(
        "start from this run's best weights (same architecture, e.g. --config RUN/config.json)", "str",
        applies=_by_gradient))
    train_only: str = field(default="all", metadata=_flag(
        "all (default) or encoder: train q(z|x) alone, p(z) p(x|z) fixed (needs --init-from)", "str",
        applies=lambda c: c.get("init_from") is not None))
    # optimisation
    epochs: int = field(default=10, metadata=_flag(
        "number of epochs (default 10)", "positive_int", core=True, applies=_by_gradient))
    batch_size: int = field(default=100, metadata=_flag(
        "minibatch size (default 100)", "positive_int", core=True, applies=_by_gradient))
    lr: float = field(default=1e-3, metadata=_flag(
        "Adam learning rate (default 1e-3)", "positive_float", core=True, applies=_by_gradient))
    lr_schedule: str = field(default="none", metadata=_flag("none, cosine or plateau", "str", applies=_by_gradient))
    weight_decay: float = field(default=0.0, metadata=_flag(
        "Adam weight decay (default 0)", "finite_float", applies=_by_gradient))
    clip_grad: float | None = field(default=None, metadata=_flag(
        "clip the gradient norm at this value", "positive_float", applies=_by_gradient))
    patience: int | None = field(default=None, metadata=_flag(
        "stop after this many epochs without a better validation score", "nonnegative_int", applies=_by_gradient))
    select_by: str = field(default="objective", metadata=_flag(
        "what chooses the kept epoch: objective (the training objective on the validation set: the IWAE "
        "bound, the beta-weighted ELBO; default) or elbo (the ELBO, whatever the objective)", "str",
        applies=_by_gradient))
    eval_batch_size: int = field(default=1000, metadata=_flag(
        "batch size for validation (default 1000)", "positive_int", applies=_by_gradient))
    # reproducibility and hardware
    seed: int = field(default=0, metadata=_flag("random seed (default 0)", "seed_int", core=True))
    device: str = field(default="auto", metadata=_flag("auto, cpu, cuda or mps", "str"))
    precision: str = field(default="fp32", metadata=_flag("fp32, tf32 or bf16", "str", applies=_by_gradient))
    threads: int | None = field(default=None, metadata=_flag("CPU threads for torch", "positive_int"))
    compile: bool = field(default=False, metadata=_flag("use torch.compile", "store_true", applies=_by_gradient))
    fast_step: bool = field(default=True, metadata=_flag(
        "the hand-written training step where one applies (the MLP VAE with a Gaussian q(z|x), the standard "
        "prior, Bernoulli pixels and the plain ELBO, fp32 on the CPU); --no-fast-step: always the autograd step",
        "switch", applies=_by_gradient))
    # reporting (not the run's arithmetic): loggers besides metrics.jsonl (vaekit.loggers), and their sample grids
    log: list[str] = field(default_factory=list, metadata=_flag(
        "loggers besides RUN/metrics.jsonl, comma-separated: csv (RUN/metrics.csv), tensorboard "
        "(RUN/tensorboard/), mlflow, wandb; none: no other (default none; a resume keeps the run's)", "str",
        applies=_by_gradient))
    log_images_every: int = field(default=5, metadata=_flag(
        "a grid of decoded samples z ~ p(z) to the image loggers every N epochs and at the last (default 5; "
        "0: never)", "nonnegative_int", applies=lambda c: bool(c.get("log"))))

    CHOICES = {
        "fit": ("vae", "em"),
        "estimator": (None, "pathwise", "stl", "dreg", "enumerate", "score", "nvil", "vimco", "gumbel",
                      "straight-through"),
        "model": ("mlp", "conv"),
        "activation": ("relu", "tanh", "elu", "gelu", "softplus", "gated"),
        "train_only": ("all", "encoder"),
        "select_by": ("objective", "elbo"),
        "lr_schedule": ("none", "cosine", "plateau"),
        "binarize": (None, "none", "static", "dynamic", "threshold"),
        "device": ("auto", "cpu", "cuda", "mps"),
        "precision": ("fp32", "tf32", "bf16"),
    }
    POSITIVE = ("latent", "levels", "k", "epochs", "batch_size", "eval_batch_size", "threads", "components",
                "em_iterations", "image_size", "limit")
    NONNEGATIVE = ("warmup", "patience", "seed", "log_images_every")
    #: Upper bounds of the integer settings (2**31 - 1 unless listed): beyond them torch overflows.
    MAXIMUM = {"seed": 2**32 - 1, "threads": 1024, "levels": 2, "components": 2**20, "image_size": 4096}

    def __post_init__(self) -> None:
        try:
            validate(self)
        except ConfigError as exc:  # bounded: a value from a file can be huge (a YAML alias bomb)
            raise ConfigError(short(exc)) from None

    def component(self, kind: str, likelihood: str | None = None) -> dict[str, Any]:
        """``{"name": ..., **settings}`` of the model's ``kind`` component (posterior, prior or likelihood)."""
        name = getattr(self, kind) if kind != "likelihood" or self.likelihood else likelihood
        return {"name": name, **getattr(self, f"{kind}_settings")}

    def to_dict(self) -> dict[str, Any]:
        """The settings as written to ``RUN/config.json``: the model's settings nested under ``model``."""
        flat = dataclasses.asdict(self)
        model = {"arch": flat.pop("model")}
        for key in MODEL_KEYS:
            model[key] = flat.pop(key)
        for kind in KINDS:
            model[kind] = {"name": flat.pop(kind), **flat.pop(f"{kind}_settings")}
        for kind in ("family", "objective"):
            settings = flat.pop(f"{kind}_settings")
            if settings:  # a plain name otherwise, as runs have always written it
                flat[kind] = {"name": flat[kind], **settings}
        rest = {k: v for k, v in flat.items() if k not in DATA_KEYS}
        return {**{k: flat[k] for k in DATA_KEYS}, "model": model, **rest}


#: The generic model settings, flat in TrainConfig and under [model] in a file (``model`` itself is [model] arch).
MODEL_KEYS = ("hidden", "latent", "levels", "activation", "conv_channels")
#: The settings of the data, first in config.json.
DATA_KEYS = ("dataset", "data_dir", "binarize", "conditional", "image_size", "limit", "standardise", "label_column")
#: The settings of a model family and its fitting (exact EM) besides the family's own table.
FAMILY_KEYS = ("family", "components", "fit", "em_iterations")


def training_keys() -> tuple[str, ...]:
    """The settings of how a model is trained (not what the model or the data are): the TrainConfig fields less
    the data's, the model's, the family's and the loggers' (``log``), and the flat settings of the registered
    objectives (``PREFIX_FIELD``). They are what :func:`vaekit.fit` takes besides a model and data."""
    described = {*DATA_KEYS, *MODEL_KEYS, *FAMILY_KEYS, *KINDS, "model", "log"}
    own = [f.name for f in dataclasses.fields(TrainConfig)
           if f.name not in described and not f.name.endswith("_settings")]
    flat = [key for key, owners in component_flags().items() if any(kind == "objective" for kind, _, _ in owners)]
    return (*own, *flat)


def _fields() -> dict[str, Any]:
    hints = get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _registry(kind: str):
    if kind == "objective":
        from vaekit.objectives import OBJECTIVES

        return OBJECTIVES
    if kind == "family":
        import vaekit.objectives  # noqa: F401 - objectives may register families of their own (factorvae)
        from vaekit.models.families import FAMILIES

        return FAMILIES
    from vaekit.components import kinds

    return kinds()[kind]


def registries() -> dict[str, Any]:
    """The registry of each kind a run names with settings (:data:`NAMED_KINDS`): family, posterior, prior,
    likelihood and objective."""
    return {kind: _registry(kind) for kind in NAMED_KINDS}


def component_flags() -> dict[str, list[tuple[str, str, str]]]:
    """Flat setting names of the registered components -> [(kind, component name, field)]:
    ``PREFIX_FIELD`` (``vamp_components``, ``flow_steps``, ``pixelcnn_layers``, ...)."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    for kind in NAMED_KINDS:
        for entry in _registry(kind).entries():
            for f in entry.fields():
                key = entry.flat_name(f).replace("-", "_")
                out.setdefault(key, []).append((kind, entry.name, f))
    return out


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
    _validate_named(cfg)
    _validate_numbers(cfg)
    cfg.prior = standard_prior(cfg.posterior, cfg.prior, cfg.prior_settings)
    _validate_family(cfg)
    _validate_log(cfg)
    _validate_networks(cfg)
    _validate_combinations(cfg)
    _validate_data_options(cfg)
    shape = _known_shape(cfg.dataset)
    if shape is not None:
        check_model_size(cfg, shape)


def _validate_data_options(cfg: TrainConfig) -> None:
    """``limit`` only where the data set's loader subsets it, ``image_size`` only for images:DIR (before a run
    folder is made)."""
    from vaekit.data import DATASETS, _canonical, _check_limit

    if cfg.image_size is not None and not cfg.dataset.startswith("images:"):
        raise ConfigError(f"image_size resizes a folder of images (dataset images:DIR); {cfg.dataset} has its "
                          "native size: leave image_size out")
    entry = DATASETS.get(_canonical(cfg.dataset))
    _check_limit(cfg.dataset, cfg.limit, entry.loader if entry is not None else None)
    if cfg.label_column is not None and not cfg.dataset.startswith("csv:"):
        raise ConfigError(f"label_column names a column of a CSV file (dataset csv:FILE); {cfg.dataset} carries "
                          "its labels otherwise: leave label_column out")
    if cfg.standardise is not None and not isinstance(cfg.standardise, bool):
        raise ConfigError(f"standardise must be true or false, got {cfg.standardise!r}")


def _validate_named(cfg: TrainConfig) -> None:
    """Each named kind (family, components, objective): a registered name and its settings, completed with the
    defaults (unknown names and keys: did-you-mean errors)."""
    for kind in NAMED_KINDS:
        name = getattr(cfg, kind)
        settings = getattr(cfg, f"{kind}_settings")
        if not isinstance(settings, dict):
            raise ConfigError(f"{kind}_settings must be a table of settings; got {settings!r}")
        if name is None:
            if settings:
                raise ConfigError(f"{kind} settings {sorted(settings)} need a {kind} name: give {kind} = NAME")
            continue
        if not isinstance(name, str):
            raise ConfigError(f"{kind} must be a name (one of {', '.join(_registry(kind).names())}); got {name!r}")
        spec = _registry(kind).spec({"name": name, **settings})
        settings.clear()
        settings.update({k: v for k, v in spec.items() if k != "name"})


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _validate_numbers(cfg: TrainConfig) -> None:
    """The integer and real settings within their ranges."""
    for names, low in ((TrainConfig.POSITIVE, 1), (TrainConfig.NONNEGATIVE, 0)):
        for name in names:
            value = getattr(cfg, name)
            high = TrainConfig.MAXIMUM.get(name, 2**31 - 1)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise ConfigError(f"{name} must be an integer >= {low}; got {value!r}")
            if value is not None and value > high:
                raise ConfigError(f"{name} must be an integer from {low} to {high}; got {value!r}")
    for name, low, strict in (("lr", 0.0, True), ("beta", 0.0, False), ("weight_decay", 0.0, False),
                              ("encoder_noise", 0.0, False), ("clip_grad", 0.0, True)):
        value = getattr(cfg, name)
        if value is not None and (not _finite(value) or (value <= low if strict else value < low)):
            raise ConfigError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}; got {value!r}")
    for name, value in (("temperature", cfg.temperature), ("temperature_min", cfg.temperature_min)):
        if not _finite(value) or value <= 0:
            raise ConfigError(f"{name} must be a finite number > 0; got {value!r}")
    if cfg.temperature_min > cfg.temperature:
        raise ConfigError(f"temperature_min ({cfg.temperature_min}) must not exceed temperature ({cfg.temperature})")
    if not _finite(cfg.anneal_rate) or cfg.anneal_rate < 0:
        raise ConfigError(f"anneal_rate must be a finite number >= 0; got {cfg.anneal_rate!r}")


def _validate_networks(cfg: TrainConfig) -> None:
    for key in ("hidden", "conv_channels"):
        value = getattr(cfg, key)
        if key == "hidden" and value == [] and cfg.model == "mlp":
            continue  # linear networks
        if not isinstance(value, list) or not value or any(
            isinstance(h, bool) or not isinstance(h, int) or not 1 <= h <= 2**31 - 1 for h in value
        ):
            raise ConfigError(
                f"{key} must be a non-empty list of integers >= 1 (e.g. [400] or 500,500); got {value!r}"
            )


def _validate_combinations(cfg: TrainConfig) -> None:
    """Settings that make sense alone but not together."""
    if cfg.posterior != "gaussian" and cfg.levels != 1:
        raise ConfigError(f"posterior {cfg.posterior} is for the one-level VAE, but levels is {cfg.levels}; "
                          "use levels 1 with a flow, or leave the posterior gaussian with levels 2")
    if cfg.init_from is not None and (not isinstance(cfg.init_from, str) or not cfg.init_from):
        raise ConfigError(f"init_from must be a run directory; got {cfg.init_from!r}")
    if cfg.train_only == "encoder" and cfg.init_from is None:
        raise ConfigError("train_only encoder keeps the generative model fixed, so it needs init_from: "
                          "a trained run to start from (--init-from RUN)")
    if _registry("prior").entry(cfg.prior).cls.fitted_after_training:
        raise ConfigError(f"prior {cfg.prior} is fitted to a trained model's codes afterwards "
                          "(vaekit.analysis.posthoc, vaekit sample --sampler), not trained; leave prior out")
    if cfg.train_only == "encoder" and _registry("prior").entry(cfg.prior).cls.trains_with_encoder:
        raise ConfigError(f"train_only encoder would change the {cfg.prior} prior too (its components are encoded "
                          "pseudo-inputs); use it with the standard prior")
    if not isinstance(cfg.dataset, str) or not cfg.dataset:
        raise ConfigError(f"dataset must be a data set name; got {cfg.dataset!r}")
    for key in ("compile", "conditional", "fast_step"):
        if not isinstance(getattr(cfg, key), bool):
            raise ConfigError(f"{key} must be true or false; got {getattr(cfg, key)!r}")
    if cfg.conditional and cfg.levels != 1:
        raise ConfigError("conditional is for the one-level VAE; use levels 1")
    refused = getattr(_registry("objective").entry(cfg.objective).cls, "encoder_noise_refused", None)
    if cfg.encoder_noise > 0 and refused:
        raise ConfigError(f"objective {cfg.objective} does not take {option('encoder_noise')} (it {refused}); "
                          "leave it out")


def _validate_log(cfg: TrainConfig) -> None:
    """The loggers: known names (a did-you-mean otherwise), each once; ``none`` alone is no logger."""
    from vaekit.loggers import check_names

    cfg.log = check_names(cfg.log)
    if cfg.log and cfg.fit == "em":
        raise ConfigError(f"log {','.join(cfg.log)}: the loggers report the trainer's epochs; fit em writes "
                          "metrics.jsonl only (leave --log out)")


def _validate_family(cfg: TrainConfig) -> None:
    """The model family's fixed parts: what ``family`` implies must not be contradicted (its own check), and the
    fitter must be one the family supports."""
    family = _registry("family").build(cfg.component("family"))
    if cfg.fit not in family.fitters:
        if cfg.fit == "em":
            raise ConfigError("fit em is the exact EM of the mixture of Bernoullis; use it with family "
                              "bernoulli-mixture")
        raise ConfigError(f"family {cfg.family} is fitted by {', '.join(family.fitters)}; got fit {cfg.fit}")
    if cfg.components is not None and not family.takes_components:
        raise ConfigError("components is the number of mixture components of family bernoulli-mixture; for the "
                          "Gaussian-mixture VAE give clusters (--clusters), for the VampPrior vamp_components")
    family.check(cfg)
    if _registry("posterior").entry(cfg.posterior).cls.autoencoder:  # a point mass q: an autoencoder
        if not _registry("objective").entry(cfg.objective).cls.trains_autoencoders:
            raise ConfigError(f"an autoencoder (posterior delta) has no density for objective {cfg.objective}: "
                              "train it with objective elbo (its reconstruction objective)")
        if cfg.prior != "standard" or cfg.levels != 1:
            raise ConfigError("an autoencoder (posterior delta) uses no prior in training (a Gaussian mixture is "
                              "fitted to its codes afterwards) and has one level; leave prior and levels out")
    _validate_estimator(cfg)


#: The estimators of a reparameterized q(z|x) (:mod:`vaekit.objectives.reparameterized`); the others are discrete.
REPARAMETERIZED_ESTIMATORS = ("pathwise", "stl", "dreg")


def _validate_estimator(cfg: TrainConfig) -> None:
    """The estimator fits the posterior (a reparameterized one's for a Gaussian or flow q, a discrete one's for a
    categorical or Bernoulli q, none of a density's for a point mass) and the objective (dreg: an importance-weighted
    bound); each refusal one line. What the model itself can do (log q at stopped parameters) is checked when it is
    built (:func:`vaekit.objectives.reparameterized.check_reparameterized_estimator`)."""
    if cfg.estimator is None:
        return
    posterior = _registry("posterior").entry(cfg.posterior).cls
    continuous = cfg.estimator in REPARAMETERIZED_ESTIMATORS
    if not continuous and not posterior.discrete:
        raise ConfigError(f"estimator {cfg.estimator} is for discrete latents (posterior categorical or bernoulli); "
                          f"posterior {cfg.posterior} is reparameterized: use "
                          f"{', '.join(REPARAMETERIZED_ESTIMATORS)}")
    if continuous and posterior.discrete:
        raise ConfigError(f"estimator {cfg.estimator} is for reparameterized latents; posterior {cfg.posterior} is "
                          "discrete: use enumerate, score, nvil, vimco, gumbel or straight-through")
    if cfg.estimator != "pathwise" and continuous and posterior.autoencoder:
        raise ConfigError(f"estimator {cfg.estimator} takes log q(z|x) at the draws; posterior {cfg.posterior} is a "
                          "point mass with no density: leave the estimator out")
    if cfg.compile and cfg.estimator in ("stl", "dreg"):
        raise ConfigError(f"estimator {cfg.estimator} acts on the draws outside the graph that compile traces; "
                          "train it without compile")
    objective = _registry("objective").entry(cfg.objective).cls
    refused = getattr(objective, "estimators_refused", None)
    if cfg.estimator in ("stl", "dreg") and refused:
        raise ConfigError(f"estimator {cfg.estimator} acts on the draws of z ~ q(z|x) that the ELBO and IWAE terms "
                          f"make; objective {cfg.objective} {refused}: leave the estimator out (pathwise)")
    if cfg.estimator == "dreg" and not getattr(objective, "importance_weighted", False):
        raise ConfigError(f"estimator dreg is for importance-weighted bounds (e.g. objective iwae); objective "
                          f"{cfg.objective} is not one: use estimator stl (DReG of the ELBO is STL)")


def _known_shape(dataset: str) -> tuple[int, ...] | None:
    """The image shape of a named data set (digits, the MNISTs), None for the user's own data."""
    if ":" in dataset:
        return None
    from vaekit.data import DATASETS, _canonical

    entry = DATASETS.get(_canonical(dataset))
    return tuple(entry.shape) if entry is not None else None


def check_model_size(cfg: TrainConfig, shape: tuple[int, ...], likelihood: dict[str, Any] | None = None) -> None:
    """Refuse settings whose model would not fit in memory to train (:mod:`vaekit.resources`), in one line
    saying which settings to lower; ``shape`` is the data's (C, H, W), ``likelihood`` the p(x|z) description
    (its decoder outputs per image size the decoder: 256 per sub-pixel for ``categorical-256``)."""
    from vaekit.resources import check_parameters, spec_parameters

    if cfg.levels == 2:
        spec = {"model": "hvae", "shape": list(shape), "latent": cfg.latent, "arch": cfg.model,
                "hidden": list(cfg.hidden), "conv_channels": list(cfg.conv_channels), "prior": cfg.component("prior")}
    else:
        net = {"name": "mlp", "hidden": list(cfg.hidden)} if cfg.model == "mlp" else \
            {"name": "conv", "channels": list(cfg.conv_channels), "hidden": cfg.hidden[0]}
        spec = {"model": "vae", "shape": list(shape), "latent": cfg.latent, "posterior": cfg.component("posterior"),
                "prior": cfg.component("prior"), "encoder": net, "decoder": net}
    outputs = _decoder_outputs(likelihood, shape, cfg.latent)
    if outputs is not None:
        spec["decoder_outputs"] = outputs
    flags = "--hidden, --latent" + (", --conv-channels" if cfg.model == "conv" else "")
    if cfg.posterior == "iaf":
        flags += ", --flow-hidden, --flow-layers"
    if cfg.prior == "vamp":
        flags += ", --vamp-components"
    try:
        check_parameters(spec_parameters(spec), f"the model for {cfg.dataset} images {tuple(shape)}",
                         f"the sizes ({flags})", training=True)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _decoder_outputs(likelihood: dict[str, Any] | None, shape: tuple[int, ...], latent: int) -> int | None:
    """Numbers per image the decoder gives the likelihood (prod of its ``param_shape``); None when it cannot be
    built from these settings (the model's construction then reports why)."""
    if likelihood is None:
        return None
    from vaekit.components import LIKELIHOODS

    try:
        return math.prod(LIKELIHOODS.build(dict(likelihood), shape=tuple(shape), latent=latent).param_shape)
    except Exception:  # noqa: BLE001 - bad settings are reported, with their name, where the model is built
        return None


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Accept the values a TOML/YAML file naturally holds (ints for floats, '400,400' lists)."""
    text = str(hint)
    if "list[str]" in text and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
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


def _unknown(key: str, source: str, candidates: list[str]) -> ConfigError:
    import difflib

    close = difflib.get_close_matches(key, candidates, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown setting {key!r} in {source}{hint}")


def _partial(values: dict[str, Any], source: str) -> dict[str, Any]:
    """A file's or the flags' settings as TrainConfig keys: the nested ``[model]`` table is flattened, flat
    component settings (``vamp_components``, ``flow_steps``) are kept aside under ``_pending``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source} must be a table of key = value settings")
    fields = _fields()
    flags = component_flags()
    out: dict[str, Any] = {}
    pending: dict[str, Any] = {}
    for key, value in values.items():
        k = str(key).replace("-", "_")
        if k == "model" and isinstance(value, dict):
            _model_table(value, source, out, pending)
        elif k in NAMED_KINDS and isinstance(value, dict):
            _component_table(k, value, source, out)
        elif k == "flow":  # the flag users know: --flow iaf is the posterior iaf
            if value is not None:
                out["posterior"] = value
        elif k in fields and not k.endswith("_settings"):
            out[k] = value
        elif k in flags:
            pending[k] = value
        else:
            raise _unknown(str(key), source, [f for f in fields if not f.endswith("_settings")] + list(flags))
    if pending:
        out["_pending"] = pending
    return out


def _component_table(kind: str, table: dict[str, Any], source: str, out: dict[str, Any]) -> None:
    table = dict(table)
    if "name" in table:
        out[kind] = table.pop("name")
    out[f"{kind}_settings"] = {str(k).replace("-", "_"): v for k, v in table.items()}


def _model_table(table: dict[str, Any], source: str, out: dict[str, Any], pending: dict[str, Any]) -> None:
    flags = component_flags()
    for key, value in table.items():
        k = str(key).replace("-", "_")
        if k == "arch":
            out["model"] = value
        elif k in MODEL_KEYS:
            out[k] = value
        elif k in KINDS:
            if isinstance(value, dict):
                _component_table(k, value, source, out)
            else:
                out[k] = value
        elif k == "flow":
            if value is not None:
                out["posterior"] = value
        elif k in flags:
            pending[k] = value
        else:
            raise _unknown(f"model.{key}", source, ["model.arch", *(f"model.{m}" for m in (*MODEL_KEYS, *KINDS))])


def _finish(partial: dict[str, Any], source: str) -> TrainConfig:
    """The TrainConfig of merged partial settings: flat component settings go to the chosen components."""
    fields = _fields()
    clean = {k: v for k, v in partial.items() if k != "_pending"}
    for k, hint in fields.items():
        if k in clean and not k.endswith("_settings"):
            clean[k] = _coerce(k, clean[k], hint)
    _family_defaults(clean)
    for key, value in partial.get("_pending", {}).items():
        owners = component_flags()[key]
        for kind, name, field_name in owners:
            chosen = clean.get(kind, fields_default(kind))
            if chosen == name:
                clean.setdefault(f"{kind}_settings", {})
                clean[f"{kind}_settings"] = {**clean[f"{kind}_settings"], field_name: value}
                break
        else:  # a setting of a component that is not chosen: checked, not used
            kind, name, field_name = owners[0]
            _registry(kind).settings({"name": name, field_name: value})
    for k, hint in fields.items():
        if k in clean and clean[k] is not None and not k.endswith("_settings"):
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


def _family_defaults(clean: dict[str, Any]) -> None:
    """Fill in what the model family implies (its prior, its posterior), unless the settings give it."""
    family = clean.get("family", "vae")
    if isinstance(family, str) and family in _registry("family"):
        _registry("family").entry(family).cls.defaults(clean)
    prior = clean.get("prior", "standard")
    resolved = standard_prior(clean.get("posterior", "gaussian"), prior, clean.get("prior_settings"))
    if resolved != prior:  # before the flat component flags go to the chosen prior (--prior-learned)
        clean["prior"] = resolved


def standard_prior(posterior: Any, prior: Any, settings: Any = None) -> Any:
    """``standard`` (with no settings) names the standard prior of the posterior's family: N(0, I) for
    real-valued codes, the uniform categorical for one-hot codes, Bernoulli(1/2) for binary ones. Any other
    prior, or a posterior name that is not registered, is returned unchanged."""
    if prior != "standard" or settings or not isinstance(posterior, str) or posterior not in _registry("posterior"):
        return prior
    return _registry("posterior").entry(posterior).cls.default_prior


def fields_default(name: str) -> Any:
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            return f.default
    raise KeyError(name)


def from_dict(values: dict[str, Any], source: str = "config") -> TrainConfig:
    """Build a TrainConfig from a mapping (flat keys, or the model's settings nested under ``model``),
    rejecting unknown keys with a suggestion."""
    try:
        return _finish(_partial(values, source), source)
    except ConfigError as exc:
        raise ConfigError(short(exc)) from None
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as exc:  # values of the wrong types
        raise ConfigError(short(f"{source}: a setting has a value of the wrong type ({type(exc).__name__}: "
                                f"{exc})")) from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file into a dict (``[train]`` table optional)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ConfigError(f"config file {short(p)} must end in .toml, .yaml, .yml or .json")
    text = _read_capped(p)
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = _load_yaml(text, p)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {p} must end in .toml, .yaml, .yml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # the parsers' own errors (TOMLDecodeError, YAMLError, JSONDecodeError)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(short(f"config file {p} is not valid {suffix[1:].upper()}: {first}")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold key = value settings, not a {type(data).__name__}")
    if "train" in data and isinstance(data["train"], dict) and len(data) == 1:
        data = data["train"]
    return data


#: The largest config file read (bytes); settings are a few hundred.
MAX_CONFIG_BYTES = 2**20
#: The most values a YAML file's aliases may expand to (a 265-byte alias bomb expands to billions).
MAX_YAML_NODES = 100_000


def _read_capped(p: Path) -> str:
    """The text of the config file ``p``: a regular file (a link to one is fine) of at most
    :data:`MAX_CONFIG_BYTES`; a FIFO, a device (``/dev/zero``) or a directory is refused before reading."""
    from vaekit.errors import CheckpointError
    from vaekit.io.files import read_capped

    try:
        data = read_capped(p, MAX_CONFIG_BYTES, "config", follow_links=True,
                           hint="give a TOML, YAML or JSON file of settings")
    except FileNotFoundError:
        raise ConfigError(f"config file {short(p)} not found") from None
    except CheckpointError as exc:  # a special file, or too large
        raise ConfigError(short(f"config file {exc}")) from None
    except OSError as exc:
        raise ConfigError(short(f"cannot read config file {p}: {exc.strerror or exc}")) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(short(f"config file {p} is not UTF-8 text: {exc}")) from None


def _load_yaml(text: str, p: Path) -> Any:
    """``yaml.safe_load`` that first counts the values the aliases expand to (at most :data:`MAX_YAML_NODES`)."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def size(n: Any) -> int:  # expanded values of a node, shared (aliased) nodes counted every time
            key = id(n)
            if key in sizes:
                return sizes[key]
            sizes[key] = 1  # a recursive alias: counted once
            total = 1
            if isinstance(n, yaml.SequenceNode):
                for child in n.value:
                    total += size(child)
                    if total > MAX_YAML_NODES:
                        break
            elif isinstance(n, yaml.MappingNode):
                for k, v in n.value:
                    total += size(k) + size(v)
                    if total > MAX_YAML_NODES:
                        break
            sizes[key] = total
            return total

        if size(node) > MAX_YAML_NODES:
            raise ConfigError(f"config file {short(p)}: its YAML aliases expand to more than {MAX_YAML_NODES} values "
                              "(an alias bomb?); write the settings out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def resolve(file_values: dict[str, Any] | None, flag_values: dict[str, Any]) -> TrainConfig:
    """defaults < file < flags. A flag that names another component than the file drops the file's settings
    of that component."""
    base = _partial(dict(file_values or {}), "the config file")
    flags = _partial({k: v for k, v in flag_values.items() if v is not None}, "the flags")
    merged = {k: v for k, v in base.items() if k != "_pending"}
    for kind in NAMED_KINDS:
        if kind in flags and flags[kind] != base.get(kind, fields_default(kind)):
            merged.pop(f"{kind}_settings", None)
    for key, value in flags.items():
        if key.endswith("_settings"):
            merged[key] = {**merged.get(key, {}), **value}
        elif key != "_pending":
            merged[key] = value
    pending = {**base.get("_pending", {}), **flags.get("_pending", {})}
    if pending:
        merged["_pending"] = pending
    try:
        return _finish(merged, "the settings")
    except ConfigError as exc:
        raise ConfigError(short(exc)) from None
    except (TypeError, ValueError, AttributeError, KeyError, RecursionError) as exc:
        raise ConfigError(short(f"a setting has a value of the wrong type ({type(exc).__name__}: {exc})")) from None
