"""Exact checks of the bound: a linear-Gaussian model with a closed-form log p(x), and grid integration.

The linear-Gaussian model (probabilistic PCA)::

    p(z) = N(0, I_L),   p(x|z) = N(x; W z + b, sigma^2 I_D)
    log p(x) = log N(x; b, W W^T + sigma^2 I)                               (closed form)
    p(z|x)   = N(m, S),  S = (I + W^T W / sigma^2)^-1,  m = S W^T (x - b) / sigma^2

:class:`LinearGaussian` has the interface the evaluator uses (``encode``, ``posterior_sampler``, ``log_prior``,
``log_likelihood``, ``prior``), with a linear encoder
q(z|x) = N(A x + c, diag exp(logvar)) that can be set to the exact posterior or to a wrong one, so
the SAME code in :mod:`vaekit.evaluate` is checked against exact answers:

    ELBO(x) = log p(x) - KL(q(z|x) || p(z|x)) <= log p(x)   for every q,
    log w(z) = log p(x) for every z when q = p(z|x)        (the ELBO is exact, with any number of samples).

The exact posterior covariance S is diagonal when W has orthogonal columns. Every linear-Gaussian model
is one of those up to a rotation z -> V^T z of the latent space (W = U diag(s) V^T), which changes
neither p(z) = N(0, I) nor p(x): :meth:`LinearGaussian.rotated` returns that equivalent model.

For any model with a 2-dimensional latent space, :func:`grid_log_marginal` computes

    log p(x) = log integral p(x|z) p(z) dz  ~  logsumexp_g [log p(x|z_g) + log p(z_g)] + log(cell area)

over a grid of z: a coarse 200 x 200 grid over [-R, R]^2 finds where the posterior mass is, a fine
200 x 200 grid over that box (per example) gives the value, and the same sum over every other point
of the fine grid (a grid with 4 times the cell area) gives an estimate of the grid error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

from vaekit.evaluate import DEFAULT_MEMORY_BUDGET, _model_device_dtype, bytes_per_row, log_likelihood_kernel
from vaekit.model import VAE
from vaekit.priors import StandardNormalPrior

LOG_2PI = math.log(2 * math.pi)
#: Fraction of the posterior mass in the outermost cells of the coarse grid above which the grid may miss mass.
EDGE_FRACTION = 1e-6


class FixedGaussianLikelihood(nn.Module):
    """p(x|z) = N(x; mean, sigma^2 I): params are the means (no squashing)."""

    name = "gaussian-fixed"
    params_per_pixel = 1

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = float(sigma)

    def log_prob(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """-1/2 sum_d [log 2 pi sigma^2 + (x_d - mean_d)^2 / sigma^2], nats."""
        d = mean.shape[-1]
        return -0.5 * (d * (LOG_2PI + 2 * math.log(self.sigma)) + (x - mean).pow(2).sum(-1) / self.sigma**2)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(params.shape, generator=generator, dtype=params.dtype, device=params.device)
        return params + self.sigma * eps


class LinearGaussian(nn.Module):
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
        self.prior = StandardNormalPrior(self.latent).to(dtype=weight.dtype, device=weight.device)
        self.likelihood = FixedGaussianLikelihood(sigma)
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

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x), each (..., L)."""
        x = x.reshape(*x.shape[:-1], -1) if x.dim() >= 2 else x
        mu = x @ self.enc_weight.T + self.enc_bias
        return mu, self.enc_logvar.expand_as(mu)

    # the guide's sampling and density are the VAE's own: the evaluator is checked on that code
    reparameterize = staticmethod(VAE.reparameterize)
    posterior_log_prob = staticmethod(VAE.posterior_log_prob)
    posterior_sampler = VAE.posterior_sampler
    rsample_posterior = VAE.rsample_posterior
    has_analytic_kl = VAE.has_analytic_kl
    log_prior = VAE.log_prior

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
        return rec - self.prior.analytic_kl(mu, logvar)

    # -- the model p(z) p(x|z) ---------------------------------------------------------------
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The mean W z + b of p(x|z)."""
        return z @ self.weight.T + self.bias

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z), nats; x (B, D), z (..., B, L) -> (..., B)."""
        return self.likelihood.log_prob(x, self.decode(z))


# -- grid integration over a 2-D latent space ------------------------------------------------------


@dataclass
class GridResult:
    """Per-example log p(x) by grid integration (nats), an estimate of its grid error, and the boxes."""

    log_px: torch.Tensor  # (B,)
    error: torch.Tensor  # (B,) |fine grid - half-resolution grid|
    boxes: torch.Tensor  # (B, 4): z1 low, z1 high, z2 low, z2 high of the fine grid
    edge: torch.Tensor  # (B,) bool: > EDGE_FRACTION of the mass in the coarse grid's outermost cells


