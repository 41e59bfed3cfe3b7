"""Where a run reports besides ``metrics.jsonl``: the loggers (started from the metrics so far on resume), sample
grids, and which logging settings a resume keeps."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.config import TrainConfig
from vaekit.errors import ConfigError
from vaekit.io.runs import read_metrics
from vaekit.loggers import Logger, MultiLogger, check_names, image_grid, open_loggers
from vaekit.models import LatentVariableModel
from vaekit.training.state import _differing_from_defaults

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


def _resume_logging(saved: TrainConfig, cfg: TrainConfig, opts: Any, folder: Any = None) -> None:
    """On resume: the run's loggers continue, unless this call chose others; a choice is written to the run's
    config.json (``folder``, a :class:`~vaekit.io.runfolder.RunFolder`; None on the ranks that write nothing), so
    that later resumes keep it."""
    changed = {name: getattr(cfg, name) for name in opts.logging if getattr(cfg, name) != getattr(saved, name)}
    if not changed:
        return
    for name, value in changed.items():
        setattr(saved, name, value)
    if folder is not None:
        folder.update_config(changed)


def _start_loggers(cfg: TrainConfig, run: Path, opts: Any, epochs_done: int) -> MultiLogger | None:
    """The run's loggers (``cfg.log`` and the Logger objects given), started from the metrics so far; None if none."""
    if not cfg.log and not opts.loggers:
        return None
    loggers = open_loggers(cfg.log, run, cfg.to_dict(), extra=opts.loggers)
    opts.opened.append(loggers)
    loggers.start([r for r in read_metrics(run) if r["epoch"] <= epochs_done] if epochs_done else [])
    return loggers


def _close_loggers(opts: Any, quietly: bool = False) -> None:
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
