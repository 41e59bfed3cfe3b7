"""The trainer's entry points: :func:`train` builds the model a config describes, :func:`fit` trains a model the
user built; both open the run folder and hand the work to the loop (:mod:`vaekit.training.loop`)."""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaekit import runtime as D
from vaekit.bounds.sizing import check_draws
from vaekit.config import TrainConfig, from_dict, training_keys
from vaekit.data.given import check_classes
from vaekit.errors import (
    ArgumentError,
    CheckpointError,
    ConfigError,
    DataError,
    VaekitError,
    option,
    python_call,
    unknown_keyword,
)
from vaekit.io import checkpoint as ckpt
from vaekit.io.runfolder import RunFolder
from vaekit.loggers import Logger, check_available
from vaekit.models import FAMILIES, LatentVariableModel
from vaekit.objectives.figures import dequantization_nats, dequantize, dequantizes
from vaekit.objectives.reparameterized import estimator_names
from vaekit.objectives.support import check_support
from vaekit.progress import enabled as progress_enabled
from vaekit.progress import notebook_log
from vaekit.runtime import autocast_context, resolve_device, set_precision
from vaekit.training.adam import Adam
from vaekit.training.build import _estimator_for, _init_weights, _trainable_parameters, model_for, objective_for
from vaekit.training.callbacks import (
    Callback,
    Checkpoint,
    CodeDensity,
    EarlyStopping,
    EpochLines,
    KeepBest,
    Loggers,
    MetricsFile,
    OnEpoch,
)
from vaekit.training.data import IN_MEMORY, _classes, _labels, _semi_supervised_labels, in_memory_dataset, load_data
from vaekit.training.fast_step import fast_step_for
from vaekit.training.loop import Loop, TrainData
from vaekit.training.reporting import (
    _close_loggers,
    _logging_given,
    _resume_logging,
    _split_loggers,
    _start_loggers,
)
from vaekit.training.state import (
    RUN_ARITHMETIC,
    _check_resumed_state,
    _differing_from_defaults,
    _make_scheduler,
    _rank_rng,
    _set_rng_state,
    _weights_unsound,
)
from vaekit.training.step import LossModule, _compiled, _fused_if_supported, _make_step


@dataclass
class _Options:
    overwrite: bool = False
    explicit: frozenset[str] | None = None  # TrainConfig fields the user gave (None: those unlike the defaults)
    check_model: Callable[[Any, TrainConfig], None] | None = None  # called with the built model, before work
    notice: Callable[[str], None] | None = None  # where a changed resume setting is said (default: the log)
    logging: frozenset[str] = frozenset()  # the LOG_SETTINGS this call chose (a resume keeps the run's others)
    loggers: tuple[Logger, ...] = ()  # Logger objects given in Python, besides the named ones
    opened: list[Logger] = dataclasses.field(default_factory=list)  # loggers to close when the run ends


