"""Diagonal Gaussians parameterised by mean and log-variance, drawn from an explicit generator.

    N(z; mu, diag exp(logvar)):  log p = -1/2 sum_j [log 2 pi + logvar_j + (z_j - mu_j)^2 exp(-logvar_j)]   (nats)
    rsample: z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)   (the reparameterization trick)

``torch.distributions.Independent(Normal(mu, sigma), k)`` is the same distribution; these classes keep the
log-variance (the encoder's output) to avoid exp/log round trips and take a ``generator`` in ``rsample`` and
``sample`` so that evaluations are reproducible without touching the global random state.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Distribution, Independent, Normal, constraints

LOG_2PI = math.log(2 * math.pi)


def sum_event(values: torch.Tensor, event_dims: int) -> torch.Tensor:
    """The sum over the last ``event_dims`` dimensions (none: the values themselves)."""
    if event_dims == 1:
        return values.sum(-1)
    # flattened first: the same order of summation as a flat (..., D) batch, so the same rounding
    return values.flatten(-event_dims).sum(-1) if event_dims else values


def diagonal_normal_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last dimension, nats."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


class DiagonalNormal(Distribution):
    """N(mu, diag exp(logvar)) over the last ``event_dims`` dimensions (1: a latent vector; 3: an image)."""

    arg_constraints = {"loc": constraints.real, "logvar": constraints.real}
    support = constraints.real
    has_rsample = True
    #: log q(z) at a stopped-gradient copy of (mu, logvar) is available (:meth:`stopped_log_prob`).
    has_stopped_log_prob = True

    def __init__(self, loc: torch.Tensor, logvar: torch.Tensor, event_dims: int = 1):
        if loc.shape != logvar.shape:
            loc, logvar = torch.broadcast_tensors(loc, logvar)
        self.loc, self.logvar, self.event_dims = loc, logvar, int(event_dims)
        cut = loc.dim() - self.event_dims
        super().__init__(batch_shape=loc.shape[:cut], event_shape=loc.shape[cut:], validate_args=False)

    @property
    def scale(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def mode(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        return torch.exp(self.logvar)

    def point(self) -> torch.Tensor:
        """The code that stands for the distribution in pictures and active-unit counts: its mean."""
        return self.loc

    def rsample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.loc.shape
        eps = torch.randn(shape, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        return torch.addcmul(self.loc, torch.exp(0.5 * self.logvar), eps)  # one kernel: mu + sigma * eps

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        per = LOG_2PI + self.logvar + (value - self.loc).pow(2) * torch.exp(-self.logvar)
        return -0.5 * sum_event(per, self.event_dims)

    def stopped_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log N(value; stop(mu), diag exp(stop(logvar))), nats: the density at a stopped-gradient copy of the
        parameters, differentiable in ``value`` only (what the STL and DReG estimators take)."""
        return DiagonalNormal(self.loc.detach(), self.logvar.detach(), self.event_dims).log_prob(value)

    def entropy(self) -> torch.Tensor:
        return sum_event(0.5 * (1.0 + LOG_2PI + self.logvar), self.event_dims)

    def factors(self) -> Normal:
        """The independent one-dimensional factors N(mu_j, sigma_j^2), batch shape = the full shape."""
        return Normal(self.loc, self.scale, validate_args=False)

    def to_torch(self) -> Distribution:
        """The same distribution as ``Independent(Normal(mu, sigma), event_dims)``."""
        return Independent(self.factors(), self.event_dims, validate_args=False)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.event_shape
        return DiagonalNormal(self.loc.expand(shape), self.logvar.expand(shape), self.event_dims)


class StandardNormal(Distribution):
    """N(0, I) over vectors of size ``latent`` (no batch dimensions); the default prior p(z)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, latent: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        self.latent = int(latent)
        self._device, self._dtype = torch.device(device or "cpu"), dtype or torch.get_default_dtype()
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size([self.latent]), validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.latent, device=self._device, dtype=self._dtype)

    @property
    def variance(self) -> torch.Tensor:
        return torch.ones(self.latent, device=self._device, dtype=self._dtype)

    def rsample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.event_shape
        return torch.randn(shape, generator=generator, device=self._device, dtype=self._dtype)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rsample(sample_shape, generator)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """-1/2 sum_j (log 2 pi + z_j^2), nats."""
        return -0.5 * (LOG_2PI + value.pow(2)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return torch.tensor(0.5 * self.latent * (1.0 + LOG_2PI), device=self._device, dtype=self._dtype)

    def factors(self) -> Normal:
        zeros = torch.zeros(self.latent, device=self._device, dtype=self._dtype)
        return Normal(zeros, torch.ones_like(zeros), validate_args=False)

    def to_torch(self) -> Distribution:
        return Independent(self.factors(), 1, validate_args=False)
