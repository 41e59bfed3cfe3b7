"""Priors p(z) over the latent space: the standard normal and the VampPrior.

Each prior gives log p(z) (nats, summed over the latent dimensions), samples, and a
``torch.distributions`` view. The standard normal also has a closed-form KL to a diagonal
Gaussian posterior; the VampPrior's KL is estimated by Monte Carlo in the ELBO.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from vaekit.info import kl_standard_normal

LOG_2PI = math.log(2 * math.pi)


def diagonal_normal_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) = -1/2 sum_j [log 2 pi + logvar_j + (z_j - mu_j)^2 / exp(logvar_j)]."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


class Prior(nn.Module):
    name = ""
    has_analytic_kl = False

    def __init__(self, latent: int):
        super().__init__()
        self.latent = latent

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def distribution(self) -> Distribution:
        raise NotImplementedError

    def analytic_kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"the {self.name} prior has no closed-form KL; use a Monte Carlo estimate")

    def config(self) -> dict:
        return {"name": self.name}


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    name = "standard"
    has_analytic_kl = True

    def __init__(self, latent: int):
        super().__init__(latent)
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent, generator=generator, device=self._zero.device, dtype=self._zero.dtype)

    def distribution(self) -> Distribution:
        zeros = torch.zeros(self.latent, device=self._zero.device, dtype=self._zero.dtype)
        return Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def analytic_kl(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, diag s^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2)."""
        return kl_standard_normal(mu, logvar)


class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling, 2018): p(z) = (1/K) sum_k q(z | u_k).

    A mixture of the encoder's own posteriors at K learned pseudo-inputs u_k (pixel vectors
    in [0, 1], kept there by a hard tanh as in the paper). log p(z) is computed with a
    logsumexp over the components; the Gaussian quadratic forms are matrix products.
    """

    name = "vamp"

    def __init__(self, latent: int, data_dim: int, components: int = 500,
                 init_mean: float = 0.05, init_std: float = 0.01):
        super().__init__(latent)
        self.components = components
        self.data_dim = data_dim
        self.pseudo_inputs = nn.Parameter(init_mean + init_std * torch.randn(components, data_dim))
        self._encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
        self._frozen: tuple[torch.Tensor, torch.Tensor] | None = None

    def bind(self, encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Give the prior the encoder it mixes over (called by the VAE; not a sub-module)."""
        object.__setattr__(self, "_encode", encode)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Within the block the K components q(z|u_k) are encoded once and reused (no gradients).

        For evaluation, where the weights do not change: without it every log p(z) call re-encodes
        the K pseudo-inputs, about a tenth of the work of an importance-sampled log p(x).
        """
        with torch.no_grad():
            self._frozen = None
            params = self.components_params()
        self._frozen = params
        try:
            yield
        finally:
            self._frozen = None

    def components_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of the K components q(z|u_k), each (K, L)."""
        if self._frozen is not None:
            return self._frozen
        if self._encode is None:
            raise RuntimeError("VampPrior is not bound to an encoder; build it through vaekit.model.VAE")
        u = torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        return self._encode(u)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.components_params()  # (K, L)
        inv_var = torch.exp(-logvar)
        flat = z.reshape(-1, z.shape[-1])
        # sum_j (z_j - m_kj)^2 / v_kj = z^2 . (1/v_k) - 2 z . (m_k / v_k) + sum_j m_kj^2 / v_kj
        quad = flat.pow(2) @ inv_var.T - 2 * flat @ (mu * inv_var).T + (mu.pow(2) * inv_var).sum(-1)
        log_comp = -0.5 * (self.latent * LOG_2PI + logvar.sum(-1) + quad)  # (N, K)
        out = torch.logsumexp(log_comp, dim=-1) - math.log(self.components)
        return out.reshape(z.shape[:-1])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = self.components_params()
        k = torch.randint(self.components, (n,), generator=generator, device=mu.device)
        eps = torch.randn(n, self.latent, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu[k] + torch.exp(0.5 * logvar[k]) * eps

    def distribution(self) -> Distribution:
        mu, logvar = self.components_params()
        mix = Categorical(logits=torch.zeros(self.components, device=mu.device))
        return MixtureSameFamily(mix, Independent(Normal(mu, torch.exp(0.5 * logvar)), 1))

    def config(self) -> dict:
        return {"name": self.name, "components": self.components}


def make_prior(config: dict | str, latent: int, data_dim: int) -> Prior:
    cfg = {"name": config} if isinstance(config, str) else dict(config)
    name = cfg.pop("name")
    if name == "standard":
        return StandardNormalPrior(latent)
    if name == "vamp":
        return VampPrior(latent, data_dim, **cfg)
    raise ValueError(f"unknown prior {name!r}; choose standard or vamp")
