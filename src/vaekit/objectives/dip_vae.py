"""DIP-VAE (Kumar et al., 2018): the ELBO plus a penalty pulling the aggregate posterior's covariance towards I.

    loss = -E_x [ E_q log p(x|z) - beta KL(q(z|x) || p(z)) ]
           + lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2,

with C the covariance, over the batch, of the posterior means (``dip-vae-i``: C = Cov_x[mu(x)]) or of q(z) itself
(``dip-vae-ii``: C = E_x[Sigma(x)] + Cov_x[mu(x)]). The defaults are disentanglement_lib's (lambda_od = 10;
lambda_d = 10 lambda_od for DIP-VAE-I, lambda_od for DIP-VAE-II). The penalty is not part of any bound: the kept
epoch is chosen by the (beta-weighted) ELBO. Needs a q(z|x) with a mean and a variance (a Gaussian posterior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vaekit.errors import ConfigError
from vaekit.objectives.base import OBJECTIVES, Loss, Objective
from vaekit.objectives.terms import elbo

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@dataclass
class DIPConfig:
    offdiagonal: float = 10.0  # lambda_od
    diagonal: float = 100.0  # lambda_d

    def __post_init__(self) -> None:
        for name in ("offdiagonal", "diagonal"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


@dataclass
class DIPConfigII(DIPConfig):
    diagonal: float = 10.0  # lambda_d = lambda_od for DIP-VAE-II


def dip_penalty(mean: torch.Tensor, variance: torch.Tensor | None, offdiagonal: float,
                diagonal: float) -> torch.Tensor:
    """lambda_od sum_{i != j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2 for C = Cov(mean) (+ E[variance] on the diagonal
    when ``variance`` is given, DIP-VAE-II); ``mean`` and ``variance`` are (N, L)."""
    centred = mean - mean.mean(0, keepdim=True)
    cov = centred.T @ centred / mean.shape[0]
    if variance is not None:
        cov = cov + torch.diag_embed(variance.mean(0))
    diag = torch.diagonal(cov)
    return offdiagonal * (cov.pow(2).sum() - diag.pow(2).sum()) + diagonal * (diag - 1).pow(2).sum()


@OBJECTIVES.register("dip-vae-i", DIPConfig, prefix="dip", help="DIP-VAE-I: the ELBO + a penalty on Cov(mu) - I")
class DIPVAE(Objective):
    """-mean_x [E_q log p(x|z) - beta KL] + the DIP penalty of the batch; see the module docstring."""

    second_kind = False  # DIP-VAE-II: the covariance of q(z), not of the means

    def __init__(self, offdiagonal: float = 10.0, diagonal: float = 100.0, k: int = 1, beta: float = 1.0,
                 warmup: int = 0, data_size: int = 0):
        super().__init__(k, beta, warmup, data_size)
        self.offdiagonal, self.diagonal = offdiagonal, diagonal

    def check(self, model: LatentVariableModel) -> None:
        super().check(model)
        if model.is_discrete:
            raise ConfigError(f"objective {self.name} needs a Gaussian q(z|x); this model's is discrete")

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        source = model.as_data(x) if encoder_input is None else encoder_input.reshape(model.as_data(x).shape)
        q = model.posterior(source, y)  # once: the ELBO and the penalty share it
        terms = elbo(model, x, y, samples=self.k, posterior=q)
        penalty = dip_penalty(q.mean, q.variance if self.second_kind else None, self.offdiagonal, self.diagonal)
        return Loss(-(terms.reconstruction - beta * terms.kl).mean() + penalty, terms)


@OBJECTIVES.register("dip-vae-ii", DIPConfigII, prefix="dip",
                     help="DIP-VAE-II: the ELBO + a penalty on Cov_q(z) - I")
class DIPVAEII(DIPVAE):
    """DIP-VAE-II: the penalty on the covariance of q(z) = E_x[Sigma(x)] + Cov_x[mu(x)]."""

    second_kind = True

    def __init__(self, offdiagonal: float = 10.0, diagonal: float = 10.0, k: int = 1, beta: float = 1.0,
                 warmup: int = 0, data_size: int = 0):
        super().__init__(offdiagonal, diagonal, k, beta, warmup, data_size)
