"""The trainer: minibatch Adam on -ELBO (or -IWAE_k), validation, checkpoints, resume.

Two entry points share one loop. :func:`fit` trains a model the user built (any encoder and decoder) on tensors,
arrays or a vaekit data set; :func:`train` builds the model a :class:`~vaekit.config.TrainConfig` describes
(what ``vaekit train`` and the recipes do) and calls the same loop.

For in-memory data a batch is ``train[perm[i:i+B]]``, one indexing of a tensor with a shuffled permutation (no
per-sample Dataset/DataLoader overhead); dynamic binarization draws x ~ Bernoulli(grey levels) on the batch.
Each epoch ends with the validation ELBO (a fixed noise seed, so epochs are comparable), a line in
``RUN/metrics.jsonl``, the best weights in ``RUN/model.safetensors`` (+ ``model.json``) and the full training
state in ``RUN/checkpoint.safetensors`` (atomic writes), from which ``resume=True`` continues bit for bit.
Under ``torchrun`` each process takes its share of every epoch and DDP averages the gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import types
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit import runtime as D
from vaekit.config import TrainConfig, check_model_size, from_dict
from vaekit.discrete_objectives import (
    ESTIMATORS,
    DiscreteEstimator,
    EstimatorSettings,
    check_estimator,
    default_estimator,
    is_discrete,
)
from vaekit.errors import CheckpointError, ConfigError, DataError, VaekitError
from vaekit.io import checkpoint as ckpt
from vaekit.io import contract
from vaekit.io.runs import append_metrics, read_metrics, run_lock, trim_metrics
from vaekit.loggers import Logger, MultiLogger, check_names, image_grid, open_loggers
from vaekit.models import VAE, HierarchicalVAE, LatentVariableModel, load_model
from vaekit.objectives import elbo, iwae_terms, kl_weight
from vaekit.posthoc import fit_run_density, is_autoencoder
from vaekit.progress import bar_class, notebook_log
from vaekit.progress import enabled as progress_enabled
from vaekit.runtime import autocast_context, resolve_device, set_precision

__all__ = ["LossModule", "TrainResult", "TrainingDiverged", "fit", "model_for", "read_metrics", "resolve_device",
           "run_lock", "train"]

#: ``dataset`` in the config.json of a run trained by :func:`fit` on data given in memory.
IN_MEMORY = "in-memory"


class TrainingDiverged(VaekitError):
    """The loss became NaN or infinite, or the weights absurdly large; the message says which checkpoint (one
    whose weights were all finite and below :data:`WEIGHT_LIMIT`) is kept, or that none is."""


#: Weights of larger magnitude than this mean a diverged run: such weights are never written as a checkpoint.
WEIGHT_LIMIT = 1e15

#: Steps between the loop's looks at the losses (one wait for the device each time, none in between): a NaN or
#: infinite loss stops training at most this many steps after it, named by its own epoch and step.
CHECK_EVERY = 25

#: The settings a resume takes from the run's config.json unless the user gives them explicitly: they change
#: the run's arithmetic (a bf16 run resumed in fp32 would not continue bit for bit).
RUN_ARITHMETIC = ("precision", "eval_batch_size")


@dataclass
class _Options:
    overwrite: bool = False
    explicit: frozenset[str] | None = None  # TrainConfig fields the user gave (None: those unlike the defaults)
    check_model: Callable[[Any, TrainConfig], None] | None = None  # called with the built model, before work
    notice: Callable[[str], None] | None = None  # where a changed resume setting is said (default: the log)
    logging: frozenset[str] = frozenset()  # the LOG_SETTINGS this call chose (a resume keeps the run's others)
    loggers: tuple[Logger, ...] = ()  # Logger objects given in Python, besides the named ones
    opened: list[Logger] = dataclasses.field(default_factory=list)  # loggers to close when the run ends


def _differing_from_defaults(cfg: TrainConfig, names: Collection[str] = RUN_ARITHMETIC) -> frozenset[str]:
    """Those of the settings ``names`` whose value in ``cfg`` is not the default."""
    default = TrainConfig(dataset=cfg.dataset)
    return frozenset(name for name in names if getattr(cfg, name) != getattr(default, name))


def _weights_unsound(model: torch.nn.Module) -> str | None:
    """Why the weights cannot be kept (NaN, infinite, or above :data:`WEIGHT_LIMIT` in magnitude), or None."""
    largest = 0.0
    for p in model.parameters():
        if p.is_floating_point() and p.numel():
            value = float(p.detach().abs().max())
            if not math.isfinite(value):
                return "NaN or infinite weights"
            largest = max(largest, value)
    return f"weights of magnitude {largest:.3g}" if largest > WEIGHT_LIMIT else None


@dataclass
class TrainResult:
    run: Path
    epochs: int
    train_elbo: float
    valid_elbo: float
    best_valid_elbo: float
    best_epoch: int
    seconds: float
    stopped_early: bool
    best_valid_iwae: float | None = None  # the kept epoch's validation IWAE_k bound (IWAE objective only)
    selected_by: str = "valid ELBO"  # the validation score that chose the kept epoch
    best_score: float = math.nan  # its value at the kept epoch
    model: Any = dataclasses.field(default=None, repr=False, compare=False)  # the trained model (last epoch)

    def to_dict(self) -> dict[str, Any]:
        out = {"run": str(self.run), "epochs": self.epochs, "train_elbo": self.train_elbo,
               "valid_elbo": self.valid_elbo, "best_valid_elbo": self.best_valid_elbo,
               "best_epoch": self.best_epoch, "seconds": self.seconds, "stopped_early": self.stopped_early}
        if self.best_valid_iwae is not None:
            out["best_valid_iwae"] = self.best_valid_iwae
        out["selected_by"], out["best_score"] = self.selected_by, self.best_score
        return out


def selection(cfg: TrainConfig) -> tuple[str, Callable[[dict[str, float]], float]]:
    """The validation score that chooses the kept epoch, by name: the training objective (the IWAE_k bound for
    an IWAE run, the beta-weighted ELBO E_q[log p(x|z)] - beta KL for beta != 1, else the ELBO), or with
    ``select_by = "elbo"`` the ELBO whatever the objective (vaekit's behaviour before it followed the objective)."""
    if cfg.posterior == "delta" and cfg.select_by != "elbo":  # an autoencoder: no ELBO, its own objective
        if float(cfg.posterior_settings.get("latent_penalty", 0.0)) == 0.0:
            return "valid reconstruction", lambda v: v["reconstruction"]
        beta = cfg.beta
        return "valid autoencoder objective", lambda v: v["reconstruction"] - beta * v["kl"]
    if cfg.select_by == "elbo":
        return "valid ELBO", lambda v: v["elbo"]
    if cfg.objective == "iwae":
        return f"valid IWAE bound (k = {cfg.k})", lambda v: v["iwae"]
    if cfg.beta != 1.0:
        beta = cfg.beta
        return f"valid beta-ELBO (beta = {beta:g})", lambda v: v["reconstruction"] - beta * v["kl"]
    return "valid ELBO", lambda v: v["elbo"]


def likelihood_levels(spec: dict[str, Any]) -> int | None:
    """The grey levels L a likelihood ``spec`` is a probability over (2: binary pixels), or None (a density):
    its ``levels`` setting, else its class's ``levels``."""
    from vaekit.components import LIKELIHOODS

    entry = LIKELIHOODS.entry(spec["name"])
    if "levels" in entry.fields():
        return int(LIKELIHOODS.spec(spec)["levels"])
    return getattr(entry.cls, "levels", None)


def check_likelihood_data(cfg: TrainConfig, likelihood: dict[str, Any], binary: bool, levels: int | None) -> None:
    """Refuse, in one line, a likelihood that is no probability of the data: a likelihood of binary pixels
    (Bernoulli, PixelCNN) on non-binary data, or a discrete one on data of other grey levels (``levels``: the
    data's L, None for real values). Densities (Gaussian, continuous Bernoulli) take any data."""
    name, want = likelihood["name"], likelihood_levels(likelihood)
    have = 2 if binary else levels
    if want is None or want == have:
        return
    grey = f"{have} grey levels" if have is not None else "real-valued"
    if want == 2:
        discrete = (f"--likelihood discretized-logistic --pixel-levels {have}" if have is not None
                    else "--likelihood gaussian")
        raise ConfigError(f"likelihood {name} models binary pixels but {cfg.dataset} is not binary ({grey}); add "
                          f"--binarize dynamic or --binarize threshold, or use a likelihood of its values "
                          f"({discrete})")
    if have is None:
        raise ConfigError(f"likelihood {name} is a probability of {want} grey levels but {cfg.dataset} is "
                          "real-valued (not on a grid of grey levels); use a density (--likelihood gaussian)")
    raise ConfigError(f"likelihood {name} has levels {want} but {cfg.dataset} has {grey}; set its levels to "
                      f"{have} (--pixel-levels {have}, or levels = {have} under [model.likelihood])")


def model_for(cfg: TrainConfig, shape: tuple[int, ...], binary: bool, condition: int = 0,
              levels: int | None = None) -> LatentVariableModel:
    """The model ``cfg`` describes for data of ``shape`` (binary or not; ``levels``: its grey levels L, None
    for real values or unknown), conditional on ``condition`` classes; a likelihood that is no probability of
    such data is refused (:func:`check_likelihood_data`)."""
    likelihood = cfg.component("likelihood", "bernoulli" if binary else "gaussian")
    check_model_size(cfg, tuple(shape), likelihood)  # too large for memory: one line naming the settings, no work
    check_likelihood_data(cfg, likelihood, binary, levels)
    try:
        if cfg.levels == 2:
            return HierarchicalVAE(shape=shape, latent=cfg.latent, arch=cfg.model, hidden=cfg.hidden,
                                   activation=cfg.activation, conv_channels=cfg.conv_channels,
                                   prior=cfg.component("prior"), likelihood=likelihood)
        return VAE(latent=cfg.latent, shape=shape, posterior=cfg.component("posterior"), likelihood=likelihood,
                   prior=cfg.component("prior"), condition=condition, arch=cfg.model, hidden=cfg.hidden,
                   activation=cfg.activation, conv_channels=cfg.conv_channels)
    except ValueError as exc:
        raise ConfigError(f"cannot build the model for {cfg.dataset} images of shape {tuple(shape)}: {exc}") from None


def load_data(cfg: TrainConfig):
    from vaekit.data import load_dataset

    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, binarize=cfg.binarize, seed=cfg.seed)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=10)
    return None


