"""Observation models p(x|z): the decoder's output -> a distribution over images (C, H, W).

Every likelihood takes the decoder output ``params`` (..., P*C, H, W) for P parameters per pixel and returns
p(x|z) as a ``torch.distributions`` object whose ``log_prob`` sums over the pixels (nats). The Bernoulli and
continuous Bernoulli are probabilities / densities of single pixels; the Gaussian is a density on [0, 1]^D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.components.base import LIKELIHOODS, Likelihood
from vaekit.distributions import DiagonalNormal, IndependentBernoulli, IndependentContinuousBernoulli
from vaekit.distributions.normal import sum_event


@LIKELIHOODS.register("bernoulli", help="binary pixels, x_d ~ Bernoulli(sigmoid(l_d))")
class BernoulliLikelihood(Likelihood):
    """x_d ~ Bernoulli(sigmoid(l_d)); log p(x|z) = sum_d [x_d l_d - softplus(l_d)] = -BCE(l, x)."""

    def forward(self, logits: torch.Tensor) -> IndependentBernoulli:
        return IndependentBernoulli(logits, self.event_dims)

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """-sum_d BCE(l_d, x_d), the same as ``self(logits).log_prob(x)`` without building the distribution."""
        if x.shape != logits.shape:  # x (N, ...) against logits (..., N, ...) or (S, 1, ...) of codes shared by x
            logits, x = torch.broadcast_tensors(logits, x)
        return -sum_event(F.binary_cross_entropy_with_logits(logits, x, reduction="none"), self.event_dims)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


@LIKELIHOODS.register("continuous-bernoulli", prefix="cb",
                      help="continuous Bernoulli density on [0, 1] (Loaiza-Ganem & Cunningham, 2019)")
class ContinuousBernoulliLikelihood(Likelihood):
    """x_d in [0, 1] ~ ContinuousBernoulli(sigmoid(l_d)) (Loaiza-Ganem & Cunningham, 2019):
    the Bernoulli density with its normalising constant C(lambda), a proper density on [0, 1]."""

    def forward(self, logits: torch.Tensor) -> IndependentContinuousBernoulli:
        return IndependentContinuousBernoulli(logits, self.event_dims)


@dataclass
class GaussianLikelihoodConfig:
    variance: str = "learned"  # fixed | learned | per-pixel
    sigma: float = 0.1  # the fixed sigma, or the learned one's start

    def __post_init__(self) -> None:
        if self.variance not in ("fixed", "learned", "per-pixel"):
            raise ValueError(f"variance must be fixed, learned or per-pixel, got {self.variance!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")


@LIKELIHOODS.register("gaussian", GaussianLikelihoodConfig, help="Gaussian density, mean sigmoid(m) in [0, 1]")
class GaussianLikelihood(Likelihood):
    """x_d ~ N(mu_d, sigma_d^2), mu_d = sigmoid(m_d) in [0, 1].

    ``variance``: ``"fixed"`` (sigma = ``sigma``, one decoder output per pixel), ``"learned"`` (one learned
    sigma shared by all pixels) or ``"per-pixel"`` (the decoder outputs log sigma_d^2 too).
    log p = -1/2 sum_d [log 2 pi + log sigma_d^2 + (x_d - mu_d)^2 / sigma_d^2]. Densities of continuous data
    can be positive: log p(x|z) may exceed 0.
    """

    def __init__(self, shape: tuple[int, ...], variance: str = "learned", sigma: float = 0.1,
                 min_log_var: float = -9.0):
        super().__init__(shape)
        GaussianLikelihoodConfig(variance, sigma)  # the same checks for direct construction
        self.variance = variance
        self.sigma = float(sigma)
        self.min_log_var = float(min_log_var)
        self.params_per_pixel = 2 if variance == "per-pixel" else 1
        init = torch.tensor(2 * math.log(sigma))
        if variance == "learned":
            self.log_var = nn.Parameter(init)
        else:
            self.register_buffer("log_var", init)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.variance == "per-pixel":
            m, lv = self.split(params)
            return torch.sigmoid(m), lv.clamp(min=self.min_log_var)
        return torch.sigmoid(params), self.log_var.clamp(min=self.min_log_var).expand_as(params)

    def forward(self, params: torch.Tensor) -> DiagonalNormal:
        mu, log_var = self._split(params)
        return DiagonalNormal(mu, log_var, self.event_dims)
