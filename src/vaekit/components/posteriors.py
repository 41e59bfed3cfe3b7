"""The diagonal Gaussian posterior q(z|x) = N(mu(x), diag exp(logvar(x))) (Kingma & Welling, 2014), and the
point mass q(z|x) = delta(z - f(x)) of a deterministic autoencoder.

The Gaussian's encoder gives 2L numbers per example, [mu, logvar]; logvar is floored at ``min_logvar`` for
numerical safety (a setting from :data:`MIN_LOGVAR_RANGE`: exp(min_logvar), its inverse and exp(min_logvar / 2) stay
normal float32 numbers). z is drawn by reparameterization, z = mu + exp(logvar / 2) * eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vaekit.components.base import POSTERIORS, Posterior
from vaekit.distributions import DiagonalNormal, PointMass

#: The floors of a log-variance that may be set (nats of log sigma^2): variances from e^-50 (about 2e-22) to e^10.
MIN_LOGVAR_RANGE = (-50.0, 10.0)
#: The largest ``latent_penalty`` lambda: far past any useful weight of (lambda / 2) ||f(x)||^2 beside log p(x|z).
MAX_LATENT_PENALTY = 1e6


def check_min_logvar(value: float) -> float:
    """``min_logvar`` as a float in :data:`MIN_LOGVAR_RANGE`; else a ``ValueError`` naming it."""
    low, high = MIN_LOGVAR_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"min_logvar must be a number from {low:g} to {high:g} (the floor of the posterior's log "
                         f"variance), got {value!r}")
    return float(value)


@dataclass
class GaussianPosteriorConfig:
    min_logvar: float = -12.0  # floor on the encoder's log-variance

    def __post_init__(self) -> None:
        check_min_logvar(self.min_logvar)


@POSTERIORS.register("gaussian", GaussianPosteriorConfig, prefix="posterior",
                     help="diagonal Gaussian q(z|x) = N(mu(x), diag exp(logvar(x)))")
class GaussianPosterior(Posterior):
    """q(z|x) = N(mu, diag exp(logvar)); the encoder output is (N, 2L) = [mu, logvar]."""

    def __init__(self, latent: int, min_logvar: float = -12.0):
        super().__init__(latent)
        self.min_logvar = check_min_logvar(min_logvar)

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
        if isinstance(self.latent_penalty, bool) or not isinstance(self.latent_penalty, (int, float)) or \
                not 0 <= self.latent_penalty <= MAX_LATENT_PENALTY:
            raise ValueError(f"latent_penalty must be a number from 0 to {MAX_LATENT_PENALTY:g}, got "
                             f"{self.latent_penalty!r}")


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
        DeltaConfig(latent_penalty)  # the same checks for direct construction
        self.latent_penalty = float(latent_penalty)
        self.register_buffer("proposal_log_scale", torch.zeros(self.latent))
        self.register_buffer("proposal_fitted", torch.zeros(()))

    @property
    def param_size(self) -> int:
        return self.latent

    def forward(self, params: torch.Tensor) -> PointMass:
        scale = self.proposal_log_scale if bool(self.proposal_fitted > 0) else None
        return PointMass(params[..., : self.latent], self.latent_penalty, scale)
