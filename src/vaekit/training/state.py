"""What a run's checkpoint carries besides weights: RNG states (per rank under torchrun), the LR schedule, the
checks of a resumed state, and what is kept when training diverges."""

from __future__ import annotations

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from vaekit import runtime as D
from vaekit.config import TrainConfig
from vaekit.errors import CheckpointError, VaekitError, switch


class TrainingDiverged(VaekitError):
    """The loss became NaN or infinite, or the weights absurdly large; the message says which checkpoint (one
    whose weights were all finite and below :data:`WEIGHT_LIMIT`) is kept, or that none is."""


#: The settings a resume takes from the run's config.json unless the user gives them explicitly: they change
#: the run's arithmetic (a bf16 run resumed in fp32 would not continue bit for bit).
RUN_ARITHMETIC = ("precision", "eval_batch_size", "fast_step")


def _differing_from_defaults(cfg: TrainConfig, names: Collection[str] = RUN_ARITHMETIC) -> frozenset[str]:
    """Those of the settings ``names`` whose value in ``cfg`` is not the default."""
    default = TrainConfig(dataset=cfg.dataset)
    return frozenset(name for name in names if getattr(cfg, name) != getattr(default, name))


#: Weights of larger magnitude than this mean a diverged run: such weights are never written as a checkpoint.
WEIGHT_LIMIT = 1e15


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


def _kept(sound_epoch: int | None, epochs_done: int, run: Path) -> str:
    """What is kept after a divergence: the last checkpoint with sound weights, or plainly none."""
    if epochs_done == 0:
        return "no checkpoint had been written yet"
    if sound_epoch is None:
        return (f"no checkpoint with sound weights exists (the one after epoch {epochs_done} in {run} already holds "
                f"diverged weights); start afresh with {switch('overwrite')}")
    return f"the last good checkpoint (after epoch {sound_epoch}, finite weights) is kept in {run}"


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


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


def _make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=10)
    return None


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
