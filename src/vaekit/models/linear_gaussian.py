"""The linear-Gaussian model (probabilistic PCA), whose log p(x) and posterior are known in closed form::

    p(z) = N(0, I_L),   p(x|z) = N(x; W z + b, sigma^2 I_D)
    log p(x) = log N(x; b, W W^T + sigma^2 I)
    p(z|x)   = N(m, S),  S = (I + W^T W / sigma^2)^-1,  m = S W^T (x - b) / sigma^2

It implements the model protocol of :mod:`vaekit.models.base` with a linear encoder
q(z|x) = N(A x + c, diag exp(logvar)) that can be set to the exact posterior or to a wrong one, so that the
SAME objectives and evaluator that train and measure the VAE are checked against exact answers:
ELBO(x) = log p(x) - KL(q(z|x) || p(z|x)) for every q, and log w(z) = log p(x) for every z when q = p(z|x).
The exact posterior covariance S is diagonal when W has orthogonal columns; every linear-Gaussian model is one
of those up to a rotation of z (:meth:`LinearGaussian.rotated`), which changes neither p(z) nor p(x).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, MultivariateNormal, kl_divergence

from vaekit.components.base import Likelihood
from vaekit.components.priors import StandardNormalPrior
from vaekit.distributions import DiagonalNormal
from vaekit.models.base import LatentVariableModel

LOG_2PI = math.log(2 * math.pi)


class FixedGaussianLikelihood(Likelihood):
    """p(x|z) = N(x; mean, sigma^2 I): params are the means (no squashing); data of shape (D,)."""

    name = "gaussian-fixed"

    def __init__(self, shape: tuple[int, ...], sigma: float):
        super().__init__(shape)
        self.sigma = float(sigma)

    def forward(self, mean: torch.Tensor) -> DiagonalNormal:
        """-1/2 sum_d [log 2 pi sigma^2 + (x_d - mean_d)^2 / sigma^2], nats."""
        return DiagonalNormal(mean, torch.full_like(mean, 2 * math.log(self.sigma)), self.event_dims)

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        d = mean.shape[-1]
        return -0.5 * (d * (LOG_2PI + 2 * math.log(self.sigma)) + (x - mean).pow(2).sum(-1) / self.sigma**2)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params


class LinearGaussian(LatentVariableModel):
    """x = W z + b + sigma * eps with z ~ N(0, I); a linear encoder q(z|x) = N(A x + c, diag exp(logvar)).

    ``weight`` W is (D, L), ``bias`` b is (D,). The encoder starts at the exact posterior's mean map
    and diagonal variances (exact when W^T W is diagonal).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, sigma: float):
        super().__init__()
        if weight.dim() != 2 or bias.shape != weight.shape[:1]:
            raise ValueError(f"weight must be (D, L) and bias (D,), got {tuple(weight.shape)} and {tuple(bias.shape)}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone())
        self.sigma = float(sigma)
        d, latent = weight.shape
        self.data_dim, self.latent = int(d), int(latent)
        self.shape = (self.data_dim,)
        self.prior = StandardNormalPrior(self.latent).to(dtype=weight.dtype, device=weight.device)
        self.likelihood = FixedGaussianLikelihood(self.shape, sigma)
        self.register_buffer("enc_weight", torch.zeros(latent, d, dtype=weight.dtype, device=weight.device))
        self.register_buffer("enc_bias", torch.zeros(latent, dtype=weight.dtype, device=weight.device))
        self.register_buffer("enc_logvar", torch.zeros(latent, dtype=weight.dtype, device=weight.device))
        self.set_exact_posterior(strict=False)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def random(cls, data_dim: int = 8, latent: int = 2, sigma: float = 0.5, seed: int = 0,
               orthogonal: bool = True, dtype: torch.dtype = torch.float64) -> LinearGaussian:
        """A random model; ``orthogonal`` gives W orthogonal columns (so the exact posterior is diagonal)."""
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(data_dim, latent, generator=g, dtype=dtype)
        if orthogonal:
            q, _ = torch.linalg.qr(w)
            scales = 0.5 + 1.5 * torch.rand(latent, generator=g, dtype=dtype)
            w = q * scales
        b = 0.5 * torch.randn(data_dim, generator=g, dtype=dtype)
        return cls(w, b, sigma)

    def rotated(self) -> LinearGaussian:
        """The same p(x) with the latent space rotated so that W^T W (and so S) is diagonal."""
        _, vecs = torch.linalg.eigh(self.weight.T @ self.weight)
        return LinearGaussian(self.weight @ vecs, self.bias, self.sigma)

    # -- exact quantities --------------------------------------------------------------------
    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W W^T + sigma^2 I)."""
        cov = self.weight @ self.weight.T + self.sigma**2 * torch.eye(self.data_dim, dtype=self.weight.dtype,
                                                                        device=self.weight.device)
        return MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x), nats; x (B, D) -> (B,)."""
        return self.marginal().log_prob(x)

    def posterior_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, S): the exact posterior is N(A (x - b), S), A = S W^T / sigma^2, S = (I + W^T W / sigma^2)^-1."""
        eye = torch.eye(self.latent, dtype=self.weight.dtype, device=self.weight.device)
        s = torch.linalg.inv(eye + self.weight.T @ self.weight / self.sigma**2)
        s = 0.5 * (s + s.T)
        return s @ self.weight.T / self.sigma**2, s

    def true_posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """p(z|x) = N(m, S), batch (B,)."""
        a, s = self.posterior_params()
        m = (x - self.bias) @ a.T
        return MultivariateNormal(m, covariance_matrix=s.expand(x.shape[0], -1, -1))

    def sample_data(self, n: int, seed: int = 0) -> torch.Tensor:
        """n draws x ~ p(x), (n, D)."""
        g = torch.Generator(device=self.weight.device).manual_seed(seed)
        z = torch.randn(n, self.latent, generator=g, dtype=self.weight.dtype, device=self.weight.device)
        return self.likelihood.sample(self.decode(z), generator=g)

    # -- the guide q(z|x) --------------------------------------------------------------------
    def set_encoder(self, weight: torch.Tensor, bias: torch.Tensor, logvar: torch.Tensor) -> LinearGaussian:
        """q(z|x) = N(weight x + bias, diag exp(logvar))."""
        self.enc_weight.copy_(weight)
        self.enc_bias.copy_(bias)
        self.enc_logvar.copy_(logvar)
        return self

    def set_exact_posterior(self, strict: bool = True) -> LinearGaussian:
        """Set q(z|x) = p(z|x). Exact only when S is diagonal (``strict`` raises otherwise; see :meth:`rotated`)."""
        a, s = self.posterior_params()
        off = (s - torch.diag(torch.diagonal(s))).abs().max()
        if strict and off > 1e-10 * s.abs().max():
            raise ValueError("the exact posterior has a full covariance (W^T W is not diagonal), which a diagonal "
                             "q cannot represent; use model.rotated() first")
        return self.set_encoder(a, -a @ self.bias, torch.log(torch.diagonal(s)))

    def set_wrong_posterior(self, shift: float = 0.5, scale: float = 1.5, seed: int = 0) -> LinearGaussian:
        """A deliberately wrong q: the exact mean map with a random relative error and offset ``shift``,
        the exact variances times ``scale**2`` (wider than the posterior, so importance weights have
        finite variance)."""
        a, s = self.posterior_params()
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(a.shape, generator=g, dtype=a.dtype).to(a.device)
        offset = shift * torch.randn(self.latent, generator=g, dtype=a.dtype).to(a.device)
        a_wrong = a * (1 + 0.2 * noise)
        logvar = torch.log(torch.diagonal(s)) + 2 * math.log(scale)
        return self.set_encoder(a_wrong, -a_wrong @ self.bias + offset, logvar)

    @property
    def latent_size(self) -> int:
        return self.latent

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x), each (..., L)."""
        mu = x @ self.enc_weight.T + self.enc_bias
        return mu, self.enc_logvar.expand_as(mu)

    def posterior(self, x: torch.Tensor, y: Any = None) -> DiagonalNormal:
        """q(z|x) = N(A x + c, diag exp(logvar))."""
        self.conditioning(y)
        return DiagonalNormal(*self.encode(x))

    def prior_distribution(self) -> Distribution:
        return self.prior.distribution()

    def inference_parameters(self) -> list[nn.Parameter]:
        return []

    def q_distribution(self, x: torch.Tensor) -> MultivariateNormal:
        mu, logvar = self.encode(x)
        return MultivariateNormal(mu, covariance_matrix=torch.diag_embed(logvar.exp()))

    def kl_to_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || p(z|x)) in closed form with torch.distributions, nats, (B,)."""
        return kl_divergence(self.q_distribution(x), self.true_posterior(x))

    def elbo_closed_form(self, x: torch.Tensor) -> torch.Tensor:
        """E_q[log p(x|z)] - KL(q || p(z)) in closed form:
        E_q[log p(x|z)] = -1/2 [D log 2 pi sigma^2 + (||x - W mu - b||^2 + tr(W diag(v) W^T)) / sigma^2]."""
        mu, logvar = self.encode(x)
        v = logvar.exp()
        resid = (x - mu @ self.weight.T - self.bias).pow(2).sum(-1)
        trace = (self.weight.pow(2) * v.unsqueeze(-2)).sum((-1, -2))
        rec = -0.5 * (self.data_dim * (LOG_2PI + 2 * math.log(self.sigma)) + (resid + trace) / self.sigma**2)
        return rec - kl_divergence(self.posterior(x), self.prior_distribution())

    # -- the model p(z) p(x|z) ---------------------------------------------------------------
    def decode(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The mean W z + b of p(x|z)."""
        return z @ self.weight.T + self.bias
