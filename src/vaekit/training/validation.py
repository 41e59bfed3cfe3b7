"""Validation figures: the mean ELBO and its terms at fixed noise, plus what the objective adds (IWAE_k)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from vaekit import runtime as D
from vaekit.config import TrainConfig
from vaekit.models import LatentVariableModel
from vaekit.objectives import Objective, elbo


def _batches(data: torch.Tensor, labels: torch.Tensor | None, rows: int):
    for start in range(0, data.shape[0], rows):
        yield data[start : start + rows], (labels[start : start + rows] if labels is not None else None)


@torch.no_grad()
def evaluate_elbo_sums(model: LatentVariableModel, data: torch.Tensor, batch_size: int, seed: int,
                       autocast: contextlib.AbstractContextManager | None = None,
                       labels: torch.Tensor | None = None, terms: Any = None) -> torch.Tensor:
    """[sum ELBO, sum reconstruction, sum KL] over ``data`` (float64), single sample, fixed noise; ``terms``: the
    objective's own validation terms (``terms(model, x, y, generator)``, e.g. M2's bound with y summed out) in the
    place of :func:`~vaekit.objectives.elbo`."""
    terms = terms if terms is not None else (lambda m, x, y, generator: elbo(m, x, y, generator=generator))
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=data.device).manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64, device=data.device)
    for x, y in _batches(data, labels, batch_size):
        with autocast or contextlib.nullcontext():
            t = terms(model, x, y, generator=gen)
        totals += torch.stack([t.elbo.sum(), t.reconstruction.sum(), t.kl.sum()]).double()
    model.train(was_training)
    return totals


def _validate(model: LatentVariableModel, share: torch.Tensor, total: int, objective: Objective, cfg: TrainConfig,
              amp, ctx: D.DistContext, labels: torch.Tensor | None = None) -> dict[str, float]:
    """Mean validation ELBO and its terms, and the figures the objective adds (the IWAE_k bound), in nats; NaN for
    an empty validation split. The same noise seed every epoch, so that epochs compare."""
    seed = cfg.seed + 7919 + ctx.rank
    sums = evaluate_elbo_sums(model, share, cfg.eval_batch_size, seed, amp, labels,
                              getattr(objective, "validation_terms", None))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        gen = torch.Generator(device=share.device).manual_seed(seed)
        extra = objective.validation_sums(model, share, labels, gen, cfg.eval_batch_size, amp)
    model.train(was_training)
    keys = ("elbo", "reconstruction", "kl", *extra)
    if total == 0:
        return dict.fromkeys(keys, math.nan)
    if extra:
        sums = torch.cat([sums, torch.stack([value.reshape(()).double() for value in extra.values()])])
    sums = D.all_reduce_sum(sums, ctx)
    return dict(zip(keys, (sums / total).tolist()))
