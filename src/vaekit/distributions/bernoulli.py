"""Independent Bernoulli and continuous-Bernoulli pixels, parameterised by logits, drawn from a generator.

    Bernoulli:  log p(x) = sum_d [x_d l_d - softplus(l_d)] = -BCE(l, x)                       (nats)
    continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019), x_d in [0, 1]:
                log p(x) = sum_d [x_d l_d - softplus(l_d) + log C(sigmoid(l_d))]

The event is the last ``event_dims`` dimensions (3 for (C, H, W) images). ``x`` broadcasts against the
logits, so a batch of images (N, C, H, W) scores against logits (K, N, C, H, W) of K latent draws.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Independent, constraints

from vaekit.distributions.normal import sum_event as _sum_event


class IndependentBernoulli(Distribution):
    """prod_d Bernoulli(x_d; sigmoid(l_d)) over the last ``event_dims`` dimensions."""

    arg_constraints = {"logits": constraints.real}
    support = constraints.boolean
    has_rsample = False

    def __init__(self, logits: torch.Tensor, event_dims: int = 3):
        self.logits, self.event_dims = logits, int(event_dims)
        cut = logits.dim() - self.event_dims
        super().__init__(batch_shape=logits.shape[:cut], event_shape=logits.shape[cut:], validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits = self.logits
        if value.shape != logits.shape:
            logits, value = torch.broadcast_tensors(logits, value)
        return -_sum_event(F.binary_cross_entropy_with_logits(logits, value, reduction="none"), self.event_dims)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        probs = torch.sigmoid(self.logits).expand(torch.Size(sample_shape) + self.logits.shape)
        with torch.no_grad():
            return torch.bernoulli(probs, generator=generator)

    def entropy(self) -> torch.Tensor:
        p = torch.sigmoid(self.logits)
        return _sum_event(F.binary_cross_entropy_with_logits(self.logits, p, reduction="none"), self.event_dims)

    def to_torch(self) -> Distribution:
        return Independent(Bernoulli(logits=self.logits, validate_args=False), self.event_dims, validate_args=False)


class IndependentContinuousBernoulli(Distribution):
    """prod_d ContinuousBernoulli(x_d; sigmoid(l_d)), a proper density on [0, 1]^D; sampled by the inverse CDF."""

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, logits: torch.Tensor, event_dims: int = 3):
        self.logits, self.event_dims = logits, int(event_dims)
        self._factors = ContinuousBernoulli(logits=logits, validate_args=False)
        cut = logits.dim() - self.event_dims
        super().__init__(batch_shape=logits.shape[:cut], event_shape=logits.shape[cut:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self._factors.mean

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return _sum_event(self._factors.log_prob(value), self.event_dims)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """x = F^-1(u), u ~ U(0, 1): reproducible with ``generator``."""
        shape = torch.Size(sample_shape) + self.logits.shape
        u = torch.rand(shape, generator=generator, dtype=self.logits.dtype, device=self.logits.device)
        with torch.no_grad():
            return self._factors.expand(shape).icdf(u)

    def to_torch(self) -> Distribution:
        return Independent(self._factors, self.event_dims, validate_args=False)