@dataclass
class TrainResult:
    """What a training run ended with: its folder, epochs, the last and the kept epoch's figures (nats)."""

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
    model: LatentVariableModel | None = dataclasses.field(default=None, repr=False, compare=False,
                                                          metadata={"json": False})  # the trained model (last epoch)

    def kept(self) -> str:
        """Which epoch's weights were kept and by which validation figure, in words."""
        if self.best_valid_iwae is not None:
            return f"kept epoch {self.best_epoch}: valid IWAE bound {self.best_valid_iwae:.3f}"
        if self.selected_by != "valid ELBO":
            return f"kept epoch {self.best_epoch}, chosen by its {self.selected_by} {self.best_score:.3f}"
        return f"best {self.best_valid_elbo:.3f} at epoch {self.best_epoch}"

    def __str__(self) -> str:
        """What ``vaekit train`` prints at the end: the epochs, the time, the last validation figure and the kept
        epoch (without validation data: the last training ELBO), and the run folder."""
        kept = self.kept()
        what = "valid objective (reconstruction - penalty)" if getattr(self.model, "is_autoencoder", False) \
            else "valid ELBO"
        if math.isfinite(self.valid_elbo):
            figure = f"{what} {self.valid_elbo:.3f} nats ({kept})"
        else:
            figure = f"train ELBO {self.train_elbo:.3f} nats (no validation data: the last epoch's weights kept)"
        return (f"trained {self.epochs} epochs in {self.seconds:.1f} s: {figure}"
                + (" - stopped early" if self.stopped_early else "") + f"\nrun written to {self.run}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (the model left out, ``best_valid_iwae`` only where there is one)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("json", True) and not (f.name == "best_valid_iwae" and value is None):
                out[f.name] = str(value) if isinstance(value, Path) else value
        return out


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
        raise ConfigError("fit em (the exact EM of the mixture of Bernoullis) is trained by "
                          "vaekit.training.em.train_em(cfg, out), or vaekit train --family bernoulli-mixture --fit em")

    def build(cfg: TrainConfig, ds: Any) -> LatentVariableModel:
        labelled = cfg.conditional or getattr(FAMILIES.entry(cfg.family).cls, "needs_labels", False)
        condition = _classes(ds, cfg.family if not cfg.conditional else None) if labelled else 0
        return model_for(cfg, tuple(ds.shape), bool(ds.binary), condition, getattr(ds, "levels", None),
                         bool(getattr(ds, "tabular", False)))

    names, objects = _split_loggers(loggers)
    if names is not None:
        cfg = dataclasses.replace(cfg, log=names)
    opts = _Options(overwrite, None if explicit is None else frozenset(explicit), check_model, notice,
                    _logging_given(cfg, explicit, names), objects)
    return _run(cfg, RunFolder(out), resume, dataset, progress, on_epoch, log, build, opts=opts)


def fit(
    model: LatentVariableModel,
    train: Any,
    valid: Any = None,
    *,
    out: str | Path,
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    objective: str | dict[str, Any] = "elbo",
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
    images and labels for a conditional model, a torch ``Dataset`` or ``DataLoader``, or a vaekit data set),
    writing the run folder ``out``. The data are checked against the model's likelihood as ``vaekit train``
    checks a data set (:mod:`vaekit.data.given`, :mod:`vaekit.objectives.support`), before any work.

    Everything the command-line trainer does: checkpoints every epoch, bit-exact ``resume=True`` (pass the
    same model, built again), the run lock, early stopping (``patience``), DDP under ``torchrun``, a progress
    bar and ``metrics.jsonl``. ``valid`` (same forms) chooses the kept weights by the validation bound.
    ``loggers`` adds loggers (:mod:`vaekit.loggers`): names such as ``"tensorboard,csv"`` (files in ``out``)
    and/or :class:`~vaekit.loggers.Logger` objects; ``log_images_every`` (default 5) spaces their sample grids.
    By default a progress bar is shown on a terminal and in a notebook (a text bar there without ipywidgets),
    and in a notebook each epoch's line is printed (``log=print`` elsewhere, ``progress=False`` for none).
    ``objective`` is a registered objective (:mod:`vaekit.objectives`): a name, or ``{"name": ..., **settings}``;
    by default the model's own (the ELBO, or an autoencoder's reconstruction objective). ``settings`` are further
    training keys (:func:`vaekit.config.training_keys`): ``lr_schedule``, ``weight_decay``, ``clip_grad``,
    ``patience``, ``eval_batch_size``, ``encoder_noise``, ``train_only``, ``device``, ``precision``, ``threads``,
    ``compile``, the ``estimator`` (a reparameterized q(z|x)'s pathwise, stl or dreg, see
    :mod:`vaekit.objectives.reparameterized`; a discrete one's, see :mod:`vaekit.objectives.discrete`, with
    ``temperature``, ``temperature_min``, ``anneal_rate``), and the flat settings of the objectives. The model's
    own settings are its business: it is saved as it is (``model.json``, with user networks recorded by class
    name only).
    """
    with python_call():  # messages name fit()'s arguments (out=, resume=True), not vaekit train's flags
        _check_fit_arguments(model, on_epoch, log)
        ds = in_memory_dataset(train, valid)
        _check_fit_data(model, ds)
        given = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "objective": objective, "k": k, "beta": beta,
                 "warmup": warmup, "seed": seed}
        cfg = _fit_config(model, ds, given, settings)
        names, objects = _split_loggers(loggers)
        if names is not None:
            cfg.log = names
        opts = _Options(overwrite, frozenset(settings), logging=_logging_given(cfg, settings, names),
                        loggers=objects)
        return _run(cfg, RunFolder(out), resume, ds, progress, on_epoch, log, _builder(model), user_model=True,
                    opts=opts)


def _builder(model: LatentVariableModel) -> Callable[[TrainConfig, Any], LatentVariableModel]:
    """The ``build`` of a :func:`fit` run: the user's model, built for the data's shape where it builds lazily."""
    def build(cfg: TrainConfig, ds: Any) -> LatentVariableModel:
        if hasattr(model, "build"):
            model.build(tuple(ds.shape))
        return model

    return build


def _check_fit_arguments(model: Any, on_epoch: Any, log: Any) -> None:
    """fit()'s arguments of the wrong type, each refused in one :class:`ArgumentError` naming it."""
    if not isinstance(model, LatentVariableModel):
        raise ArgumentError(f"fit() trains a vaekit model (model: e.g. vaekit.VAE(latent=16, shape=(1, 28, 28)), or "
                            f"vaekit.load(RUN)); got a {type(model).__name__}")
    for name, value, called in (("on_epoch", on_epoch, "each epoch's metrics (a dict)"), ("log", log, "each line")):
        if value is not None and not callable(value):
            raise ArgumentError(f"{name} must be a function, called with {called}, or None; got a "
                                f"{type(value).__name__}")