def _batches(data: torch.Tensor, labels: torch.Tensor | None, rows: int):
    for start in range(0, data.shape[0], rows):
        yield data[start : start + rows], (labels[start : start + rows] if labels is not None else None)


@torch.no_grad()
def evaluate_elbo_sums(model: LatentVariableModel, data: torch.Tensor, batch_size: int, seed: int,
                       autocast: contextlib.AbstractContextManager | None = None,
                       labels: torch.Tensor | None = None) -> torch.Tensor:
    """[sum ELBO, sum reconstruction, sum KL] over ``data`` (float64), single sample, fixed noise."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=data.device).manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64, device=data.device)
    for x, y in _batches(data, labels, batch_size):
        with autocast or contextlib.nullcontext():
            t = elbo(model, x, y, generator=gen)
        totals += torch.stack([t.elbo.sum(), t.reconstruction.sum(), t.kl.sum()]).double()
    model.train(was_training)
    return totals


@torch.no_grad()
def evaluate_iwae_sum(model: LatentVariableModel, data: torch.Tensor, k: int, batch_size: int, seed: int,
                      autocast: contextlib.AbstractContextManager | None = None,
                      labels: torch.Tensor | None = None) -> torch.Tensor:
    """[sum over ``data`` of IWAE_k(x)] (float64, shape (1,)), fixed noise.

    Each chunk holds 8 x ``batch_size`` (example, draw) pairs, so memory stays bounded for any k."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=data.device).manual_seed(seed)
    total = torch.zeros(1, dtype=torch.float64, device=data.device)
    for x, y in _batches(data, labels, max(1, 8 * batch_size // k)):
        with autocast or contextlib.nullcontext():
            bound, _ = iwae_terms(model, x, k, gen, y=y)
        total += bound.double().sum()
    model.train(was_training)
    return total


# -- data in memory ---------------------------------------------------------------------------


def _as_images(data: Any, what: str) -> torch.Tensor:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{what} must be a tensor or array of images (N, C, H, W), or a vaekit data set; "
                        f"got a {type(data).__name__}")
    if data.dim() < 2 or data.shape[0] == 0:
        raise DataError(f"{what} must be a batch of examples (N, C, H, W) with N >= 1; got shape {tuple(data.shape)}")
    if not data.is_floating_point():
        data = data.float()
    if not bool(torch.isfinite(data).all()):
        raise DataError(f"{what} holds NaN or infinite values")
    return data.float()


def in_memory_dataset(train: Any, valid: Any = None) -> Any:
    """A data set (the attributes :func:`fit` reads) from tensors or arrays; ``(x, y)`` pairs carry labels.

    A vaekit :class:`~vaekit.data.Dataset` is returned as it is. Without ``valid`` nothing is held out: the
    kept weights are then those of the last epoch.
    """
    if hasattr(train, "train") and hasattr(train, "shape") and valid is None:
        return train

    def split(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(data, (tuple, list)) and len(data) == 2:
            x, y = _as_images(data[0], what), torch.as_tensor(data[1]).long()
            if y.shape != (x.shape[0],):
                raise DataError(f"the labels of {what} must be (N,) = ({x.shape[0]},); got {tuple(y.shape)}")
            return x, y
        return _as_images(data, what), None

    x, y = split(train, "train")
    if valid is not None:
        vx, vy = split(valid, "valid")
        if tuple(vx.shape[1:]) != tuple(x.shape[1:]):
            raise DataError(f"valid has examples of shape {tuple(vx.shape[1:])}, train {tuple(x.shape[1:])}")
        if (vy is None) != (y is None):
            raise DataError("give labels for both train and valid, or for neither")
    else:
        vx, vy = x[:0], (y[:0] if y is not None else None)
    binary = bool(((x == 0) | (x == 1)).all()) and bool(((vx == 0) | (vx == 1)).all())
    labels = {"train": y, "valid": vy, "test": None if y is None else y[:0]}
    classes = int(max(int(y.max()), int(vy.max()) if vy is not None and vy.numel() else 0)) + 1 \
        if y is not None else None
    return types.SimpleNamespace(name=IN_MEMORY, train=x, valid=vx, test=x[:0], shape=tuple(x.shape[1:]),
                                 binary=binary, dynamic=False, labels=labels.get,
                                 classes=tuple(str(c) for c in range(classes)) if classes else None)


def _labels(ds: Any, split: str) -> torch.Tensor | None:
    getter = getattr(ds, "labels", None)
    return getter(split) if callable(getter) else None


def _classes(ds: Any) -> int:
    classes = getattr(ds, "classes", None)
    if classes:
        return len(classes)
    y = _labels(ds, "train")
    if y is None or y.numel() == 0:
        raise DataError(f"{getattr(ds, 'name', 'the data set')} has no labels to condition on; "
                        "leave conditional off, or use a data set with labels (digits, mnist, ...)")
    return int(y.max()) + 1


# -- the trainer -----------------------------------------------------------------------------


def train(
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    dataset: Any = None,
    progress: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
    explicit: Collection[str] | None = None,
    check_model: Callable[[Any, TrainConfig], None] | None = None,
    notice: Callable[[str], None] | None = None,
    loggers: Any = None,
) -> TrainResult:
    """Train the model ``cfg`` describes, writing the run to ``out``; see the module docstring.

    ``out`` must be a new or empty folder or a vaekit run (:mod:`vaekit.io.contract`); a run that holds files
    is continued with ``resume`` or started afresh with ``overwrite`` (which removes only the run's own files).
    ``explicit`` names the config fields the user chose; on ``resume`` the others of :data:`RUN_ARITHMETIC` come
    from the run's config.json (None: the fields whose value differs from the defaults count as chosen).
    ``check_model(model, cfg)`` may refuse the built model before any training (e.g. a memory estimate).
    ``loggers`` (names, e.g. ``"tensorboard,csv"``, and/or :class:`vaekit.loggers.Logger` objects) replaces
    ``cfg.log``; see :mod:`vaekit.loggers`. ``progress`` None: a bar when stderr is a terminal or in a notebook;
    ``log`` None: the per-epoch lines are printed in a notebook, said nowhere otherwise."""

    if cfg.fit == "em":
        raise ConfigError("fit em (the exact EM of the mixture of Bernoullis) is trained by vaekit.em.train_em(cfg, "
                          "out), or vaekit train --family bernoulli-mixture --fit em")

    def build(cfg: TrainConfig, ds: Any) -> LatentVariableModel:
        condition = _classes(ds) if cfg.conditional else 0
        return model_for(cfg, tuple(ds.shape), bool(ds.binary), condition, getattr(ds, "levels", None))

    names, objects = _split_loggers(loggers)
    if names is not None:
        cfg = dataclasses.replace(cfg, log=names)
    opts = _Options(overwrite, None if explicit is None else frozenset(explicit), check_model, notice,
                    _logging_given(cfg, explicit, names), objects)
    return _run(cfg, _out_path(out), resume, dataset, progress, on_epoch, log, build, opts=opts)


def _out_path(out: str | Path) -> Path:
    """``out`` as a path; an empty name (which would mean the current folder) is refused."""
    if not isinstance(out, (str, Path)) or not str(out).strip():
        raise ConfigError(f"the run folder (--out) must be a folder name, got {out!r}; to use the current folder "
                          "say so with --out .")
    return Path(out)


def fit(
    model: LatentVariableModel,
    train: Any,
    valid: Any = None,
    *,
    out: str | Path,
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    objective: str = "elbo",
    k: int = 1,
    beta: float = 1.0,
    warmup: int = 0,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    loggers: Any = None,
    **settings: Any,
) -> TrainResult:
    """Train an already built ``model`` on ``train`` (tensor or array (N, C, H, W), an ``(x, y)`` pair of
    images and labels for a conditional model, or a vaekit data set), writing the run folder ``out``.

    Everything the command-line trainer does: checkpoints every epoch, bit-exact ``resume=True`` (pass the
    same model, built again), the run lock, early stopping (``patience``), DDP under ``torchrun``, a progress
    bar and ``metrics.jsonl``. ``valid`` (same forms) chooses the kept weights by the validation bound.
    ``loggers`` adds loggers (:mod:`vaekit.loggers`): names such as ``"tensorboard,csv"`` (files in ``out``)
    and/or :class:`~vaekit.loggers.Logger` objects; ``log_images_every`` (default 5) spaces their sample grids.
    By default a progress bar is shown on a terminal and in a notebook (a text bar there without ipywidgets),
    and in a notebook each epoch's line is printed (``log=print`` elsewhere, ``progress=False`` for none).
    ``settings`` are further :class:`~vaekit.config.TrainConfig` keys of training: ``lr_schedule``,
    ``weight_decay``, ``clip_grad``, ``patience``, ``eval_batch_size``, ``encoder_noise``, ``train_only``,
    ``device``, ``precision``, ``threads``, ``compile``, and for a discrete q(z|x) the ``estimator`` (see
    :mod:`vaekit.discrete_objectives`) with ``temperature``, ``temperature_min``, ``anneal_rate``. The model's
    own settings are its business: it is saved as it is (``model.json``, with user networks recorded by class
    name only).
    """
    allowed = {"lr_schedule", "weight_decay", "clip_grad", "patience", "eval_batch_size", "encoder_noise",
               "train_only", "device", "precision", "threads", "compile", "init_from", "estimator", "temperature",
               "temperature_min", "anneal_rate", "select_by", "log_images_every"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"fit() got an unknown setting {unknown[0]!r}{hint}; it takes {', '.join(sorted(allowed))}")
    if not isinstance(model, LatentVariableModel):
        raise ConfigError(f"fit() trains a vaekit model (e.g. vaekit.VAE(encoder=..., decoder=...)); got a "
                          f"{type(model).__name__}")
    ds = in_memory_dataset(train, valid)
    estimator = settings.pop("estimator", None)  # checked against the model itself, which cfg does not describe
    if estimator is not None and not isinstance(estimator, str):
        raise ConfigError(f"estimator must be a name ({', '.join(ESTIMATORS)}); got {estimator!r}")
    cfg = TrainConfig(dataset=getattr(ds, "name", IN_MEMORY) if getattr(ds, "name", None) else IN_MEMORY,
                      epochs=epochs, batch_size=batch_size, lr=lr, objective=objective, k=k, beta=beta, warmup=warmup,
                      seed=seed, conditional=bool(getattr(model, "condition", 0)), **settings)
    cfg.estimator = estimator
    names, objects = _split_loggers(loggers)
    if names is not None:
        cfg.log = names

    def build(cfg: TrainConfig, ds: Any) -> LatentVariableModel:
        if hasattr(model, "build"):
            model.build(tuple(ds.shape))
        return model

    opts = _Options(overwrite, frozenset(settings), logging=_logging_given(cfg, settings, names), loggers=objects)
    return _run(cfg, _out_path(out), resume, ds, progress, on_epoch, log, build, user_model=True, opts=opts)


def _run(cfg, run, resume, dataset, progress, on_epoch, log, build, user_model: bool = False,
         opts: _Options | None = None) -> TrainResult:
    opts = opts or _Options()
    progress = progress_enabled(progress)  # None: a terminal or a notebook
    log = log if log is not None else notebook_log()
    ctx = D.from_env()
    say = (log or (lambda msg: None)) if ctx.is_main else (lambda msg: None)
    device = resolve_device(cfg.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    joined = ctx.enabled and not torch.distributed.is_initialized()
    D.setup(ctx, device)
    args = (cfg, run, resume, dataset, progress, on_epoch, say, ctx, device, build, user_model, opts)

    def locked() -> TrainResult:
        try:
            result = _train_locked(*args)
        except BaseException:
            _close_loggers(opts, quietly=True)  # the training's own error is the one to report
            raise
        _close_loggers(opts)
        return result

    try:
        if not ctx.is_main:
            error = D.broadcast_object(None, ctx)  # rank 0 says whether it could take the run
            if error:
                raise CheckpointError(error)
            return locked()
        try:
            state = contract.check_out(run, resume=resume, overwrite=opts.overwrite, locked=False)  # before writes
            if resume and not opts.overwrite and state.has_checkpoint:
                _saved_config(run / "config.json")  # a run that cannot be resumed is refused before any write
            try:
                run.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CheckpointError(f"cannot create the run directory {run}: {exc.strerror}") from None
            lock = run_lock(run)
            lock.__enter__()
        except CheckpointError as exc:
            D.broadcast_object(str(exc), ctx)
            raise
        try:
            D.broadcast_object("", ctx)
            return locked()
        finally:
            lock.__exit__(None, None, None)
    finally:
        if joined:
            D.teardown()


#: The settings of how a run reports (not its arithmetic): a resume keeps the run's unless others are chosen.
LOG_SETTINGS = ("log", "log_images_every")


def _split_loggers(loggers: Any) -> tuple[list[str] | None, tuple[Logger, ...]]:
    """``loggers`` (names, as a list or one comma-separated string, and/or Logger objects) as (the names checked,
    or None when none is given; the objects)."""
    if loggers is None:
        return None, ()
    items = [loggers] if isinstance(loggers, (str, Logger)) else loggers
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"loggers takes logger names (e.g. 'tensorboard,csv') or vaekit.loggers.Logger objects; "
                          f"got {type(loggers).__name__}")
    names: list[str] | None = None
    objects = []
    for item in items:
        if isinstance(item, Logger):
            objects.append(item)
        elif isinstance(item, str):
            names = (names or []) + item.split(",")
        else:
            raise ConfigError(f"loggers takes logger names or vaekit.loggers.Logger objects; got a "
                              f"{type(item).__name__}")
    return (None if names is None else check_names(names, "loggers")), tuple(objects)


def _logging_given(cfg: TrainConfig, explicit: Collection[str] | None, names: list[str] | None) -> frozenset[str]:
    """The :data:`LOG_SETTINGS` this call chose: those in ``explicit`` (None: those unlike the defaults), and
    ``log`` when loggers were named."""
    given = set(explicit) & set(LOG_SETTINGS) if explicit is not None else _differing_from_defaults(cfg, LOG_SETTINGS)
    return frozenset(given | ({"log"} if names is not None else set()))


def _resume_logging(saved: TrainConfig, cfg: TrainConfig, opts: _Options, config_path: Path | None) -> None:
    """On resume: the run's loggers continue, unless this call chose others; a choice is written to the run's
    config.json (``config_path``; None on the ranks that write nothing), so that later resumes keep it."""
    changed = {name: getattr(cfg, name) for name in opts.logging if getattr(cfg, name) != getattr(saved, name)}
    if not changed:
        return
    for name, value in changed.items():
        setattr(saved, name, value)
    if config_path is None:
        return
    from vaekit.io.files import JSON_CAP, read_text_capped

    try:
        written = json.loads(read_text_capped(config_path, JSON_CAP, "config file"))
        written.update(changed)
        ckpt.atomic_write_text(config_path, json.dumps(written, indent=2) + "\n")
    except OSError as exc:
        raise ckpt.write_failed(config_path, exc) from None


def _start_loggers(cfg: TrainConfig, run: Path, opts: _Options, epochs_done: int) -> MultiLogger | None:
    """The run's loggers (``cfg.log`` and the Logger objects given), started from the metrics so far; None if none."""
    if not cfg.log and not opts.loggers:
        return None
    loggers = open_loggers(cfg.log, run, cfg.to_dict(), extra=opts.loggers)
    opts.opened.append(loggers)
    loggers.start([r for r in read_metrics(run) if r["epoch"] <= epochs_done] if epochs_done else [])
    return loggers


def _close_loggers(opts: _Options, quietly: bool = False) -> None:
    while opts.opened:
        loggers = opts.opened.pop()
        if quietly:
            with contextlib.suppress(Exception):
                loggers.close()
        else:
            loggers.close()


@torch.no_grad()
def sample_grid(model: LatentVariableModel, n: int = 64, seed: int = 0) -> np.ndarray | None:
    """The decoded means E[x|z] of ``n`` codes z ~ p(z) (drawn with ``seed``, the same codes every call) tiled
    into one uint8 image; None when the model's data are not images (C, H, W) or (H, W). The global random
    state is left as it was."""
    from vaekit.distributions import sample as draw

    shape = tuple(model.shape or ())
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[0] not in (1, 3)):
        return None
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            gen = torch.Generator(device=device).manual_seed(int(seed))
            z = draw(model.prior_distribution(), (n,), gen)
            y = torch.arange(n, device=device) % model.condition if getattr(model, "condition", 0) else None
            means = model.likelihood.mean(model.decode(z, y)).float()
    finally:
        model.train(was_training)
    return image_grid(means.reshape(n, *shape).cpu().numpy())


def _log_epoch(loggers: MultiLogger | None, epoch: int, row: dict[str, Any], model: LatentVariableModel,
               cfg: TrainConfig, autoencoder: bool) -> None:
    """The epoch's metrics row to the loggers and, every ``log_images_every`` epochs and at the last, the sample
    grid (not for an autoencoder: its density on z is fitted after training)."""
    if loggers is None:
        return
    loggers.log_scalars(epoch, row)
    every = cfg.log_images_every
    if loggers.wants_images and every and not autoencoder and (epoch % every == 0 or epoch == cfg.epochs):
        grid = sample_grid(model, seed=cfg.seed)
        if grid is not None:
            loggers.log_image(epoch, "samples", grid)


class LossModule(torch.nn.Module):
    """The objective as a module, so DistributedDataParallel and torch.compile can wrap it.

    forward(x, beta, y) -> (loss, [sum ELBO, sum reconstruction, sum KL]) with
    loss = -mean_x [reconstruction - beta * KL]  (ELBO)  or  -mean_x IWAE_k(x).
    With ``encoder_noise`` sigma > 0 the encoder sees x + sigma * eps, eps ~ N(0, I), in training
    (the decoder still scores the clean x; the objective stays a lower bound on log p(x)).
    """

    def __init__(self, model: LatentVariableModel, objective: str, k: int, encoder_noise: float = 0.0,
                 estimator: DiscreteEstimator | None = None):
        super().__init__()
        self.model, self.objective, self.k = model, objective, k
        self.encoder_noise = encoder_noise
        self.estimator = estimator  # a discrete q(z|x): the gradient estimator's surrogate is what is maximised

    def forward(self, x: torch.Tensor, beta: float, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x_enc = x + self.encoder_noise * torch.randn_like(x) if self.encoder_noise > 0 else None
        if self.estimator is not None:
            surrogate, terms, _ = self.estimator.surrogate(self.model, x, y, objective=self.objective, k=self.k,
                                                           beta=beta, encoder_input=x_enc)
            loss = -surrogate.mean()
        elif self.objective == "iwae":
            bound, terms = iwae_terms(self.model, x, self.k, encoder_input=x_enc, y=y)
            loss = -bound.mean()
        else:
            terms = elbo(self.model, x, y, samples=self.k, encoder_input=x_enc)
            loss = -(terms.reconstruction - beta * terms.kl).mean()
        with torch.no_grad():  # for the log: no graph
            stats = torch.stack([terms.elbo.sum(), terms.reconstruction.sum(), terms.kl.sum()])
        return loss, stats


def _saved_config(config_path: Path) -> TrainConfig:
    """The settings of the run being resumed, from its config.json; a missing or corrupt file is one line."""
    from vaekit.io.files import JSON_CAP, read_text_capped

    try:
        saved = json.loads(read_text_capped(config_path, JSON_CAP, "config file"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else ckpt.one_line(exc)[:160]
        raise CheckpointError(f"{config_path} is missing or corrupt ({reason}); cannot resume") from None
    if isinstance(saved, dict):
        saved.pop("trained_with", None)  # written by fit(), whose model is described by model.json
    return from_dict(saved, source=str(config_path))


def _train_locked(cfg, run, resume, dataset, progress, on_epoch, say, ctx, device, build, user_model,
                  opts: _Options) -> TrainResult:
    state_path = run / ckpt.STATE_FILE
    if ctx.is_main:
        state = contract.check_out(run, resume=resume, overwrite=opts.overwrite)  # again, now that we hold the lock
        ckpt.remove_stale_temp_files(run)  # we hold the lock: a temp file here is the leftover of a killed write
        if not state.marked or opts.overwrite:
            contract.write_marker(run)  # before any other file of the run (a pre-marker run gets it now)
    config_path = run / "config.json"
    if state_path.exists() and not resume and not opts.overwrite:
        raise CheckpointError(f"{run} already holds a training run; pass --resume to continue it "
                              "or choose another --out")
    if resume and state_path.exists():
        saved_cfg = _saved_config(config_path)
        saved_cfg.epochs, saved_cfg.patience = cfg.epochs, cfg.patience  # the run may be extended
        for hardware in ("device", "threads", "compile"):
            setattr(saved_cfg, hardware, getattr(cfg, hardware))  # may resume on other hardware
        explicit = opts.explicit if opts.explicit is not None else _differing_from_defaults(cfg)
        for name in RUN_ARITHMETIC:  # the run's own arithmetic, unless the user chose otherwise on purpose
            mine, theirs = getattr(cfg, name), getattr(saved_cfg, name)
            if name in explicit and mine != theirs:
                (opts.notice or say)(f"resuming with --{name.replace('_', '-')} {mine} instead of the run's {theirs}")
                setattr(saved_cfg, name, mine)
        _resume_logging(saved_cfg, cfg, opts, config_path if ctx.is_main else None)
        cfg = saved_cfg
    elif resume:
        say(f"no checkpoint in {run}: starting a new run")

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_precision(device, cfg.precision)
    amp = autocast_context(device, cfg.precision)

    ds = dataset if dataset is not None else load_data(cfg)
    train_x = ds.train.to(device=device, dtype=torch.float32).contiguous()
    valid_x = ds.valid.to(device=device, dtype=torch.float32).contiguous()
    if train_x.shape[0] == 0:
        raise VaekitError(f"the training split of {cfg.dataset} is empty")
    dynamic = bool(getattr(ds, "dynamic", False))

    if not user_model:
        torch.manual_seed(cfg.seed)
    model = build(cfg, ds).to(device)
    if opts.check_model is not None:
        opts.check_model(model, cfg)
    conditional = bool(getattr(model, "condition", 0))
    train_y = valid_y = None
    if conditional:
        train_y, valid_y = _labels(ds, "train"), _labels(ds, "valid")
        if train_y is None or valid_y is None:
            raise DataError("the model is conditional but the data has no labels; give (images, labels) pairs")
        train_y, valid_y = train_y.to(device), valid_y.to(device)
    if user_model:
        torch.manual_seed(cfg.seed)
    if ctx.enabled:  # every rank its own reparameterization and binarization noise
        torch.manual_seed(cfg.seed * 1_000_003 + 7919 * (ctx.rank + 1))
    if cfg.init_from is not None and not (resume and state_path.exists()):
        _init_weights(model, cfg.init_from, device)
    if cfg.family == "bernoulli-mixture" and not user_model:
        _seed_mixture_components(model, train_x, cfg.seed)  # a checkpoint, if resumed, replaces these weights
    estimator = _estimator_for(model, cfg, device)
    trainable = _trainable_parameters(model, cfg.train_only)
    if estimator is not None:
        trainable += list(estimator.parameters())  # NVIL's baseline
    optimizer = torch.optim.Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 **_fused_if_supported(device))
    scheduler = _make_scheduler(cfg, optimizer)

    sound_epoch: int | None = 0  # the epoch of the last checkpoint whose weights are sound (0: none written)
    progress_state: dict[str, Any] = {"epoch": 0, "best_valid_elbo": -math.inf, "best_epoch": 0,
                                      "since_best": 0, "seconds": 0.0, "scheduler": None, "last": None}
    if resume and state_path.exists():
        progress_state, rng = ckpt.load_training_state(run, model, optimizer, estimator)
        _check_resumed_state(state_path, progress_state, optimizer)
        _set_rng_state(_rank_rng(rng, ctx), device)
        if scheduler is not None and progress_state.get("scheduler"):
            scheduler.load_state_dict(progress_state["scheduler"])
        if ctx.is_main:
            trim_metrics(run / "metrics.jsonl", progress_state["epoch"])
        say(f"resuming {run} after epoch {progress_state['epoch']}")
        if progress_state["epoch"] and _weights_unsound(model):  # written before vaekit checked this
            sound_epoch = None
    elif ctx.is_main:
        if opts.overwrite:  # start afresh: the run's own files go, nothing else
            removed = contract.clear_run(run)
            if removed:
                say(f"--overwrite: removed {', '.join(removed)} from {run}")
        trim_metrics(run / "metrics.jsonl", 0)
        written = cfg.to_dict()
        if user_model:  # the model is described by model.json, not by these settings
            written.pop("model")
            written["trained_with"] = "vaekit.fit"
        try:
            ckpt.atomic_write_text(config_path, json.dumps(written, indent=2) + "\n")
        except OSError as exc:
            raise ckpt.write_failed(config_path, exc) from None

    n_all, bs = train_x.shape[0], cfg.batch_size
    n = n_all // ctx.world_size if ctx.enabled else n_all  # this rank's share of an epoch
    steps_per_epoch = math.ceil(n / bs)
    loss_module: torch.nn.Module = LossModule(model, cfg.objective, cfg.k, cfg.encoder_noise, estimator)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        loss_module = DistributedDataParallel(loss_module, device_ids=[device] if device.type == "cuda" else None)
    eager_module = loss_module
    if cfg.compile:
        loss_module = _compiled(loss_module)
    step_fn = _make_step(loss_module, model, optimizer, cfg, amp, ctx, eager=eager_module, estimator=estimator)
    batches = _BatchBuffer(train_x, bs)
    selected_by, score_of = selection(cfg)
    autoencoder = is_autoencoder(model)
    valid_share = valid_x[ctx.rank :: ctx.world_size] if ctx.enabled else valid_x
    valid_labels = (valid_y[ctx.rank :: ctx.world_size] if ctx.enabled else valid_y) if conditional else None
    stopped_early = False
    last = progress_state.get("last") or {}
    epoch = progress_state["epoch"]
    if sound_epoch is not None:
        sound_epoch = epoch
    loggers = _start_loggers(cfg, run, opts, epoch) if ctx.is_main else None
    tqdm = bar_class()  # tqdm.auto's choice, without its warning in a notebook that lacks ipywidgets

    while epoch < cfg.epochs:
        if cfg.patience is not None and progress_state["since_best"] >= cfg.patience and epoch > 0:
            stopped_early = True
            break
        t0 = time.perf_counter()
        model.train()
        beta = kl_weight(epoch, cfg.beta, cfg.warmup)
        perm = torch.randperm(n_all, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        perm = D.shard(perm, ctx).to(device)
        sums = torch.zeros(3, dtype=torch.float64, device=device)
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=None if progress is None else not progress, leave=False, dynamic_ncols=True)
        losses = torch.empty(steps_per_epoch, dtype=torch.float32, device=device)  # looked at every CHECK_EVERY
        checked = 0
        for step in range(steps_per_epoch):
            idx = perm[step * bs : (step + 1) * bs]
            x = batches.take(idx)
            if dynamic:
                x = torch.bernoulli(x)
            if estimator is not None:
                estimator.set_step(epoch * steps_per_epoch + step)
            loss, stats = step_fn(x, beta, train_y[idx] if conditional else None)
            losses[step] = loss
            sums += stats
            if step + 1 - checked >= CHECK_EVERY or step == steps_per_epoch - 1:
                bad = _first_nonfinite(losses[checked : step + 1])
                if bad is not None:
                    bar.close()
                    raise TrainingDiverged(
                        f"the loss became {bad[1]} at epoch {epoch + 1}, step {checked + bad[0] + 1}; training "
                        f"stopped and {_kept(sound_epoch, epoch, run)}; try a lower --lr or --clip-grad"
                    )
                checked = step + 1
                if not getattr(bar, "disable", False):
                    seen = min(n, (step + 1) * bs)
                    elbo_sum, kl_sum = sums[0].item(), sums[2].item()
                    bar.set_postfix(elbo=f"{elbo_sum / seen:.2f}", kl=f"{kl_sum / seen:.2f}", refresh=False)
            bar.update(1)
        bar.close()
        train_e, train_r, train_k = (D.all_reduce_sum(sums, ctx) / (n * ctx.world_size)).tolist()
        valid = _validate(model, valid_share, valid_x.shape[0], cfg, amp, ctx, valid_labels)
        if not math.isfinite(valid["elbo"]) and valid_x.shape[0]:
            raise TrainingDiverged(f"the validation ELBO became {valid['elbo']} after epoch {epoch + 1}; "
                                   f"{_kept(sound_epoch, epoch, run)}")
        unsound = _weights_unsound(model)
        if unsound:  # e.g. a huge --lr with no validation split to notice it: such weights are never kept
            raise TrainingDiverged(f"training diverged: {unsound} after epoch {epoch + 1}, not saved; "
                                   f"{_kept(sound_epoch, epoch, run)}; try a lower --lr or --clip-grad")
        epoch += 1
        seconds = time.perf_counter() - t0
        progress_state["seconds"] += seconds
        score = score_of(valid)  # the training objective chooses the kept epoch (see selection())
        best_score = progress_state.get("best_score", progress_state["best_valid_elbo"])
        improved = valid_x.shape[0] == 0 or score > best_score
        if improved:
            progress_state.update(best_valid_elbo=valid["elbo"], best_score=score, best_epoch=epoch, since_best=0)
        else:
            progress_state["since_best"] += 1
        if scheduler is not None:
            scheduler.step(score) if cfg.lr_schedule == "plateau" else scheduler.step()
        row = {"epoch": epoch, "train_elbo": train_e, "train_reconstruction": train_r, "train_kl": train_k,
               "valid_elbo": valid["elbo"], "valid_reconstruction": valid["reconstruction"],
               "valid_kl": valid["kl"], **({"valid_iwae": valid["iwae"]} if "iwae" in valid else {}),
               "beta": beta, "lr": optimizer.param_groups[0]["lr"], "seconds": seconds, "best": improved,
               **({"score": score, "selected_by": selected_by} if selected_by != "valid ELBO" else {}),
               **_estimator_fields(estimator), **({"objective": "autoencoder"} if autoencoder else {})}
        last = row
        progress_state["last"] = row
        progress_state["epoch"] = epoch
        progress_state["scheduler"] = scheduler.state_dict() if scheduler is not None else None
        rng = _gather_rng(_rng_state(device), ctx)
        if ctx.is_main:
            append_metrics(run / "metrics.jsonl", row)
            _log_epoch(loggers, epoch, row, model, cfg, autoencoder)
            if improved:
                model.save(run)
            ckpt.save_training_state(run, model, optimizer, progress_state, rng, estimator)
        if sound_epoch is not None:
            sound_epoch = epoch
        if epoch == 1 or epoch == cfg.epochs or epoch % max(1, cfg.epochs // 20) == 0:  # ~20 lines a run
            train_name = "train relaxed ELBO" if estimator is not None and estimator.relaxed else "train ELBO"
            if autoencoder:  # reconstruction - latent penalty: no ELBO exists for a point mass q
                train_name = "train objective"
            valid_name = "valid objective" if autoencoder else "valid ELBO"
            say(f"epoch {epoch:>4}  {train_name} {train_e:9.3f}  {valid_name} {valid['elbo']:9.3f}  "
                f"KL {train_k:7.3f}  {seconds:6.2f} s" + ("  *" if improved else ""))
        if on_epoch is not None:
            on_epoch(row)
    if ctx.is_main and not (run / ckpt.MODEL_FILE).exists():  # e.g. resumed a finished run
        model.save(run)
    if ctx.is_main and autoencoder:  # the density on z that makes "decoder + density" a model of x
        fit_run_density(run, train_x, seed=cfg.seed)
        say(f"fitted a Gaussian mixture to the {train_x.shape[0]} training codes: {run / ckpt.MODEL_FILE} now "
            "holds decoder + fitted density")
    D.barrier(ctx)
    return TrainResult(run=run, epochs=epoch, train_elbo=last.get("train_elbo", math.nan),
                       valid_elbo=last.get("valid_elbo", math.nan),
                       best_valid_elbo=progress_state["best_valid_elbo"], best_epoch=progress_state["best_epoch"],
                       seconds=progress_state["seconds"], stopped_early=stopped_early,
                       best_valid_iwae=progress_state.get("best_score") if cfg.objective == "iwae" else None,
                       selected_by=selected_by, best_score=progress_state.get("best_score", math.nan),
                       model=model if ctx.is_main else None)


def _check_resumed_state(path: Path, progress: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """What the loop reads from a checkpoint beyond ``checkpoint.load_training_state``'s checks: a number as the
    best score, and every Adam moment of a parameter that has any state."""
    score = progress.get("best_score", progress.get("best_valid_elbo"))
    if not isinstance(score, (int, float)) or isinstance(score, bool):  # NaN: a run without validation
        raise CheckpointError(f"{path} is corrupt: its progress record has best_score {str(score)[:40]!r}, "
                              "expected a number")
    for state in optimizer.state.values():
        missing = sorted({"step", "exp_avg", "exp_avg_sq"} - set(state)) if state else []
        if missing:
            raise CheckpointError(f"{path} is corrupt: the optimizer state lacks {', '.join(missing)} of a "
                                  "parameter")


def _kept(sound_epoch: int | None, epochs_done: int, run: Path) -> str:
    """What is kept after a divergence: the last checkpoint with sound weights, or plainly none."""
    if epochs_done == 0:
        return "no checkpoint had been written yet"
    if sound_epoch is None:
        return (f"no checkpoint with sound weights exists (the one after epoch {epochs_done} in {run} already holds "
                "diverged weights); start afresh with --overwrite")
    return f"the last good checkpoint (after epoch {sound_epoch}, finite weights) is kept in {run}"


def _compiled(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(module)`` for fixed shapes (a partial last batch runs eagerly, see :func:`_make_step`)."""
    try:
        return torch.compile(module, dynamic=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the compiler stack is one line
        raise VaekitError(f"--compile is not available here ({ckpt.one_line(exc)[:160]}); train without "
                          "--compile") from None


def _compile_failure(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor")) or type(exc).__name__ == "BackendCompilerFailed"


class _BatchBuffer:
    """Training batches ``data[idx]`` gathered by ``index_select`` into one buffer reused every step (contiguous,
    no allocation per step); a batch of another size (the partial last one) gets its own tensor. A batch is
    valid until the next ``take``: the step that uses it is done (its backward pass included) by then."""

    def __init__(self, data: torch.Tensor, rows: int):
        self.data = data
        self.buffer = torch.empty((min(rows, data.shape[0]), *data.shape[1:]), dtype=data.dtype, device=data.device)

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[0] != self.buffer.shape[0]:
            return self.data.index_select(0, idx)
        return torch.index_select(self.data, 0, idx, out=self.buffer)


def _first_nonfinite(losses: torch.Tensor) -> tuple[int, float] | None:
    """(position, value) of the first NaN or infinite entry of ``losses``, or None; one wait for the device."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return None
    first = int((~finite).nonzero()[0, 0])
    return first, float(losses[first])


def _skip_flag(optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """A 0-d tensor on the parameters' device that a fused Adam reads before each update (``found_inf``: 1 skips
    the update and leaves its step count as it was), or None where the optimizer is not fused."""
    if not optimizer.defaults.get("fused"):
        return None
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        return None
    flag = torch.zeros((), dtype=torch.float32, device=params[0].device)
    optimizer.found_inf = flag  # read by torch.optim.Adam.step (the hook GradScaler uses)
    return flag


class _AdamUpdate:
    """``optimizer.step()`` for a fused ``torch.optim.Adam``, without the per-call Python work around its kernel
    (hooks, grouping by device, profiler records): the same ``_fused_adam_`` call on the same tensors, so the same
    numbers. The first step (which creates the state), optimizers or settings it does not cover, and registered
    hooks go through ``optimizer.step()``."""

    def __init__(self, optimizer: torch.optim.Optimizer, found_inf: torch.Tensor | None):
        self.optimizer, self.found_inf = optimizer, found_inf
        self.direct = type(optimizer) is torch.optim.Adam and hasattr(torch, "_fused_adam_") and all(
            group.get("fused") and not any(group.get(k) for k in ("amsgrad", "maximize", "differentiable",
                                                                    "capturable", "decoupled_weight_decay"))
            and not any(torch.is_tensor(v) for v in (group["lr"], *group["betas"]))
            for group in optimizer.param_groups)

    def __call__(self) -> None:
        opt = self.optimizer
        work = self._work() if self.direct else None
        if work is None:
            opt.step()
            return
        for group, params, grads, states in work:
            steps = [st["step"] for st in states]
            torch._foreach_add_(steps, 1)
            torch._fused_adam_(params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states],
                               [], steps, amsgrad=False, lr=group["lr"], beta1=group["betas"][0],
                               beta2=group["betas"][1], weight_decay=group["weight_decay"], eps=group["eps"],
                               maximize=False, grad_scale=None, found_inf=self.found_inf)
            if self.found_inf is not None:
                torch._foreach_sub_(steps, [self.found_inf] * len(steps))

    def _work(self) -> list[tuple[dict, list, list, list]] | None:
        from torch.optim import optimizer as optim_module

        opt = self.optimizer
        if (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                or getattr(optim_module, "_global_optimizer_pre_hooks", None)
                or getattr(optim_module, "_global_optimizer_post_hooks", None)):
            return None
        work = []
        for group in opt.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [opt.state.get(p) for p in params]
            if not all(states) or len({(p.device, p.dtype) for p in params}) > 1:
                return None  # state not created yet, or tensors the kernel takes in separate calls
            work.append((group, params, [p.grad for p in params], states))
        return work


def _make_step(loss_module, model: LatentVariableModel, optimizer: torch.optim.Optimizer, cfg: TrainConfig, amp,
               ctx: D.DistContext, eager: torch.nn.Module | None = None,
               estimator: torch.nn.Module | None = None):
    """One update on a batch; returns (loss, [sum ELBO, sum reconstruction, sum KL]) for logging.

    No step waits for the host: once a loss is NaN or infinite, this and every later update is skipped on the
    device (a fused optimizer's ``found_inf`` flag; other optimizers check the loss on the host), and the loop
    finds the first such loss when it next looks (every :data:`CHECK_EVERY` steps) and stops with its message.
    With ``eager`` (the module ``loss_module`` compiles), a batch of another size than ``cfg.batch_size`` (the
    partial last one) runs eagerly instead of recompiling the graph for its shape."""
    params = [p for p in model.parameters() if p.requires_grad]
    if estimator is not None:
        params += list(estimator.parameters())
    compiled = eager is not None and eager is not loss_module
    skip = _skip_flag(optimizer)
    update = _AdamUpdate(optimizer, skip)
    diverged = [False]  # without a fused optimizer: the host's record that a loss was not finite

    def step(x: torch.Tensor, beta: float, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        module = eager if compiled and x.shape[0] != cfg.batch_size else loss_module
        with amp:
            try:
                loss, stats = module(x, beta) if y is None else module(x, beta, y)
            except Exception as exc:
                if module is loss_module and compiled and _compile_failure(exc):
                    raise VaekitError(f"--compile failed in this environment ({ckpt.one_line(exc)[:160]}); "
                                      "train without --compile") from None
                raise
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        loss = loss.detach()
        if ctx.enabled:  # every rank must see a NaN on any rank, or the others would wait for it
            loss = D.all_reduce_sum(loss.clone(), ctx) / ctx.world_size
        if skip is not None:  # sticky: after a non-finite loss the weights stay as they were before it
            skip.masked_fill_(~torch.isfinite(loss), 1.0)
            update()
        elif not diverged[0] and bool(torch.isfinite(loss)):
            optimizer.step()
        else:
            diverged[0] = True
        return loss, stats.double()

    return step


@torch.no_grad()
def _seed_mixture_components(model: LatentVariableModel, train_x: torch.Tensor, seed: int) -> None:
    """Start a mixture of Bernoullis trained as a VAE from K distinct training images, as EM's seeding does:
    component k's pixel logits logit(0.05 + 0.9 x_k) (its decoder's row), the decoder bias 0, and the linear
    encoder at the exact posterior of that model. From the default initialisation every component decodes nearly
    the same image, q(z|x) is nearly uniform, and training collapses the mixture onto one component."""
    decoder = model.decoder
    linear = decoder[-1] if isinstance(decoder, torch.nn.Sequential) else None
    if not isinstance(linear, torch.nn.Linear) or len(decoder) != 1:
        return  # not the linear table of the bernoulli-mixture family
    k = linear.weight.shape[1]
    gen = torch.Generator().manual_seed(seed * 7919 + 17)
    rows = torch.randperm(train_x.shape[0], generator=gen)[:k]
    images = train_x[rows.to(train_x.device)].reshape(len(rows), -1).to(linear.weight.dtype)
    logits = torch.logit(0.05 + 0.9 * images)  # (K, D)
    linear.weight[:, : len(rows)] = logits.T
    linear.bias.zero_()
    encoder = model.encoder
    first = encoder[0] if isinstance(encoder, torch.nn.Sequential) and len(encoder) == 1 else None
    if isinstance(first, torch.nn.Linear) and first.weight.shape[0] == len(rows):
        # q(z|x) starts at the exact posterior of this initial model, which is linear in x:
        # log p(z = k | x) = x . l_k - sum_d softplus(l_kd) + const  (uniform mixture weights)
        first.weight.copy_(logits)
        first.bias.copy_(-torch.nn.functional.softplus(logits).sum(-1))


def _estimator_for(model: LatentVariableModel, cfg: TrainConfig, device: torch.device) -> DiscreteEstimator | None:
    """The gradient estimator of a model with a discrete q(z|x) (``cfg.estimator``, or enumeration where the
    latent space is small and Gumbel-softmax otherwise); None for a reparameterized model."""
    if not is_discrete(model):
        if cfg.estimator is not None:
            raise ConfigError(f"--estimator {cfg.estimator} is for discrete latents (--posterior categorical or "
                              "bernoulli); this model's q(z|x) is reparameterized")
        return None
    name = cfg.estimator or default_estimator(model)
    check_estimator(model, name, cfg.objective, cfg.k)
    settings = EstimatorSettings(temperature=cfg.temperature, temperature_min=cfg.temperature_min,
                                 anneal_rate=cfg.anneal_rate)
    with torch.random.fork_rng(devices=[]):  # the baseline's weights do not move the model's random stream
        torch.manual_seed(cfg.seed + 1)
        estimator = DiscreteEstimator(name, math.prod(model.shape), settings)
    return estimator.to(device)


def _estimator_fields(estimator: DiscreteEstimator | None) -> dict[str, Any]:
    """What a metrics row says about the estimator: its name and, for a relaxation, that the training ELBO is
    the relaxed objective at the temperature of the epoch's last step (validation is always discrete)."""
    if estimator is None:
        return {}
    out: dict[str, Any] = {"estimator": estimator.name}
    if estimator.name in ("gumbel", "straight-through"):
        out["temperature"] = float(estimator.temperature)
    if estimator.relaxed:
        out["train_bound"] = "relaxed"
    return out


def _fused_if_supported(device: torch.device) -> dict[str, bool]:
    """Adam's fused kernel (one pass over all parameters) where this torch build has it."""
    try:
        torch.optim.Adam([torch.zeros(1, device=device, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return {}
    return {"fused": True}


def _validate(model: LatentVariableModel, share: torch.Tensor, total: int, cfg: TrainConfig, amp,
              ctx: D.DistContext, labels: torch.Tensor | None = None):
    """Mean validation ELBO and its terms; with the IWAE objective also the mean IWAE_k bound (nats)."""
    iwae = cfg.objective == "iwae"
    if total == 0:
        return {"elbo": math.nan, "reconstruction": math.nan, "kl": math.nan, **({"iwae": math.nan} if iwae else {})}
    seed = cfg.seed + 7919 + ctx.rank
    sums = evaluate_elbo_sums(model, share, cfg.eval_batch_size, seed, amp, labels)
    if iwae:
        sums = torch.cat([sums, evaluate_iwae_sum(model, share, cfg.k, cfg.eval_batch_size, seed, amp, labels)])
    sums = D.all_reduce_sum(sums, ctx)
    values = (sums / total).tolist()
    return dict(zip(("elbo", "reconstruction", "kl", "iwae"), values))


def _init_weights(model: torch.nn.Module, run: str, device: torch.device) -> None:
    """Copy the best weights of ``run`` into ``model``; the architectures must match."""
    if not Path(run).exists():
        raise ConfigError(f"init_from: run directory {run} not found; give a directory written by 'vaekit train'")
    try:
        source = load_model(run, device)
    except VaekitError as exc:
        raise ConfigError(f"init_from: {exc}") from None
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise ConfigError(
            f"init_from {run} holds another architecture than this run ({detail[-1].strip() if detail else exc}); "
            f"give the same model settings, e.g. --config {Path(run) / 'config.json'}"
        ) from None


def _trainable_parameters(model: torch.nn.Module, train_only: str) -> list[torch.nn.Parameter]:
    """All parameters, or (``encoder``) those of q(z|x) alone, the others frozen (requires_grad False)."""
    if train_only == "all":
        return list(model.parameters())
    trainable = model.inference_parameters()
    keep = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return trainable


def _rank_rng(rng: dict[str, torch.Tensor], ctx: D.DistContext) -> dict[str, torch.Tensor]:
    """This rank's RNG states from a checkpoint (``torch.<rank>`` under torchrun)."""
    if not ctx.enabled:
        return rng
    suffix = f".{ctx.rank}"
    mine = {k[: -len(suffix)]: v for k, v in rng.items() if k.endswith(suffix)}
    if not mine:
        raise CheckpointError(f"the checkpoint holds no RNG state for rank {ctx.rank}; resume with the same "
                              "number of processes it was written with")
    return mine


def _gather_rng(state: dict[str, torch.Tensor], ctx: D.DistContext) -> dict[str, torch.Tensor]:
    if not ctx.enabled:
        return state
    out = {}
    for key, value in state.items():
        for r, t in enumerate(D.gather_tensors(value.to(_collective_device(ctx)), ctx)):
            out[f"{key}.{r}"] = t.cpu()
    return out


def _collective_device(ctx: D.DistContext) -> torch.device:
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "gloo"
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
