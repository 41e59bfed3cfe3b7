"""The combination importance-weighted bound (CIWAE; Rainforth et al., 2018, "Tighter variational bounds are not
necessarily better") as an objective: the ELBO and the IWAE bound mixed, on the same K draws,

    CIWAE_beta(x) = beta ELBO_K(x) + (1 - beta) IWAE_K(x),
    ELBO_K = (1/K) sum_k log w_k,   IWAE_K = log (1/K) sum_k w_k,   w_k = p(x, z_k) / q(z_k|x),  z_k ~ q(z|x),

in nats per example, with 0 <= beta <= 1 (``--ciwae-beta``; ``[objective] beta`` in a file) and K the shared
``--k``. CIWAE_1 is the K-draw Monte Carlo ELBO (the Monte Carlo KL, not a closed form), CIWAE_0 = IWAE_K; every
CIWAE_beta is a convex combination of two lower bounds on log p(x), so a lower bound itself (ELBO <= CIWAE_beta <=
IWAE_K). The ELBO's share keeps the encoder's gradient signal that IWAE_K loses as K grows. The log weights come
from the objectives' one sampler (:func:`vaekit.objectives.terms.sampled_terms`). The kept epoch is chosen by the
validation CIWAE_beta, reported as ``valid_ciwae``; the KL weight (``--beta``) does not apply, as for IWAE: the
settings' ``beta`` is CIWAE's own.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vaekit.objectives.base import OBJECTIVES, Loss, Objective, Score
from vaekit.objectives.miwae import bound_sums, check_reparameterized, grouped_log_weights

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@dataclass
class CIWAEConfig:
    beta: float = 0.5  # the ELBO's share: beta ELBO_K + (1 - beta) IWAE_K (--ciwae-beta)

    def __post_init__(self) -> None:  # a ValueError becomes a one-line error naming the setting
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be a number from 0 to 1 (the ELBO's share), got {self.beta!r}")


def ciwae_from_log_weights(log_w: torch.Tensor, beta: float) -> torch.Tensor:
    """CIWAE_beta = beta mean_k log w_k + (1 - beta) [logsumexp_k log w_k - log K] from log weights (K, N): (N,),
    nats."""
    elbo = log_w.mean(0)
    iwae = torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
    return beta * elbo + (1.0 - beta) * iwae


@OBJECTIVES.register("ciwae", CIWAEConfig, prefix="ciwae",
                     help="CIWAE: beta ELBO + (1 - beta) IWAE on the same --k draws (--ciwae-beta; Rainforth et al.)")
class CIWAE(Objective):
    """-mean_x CIWAE_beta(x); the ELBO terms reported are the K draws' Monte Carlo ELBO.

    ``beta`` is CIWAE's own (the ELBO's share); the shared KL weight does not reach this objective."""

    bounds = ("ciwae",)
    importance_weighted = True  # a sum over examples of a function of each one's log weights (DReG applies)
    core_settings = ("k",)

    def __init__(self, beta: float = 0.5, **shared: Any):
        super().__init__(**shared)  # the registry's beta is this setting: the KL weight stays 1, unused
        self.mix = float(beta)

    def check(self, model: LatentVariableModel) -> None:
        super().check(model)
        check_reparameterized(self.name, model)

    def selection(self) -> tuple[str, Score]:
        return f"valid CIWAE bound (beta = {self.mix:g}, K = {self.k})", lambda v: v["ciwae"]

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        log_w, terms = grouped_log_weights(model, x, 1, self.k, y=y, encoder_input=encoder_input)
        return Loss(-ciwae_from_log_weights(log_w[0], self.mix).mean(), terms)

    def validation_sums(self, model: LatentVariableModel, x: torch.Tensor, y: Any, generator: torch.Generator,
                        batch_size: int, autocast: contextlib.AbstractContextManager | None = None
                        ) -> dict[str, torch.Tensor]:
        """sum_x CIWAE_beta(x) over chunks of 8 x ``batch_size`` (example, draw) pairs, so memory stays bounded."""

        def figures(chunk: torch.Tensor, labels: Any) -> dict[str, torch.Tensor]:
            log_w, _ = grouped_log_weights(model, chunk, 1, self.k, generator, labels)
            return {"ciwae": ciwae_from_log_weights(log_w[0], self.mix)}

        return bound_sums(figures, x, y, max(1, 8 * batch_size // self.k), autocast)
