"""Discrete latent variables: categorical and Bernoulli posteriors, their priors, and the Gaussian-mixture prior.

* ``categorical`` q(z|x): G groups (``latent``) of K-way one-hot variables (``classes``); the code z fed to the
  decoder is the flat one-hot vector of size G * K. Its prior ``categorical`` is uniform, or learned (one set of
  class logits per group, ``--prior-learned``).
* ``bernoulli`` q(z|x): d binary units (``latent``), a sigmoid belief layer; prior ``bernoulli`` is
  Bernoulli(1/2) per unit, or learned.
* ``mixture`` p(z): a Gaussian mixture with C learned components (``clusters``), sum_c pi_c N(z; m_c, diag v_c);
  with the Gaussian posterior it is the Gaussian-mixture VAE, the cluster variable c summed out exactly in
  log p(z) = logsumexp_c [log pi_c + log N(z; m_c, v_c)], and p(c|z) the exact cluster posterior.

The KL of a discrete q to its prior is in closed form (:mod:`vaekit.distributions.kl`); the mixture's is
estimated by Monte Carlo, as the VampPrior's. Training a discrete q needs an estimator
(:mod:`vaekit.objectives.discrete`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vaekit.components.base import POSTERIORS, PRIORS, Posterior, Prior
from vaekit.distributions import DiagonalGaussianMixture, FactorizedBernoulli, FactorizedCategorical


@dataclass
class CategoricalConfig:
    classes: int = 10  # K: values of each categorical variable

    def __post_init__(self) -> None:
        if isinstance(self.classes, bool) or not 2 <= self.classes <= 2**20:
            raise ValueError(f"classes must be an integer from 2 to {2**20}, got {self.classes}")


@POSTERIORS.register("categorical", CategoricalConfig, prefix="",
                     help="G groups (--latent) of K-way categorical variables (--classes)")
class CategoricalPosterior(Posterior):
    """q(z|x) = prod_g Cat(z_g; softmax(l_g(x))): the encoder gives G * K logits; z is one-hot, (G * K,)."""

    discrete = True
    default_prior = "categorical"

    def __init__(self, latent: int, classes: int = 10):
        super().__init__(latent)
        self.classes = int(classes)

    @property
    def param_size(self) -> int:
        return self.latent * self.classes

    @property
    def code_size(self) -> int:
        return self.latent * self.classes

    def forward(self, params: torch.Tensor) -> FactorizedCategorical:
        return FactorizedCategorical(params.reshape(*params.shape[:-1], self.latent, self.classes))


@POSTERIORS.register("bernoulli", help="d binary latent units (--latent), a sigmoid belief layer")
class BernoulliPosterior(Posterior):
    """q(z|x) = prod_j Bern(z_j; sigmoid(l_j(x))): the encoder gives d logits; z in {0, 1}^d."""

    discrete = True
    default_prior = "bernoulli"

    @property
    def param_size(self) -> int:
        return self.latent

    def forward(self, params: torch.Tensor) -> FactorizedBernoulli:
        return FactorizedBernoulli(params)


@dataclass
class LearnedConfig:
    learned: bool = False  # learn the prior's probabilities (else uniform)


def _require(posterior: Any, cls: type, prior: str) -> Any:
    if not isinstance(posterior, cls):
        got = getattr(posterior, "name", None) or type(posterior).__name__
        raise ValueError(f"the {prior} prior is a prior over {cls.name} codes; this model's posterior is {got} "
                         f"(use --posterior {cls.name}, or another prior)")
    return posterior


@PRIORS.register("categorical", LearnedConfig, prefix="prior",
                 help="categorical p(z) for a categorical posterior: uniform, or learned (--prior-learned)")
class CategoricalPrior(Prior):
    """p(z) = prod_g Cat(z_g; softmax(a_g)); a = 0 (uniform, 1/K each) unless ``learned``."""

    def __init__(self, latent: int, posterior: Any = None, learned: bool = False):
        post = _require(posterior, CategoricalPosterior, "categorical")
        super().__init__(latent)
        self.groups, self.classes, self.learned = post.latent, post.classes, bool(learned)
        logits = torch.zeros(self.groups, self.classes)
        if self.learned:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits, persistent=False)

    def distribution(self) -> FactorizedCategorical:
        return FactorizedCategorical(self.logits)


@PRIORS.register("bernoulli", LearnedConfig, prefix="prior",
                 help="Bernoulli p(z) for binary latents: Bernoulli(1/2) per unit, or learned (--prior-learned)")
class BernoulliPrior(Prior):
    """p(z) = prod_j Bern(z_j; sigmoid(a_j)); a = 0 (probability 1/2) unless ``learned``."""

    def __init__(self, latent: int, posterior: Any = None, learned: bool = False):
        _require(posterior, BernoulliPosterior, "bernoulli")
        super().__init__(latent)
        self.learned = bool(learned)
        logits = torch.zeros(self.latent)
        if self.learned:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits, persistent=False)

    def distribution(self) -> FactorizedBernoulli:
        return FactorizedBernoulli(self.logits)


@dataclass
class MixtureConfig:
    clusters: int = 10  # C: Gaussian components, the values of the cluster variable

    def __post_init__(self) -> None:
        if isinstance(self.clusters, bool) or not 1 <= self.clusters <= 2**20:
            raise ValueError(f"clusters must be an integer from 1 to {2**20}, got {self.clusters}")


@PRIORS.register("mixture", MixtureConfig, prefix="",
                 help="a mixture of C learned Gaussians (--clusters): the Gaussian-mixture VAE's p(c) p(z|c)")
class GaussianMixturePrior(Prior):
    """p(z) = sum_c pi_c N(z; m_c, diag exp(s_c)), with pi, m and s learned; c is summed out exactly.

    The means start spread out, m_c ~ N(0, I), the variances at 1 and the weights uniform.
    """

    def __init__(self, latent: int, clusters: int = 10):
        super().__init__(latent)
        self.clusters = int(clusters)
        self.loc = nn.Parameter(torch.randn(self.clusters, self.latent))
        self.logvar = nn.Parameter(torch.zeros(self.clusters, self.latent))
        self.logits = nn.Parameter(torch.zeros(self.clusters))

    def distribution(self) -> DiagonalGaussianMixture:
        return DiagonalGaussianMixture(self.loc, self.logvar, self.logits)

    def cluster_posterior(self, z: torch.Tensor) -> torch.Tensor:
        """p(c | z), (..., C)."""
        return self.distribution().cluster_posterior(z)
