"""The diagonal Gaussian posterior q(z|x) = N(mu(x), diag exp(logvar(x))) (Kingma & Welling, 2014), and the
point mass q(z|x) = delta(z - f(x)) of a deterministic autoencoder.

The Gaussian's encoder gives 2L numbers per example, [mu, logvar]; logvar is floored at ``min_logvar`` for
numerical safety. z is drawn by reparameterization, z = mu + exp(logvar / 2) * eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaekit.components.base import POSTERIORS, Posterior
from vaekit.distributions import DiagonalNormal, PointMass


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


@dataclass
class DeltaConfig:
    latent_penalty: float = 0.0  # lambda: the objective is log p(x | f(x)) - (lambda / 2) ||f(x)||^2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latent_penalty) and self.latent_penalty >= 0):
            raise ValueError(f"latent_penalty must be a finite number >= 0, got {self.latent_penalty}")


@POSTERIORS.register("delta", DeltaConfig, prefix="",
                     help="a deterministic autoencoder: q(z|x) = delta(z - f(x)), optional --latent-penalty")
class DeltaPosterior(Posterior):
    """q(z|x) = delta(z - f(x)); the encoder gives f(x), (N, L).

    Trained on the reconstruction minus (lambda / 2) ||f(x)||^2 (the regularised autoencoder of Ghosh et al.,
    2020); it defines no density until one is fitted to its codes (:mod:`vaekit.analysis.posthoc`), which also sets the
    width of the importance-sampling proposal kept here (``proposal_log_scale``; ``proposal_fitted`` is 1 once set).
    """

    autoencoder = True
    density_anywhere = False  # a point mass has no density

    def __init__(self, latent: int, latent_penalty: float = 0.0):
        super().__init__(latent)
        self.latent_penalty = float(latent_penalty)
        self.register_buffer("proposal_log_scale", torch.zeros(self.latent))
        self.register_buffer("proposal_fitted", torch.zeros(()))

    @property
    def param_size(self) -> int:
        return self.latent

    def forward(self, params: torch.Tensor) -> PointMass:
        scale = self.proposal_log_scale if bool(self.proposal_fitted > 0) else None
        return PointMass(params[..., : self.latent], self.latent_penalty, scale)