def _cell_centres(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """n cell centres per row of lo/hi (B,) -> (B, n)."""
    t = (torch.arange(n, dtype=lo.dtype, device=lo.device) + 0.5) / n
    return lo[:, None] + (hi - lo)[:, None] * t


@torch.inference_mode()
def _log_joint(model: Any, x: torch.Tensor, z: torch.Tensor, rows: int) -> torch.Tensor:
    """log p(x|z) + log p(z) for z (G, B, 2) -> (G, B), in chunks of at most ``rows`` decoder rows."""
    kernel = log_likelihood_kernel(model, x)
    g, b = z.shape[:2]
    step = max(1, rows // b)
    out = torch.empty(g, b, dtype=x.dtype, device=x.device)
    for s in range(0, g, step):
        zc = z[s : s + step]
        out[s : s + step] = kernel(zc) + model.log_prior(zc)
    return out


@torch.inference_mode()
def grid_log_marginal(model: Any, x: torch.Tensor, n: int = 200, radius: float = 6.0, coarse: int = 200,
                      threshold: float = 30.0, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> GridResult:
    """log p(x) by numerical integration over z in R^2 (see the module docstring), x (B, D) -> (B,).

    The coarse grid covers [-R, R]^2 with R = max(radius, max_b |mu_b| + 6 sigma_b) (q's mean and std);
    the fine box of each example is the bounding box of the coarse cells whose log p(x, z) is within
    ``threshold`` nats of the largest, grown by one coarse cell on each side.
    """
    x = x.reshape(x.shape[0], -1)
    mu, logvar = model.encode(x)
    if mu.shape[-1] != 2:
        raise ValueError(f"grid integration needs a 2-dimensional latent space, this model has {mu.shape[-1]}")
    b = x.shape[0]
    rows = max(1, memory_budget // max(1, bytes_per_row(model, 2)))
    std = torch.exp(0.5 * logvar)
    r = max(radius, float((mu.abs() + 6 * std).max()))
    # coarse grid, shared by all examples
    c = torch.linspace(-r, r, coarse + 1, dtype=x.dtype, device=x.device)
    c = 0.5 * (c[1:] + c[:-1])
    h1 = 2 * r / coarse
    zz = torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)  # (G, 2)
    lj = _log_joint(model, x, zz[:, None, :].expand(-1, b, -1), rows)  # (G, B)
    keep = lj >= lj.max(0).values - threshold
    boxes = torch.empty(b, 4, dtype=x.dtype, device=x.device)
    for j in range(2):
        coord = zz[:, j : j + 1].expand(-1, b)
        big = torch.tensor(math.inf, dtype=x.dtype, device=x.device)
        boxes[:, 2 * j] = torch.where(keep, coord, big).min(0).values - h1
        boxes[:, 2 * j + 1] = torch.where(keep, coord, -big).max(0).values + h1
    # the outermost ring of coarse cells holding more than a millionth of the mass: some may lie outside
    grid3 = lj.reshape(coarse, coarse, b)
    ring = torch.cat([grid3[0], grid3[-1], grid3[1:-1, 0], grid3[1:-1, -1]], 0)
    edge = torch.logsumexp(ring, 0) - torch.logsumexp(lj, 0) > math.log(EDGE_FRACTION)
    # fine grid, one per example
    g1 = _cell_centres(boxes[:, 0], boxes[:, 1], n)  # (B, n)
    g2 = _cell_centres(boxes[:, 2], boxes[:, 3], n)
    zf = torch.stack([g1[:, :, None].expand(-1, -1, n), g2[:, None, :].expand(-1, n, -1)], -1)  # (B, n, n, 2)
    ljf = _log_joint(model, x, zf.reshape(b, n * n, 2).transpose(0, 1), rows).T.reshape(b, n, n)
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]) / n**2
    fine = torch.logsumexp(ljf.reshape(b, -1), -1) + torch.log(area)
    half = torch.logsumexp(ljf[:, ::2, ::2].reshape(b, -1), -1) + torch.log(4 * area)
    return GridResult(log_px=fine, error=(fine - half).abs(), boxes=boxes, edge=edge)


# -- the comparison behind 'vaekit bound' ----------------------------------------------------------


def compare_bounds(model: Any, x: torch.Tensor, k: int = 5000, seed: int = 0, grid: int = 200,
                   exact: torch.Tensor | None = None) -> dict[str, Any]:
    """Per example: ELBO, IWAE_K (with its Monte Carlo SE), grid log p(x) for a 2-D latent space, and
    the exact log p(x) when given; numpy arrays plus their means. Uses :func:`vaekit.evaluate.evaluate_model`."""
    from vaekit.evaluate import evaluate_model

    x = x.reshape(x.shape[0], -1)
    res = evaluate_model(model, x, k=k, seed=seed, per_example=True)
    per = res.per_example
    assert per is not None
    out: dict[str, Any] = {"k": k, "n": res.n, "elbo": per["elbo"], "iwae": per["log_px"],
                           "iwae_stderr": per["log_px_stderr"], "gap": per["gap"], "latent": len(res.latent_variance),
                           "seconds": res.seconds}
    if len(res.latent_variance) == 2:
        device, dtype = _model_device_dtype(model)
        g = grid_log_marginal(model, x.to(device=device, dtype=dtype), n=grid)
        out["grid"] = g.log_px.double().cpu().numpy()
        out["grid_error"] = g.error.double().cpu().numpy()
        out["grid_edge"] = g.edge.cpu().numpy()
    if exact is not None:
        out["exact"] = exact.double().cpu().numpy()
    out["means"] = {key: float(np.mean(out[key])) for key in ("elbo", "iwae", "gap", "grid", "exact") if key in out}
    return out
