"""The multiply importance-weighted bound (MIWAE; Rainforth et al., 2018, "Tighter variational bounds are not
necessarily better") as an objective: the average of M independent IWAE_K bounds per example,

    MIWAE_{M,K}(x) = (1/M) sum_{m=1..M} log (1/K) sum_{k=1..K} w_mk,   w_mk = p(x, z_mk) / q(z_mk|x),

with the M K draws z_mk ~ q(z|x) independent (``--m M``, ``--k K``), in nats per example. Its expectation is the
IWAE_K bound (ELBO <= IWAE_K <= IWAE_{MK} <= log p(x)), estimated with M times the draws: MIWAE_{1,K} = IWAE_K and
MIWAE_{M,1} is the M-draw Monte Carlo ELBO. For a budget of M K draws, the signal-to-noise ratio of the encoder's
gradient grows as sqrt(M / K) and the decoder's as sqrt(M K) (Rainforth et al.), so M trades the tightness of the
bound for a better-trained q(z|x). The log weights come from the objectives' one sampler
(:func:`vaekit.objectives.terms.sampled_terms`, over the log-weight engine), so whatever changes how log q(z|x) is
taken there applies here too. The kept epoch is chosen by the validation MIWAE_{M,K}, reported as ``valid_miwae``;
the KL weight ``beta`` does not apply (as for IWAE).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vaekit.errors import ConfigError
from vaekit.objectives.base import OBJECTIVES, Loss, Objective, Score
from vaekit.objectives.terms import ElboTerms, sampled_terms

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The largest M: like k, beyond it torch's sizes overflow (the memory check refuses far less).
MAX_M = 2**31 - 1


@dataclass
class MIWAEConfig:
    m: int = 1  # M: the independent IWAE_K bounds averaged per example (--m; K is the shared --k)

    def __post_init__(self) -> None:  # a ValueError becomes a one-line error naming the setting
        if isinstance(self.m, bool) or not isinstance(self.m, int) or not 1 <= self.m <= MAX_M:
            raise ValueError(f"m must be an integer from 1 to {MAX_M} (the bounds averaged per example), got "
                             f"{self.m!r}")


def grouped_log_weights(model: LatentVariableModel, x: torch.Tensor, m: int, k: int,
                        generator: torch.Generator | None = None, y: Any = None,
                        encoder_input: torch.Tensor | None = None) -> tuple[torch.Tensor, ElboTerms]:
    """log w_mk = log p(x|z_mk) + log p(z_mk) - log q(z_mk|x) for M K draws z_mk ~ q(z|x), as (M, K, N), nats, and
    from the same draws the Monte Carlo ELBO and its terms (the means over all M K draws).

    The draws are those of :func:`~vaekit.objectives.terms.sampled_terms` with ``m * k`` samples (draw j is
    (m, k) = divmod(j, K)), so a generator seeded alike gives the same log weights as IWAE_{MK}'s."""
    rec, kl = sampled_terms(model, x, m * k, generator, y, encoder_input)  # (M K, N) each
    log_w = (rec - kl).reshape(m, k, -1)
    rec_m, kl_m = rec.mean(0), kl.mean(0)
    return log_w, ElboTerms(rec_m - kl_m, rec_m, kl_m)


def miwae_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """MIWAE_{M,K} = (1/M) sum_m [logsumexp_k log w_mk - log K] from log weights (M, K, N): (N,), nats."""
    return (torch.logsumexp(log_w, dim=1) - math.log(log_w.shape[1])).mean(0)


def iwae_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """IWAE_{MK} = logsumexp over all M K log weights (M, K, N) - log(M K): the draws' pooled bound, (N,), nats."""
    pooled = log_w.reshape(-1, log_w.shape[-1])
    return torch.logsumexp(pooled, dim=0) - math.log(pooled.shape[0])


def check_reparameterized(name: str, model: LatentVariableModel) -> None:
    """Refuse, in one line, a model whose q(z|x) is discrete: the multi-sample bounds train by reparameterization."""
    if getattr(model, "is_discrete", False):
        raise ConfigError(f"objective {name} trains a reparameterized q(z|x); this model's is discrete: train it "
                          "with --objective iwae (--estimator vimco) or elbo")


def bound_sums(bounds: Any, x: torch.Tensor, y: Any, rows: int,
               autocast: contextlib.AbstractContextManager | None = None) -> dict[str, torch.Tensor]:
    """sum_x of each per-example figure ``bounds(x_chunk, y_chunk)`` gives (a dict of (n,) tensors, nats), over
    chunks of ``rows`` examples so that memory stays bounded; float64 scalars."""
    totals: dict[str, torch.Tensor] = {}
    for start in range(0, x.shape[0], rows):
        part = y[start : start + rows] if y is not None else None
        with autocast or contextlib.nullcontext():
            figures = bounds(x[start : start + rows], part)
        for key, value in figures.items():
            totals[key] = totals.get(key, torch.zeros((), dtype=torch.float64, device=x.device)) + value.double().sum()
    return totals


@OBJECTIVES.register("miwae", MIWAEConfig, prefix="miwae", flags={"m": "m"},
                     help="MIWAE: the mean of --m independent IWAE bounds of --k draws each (Rainforth et al. 2018)")
class MIWAE(Objective):
    """-mean_x MIWAE_{M,K}(x); the ELBO terms reported are the M K draws' Monte Carlo ELBO."""

    bounds = ("miwae",)
    importance_weighted = True  # a sum over examples of a function of each one's log weights (DReG applies)
    core_settings = ("k",)

    def __init__(self, m: int = 1, **shared: Any):
        super().__init__(**shared)
        self.m = int(m)

    def check(self, model: LatentVariableModel) -> None:
        super().check(model)
        check_reparameterized(self.name, model)

    def draws(self) -> int:
        return self.m * self.k

    def selection(self) -> tuple[str, Score]:
        return f"valid MIWAE bound (M = {self.m}, K = {self.k})", lambda v: v["miwae"]

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        log_w, terms = grouped_log_weights(model, x, self.m, self.k, y=y, encoder_input=encoder_input)
        return Loss(-miwae_from_log_weights(log_w).mean(), terms)

    def validation_sums(self, model: LatentVariableModel, x: torch.Tensor, y: Any, generator: torch.Generator,
                        batch_size: int, autocast: contextlib.AbstractContextManager | None = None
                        ) -> dict[str, torch.Tensor]:
        """sum_x MIWAE_{M,K}(x) over chunks of 8 x ``batch_size`` (example, draw) pairs, so memory stays bounded."""

        def figures(chunk: torch.Tensor, labels: Any) -> dict[str, torch.Tensor]:
            log_w, _ = grouped_log_weights(model, chunk, self.m, self.k, generator, labels)
            return {"miwae": miwae_from_log_weights(log_w)}

        return bound_sums(figures, x, y, max(1, 8 * batch_size // self.draws()), autocast)
