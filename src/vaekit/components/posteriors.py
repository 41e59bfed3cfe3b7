"""The diagonal Gaussian posterior q(z|x) = N(mu(x), diag exp(logvar(x))) (Kingma & Welling, 2014).

The encoder gives 2L numbers per example, [mu, logvar]; logvar is floored at ``min_logvar`` for numerical
safety. z is drawn by reparameterization, z = mu + exp(logvar / 2) * eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaekit.components.base import POSTERIORS, Posterior
from vaekit.distributions import DiagonalNormal


@dataclass
class GaussianPosteriorConfig:
    min_logvar: float = -12.0  # floor on the encoder's log-variance

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_logvar):
            raise ValueError(f"min_logvar must be a finite number, got {self.min_logvar}")


@POSTERIORS.register("gaussian", GaussianPosteriorConfig, prefix="posterior",
                     help="diagonal Gaussian q(z|x) = N(mu(x), diag exp(logvar(x)))")
class GaussianPosterior(Posterior):
    """q(z|x) = N(mu, diag exp(logvar)); the encoder output is (N, 2L) = [mu, logvar]."""

    def __init__(self, latent: int, min_logvar: float = -12.0):
        super().__init__(latent)
        self.min_logvar = float(min_logvar)

    @property
    def param_size(self) -> int:
        return 2 * self.latent

    def forward(self, params: torch.Tensor) -> DiagonalNormal:
        n = self.latent
        return DiagonalNormal(params[..., :n], params[..., n : 2 * n].clamp(min=self.min_logvar))
