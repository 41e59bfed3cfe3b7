"""Callbacks of the training loop, one concern each (Lightning's model): the metrics file, the loggers, the kept
model, the checkpoint, early stopping, the per-epoch lines, the user's ``on_epoch`` and the density fitted to an
autoencoder's codes. Each sees the :class:`~vaekit.training.loop.Loop` and the epoch's metrics row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaekit.analysis.posthoc import fit_run_density
from vaekit.io import checkpoint as ckpt
from vaekit.io.runfolder import RunFolder
from vaekit.loggers import MultiLogger
from vaekit.training.reporting import _log_epoch


class Callback:
    """Does nothing; subclasses override the hooks they need."""

    def should_stop(self, loop: Any) -> bool:
        """Whether to stop before the next epoch."""
        return False

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        """After an epoch: ``row`` is its line of ``metrics.jsonl``."""

    def on_fit_end(self, loop: Any) -> None:
        """After the last epoch (or an early stop)."""


class MetricsFile(Callback):
    """Appends each epoch's row to ``RUN/metrics.jsonl``."""

    def __init__(self, folder: RunFolder):
        self.folder = folder

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        self.folder.append(row)


class Loggers(Callback):
    """Sends each row (and sample grids) to the run's loggers (:mod:`vaekit.loggers`)."""

    def __init__(self, loggers: MultiLogger | None):
        self.loggers = loggers

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        _log_epoch(self.loggers, loop.epoch, row, loop.model, loop.cfg, loop.model.is_autoencoder)


class KeepBest(Callback):
    """Writes the model (``model.safetensors`` + ``model.json``) whenever the objective's validation score improves,
    and at the end if none was written (e.g. a finished run resumed)."""

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        if row["best"]:
            loop.model.save(loop.run)

    def on_fit_end(self, loop: Any) -> None:
        if not (loop.run / ckpt.MODEL_FILE).exists():
            loop.model.save(loop.run)


class Checkpoint(Callback):
    """Writes ``checkpoint.safetensors`` after every epoch: weights, optimizers, RNG states and progress, from which
    a resumed run continues bit for bit."""

    def __init__(self, auxiliary: dict[str, torch.optim.Optimizer] | None = None):
        self.auxiliary = auxiliary

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        ckpt.save_training_state(loop.run, loop.model, loop.optimizer, loop.state, loop.rng, loop.estimator,
                                 self.auxiliary)


class EarlyStopping(Callback):
    """Stops after ``patience`` epochs without a better validation score."""

    def __init__(self, patience: int | None):
        self.patience = patience

    def should_stop(self, loop: Any) -> bool:
        return self.patience is not None and loop.state["since_best"] >= self.patience and loop.epoch > 0


class EpochLines(Callback):
    """About twenty lines a run: the epoch, the training and validation figures, the KL, the time, * when kept."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        epoch, epochs = row["epoch"], loop.cfg.epochs
        if not (epoch == 1 or epoch == epochs or epoch % max(1, epochs // 20) == 0):
            return
        relaxed = loop.estimator is not None and loop.estimator.relaxed
        train_name = "train relaxed ELBO" if relaxed else "train ELBO"
        valid_name = "valid ELBO"
        kl = f"KL {row['train_kl']:7.3f}  "
        if loop.model.is_autoencoder:  # reconstruction - latent penalty: no ELBO, and no KL, for a point mass q
            what = "reconstruction" if not getattr(loop.model, "latent_penalty", 0.0) else "rec. - penalty"
            train_name, valid_name, kl = f"train {what}", f"valid {what}", ""
        self.say(f"epoch {epoch:>4}  {train_name} {row['train_elbo']:9.3f}  {valid_name} {row['valid_elbo']:9.3f}  "
                 f"{kl}{row['seconds']:6.2f} s" + ("  *" if row["best"] else ""))


class OnEpoch(Callback):
    """Calls the user's ``on_epoch(row)``."""

    def __init__(self, on_epoch: Callable[[dict[str, Any]], None]):
        self.on_epoch = on_epoch

    def on_epoch_end(self, loop: Any, row: dict[str, Any]) -> None:
        self.on_epoch(row)


class CodeDensity(Callback):
    """After an autoencoder's training (or that of an objective with no bound of its own, ``fits_code_density``:
    WAE-MMD, InfoVAE-MMD): a Gaussian mixture fitted to its training codes, the density on z that makes "decoder +
    density" a model of x (:func:`vaekit.analysis.posthoc.fit_run_density`)."""

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def on_fit_end(self, loop: Any) -> None:
        if not (loop.model.is_autoencoder or loop.objective.fits_code_density):  # those with no bound of their own
            return
        train = loop.data.train
        fit_run_density(Path(loop.run), train, seed=loop.cfg.seed)
        self.say(f"fitted a Gaussian mixture to the {train.shape[0]} training codes: {loop.run / ckpt.MODEL_FILE} "
                 "now holds decoder + fitted density")
