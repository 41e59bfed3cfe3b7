"""A mixture of K diagonal Gaussians (the VampPrior's p(z), the Gaussian-mixture prior), log p by matrix products.

    p(z) = sum_k pi_k N(z; m_k, diag v_k)          (pi_k = 1/K unless mixture logits are given)
    log p(z) = logsumexp_k [ log pi_k - 1/2 (L log 2 pi + sum_j log v_kj + sum_j (z_j - m_kj)^2 / v_kj) ]

and sum_j (z_j - m_kj)^2 / v_kj = z^2 . (1/v_k) - 2 z . (m_k / v_k) + sum_j m_kj^2 / v_kj, so the N x K
quadratic forms are two matrix products. The same distribution as torch's
``MixtureSameFamily(Categorical(pi), Independent(Normal(m, sqrt v), 1))`` (:meth:`to_torch`).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal, constraints

from vaekit.distributions.normal import LOG_2PI


class DiagonalGaussianMixture(Distribution):
    """sum_k pi_k N(m_k, diag exp(logvar_k)); ``loc`` and ``logvar`` are (K, L), ``logits`` (K,) or None (uniform)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False
    #: log p(z) at a stopped-gradient copy of the parameters is available (:meth:`stopped_log_prob`).
    has_stopped_log_prob = True

    def __init__(self, loc: torch.Tensor, logvar: torch.Tensor, logits: torch.Tensor | None = None):
        if loc.dim() != 2 or loc.shape != logvar.shape:
            raise ValueError(f"loc and logvar must both be (K, L), got {tuple(loc.shape)} and {tuple(logvar.shape)}")
        if logits is not None and tuple(logits.shape) != tuple(loc.shape[:1]):
            raise ValueError(f"logits must be (K,) = ({loc.shape[0]},), got {tuple(logits.shape)}")
        self.loc, self.logvar = loc, logvar
        self.log_weights = None if logits is None else torch.log_softmax(logits, -1)
        self.components, self.latent = loc.shape
        super().__init__(batch_shape=torch.Size(), event_shape=loc.shape[1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        inv_var = torch.exp(-self.logvar)
        flat = value.reshape(-1, value.shape[-1])
        quad = flat.pow(2) @ inv_var.T - 2 * flat @ (self.loc * inv_var).T + (self.loc.pow(2) * inv_var).sum(-1)
        log_comp = -0.5 * (self.latent * LOG_2PI + self.logvar.sum(-1) + quad)  # (N, K)
        if self.log_weights is None:
            out = torch.logsumexp(log_comp, dim=-1) - math.log(self.components)
        else:
            out = torch.logsumexp(log_comp + self.log_weights, dim=-1)
        return out.reshape(value.shape[:-1])

    def stopped_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(value) with the means, log-variances and weights as stopped-gradient constants, nats;
        differentiable in ``value`` only."""
        logits = None if self.log_weights is None else self.log_weights.detach()  # log_softmax is idempotent
        return DiagonalGaussianMixture(self.loc.detach(), self.logvar.detach(), logits).log_prob(value)

    def component_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log pi_k + log N(z; m_k, v_k) for every component, (..., K): log p(c = k, z)."""
        inv_var = torch.exp(-self.logvar)
        flat = value.reshape(-1, value.shape[-1])
        quad = flat.pow(2) @ inv_var.T - 2 * flat @ (self.loc * inv_var).T + (self.loc.pow(2) * inv_var).sum(-1)
        log_comp = -0.5 * (self.latent * LOG_2PI + self.logvar.sum(-1) + quad)
        weights = self.log_weights if self.log_weights is not None else -math.log(self.components)
        return (log_comp + weights).reshape(*value.shape[:-1], self.components)

    def cluster_posterior(self, value: torch.Tensor) -> torch.Tensor:
        """p(c = k | z), (..., K): the responsibility of each component for z."""
        return torch.softmax(self.component_log_prob(value), dim=-1)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        n = math.prod(shape)
        with torch.no_grad():
            if self.log_weights is None:
                k = torch.randint(self.components, (n,), generator=generator, device=self.loc.device)
            else:
                k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
            eps = torch.randn(n, self.latent, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
            z = self.loc[k] + torch.exp(0.5 * self.logvar[k]) * eps
        return z.reshape(*shape, self.latent)

    @property
    def mean(self) -> torch.Tensor:
        if self.log_weights is None:
            return self.loc.mean(0)
        return (self.log_weights.exp()[:, None] * self.loc).sum(0)

    def to_torch(self) -> Distribution:
        logits = self.log_weights if self.log_weights is not None else torch.zeros(
            self.components, device=self.loc.device, dtype=self.loc.dtype)
        mix = Categorical(logits=logits)
        return MixtureSameFamily(mix, Independent(Normal(self.loc, torch.exp(0.5 * self.logvar)), 1))
