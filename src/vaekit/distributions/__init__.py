"""vaekit's own ``torch.distributions``: diagonal Gaussians by log-variance, a Gaussian mixture, factorised
Bernoulli pixels, probabilities of integer grey levels (:mod:`vaekit.distributions.pixel`: the discretized
logistic, its mixture, a categorical per sub-pixel), flows in q(z|x), and their closed-form KL terms
(:mod:`vaekit.distributions.kl`).

Every sampler takes a ``generator`` so that evaluations are reproducible. :func:`rsample_and_log_prob`
draws z ~ q by reparameterization together with log q(z), for any distribution with ``rsample``.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
from torch.distributions import Distribution

from vaekit.distributions import kl as kl
from vaekit.distributions.bernoulli import IndependentBernoulli, IndependentContinuousBernoulli
from vaekit.distributions.discrete import FactorizedBernoulli, FactorizedCategorical, support_size
from vaekit.distributions.flow import FlowDistribution
from vaekit.distributions.mixture import DiagonalGaussianMixture
from vaekit.distributions.normal import DiagonalNormal, StandardNormal, diagonal_normal_log_prob
from vaekit.distributions.pixel import DiscretizedLogistic, DiscretizedLogisticMixture, PixelCategorical
from vaekit.distributions.point import PointMass
from vaekit.distributions.sampled import SampledWithLogProb
from vaekit.errors import VaekitError


@lru_cache(maxsize=256)
def _takes_generator(cls: type, method: str) -> bool:
    try:
        return "generator" in inspect.signature(getattr(cls, method)).parameters
    except (TypeError, ValueError, AttributeError):
        return False


def rsample_and_log_prob(q: Distribution, sample_shape: torch.Size | tuple = (),
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, log q(z)) with z = q.rsample(sample_shape), in one pass where ``q`` offers one (flows).

    A discrete ``q`` (no ``rsample``) gives z = q.sample(sample_shape), which carries no gradient: what the
    evaluator needs; training a discrete q goes through an estimator (:mod:`vaekit.objectives.discrete`).

    ``generator`` is used where the distribution accepts one (vaekit's do); a plain ``torch.distributions``
    object draws from the global random state.
    """
    cls = type(q)
    if hasattr(q, "rsample_and_log_prob"):
        if generator is not None and _takes_generator(cls, "rsample_and_log_prob"):
            return q.rsample_and_log_prob(sample_shape, generator=generator)
        return q.rsample_and_log_prob(sample_shape)
    if not q.has_rsample:
        z = sample(q, sample_shape, generator)
    elif generator is not None and _takes_generator(cls, "rsample"):
        z = q.rsample(sample_shape, generator=generator)
    else:
        z = q.rsample(sample_shape)
    return z, q.log_prob(z)


def rsample(q: Distribution, sample_shape: torch.Size | tuple = (),
            generator: torch.Generator | None = None) -> torch.Tensor:
    """q.rsample(sample_shape), from ``generator`` where the distribution accepts one."""
    if generator is not None and _takes_generator(type(q), "rsample"):
        return q.rsample(sample_shape, generator=generator)
    return q.rsample(sample_shape)


def sample(d: Distribution, sample_shape: torch.Size | tuple = (),
           generator: torch.Generator | None = None) -> torch.Tensor:
    """d.sample(sample_shape), from ``generator`` where the distribution accepts one."""
    if generator is not None and _takes_generator(type(d), "sample"):
        return d.sample(sample_shape, generator=generator)
    return d.sample(sample_shape)


def stopped_log_prob(q: Distribution, z: torch.Tensor) -> torch.Tensor:
    """log q(z) at a stopped-gradient copy of q's parameters, differentiable in z only (nats): what the STL and
    DReG estimators of :mod:`vaekit.objectives.reparameterized` take. A distribution offers it by the capability
    ``has_stopped_log_prob`` (as ``has_rsample`` offers ``rsample``) and a method ``stopped_log_prob(z)``: vaekit's
    Gaussians, Gaussian mixtures and flows (at their own draws) do. Raises :class:`vaekit.errors.VaekitError`
    for one that does not."""
    if not getattr(q, "has_stopped_log_prob", False):
        raise VaekitError(f"q(z|x) is a {type(q).__name__}, which gives no log q(z|x) at stopped-gradient parameters "
                          "(has_stopped_log_prob); the STL and DReG estimators need it: use the pathwise estimator")
    try:
        return q.stopped_log_prob(z)
    except NotImplementedError as exc:
        raise VaekitError(f"log q(z|x) at stopped-gradient parameters is not available here: {exc}") from None


def point(q: Distribution) -> torch.Tensor:
    """A code that stands for q(z|x) in pictures and active-unit counts: ``q.point()`` where defined
    (a Gaussian's mean; a flow's image of its base mean), else ``q.mean``."""
    return q.point() if hasattr(q, "point") else q.mean


__all__ = ["DiagonalGaussianMixture", "DiagonalNormal", "DiscretizedLogistic", "DiscretizedLogisticMixture",
           "FactorizedBernoulli", "FactorizedCategorical", "FlowDistribution", "IndependentBernoulli",
           "PixelCategorical", "PointMass",
           "IndependentContinuousBernoulli", "SampledWithLogProb", "StandardNormal", "diagonal_normal_log_prob",
           "point", "rsample", "rsample_and_log_prob", "sample", "stopped_log_prob", "support_size"]
