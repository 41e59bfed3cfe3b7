"""The mixture of Bernoullis: one categorical latent z with K values, and binary pixels given z.

    p(z = k)      = pi_k = softmax(a)_k                           (the mixture weights, learned logits a)
    p(x | z = k)  = prod_d Bern(x_d; sigmoid(l_kd))                (the pixel logits l, a (K, D) table)
    log p(x, k)   = log pi_k + sum_d [x_d l_kd - softplus(l_kd)]   (one matrix product for a batch)
    log p(x)      = logsumexp_k log p(x, k),   p(z = k | x) = exp(log p(x, k) - log p(x))

The code z is one-hot (K,) (a :class:`~vaekit.distributions.FactorizedCategorical` with one group), so the
model implements the whole protocol of :mod:`vaekit.models.base` with the EXACT posterior as its guide:
``posterior(x)`` is p(z|x) (the responsibilities), for which the ELBO is log p(x) itself and every
importance weight p(x, z) / p(z|x) equals p(x). ``decode(z)`` is ``z @ l``, the Bernoulli logits of the
component (a probability vector z gives the weighted mean of the components' logits). It is fitted by
exact EM (:mod:`vaekit.training.em`); all densities are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.components.discrete import CategoricalPosterior, CategoricalPrior
from vaekit.components.likelihoods import BernoulliLikelihood
from vaekit.distributions import FactorizedCategorical
from vaekit.models.base import LatentVariableModel, ShapeError, register_model
from vaekit.models.persistence import MAX_PIXELS, MAX_SIZE, Persistent

#: The settings of a ``model.json`` of kind ``bernoulli-mixture``.
SPEC_KEYS = frozenset({"format", "model", "shape", "latent", "components", "condition", "posterior", "prior",
                       "likelihood"})
#: Mixture logits are kept above this (nats): an emptied component keeps a finite, negligible weight.
MIN_LOG_WEIGHT = -80.0


@register_model("bernoulli-mixture")
class BernoulliMixture(Persistent, LatentVariableModel):
    """K product-of-Bernoulli components over data of ``shape``; ``prior.logits`` (1, K) holds the mixture
    logits a and ``pixel_logits`` (K, D) the Bernoulli logits l of each component."""

    condition = 0
    noun = "mixture of Bernoullis"

    def __init__(self, components: int = 10, shape: Sequence[int] = (1, 28, 28)):
        super().__init__()
        if isinstance(components, bool) or not isinstance(components, int) or not 1 <= components <= MAX_SIZE:
            raise ShapeError(f"components must be an integer from 1 to {MAX_SIZE}, got {components!r}")
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise ShapeError(f"the data shape must be (C, H, W) or (D,) of positive sizes, got {shape}")
        self.components = components
        self.shape = shape
        self.likelihood = BernoulliLikelihood(shape)
        self.posterior_family = CategoricalPosterior(latent=1, classes=components)  # discrete = True
        self.prior = CategoricalPrior(components, posterior=self.posterior_family, learned=True)
        self.pixel_logits = nn.Parameter(0.1 * torch.randn(components, math.prod(shape)))

    # -- construction from probabilities ----------------------------------------------------------
    @classmethod
    def from_probabilities(cls, weights: torch.Tensor, probs: torch.Tensor, shape: Sequence[int]) -> BernoulliMixture:
        """The model with mixture weights pi (K,) and pixel probabilities mu (K, D), both in (0, 1)."""
        model = cls(int(probs.shape[0]), shape)
        model.set_probabilities(weights, probs)
        return model

    @torch.no_grad()
    def set_probabilities(self, weights: torch.Tensor, probs: torch.Tensor) -> BernoulliMixture:
        """Set a = log pi (at least :data:`MIN_LOG_WEIGHT`) and l = log mu - log(1 - mu)."""
        k, d = self.pixel_logits.shape
        if tuple(weights.shape) != (k,) or tuple(probs.shape) != (k, d):
            raise ShapeError(f"expected weights ({k},) and probabilities ({k}, {d}); got {tuple(weights.shape)} "
                             f"and {tuple(probs.shape)}")
        self.prior.logits.copy_(torch.log(weights).clamp(min=MIN_LOG_WEIGHT).reshape(1, k))
        self.pixel_logits.copy_(torch.logit(probs))
        return self

    def probabilities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pi (K,), mu (K, D)): the mixture weights and the pixel probabilities sigmoid(l)."""
        return torch.softmax(self.prior.logits[0], -1), torch.sigmoid(self.pixel_logits)

    # -- exact quantities -------------------------------------------------------------------------
    @property
    def latent_size(self) -> int:
        return self.components

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = self.as_data(x)
        return x.reshape(*x.shape[: x.dim() - len(self.shape)], -1).to(self.pixel_logits.dtype)

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x, z = k) = log pi_k + x . l_k - sum_d softplus(l_kd), nats; x (N, ...) -> (N, K)."""
        x = self._flat(x)
        log_pi = torch.log_softmax(self.prior.logits[0], -1)
        return log_pi + x @ self.pixel_logits.T - F.softplus(self.pixel_logits).sum(-1)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log p(x) = logsumexp_k log p(x, k), nats; x (N, ...) -> (N,)."""
        return torch.logsumexp(self.log_joint(x), -1)

    # -- the protocol -----------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, y: Any = None) -> FactorizedCategorical:
        """The exact posterior p(z|x) (the responsibilities): logits (N, 1, K), event (K,)."""
        self.conditioning(y)
        return FactorizedCategorical(self.log_joint(x).unsqueeze(-2))

    def prior_distribution(self) -> FactorizedCategorical:
        """p(z) = Cat(softmax(a)): logits (1, K), event (K,)."""
        return self.prior.distribution()

    def decode(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The Bernoulli logits z @ l for codes z (..., K): (..., C, H, W)."""
        self.conditioning(y)
        if z.shape[-1] != self.components:
            raise ShapeError(f"codes of this mixture are ({self.components},) one-hot vectors; got a batch of shape "
                             f"{tuple(z.shape)}")
        return (z.to(self.pixel_logits.dtype) @ self.pixel_logits).reshape(*z.shape[:-1], *self.likelihood.param_shape)

    def inference_parameters(self) -> list[nn.Parameter]:
        """None: q(z|x) is the exact posterior, made of the model's own parameters."""
        return []

    # -- persistence ------------------------------------------------------------------------------
    def own_description(self) -> dict[str, Any]:
        """The settings of ``model.json`` (after its format and kind); ``latent`` is the code size K."""
        return {"shape": list(self.shape), "latent": self.components, "components": self.components, "condition": 0,
                "posterior": self.posterior_family.config(), "prior": self.prior.config(),
                "likelihood": self.likelihood.config()}

    @staticmethod
    def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
        """Validate a description read from a file (the keys and values :meth:`describe` writes); ValueError."""
        unknown, missing = sorted(set(spec) - SPEC_KEYS), sorted(SPEC_KEYS - set(spec) - {"condition"})
        if unknown or missing:
            raise ValueError(f"unknown settings {unknown[:3]}" if unknown else f"missing settings {missing[:3]}")
        shape = spec["shape"]
        if not isinstance(shape, list) or len(shape) not in (1, 3) or not all(
                isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIZE for s in shape) \
                or math.prod(shape) > MAX_PIXELS:
            raise ValueError(f"shape must be (C, H, W) (or (D,)) of at most {MAX_PIXELS} values, got {shape!r}")
        k = spec["components"]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_SIZE or spec["latent"] != k:
            raise ValueError(f"components must be an integer from 1 to {MAX_SIZE} equal to latent; got "
                             f"{k!r} and {spec['latent']!r}")
        want = {"condition": 0, "posterior": {"name": "categorical", "classes": k},
                "prior": {"name": "categorical", "learned": True}, "likelihood": {"name": "bernoulli"}}
        for key, value in want.items():
            if spec.get(key, 0) != value:
                raise ValueError(f"a mixture of Bernoullis has {key} {value!r}, got {spec.get(key)!r}")
        return spec

    @staticmethod
    def spec_parameters(spec: dict[str, Any]) -> int:
        """Parameters of a description: K * D pixel logits and K mixture logits."""
        return int(spec["components"]) * (math.prod(spec["shape"]) + 1)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> BernoulliMixture:
        return cls(int(spec["components"]), tuple(spec["shape"]))

    def extra_repr(self) -> str:
        return f"components={self.components}, shape={list(self.shape)}"
