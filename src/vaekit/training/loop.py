"""The training loop: epochs of steps, validation, the kept epoch chosen by the objective's score, and callbacks for
everything else (:mod:`vaekit.training.callbacks`).

For in-memory data a batch is ``train[perm[i:i+B]]``, one indexing of a tensor with a shuffled permutation (no
per-sample Dataset/DataLoader overhead); dynamic binarization draws x ~ Bernoulli(grey levels) on the batch. The
loop looks at the losses every :data:`~vaekit.training.step.CHECK_EVERY` steps (one wait for the device each time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vaekit import runtime as D
from vaekit.config import TrainConfig
from vaekit.errors import option
from vaekit.models import LatentVariableModel
from vaekit.objectives import Objective
from vaekit.objectives.figures import DEQUANTIZED
from vaekit.progress import bar_class
from vaekit.training.build import _estimator_fields, selection
from vaekit.training.state import TrainingDiverged, _gather_rng, _kept, _rng_state, _weights_unsound
from vaekit.training.step import CHECK_EVERY, _BatchBuffer, _first_nonfinite
from vaekit.training.validation import _validate


@dataclass
class TrainData:
    """The tensors a run trains on, on its device: images (float32) and, for a conditional model, labels."""

    train: torch.Tensor
    valid: torch.Tensor
    dynamic: bool = False  # draw x ~ Bernoulli(grey levels) for every batch
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    levels: int | None = None  # the data's grey levels L (x = k / (L - 1)); None: real values or unknown
    shift: float = 0.0  # D log L when the figures are dequantised bounds (a density on integer data), else 0
    standardisation: Any = None  # a table's standardisation (vaekit.data.tabular.Standardisation), or None
    log_jacobian: float = 0.0  # -sum_d log sd_d of that standardisation: added to every log p figure (nats)

    def dequantize_batch(self, x: torch.Tensor) -> torch.Tensor:
        """y = (k + u) / L with fresh u ~ U[0, 1) per value: a density trained on y bounds log P(k) + D log L."""
        levels = int(self.levels or 0)
        return (torch.round(x * (levels - 1)) + torch.rand_like(x)) / levels


@dataclass
class Loop:
    """One run's training: the parts it trains, its progress, and the callbacks that act at each epoch's end."""

    cfg: TrainConfig
    run: Path
    ctx: D.DistContext
    model: LatentVariableModel
    objective: Objective
    data: TrainData
    step: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    optimizer: torch.optim.Optimizer
    amp: Any
    estimator: Any = None
    scheduler: Any = None
    state: dict[str, Any] = field(default_factory=dict)  # the progress record saved with each checkpoint
    sound_epoch: int | None = 0  # the last epoch whose checkpoint holds sound weights (0: none written)
    callbacks: list[Any] = field(default_factory=list)
    progress: bool | None = None  # the progress bar (None: tqdm decides)
    stopped_early: bool = False
    rng: dict[str, torch.Tensor] = field(default_factory=dict)  # the RNG states after the last epoch (all ranks)
    batches: _BatchBuffer | None = field(default=None, repr=False)  # the training batches' reused buffer

    def __post_init__(self) -> None:
        self.selected_by, self.score_of = selection(self.objective, self.cfg.select_by)

    @property
    def epoch(self) -> int:
        return int(self.state["epoch"])

    def fit(self) -> None:
        """Train until ``cfg.epochs`` or a callback stops it; each epoch ends with :meth:`end_epoch`."""
        if self.sound_epoch is not None:
            self.sound_epoch = self.epoch
        self.batches = _BatchBuffer(self.data.train, self.cfg.batch_size)
        while self.epoch < self.cfg.epochs:
            if any(cb.should_stop(self) for cb in self.callbacks):
                self.stopped_early = True
                break
            t0 = time.perf_counter()
            self.objective.start_epoch(self.epoch)
            beta = self.objective.beta_at(self.epoch)
            train = self.train_epoch(beta)
            valid = self.validate()
            self.end_epoch(beta, train, valid, time.perf_counter() - t0)
        for cb in self.callbacks:
            cb.on_fit_end(self)

    def train_epoch(self, beta: float) -> list[float]:
        """One pass over this rank's share of the training set; the mean [ELBO, reconstruction, KL] (nats)."""
        cfg, ctx, data, epoch = self.cfg, self.ctx, self.data, self.epoch
        n_all, bs = data.train.shape[0], cfg.batch_size
        n = n_all // ctx.world_size if ctx.enabled else n_all  # this rank's share of an epoch
        steps = math.ceil(n / bs)
        self.model.train()
        perm = torch.randperm(n_all, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
        perm = D.shard(perm, ctx).to(data.train.device)
        sums = torch.zeros(3, dtype=torch.float64, device=data.train.device)
        bar = bar_class()(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                          disable=None if self.progress is None else not self.progress)
        losses = torch.empty(steps, dtype=torch.float32, device=data.train.device)  # looked at every CHECK_EVERY
        checked = 0
        for step in range(steps):
            idx = perm[step * bs : (step + 1) * bs]
            x = self.batches.take(idx)
            if data.dynamic:
                x = torch.bernoulli(x)
            elif data.shift:
                x = data.dequantize_batch(x)
            self.objective.set_step(epoch * steps + step, steps)
            if self.estimator is not None:
                self.estimator.set_step(epoch * steps + step)
            losses[step], stats = self.step(x, beta, data.train_labels[idx] if data.train_labels is not None else None)
            sums += stats
            if step + 1 - checked >= CHECK_EVERY or step == steps - 1:
                self._look(losses, checked, step, bar)
                checked = step + 1
                if not getattr(bar, "disable", False):
                    seen = min(n, (step + 1) * bs)
                    bar.set_postfix(elbo=f"{sums[0].item() / seen:.2f}", kl=f"{sums[2].item() / seen:.2f}",
                                    refresh=False)
            bar.update(1)
        bar.close()
        means = (D.all_reduce_sum(sums, ctx) / (n * ctx.world_size)).tolist()
        offset = data.log_jacobian - data.shift  # ELBO and reconstruction: log p figures in the data's own units
        return [means[0] + offset, means[1] + offset, means[2]]

    def _look(self, losses: torch.Tensor, checked: int, step: int, bar: Any) -> None:
        """Stop, naming the epoch and step, at the first non-finite loss of steps ``checked..step``."""
        bad = _first_nonfinite(losses[checked : step + 1])
        if bad is not None:
            bar.close()
            raise TrainingDiverged(
                f"the loss became {bad[1]} at epoch {self.epoch + 1}, step {checked + bad[0] + 1}; training "
                f"stopped and {_kept(self.sound_epoch, self.epoch, self.run)}; try a lower {_lower()}")

    def validate(self) -> dict[str, float]:
        """The validation figures (:func:`~vaekit.training.validation._validate`), checked for divergence."""
        data, ctx = self.data, self.ctx
        share = data.valid[ctx.rank :: ctx.world_size] if ctx.enabled else data.valid
        labels = data.valid_labels
        if labels is not None and ctx.enabled:
            labels = labels[ctx.rank :: ctx.world_size]
        valid = _validate(self.model, share, data.valid.shape[0], self.objective, self.cfg, self.amp, ctx, labels)
        for key in ("elbo", "reconstruction", *self.objective.bounds):  # a dequantised bound: minus D log L;
            valid[key] += data.log_jacobian - data.shift  # a standardised table: plus -sum_d log sd_d
        if not math.isfinite(valid["elbo"]) and data.valid.shape[0]:
            raise TrainingDiverged(f"the validation ELBO became {valid['elbo']} after epoch {self.epoch + 1}; "
                                   f"{_kept(self.sound_epoch, self.epoch, self.run)}")
        unsound = _weights_unsound(self.model)
        if unsound:  # e.g. a huge --lr with no validation split to notice it: such weights are never kept
            raise TrainingDiverged(f"training diverged: {unsound} after epoch {self.epoch + 1}, not saved; "
                                   f"{_kept(self.sound_epoch, self.epoch, self.run)}; try a lower {_lower()}")
        return valid

    def end_epoch(self, beta: float, train: list[float], valid: dict[str, float], seconds: float) -> None:
        """Choose by the objective's score, step the schedule, make the metrics row, and call the callbacks."""
        state = self.state
        state["epoch"] = epoch = self.epoch + 1
        state["seconds"] += seconds
        score = self.score_of(valid)  # the training objective chooses the kept epoch (see selection())
        improved = self.data.valid.shape[0] == 0 or score > state.get("best_score", state["best_valid_elbo"])
        if improved:
            state.update(best_valid_elbo=valid["elbo"], best_score=score, best_epoch=epoch, since_best=0)
        else:
            state["since_best"] += 1
        if self.scheduler is not None:
            self.scheduler.step(score) if self.cfg.lr_schedule == "plateau" else self.scheduler.step()
        extra = {f"valid_{key}": value for key, value in valid.items() if key not in ("elbo", "reconstruction", "kl")}
        row = {"epoch": epoch, "train_elbo": train[0], "train_reconstruction": train[1], "train_kl": train[2],
               "valid_elbo": valid["elbo"], "valid_reconstruction": valid["reconstruction"],
               "valid_kl": valid["kl"], **extra, "beta": beta, "lr": self.optimizer.param_groups[0]["lr"],
               "seconds": seconds, "best": improved,
               **({"score": score, "selected_by": self.selected_by} if self.selected_by != "valid ELBO" else {}),
               **_estimator_fields(self.estimator), **self.objective.row_fields(),
               **({"log_px_kind": DEQUANTIZED, "dequantization_nats": self.data.shift} if self.data.shift else {}),
               **({"log_jacobian": self.data.log_jacobian} if self.data.standardisation is not None else {})}
        state["last"] = row
        state["scheduler"] = self.scheduler.state_dict() if self.scheduler is not None else None
        self.rng = _gather_rng(_rng_state(self.data.train.device), self.ctx)
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)
        if self.sound_epoch is not None:
            self.sound_epoch = epoch


def _lower() -> str:
    """What to lower after a divergence: the step size, or the gradient's clip (flags, or fit()'s arguments)."""
    return f"{option('lr')} or {option('clip_grad')}"
