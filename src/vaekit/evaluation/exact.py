"""Exact checks of the bound: a linear-Gaussian model with a closed-form log p(x), and grid integration.

The linear-Gaussian model (probabilistic PCA; :mod:`vaekit.models.linear_gaussian`)::

    p(z) = N(0, I_L),   p(x|z) = N(x; W z + b, sigma^2 I_D)
    log p(x) = log N(x; b, W W^T + sigma^2 I)                               (closed form)
    p(z|x)   = N(m, S),  S = (I + W^T W / sigma^2)^-1,  m = S W^T (x - b) / sigma^2

:class:`LinearGaussian` implements the model protocol the evaluator uses (``posterior``, ``log_prior``,
``log_likelihood``, ``prior``), with a linear encoder
q(z|x) = N(A x + c, diag exp(logvar)) that can be set to the exact posterior or to a wrong one, so
the SAME code in :mod:`vaekit.evaluation` is checked against exact answers:

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

For a model with discrete latents (categorical or binary codes) log p(x) is a finite sum, computed exactly by
:func:`enumerated_log_marginal` (:mod:`vaekit.bounds.enumeration`), and :func:`compare_enumerated` sets it beside
IWAE_K for several K and the exact ELBO: E[IWAE_1] = ELBO <= E[IWAE_K] <= E[IWAE_2K] <= log p(x), with
log p(x) - ELBO = KL(q(z|x) || p(z|x)) exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.bounds.enumeration import EnumeratedBound, enumerated_bound, enumerated_log_marginal, is_enumerable
from vaekit.bounds.kernels import likelihood_kernel as log_likelihood_kernel
from vaekit.distributions import point, rsample_and_log_prob
from vaekit.evaluation.evaluator import (
    DEFAULT_MEMORY_BUDGET,
    _model_device_dtype,
    bytes_per_row,
    evaluate_model,
)
from vaekit.models.linear_gaussian import FixedGaussianLikelihood, LinearGaussian

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

__all__ = ["EnumeratedBound", "FixedGaussianLikelihood", "GridResult", "LinearGaussian", "compare_bounds",
           "compare_enumerated", "enumerated_bound", "enumerated_log_marginal", "grid_log_marginal", "is_enumerable"]

#: The K of IWAE_K that :func:`compare_enumerated` sets beside the exact log p(x) by default.
DEFAULT_KS = (1, 10, 100, 1000)

#: Fraction of the posterior mass in the outermost cells of the coarse grid above which the grid may miss mass.
EDGE_FRACTION = 1e-6


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
def _log_joint(model: LatentVariableModel, x: torch.Tensor, z: torch.Tensor, rows: int) -> torch.Tensor:
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
def grid_log_marginal(model: LatentVariableModel, x: torch.Tensor, n: int = 200, radius: float = 6.0, coarse: int = 200,
                      threshold: float = 30.0, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> GridResult:
    """log p(x) by numerical integration over z in R^2 (see the module docstring), x (B, D) -> (B,).

    The coarse grid covers [-R, R]^2 with R = max(radius, max_b |mu_b| + 6 sigma_b) (q's mean and std);
    the fine box of each example is the bounding box of the coarse cells whose log p(x, z) is within
    ``threshold`` nats of the largest, grown by one coarse cell on each side.
    """
    x = x.reshape(x.shape[0], -1)
    if int(model.latent_size) != 2:
        raise ValueError(f"grid integration needs a 2-dimensional latent space, this model has {model.latent_size}")
    q = model.posterior(x)
    mu = point(q)
    if hasattr(q, "scale"):
        std = q.scale
    else:  # no closed-form spread (a flow, two levels): that of 64 draws
        std = rsample_and_log_prob(q, (64,), torch.Generator(device=x.device).manual_seed(0))[0].std(0)
    b = x.shape[0]
    rows = max(1, memory_budget // max(1, bytes_per_row(model, 2)))
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


def compare_bounds(model: LatentVariableModel, x: torch.Tensor, k: int = 5000, seed: int = 0, grid: int = 200,
                   exact: torch.Tensor | None = None, log_jacobian: float = 0.0) -> dict[str, Any]:
    """Per example: ELBO, IWAE_K (with its Monte Carlo SE), grid log p(x) for a continuous 2-D latent space,
    and the exact log p(x) when given (or, for discrete latents, summed over every code); numpy arrays
    plus their means. Uses :func:`vaekit.evaluation.evaluate_model`. ``log_jacobian``: added to every log-density
    of x (a standardised table's -sum_d log sd_d: the figures in the data's original units)."""
    x = x.reshape(x.shape[0], -1)
    res = evaluate_model(model, x, k=k, seed=seed, per_example=True, log_jacobian=log_jacobian)
    per = res.per_example
    assert per is not None
    latent = int(model.latent_size)
    out: dict[str, Any] = {"k": k, "n": res.n, "elbo": per["elbo"], "iwae": per["log_px"],
                           "iwae_stderr": per["log_px_stderr"], "gap": per["gap"], "latent": latent,
                           "seconds": res.seconds}
    if exact is None and "exact_log_px" in per:
        exact = torch.from_numpy(per["exact_log_px"])
    if latent == 2 and "exact_log_px" not in per:
        device, dtype = _model_device_dtype(model)
        g = grid_log_marginal(model, x.to(device=device, dtype=dtype), n=grid)
        out["grid"] = g.log_px.double().cpu().numpy() + log_jacobian
        out["grid_error"] = g.error.double().cpu().numpy()
        out["grid_edge"] = g.edge.cpu().numpy()
    if exact is not None:
        out["exact"] = exact.double().cpu().numpy()
    out["means"] = {key: float(np.mean(out[key])) for key in ("elbo", "iwae", "gap", "grid", "exact") if key in out}
    return out


# -- discrete latents: the exact sum beside IWAE_K for several K --------------------------------------


def compare_enumerated(model: LatentVariableModel, x: torch.Tensor, ks: tuple[int, ...] | list[int] = DEFAULT_KS,
                       seed: int = 0,
                       y: Any = None, progress: Any = None, log_jacobian: float = 0.0) -> dict[str, Any]:
    """For a model with an enumerable latent space, per example (numpy arrays, nats): the exact ``exact``
    log p(x), ELBO, its terms and the gap KL(q(z|x) || p(z|x)) (``elbo``, ``reconstruction``, ``kl``, ``gap``),
    and ``iwae[K]`` (with its Monte Carlo SE ``iwae_stderr[K]``) for each K in ``ks``, from the same seed.

    ``shortfall[K]`` = mean over examples of log p(x) - IWAE_K, with its SE over examples: >= 0 in expectation
    (IWAE_K is a lower bound on average), shrinking towards 0 as K grows; at K = 1 it is the gap in expectation.
    ``progress(done, total)`` follows the codes of the exact sum; ``log_jacobian`` is added to every log-density of
    x (a standardised table's, for the original units).
    """
    if not is_enumerable(model, limit=2**24):
        raise ValueError("this model's latent space cannot be enumerated (its prior has no finite support)")
    x = x.reshape(x.shape[0], -1)
    device, dtype = _model_device_dtype(model)
    eb = enumerated_bound(model, x.to(device=device, dtype=dtype), y, progress=progress)
    exact = eb.log_px.cpu().numpy() + log_jacobian
    out: dict[str, Any] = {"n": int(x.shape[0]), "codes": eb.codes, "latent": int(model.latent_size),
                           "ks": sorted({int(k) for k in ks}), "exact": exact,
                           "elbo": eb.elbo.cpu().numpy() + log_jacobian,
                           "reconstruction": eb.reconstruction.cpu().numpy() + log_jacobian, "kl": eb.kl.cpu().numpy(),
                           "gap": eb.gap.cpu().numpy(), "iwae": {}, "iwae_stderr": {}, "shortfall": {}}
    n = out["n"]
    for k in out["ks"]:
        res = evaluate_model(model, x, k=k, seed=seed, per_example=True, exact_limit=0, labels=y,
                             log_jacobian=log_jacobian)
        assert res.per_example is not None
        iwae = res.per_example["log_px"]
        diff = exact - iwae
        out["iwae"][k] = iwae
        out["iwae_stderr"][k] = res.per_example["log_px_stderr"]
        out["shortfall"][k] = {"mean": float(diff.mean()),
                               "stderr": float(diff.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan}
    out["means"] = {"exact": float(exact.mean()), "elbo": float(out["elbo"].mean()), "gap": float(out["gap"].mean()),
                    "iwae": {k: float(v.mean()) for k, v in out["iwae"].items()}}
    return out
