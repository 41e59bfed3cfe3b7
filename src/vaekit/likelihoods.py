"""Observation models p(x|z): turn the decoder's output into a distribution over pixels.

Every likelihood sees the decoder output ``params`` of shape (..., P * D) for D pixels and
P parameters per pixel, and returns log p(x|z) summed over the D pixels, in nats.
The hot path (:meth:`Likelihood.log_prob`) uses fused torch functions; the
:meth:`Likelihood.distribution` view gives the equivalent ``torch.distributions`` object.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli as TorchBernoulli
from torch.distributions import ContinuousBernoulli, Distribution, Independent, Normal

LOG_2PI = math.log(2 * math.pi)


class Likelihood(nn.Module):
    """Base class: ``params_per_pixel`` outputs per pixel; log-density summed over pixels."""

    name: str = ""
    params_per_pixel: int = 1

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = sum_d log p(x_d | params_d), nats; x (..., D), params (..., P*D)."""
        raise NotImplementedError

    def distribution(self, params: torch.Tensor) -> Distribution:
        """The same p(x|z) as a ``torch.distributions`` object with event shape (D,)."""
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z], in the data's units ([0, 1])."""
        return self.distribution(params).mean

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z); subclasses draw from ``generator`` so that samples are reproducible."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name}


class BernoulliLikelihood(Likelihood):
    """x_d ~ Bernoulli(sigmoid(l_d)); log p(x|z) = sum_d [x_d l_d - softplus(l_d)] = -BCE(l, x)."""

    name = "bernoulli"

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        x = x.expand_as(logits) if x.shape != logits.shape else x
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)

    def distribution(self, logits: torch.Tensor) -> Distribution:
        return Independent(TorchBernoulli(logits=logits, validate_args=False), 1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)


class ContinuousBernoulliLikelihood(Likelihood):
    """x_d in [0, 1] ~ ContinuousBernoulli(sigmoid(l_d)) (Loaiza-Ganem & Cunningham, 2019):
    the Bernoulli density with its normalising constant C(lambda), a proper density on [0, 1]."""

    name = "continuous-bernoulli"

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.distribution(logits).log_prob(x)

    def distribution(self, logits: torch.Tensor) -> Distribution:
        return Independent(ContinuousBernoulli(logits=logits, validate_args=False), 1)

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Inverse-CDF sampling, x = F^-1(u), u ~ U(0, 1), so a generator makes it reproducible."""
        u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
        return ContinuousBernoulli(logits=logits, validate_args=False).icdf(u)


class GaussianLikelihood(Likelihood):
    """x_d ~ N(mu_d, sigma_d^2), mu_d = sigmoid(m_d) in [0, 1].

    ``variance``: ``"fixed"`` (sigma = ``sigma``, one decoder output per pixel),
    ``"learned"`` (one learned sigma shared by all pixels) or ``"per-pixel"`` (the decoder
    outputs log sigma_d^2 too). log p = -1/2 sum_d [log 2 pi + log sigma_d^2 + (x_d - mu_d)^2 / sigma_d^2].
    Densities of continuous data can be positive: log p(x|z) may exceed 0.
    """

    name = "gaussian"

    def __init__(self, variance: str = "learned", sigma: float = 0.1, min_log_var: float = -9.0):
        super().__init__()
        if variance not in ("fixed", "learned", "per-pixel"):
            raise ValueError(f"variance must be fixed, learned or per-pixel, got {variance!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
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
            m, lv = params.unflatten(-1, (2, -1)).unbind(-2)
            return torch.sigmoid(m), lv.clamp(min=self.min_log_var)
        return torch.sigmoid(params), self.log_var.clamp(min=self.min_log_var).expand_as(params)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        mu, log_var = self._split(params)
        return -0.5 * (LOG_2PI + log_var + (x - mu).pow(2) * torch.exp(-log_var)).sum(-1)

    def distribution(self, params: torch.Tensor) -> Distribution:
        mu, log_var = self._split(params)
        return Independent(Normal(mu, torch.exp(0.5 * log_var), validate_args=False), 1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._split(params)[0]

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, log_var = self._split(params)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + torch.exp(0.5 * log_var) * eps

    def config(self) -> dict:
        return {"name": self.name, "variance": self.variance, "sigma": self.sigma}


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "continuous-bernoulli": ContinuousBernoulliLikelihood,
}


def make_likelihood(config: dict | str, shape: tuple[int, ...] | None = None) -> Likelihood:
    """Build a likelihood from its name or its :meth:`Likelihood.config` dict.

    ``shape`` (C, H, W) is passed to likelihoods that need the image's layout (``needs_shape``, e.g. the
    autoregressive ``"pixelcnn"``) unless the config dict holds it already; the others ignore it.
    """
    cfg = {"name": config} if isinstance(config, str) else dict(config)
    name = cfg.pop("name")
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose from {sorted(LIKELIHOODS)}")
    cls = LIKELIHOODS[name]
    if getattr(cls, "needs_shape", False):
        if "shape" not in cfg:
            if shape is None:
                raise ValueError(f"the {name} likelihood needs the image shape (C, H, W)")
            cfg["shape"] = tuple(shape)
        elif shape is not None and tuple(cfg["shape"]) != tuple(shape):
            raise ValueError(f"the {name} likelihood is for images {tuple(cfg['shape'])}, not {tuple(shape)}")
    return cls(**cfg)


from vaekit import autoregressive as _autoregressive  # noqa: E402,F401  (registers "pixelcnn" in LIKELIHOODS)