def _check_fit_data(model: LatentVariableModel, ds: Any) -> None:
    """The data against the model's likelihood (:func:`vaekit.objectives.support.check_support`), as ``vaekit
    train`` checks a data set against its likelihood; the model is built for the data's shape first."""
    if hasattr(model, "build"):
        model.build(tuple(ds.shape))  # what fit() does next anyway: its likelihood depends on the shape
    if ds.name == IN_MEMORY:
        check_support(model, ds.train, "train")
        check_support(model, ds.valid, "valid")
        for split in ("train", "valid"):
            check_classes(ds.labels(split), int(getattr(model, "condition", 0) or 0), f"the labels of {split}")
        return
    for split in (ds.train, ds.valid):  # a vaekit data set, given as train: what it says of its values
        check_support(model, split, "train", binary=bool(ds.binary), levels=getattr(ds, "levels", None),
                      binarize=f"vaekit.load_dataset({ds.name!r}, binarize='dynamic')")


def _check_fit_memory(model: LatentVariableModel, ds: Any, cfg: TrainConfig) -> None:
    """The memory check of ``vaekit train``, before the run folder is made: the objective's draws per example (k;
    MIWAE's m x k) x batch_size decoder rows (:func:`vaekit.bounds.sizing.check_draws`), refused in one error
    naming the arguments that set them."""
    from vaekit.objectives import build_objective

    draws = build_objective(cfg.component("objective"), k=cfg.k).draws()
    if draws <= 1:
        return
    if hasattr(model, "build"):
        model.build(tuple(ds.shape))  # what fit() does next anyway: the decoder must exist to be measured
    names = ("k", "batch_size") if draws == cfg.k else ("m and k", "batch_size")
    check_draws(model, draws, cfg.batch_size, resolve_device(cfg.device), names=names)


def _fit_config(model: LatentVariableModel, ds: Any, given: dict[str, Any], settings: dict[str, Any]) -> TrainConfig:
    """The settings of a :func:`fit` call: its arguments and ``settings`` (the training keys of
    :func:`vaekit.config.training_keys`, e.g. an objective's ``tc_weight``); the model describes itself."""
    allowed = set(training_keys()) - set(given)
    unknown = sorted(set(settings) - allowed)
    if unknown:  # the suggestions include fit()'s own arguments (epoch -> epochs)
        raise unknown_keyword("fit()", unknown[0], allowed | set(inspect.signature(fit).parameters) - {"settings"})
    settings = dict(settings)
    estimator = settings.pop("estimator", None)  # checked against the model itself, which cfg does not describe
    if estimator is not None and not isinstance(estimator, str):
        raise ConfigError(f"estimator must be a name ({', '.join(estimator_names())}); got {estimator!r}")
    name = getattr(ds, "name", None) or IN_MEMORY
    cfg = from_dict({"dataset": name, **given, "conditional": bool(getattr(model, "condition", 0)), **settings},
                    source="fit()")
    cfg.estimator = estimator
    _check_fit_memory(model, ds, cfg)  # before the run folder is made
    if estimator is not None:  # the estimator against the model and the objective, as the run will (same refusals)
        with torch.random.fork_rng(devices=[]):  # an objective's own networks do not move the run's random stream
            _estimator_for(model, cfg, objective_for(cfg, model, int(ds.train.shape[0])), torch.device("cpu"))
    return cfg


