"""A uniform mixture of K diagonal Gaussians (the VampPrior's p(z)), with log p by matrix products.

    p(z) = (1/K) sum_k N(z; m_k, diag v_k)
    log p(z) = logsumexp_k [ -1/2 (L log 2 pi + sum_j log v_kj + sum_j (z_j - m_kj)^2 / v_kj) ] - log K

and sum_j (z_j - m_kj)^2 / v_kj = z^2 . (1/v_k) - 2 z . (m_k / v_k) + sum_j m_kj^2 / v_kj, so the N x K
quadratic forms are two matrix products. The same distribution as torch's
``MixtureSameFamily(Categorical(uniform), Independent(Normal(m, sqrt v), 1))`` (:meth:`to_torch`).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal, constraints

from vaekit.distributions.normal import LOG_2PI


class DiagonalGaussianMixture(Distribution):
    """(1/K) sum_k N(m_k, diag exp(logvar_k)); ``loc`` and ``logvar`` are (K, L)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, loc: torch.Tensor, logvar: torch.Tensor):
        if loc.dim() != 2 or loc.shape != logvar.shape:
            raise ValueError(f"loc and logvar must both be (K, L), got {tuple(loc.shape)} and {tuple(logvar.shape)}")
        self.loc, self.logvar = loc, logvar
        self.components, self.latent = loc.shape
        super().__init__(batch_shape=torch.Size(), event_shape=loc.shape[1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        inv_var = torch.exp(-self.logvar)
        flat = value.reshape(-1, value.shape[-1])
        quad = flat.pow(2) @ inv_var.T - 2 * flat @ (self.loc * inv_var).T + (self.loc.pow(2) * inv_var).sum(-1)
        log_comp = -0.5 * (self.latent * LOG_2PI + self.logvar.sum(-1) + quad)  # (N, K)
        out = torch.logsumexp(log_comp, dim=-1) - math.log(self.components)
        return out.reshape(value.shape[:-1])

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        n = math.prod(shape)
        with torch.no_grad():
            k = torch.randint(self.components, (n,), generator=generator, device=self.loc.device)
            eps = torch.randn(n, self.latent, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
            z = self.loc[k] + torch.exp(0.5 * self.logvar[k]) * eps
        return z.reshape(*shape, self.latent)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.mean(0)

    def to_torch(self) -> Distribution:
        mix = Categorical(logits=torch.zeros(self.components, device=self.loc.device, dtype=self.loc.dtype))
        return MixtureSameFamily(mix, Independent(Normal(self.loc, torch.exp(0.5 * self.logvar)), 1))