def _run(cfg, folder: RunFolder, resume, dataset, progress, on_epoch, log, build, user_model: bool = False,
         opts: _Options | None = None) -> TrainResult:
    opts = opts or _Options()
    check_available(cfg.log)  # an optional logger's missing package: refused before the run folder is made
    progress = progress_enabled(progress)  # None: a terminal or a notebook
    log = log if log is not None else notebook_log()
    ctx = D.from_env()
    say = (log or (lambda msg: None)) if ctx.is_main else (lambda msg: None)
    device = resolve_device(cfg.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    joined = ctx.enabled and not torch.distributed.is_initialized()
    D.setup(ctx, device)
    args = (cfg, folder, resume, dataset, progress, on_epoch, say, ctx, device, build, user_model, opts)

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
            folder.claim(resume, opts.overwrite, check=lambda state: _check_resumable(folder, resume, opts, state))
        except CheckpointError as exc:
            D.broadcast_object(str(exc), ctx)
            raise
        try:
            D.broadcast_object("", ctx)
            return locked()
        finally:
            folder.release()
    finally:
        if joined:
            D.teardown()


def _stored_standardisation(folder: RunFolder, resuming: bool) -> dict[str, Any] | None:
    """A resumed run's stored standardisation of its table (config.json's ``standardisation``), else None."""
    return folder.read_config().get("standardisation") if resuming else None


def _check_resumable(folder: RunFolder, resume: bool, opts: _Options, state: Any) -> None:
    """Before any write: a run to resume whose settings cannot be read is refused."""
    if resume and not opts.overwrite and state.has_checkpoint:
        _saved_config(folder)


def _saved_config(folder: RunFolder) -> TrainConfig:
    """The settings of the run being resumed, from its config.json; a missing or corrupt file is one line."""
    saved = folder.read_config()
    saved.pop("trained_with", None)  # written by fit(), whose model is described by model.json
    saved.pop("standardisation", None)  # the stored mean and SD of a table (read by _stored_standardisation)
    saved.setdefault("fast_step", False)  # a run from before the fast step resumes on the autograd step it began on
    return from_dict(saved, source=str(folder / "config.json"))


def _train_locked(cfg, folder: RunFolder, resume, dataset, progress, on_epoch, say, ctx, device, build,
                  user_model, opts: _Options) -> TrainResult:
    """The run, its lock held: settle the settings (a resume takes the run's), build the parts, restore or start
    the run's files, and hand the epochs to the :class:`~vaekit.training.loop.Loop` and its callbacks."""
    cfg, resuming = _open_run(cfg, folder, resume, ctx, opts, say)
    run = folder.path
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_precision(device, cfg.precision)
    amp = autocast_context(device, cfg.precision)
    ds = dataset if dataset is not None else load_data(cfg, _stored_standardisation(folder, resuming))
    loop = _build_loop(cfg, run, ds, build, device, ctx, amp, opts, user_model, resuming)
    loop.progress = progress
    auxiliary = _restore_or_start(loop, cfg, folder, ctx, opts, user_model, resuming, say)
    if getattr(loop.model, "semi_supervised", False):  # the labels kept: the model's (a resumed run's) indices
        loop.data.train_labels = loop.model.masked_labels(loop.data.train_labels)
    loop.step = _step_for(loop, cfg, ctx, device, amp, auxiliary)
    loop.callbacks = _callbacks(loop, cfg, folder, ctx, opts, say, on_epoch, auxiliary)
    loop.fit()
    D.barrier(ctx)
    state, last = loop.state, loop.state.get("last") or {}
    return TrainResult(run=run, epochs=loop.epoch, train_elbo=last.get("train_elbo", math.nan),
                       valid_elbo=last.get("valid_elbo", math.nan),
                       best_valid_elbo=state["best_valid_elbo"], best_epoch=state["best_epoch"],
                       seconds=state["seconds"], stopped_early=loop.stopped_early,
                       best_valid_iwae=state.get("best_score") if "valid_iwae" in last and cfg.select_by != "elbo"
                       else None,
                       selected_by=loop.selected_by, best_score=state.get("best_score", math.nan),
                       model=loop.model if ctx.is_main else None)


def _open_run(cfg: TrainConfig, folder: RunFolder, resume: bool, ctx: D.DistContext, opts: _Options,
              say: Callable[[str], None]) -> tuple[TrainConfig, bool]:
    """Open the run folder (rank 0, under the lock); on resume the settings are the run's own (config.json), but
    for the length of the run, the hardware and what the user chose on purpose. Returns the settings and whether
    a checkpoint is resumed."""
    if ctx.is_main:
        resuming = folder.open(resume, opts.overwrite)
    else:
        resuming = folder.resumable(resume, opts.overwrite)
    if not resuming:
        if folder.restarted:
            (opts.notice or say)(folder.restarted)
        elif resume:
            say(f"no checkpoint in {folder.path}: starting a new run")
        return cfg, False
    saved_cfg = _saved_config(folder)
    saved_cfg.epochs, saved_cfg.patience = cfg.epochs, cfg.patience  # the run may be extended
    for hardware in ("device", "threads", "compile"):
        setattr(saved_cfg, hardware, getattr(cfg, hardware))  # may resume on other hardware
    explicit = opts.explicit if opts.explicit is not None else _differing_from_defaults(cfg)
    for name in RUN_ARITHMETIC:  # the run's own arithmetic, unless the user chose otherwise on purpose
        mine, theirs = getattr(cfg, name), getattr(saved_cfg, name)
        if name in explicit and mine != theirs:
            (opts.notice or say)(f"resuming with {option(name, mine)} instead of the run's {theirs}")
            setattr(saved_cfg, name, mine)
    _resume_logging(saved_cfg, cfg, opts, folder if ctx.is_main else None)
    return saved_cfg, True


def _train_data(cfg: TrainConfig, ds: Any, device: torch.device) -> TrainData:
    train_x = ds.train.to(device=device, dtype=torch.float32).contiguous()
    valid_x = ds.valid.to(device=device, dtype=torch.float32).contiguous()
    if train_x.shape[0] == 0:
        raise VaekitError(f"the training split of {cfg.dataset} is empty")
    rule = getattr(ds, "standardisation", None)
    return TrainData(train_x, valid_x, bool(getattr(ds, "dynamic", False)), levels=getattr(ds, "levels", None),
                     standardisation=rule, log_jacobian=rule.log_jacobian if rule is not None else 0.0)


def _build_loop(cfg: TrainConfig, run: Path, ds: Any, build, device: torch.device, ctx: D.DistContext, amp,
                opts: _Options, user_model: bool, resuming: bool) -> Loop:
    """The model (built, seeded from the data by its own hook), its objective, estimator and optimizer."""
    data = _train_data(cfg, ds, device)
    if not user_model:
        torch.manual_seed(cfg.seed)
    model = build(cfg, ds).to(device)
    if opts.check_model is not None:
        opts.check_model(model, cfg)
    if getattr(model, "condition", 0):
        data.train_labels, data.valid_labels = _labels(ds, "train"), _labels(ds, "valid")
        if data.train_labels is None or data.valid_labels is None:
            raise DataError("the model is conditional but the data has no labels; give (images, labels) pairs")
        data.train_labels, data.valid_labels = data.train_labels.to(device), data.valid_labels.to(device)
    if getattr(model, "semi_supervised", False):  # all the labels here; masked once a resumed run's indices are back
        data.train_labels, data.valid_labels = _semi_supervised_labels(model, ds, cfg.seed, device)
    if user_model:
        torch.manual_seed(cfg.seed)
    if ctx.enabled:  # every rank its own reparameterization and binarization noise
        torch.manual_seed(cfg.seed * 1_000_003 + 7919 * (ctx.rank + 1))
    if cfg.init_from is not None and not resuming:
        _init_weights(model, cfg.init_from, device)
    model.seed_from_data(data.train, cfg.seed)  # a checkpoint, if resumed, replaces these weights
    if dequantizes(model, data.levels):  # a density on integer data: trained and validated as the dequantised bound
        data.shift = dequantization_nats(tuple(data.train.shape[1:]), int(data.levels))
        data.valid = dequantize(data.valid, int(data.levels), cfg.seed)
    objective = objective_for(cfg, model, data.train.shape[0])
    estimator = _estimator_for(model, cfg, objective, device)
    return Loop(cfg, run, ctx, model, objective, data, step=None, optimizer=None, amp=amp, estimator=estimator)


def _restore_or_start(loop: Loop, cfg: TrainConfig, folder: RunFolder, ctx: D.DistContext, opts: _Options,
                      user_model: bool, resuming: bool, say) -> dict[str, torch.optim.Optimizer]:
    """The optimizers and the progress: restored from the checkpoint on resume, else new (and the run folder
    started: config.json written, old metrics cleared). Returns the model's auxiliary optimizers."""
    model, estimator = loop.model, loop.estimator
    auxiliary = model.auxiliary_optimizers(cfg.lr)
    if set(auxiliary) != set(loop.objective.auxiliary):  # before any file of the run is written
        raise ConfigError(f"objective {loop.objective.name} gives the auxiliary losses "
                          f"{sorted(loop.objective.auxiliary)}, but the model trains {sorted(auxiliary)} by optimizers "
                          f"of their own; use the model's own objective ({model.default_objective})")
    trainable = _trainable_parameters(model, cfg.train_only, auxiliary)
    if estimator is not None:
        trainable += list(estimator.parameters())  # NVIL's baseline
    loop.optimizer = Adam(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay,
                          **_fused_if_supported(loop.data.train.device))
    loop.scheduler = _make_scheduler(cfg, loop.optimizer)
    loop.state = {"epoch": 0, "best_valid_elbo": -math.inf, "best_epoch": 0, "since_best": 0, "seconds": 0.0,
                  "scheduler": None, "last": None}
    if resuming:
        _restore(loop, folder, ctx, auxiliary, say)
    elif ctx.is_main:
        written = cfg.to_dict()
        if user_model:  # the model is described by model.json, not by these settings
            written.pop("model")
            written["trained_with"] = "vaekit.fit"
        if loop.data.standardisation is not None:  # a table's mean and SD, applied again when the run is loaded
            written["standardisation"] = loop.data.standardisation.to_dict()
        folder.start(written, opts.overwrite, say)
    return auxiliary


def _restore(loop: Loop, folder: RunFolder, ctx: D.DistContext, auxiliary: dict[str, torch.optim.Optimizer],
             say) -> None:
    run = folder.path
    loop.state, rng = ckpt.load_training_state(run, loop.model, loop.optimizer, loop.estimator, auxiliary)
    _check_resumed_state(run / ckpt.STATE_FILE, loop.state, loop.optimizer)
    _set_rng_state(_rank_rng(rng, ctx), loop.data.train.device)
    if loop.scheduler is not None and loop.state.get("scheduler"):
        loop.scheduler.load_state_dict(loop.state["scheduler"])
    if ctx.is_main:
        folder.resume_at(loop.state["epoch"])
    say(f"resuming {run} after epoch {loop.state['epoch']}")
    if loop.state["epoch"] and _weights_unsound(loop.model):  # written before vaekit checked this
        loop.sound_epoch = None


def _step_for(loop: Loop, cfg: TrainConfig, ctx: D.DistContext, device: torch.device, amp,
              auxiliary: dict[str, torch.optim.Optimizer]):
    """The step function: a registered fast step where one applies (:mod:`vaekit.training.fast_step`), else the
    objective as a module (DDP under torchrun, compiled with --compile) differentiated by autograd."""
    fast = fast_step_for(loop.model, loop.objective, loop.optimizer, cfg, min(cfg.batch_size, loop.data.train.shape[0]),
                         distributed=ctx.enabled, estimator=loop.estimator, auxiliary=auxiliary)
    if fast is not None:
        return fast
    loss_module: torch.nn.Module = LossModule(loop.model, loop.objective, cfg.k, cfg.encoder_noise, loop.estimator)
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        loss_module = DistributedDataParallel(loss_module, device_ids=[device] if device.type == "cuda" else None)
    eager_module = loss_module
    if cfg.compile:
        loss_module = _compiled(loss_module)
    return _make_step(loss_module, loop.model, loop.optimizer, cfg, amp, ctx, eager=eager_module,
                      estimator=loop.estimator, auxiliary=auxiliary)


def _callbacks(loop: Loop, cfg: TrainConfig, folder: RunFolder, ctx: D.DistContext, opts: _Options, say, on_epoch,
               auxiliary: dict[str, torch.optim.Optimizer]) -> list[Callback]:
    """What acts at each epoch's end, in order: files (rank 0 only), the lines, the user's hook; at the end the
    kept model and an autoencoder's density on z."""
    out: list[Callback] = [EarlyStopping(cfg.patience)]
    if ctx.is_main:
        loggers = _start_loggers(cfg, folder.path, opts, loop.epoch)
        out += [MetricsFile(folder), Loggers(loggers), KeepBest(), Checkpoint(auxiliary)]
    out.append(EpochLines(say))
    if on_epoch is not None:
        out.append(OnEpoch(on_epoch))
    if ctx.is_main:
        out.append(CodeDensity(say))
    return out
