"""Information theory: entropy, cross-entropy and KL divergence.

For discrete distributions p, q over the same outcomes (units: nats unless ``base`` says
otherwise; ``base=2`` gives bits):

    H(p)      = -sum_i p_i log p_i                      (entropy)
    H(p, q)   = -sum_i p_i log q_i                      (cross-entropy)
    D(p || q) =  sum_i p_i log (p_i / q_i) = H(p, q) - H(p)   (KL divergence, not symmetric)

Conventions: 0 log 0 = 0 and 0 log(0/q) = 0, so outcomes with p_i = 0 contribute nothing;
D(p || q) = +inf (and H(p, q) = +inf) where some p_i > 0 has q_i = 0.

Inputs are numpy arrays or torch tensors, batched along ``axis`` (default: the last).
numpy in gives numpy out (float64); torch in gives torch out, differentiable.

Closed forms for the distributions a VAE uses come from ``torch.distributions``'
KL registry (:func:`kl_closed_form`); :func:`kl_standard_normal` writes out the one at the
heart of the VAE. :func:`kl_monte_carlo` estimates D(q || p) for any pair with samples and
``log_prob``, with its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.distributions import Distribution

ArrayLike = np.ndarray | torch.Tensor

#: Default tolerance on |sum_i p_i - 1| when checking that a row is a distribution.
SUM_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------------------
# validation


def _log_base(base: float) -> float:
    """ln(base); raises ValueError for a base that is not a positive number other than 1."""
    if isinstance(base, bool) or not isinstance(base, (int, float, np.floating, np.integer)):
        raise ValueError(f"base must be a positive number other than 1, got {base!r}")
    base = float(base)
    if not math.isfinite(base) or base <= 0 or base == 1:
        raise ValueError(f"base must be a positive number other than 1 (e, 2, 10, ...), got {base}")
    return math.log(base)


def _as_tensor(x: ArrayLike, name: str) -> tuple[torch.Tensor, bool]:
    """Return (float tensor, was_numpy). Accepts numpy arrays, torch tensors and sequences."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a complex tensor")
        t = x if x.is_floating_point() else x.to(torch.get_default_dtype())
        return t, False
    try:
        is_complex = np.iscomplexobj(x)  # casting would drop the imaginary parts silently
        arr = np.asarray(x, dtype=np.float64) if not is_complex else None
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of numbers, got {type(x).__name__}") from None
    if arr is None:
        raise ValueError(f"{name} must hold real numbers, got complex values")
    return torch.from_numpy(arr), True


def _check_distribution(
    p: torch.Tensor, name: str, dim: int, normalize: bool, atol: float
) -> torch.Tensor:
    """Validate that ``p`` holds probability vectors along ``dim``; normalise if asked."""
    if p.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (a vector of probabilities)")
    if p.shape[dim] == 0:
        raise ValueError(f"{name} is empty along axis {dim}: a distribution needs at least one outcome")
    with torch.no_grad():
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"{name} contains NaN or infinite entries")
        if bool((p < 0).any()):
            raise ValueError(f"{name} has negative entries; probabilities must be >= 0")
        total = p.sum(dim=dim, keepdim=True)
        if normalize:
            if bool((total <= 0).any()):
                raise ValueError(f"{name} has a row that sums to 0; cannot normalize it")
        elif total.numel():
            err = (total - 1).abs().max().item()
            # Rounding in the sum grows with the number of outcomes and the precision.
            tol = max(atol, 4 * torch.finfo(p.dtype).eps * p.shape[dim])
            if err > tol:
                raise ValueError(
                    f"{name} does not sum to 1 along axis {dim} (off by {err:.3g}); "
                    "pass normalize=True to normalize counts or weights"
                )
    if not normalize:
        return p
    p = p / p.amax(dim=dim, keepdim=True)  # scale first, so that a sum of huge weights cannot overflow
    return p / p.sum(dim=dim, keepdim=True)


def _prepare(
    p: ArrayLike,
    q: ArrayLike | None,
    axis: int,
    normalize: bool,
    atol: float,
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    tp, np_p = _as_tensor(p, "p")
    tq, np_q = (None, True) if q is None else _as_tensor(q, "q")
    if tq is not None:
        if tp.shape != tq.shape:
            raise ValueError(f"p and q must have the same shape, got {tuple(tp.shape)} and {tuple(tq.shape)}")
        if tp.dtype != tq.dtype:
            dtype = torch.promote_types(tp.dtype, tq.dtype)
            tp, tq = tp.to(dtype), tq.to(dtype)
    ndim = tp.dim()
    if ndim and not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {ndim} dimensions")
    tp = _check_distribution(tp, "p", axis, normalize, atol)
    if tq is not None:
        tq = _check_distribution(tq, "q", axis, normalize, atol)
    return tp, tq, np_p and np_q


def as_distribution(p: ArrayLike, *, axis: int = -1, normalize: bool = False,
                    atol: float = SUM_TOLERANCE, name: str = "p") -> torch.Tensor:
    """p checked as probability vectors along ``axis`` (finite, >= 0, summing to 1 within ``atol``),
    or divided by its sum when ``normalize`` is true; a float tensor. Errors name it ``name``."""
    t, _ = _as_tensor(p, name)
    if t.dim() and not -t.dim() <= axis < t.dim():
        raise ValueError(f"axis {axis} is out of range for an array with {t.dim()} dimensions")
    return _check_distribution(t, name, axis, normalize, atol)


def _finish(value: torch.Tensor, to_numpy: bool, base: float) -> ArrayLike:
    value = value / _log_base(base) if base != math.e else value
    if to_numpy:
        out = value.detach().cpu().numpy()
        return out[()] if out.ndim == 0 else out
    return value


# ----------------------------------------------------------------------------------------
# discrete distributions


def _xlogy(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x * log(y) with 0 * log(y) = 0 (also for y = 0); differentiable in x and y."""
    return torch.special.xlogy(x, y)


def entropy(
    p: ArrayLike, *, base: float = math.e, axis: int = -1, normalize: bool = False,
    atol: float = SUM_TOLERANCE,
) -> ArrayLike:
    """Entropy H(p) = -sum_i p_i log p_i, in nats (``base=2``: bits). 0 log 0 = 0."""
    _log_base(base)
    tp, _, to_numpy = _prepare(p, None, axis, normalize, atol)
    return _finish(-_xlogy(tp, tp).sum(dim=axis), to_numpy, base)


def cross_entropy(
    p: ArrayLike, q: ArrayLike, *, base: float = math.e, axis: int = -1,
    normalize: bool = False, atol: float = SUM_TOLERANCE,
) -> ArrayLike:
    """Cross-entropy H(p, q) = -sum_i p_i log q_i (nats); +inf where p_i > 0 and q_i = 0."""
    _log_base(base)
    tp, tq, to_numpy = _prepare(p, q, axis, normalize, atol)
    return _finish(-_xlogy(tp, tq).sum(dim=axis), to_numpy, base)


def kl_divergence(
    p: ArrayLike, q: ArrayLike, *, base: float = math.e, axis: int = -1,
    normalize: bool = False, atol: float = SUM_TOLERANCE,
) -> ArrayLike:
    """KL divergence D(p || q) = sum_i p_i log(p_i / q_i) = H(p, q) - H(p), in nats.

    D(p || q) >= 0 with equality iff p = q; it is not symmetric. Terms with p_i = 0 are 0;
    the result is +inf where some p_i > 0 has q_i = 0.
    """
    _log_base(base)
    tp, tq, to_numpy = _prepare(p, q, axis, normalize, atol)
    assert tq is not None
    # p log p - p log q, written so that each term is 0 when p_i = 0 and +inf when q_i = 0 < p_i.
    terms = _xlogy(tp, tp) - _xlogy(tp, tq)
    value = terms.sum(dim=axis)
    # Rounding can make an exact-zero divergence come out as -1e-17; D(p||q) >= 0.
    value = torch.clamp(value, min=0.0)
    return _finish(value, to_numpy, base)


# ----------------------------------------------------------------------------------------
# closed forms for the distributions a VAE uses


def kl_closed_form(q: Distribution, p: Distribution) -> torch.Tensor:
    """D(q || p) in closed form, in nats, from ``torch.distributions``' KL registry.

    Covers Normal/Normal, Independent(Normal)/Independent(Normal) (diagonal Gaussians,
    summed over the event dimensions), Bernoulli, Categorical and the rest of torch's
    registry, plus :class:`vaekit` registrations. Raises ``NotImplementedError`` with the
    pair's names when no closed form is registered (use :func:`kl_monte_carlo` then).
    """
    try:
        return torch.distributions.kl_divergence(q, p)
    except NotImplementedError:
        raise NotImplementedError(
            f"no closed-form KL registered for {type(q).__name__} || {type(p).__name__}; "
            "use vaekit.analysis.info.kl_monte_carlo"
        ) from None


def kl_diagonal_gaussians(
    mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """D(N(mu_q, diag s_q^2) || N(mu_p, diag s_p^2)) in nats, summed over the last axis:

        1/2 sum_j [ log(s_p^2 / s_q^2) + (s_q^2 + (mu_q - mu_p)^2) / s_p^2 - 1 ].
    """
    var_ratio = torch.exp(logvar_q - logvar_p)
    sq = (mu_q - mu_p).pow(2) * torch.exp(-logvar_p)
    return 0.5 * (var_ratio + sq - 1.0 - (logvar_q - logvar_p)).sum(dim=-1)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """D(N(mu, diag exp(logvar)) || N(0, I)) = 1/2 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2), nats.

    The KL term of the VAE's ELBO with a standard normal prior, summed over the last axis.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=-1)


def kl_bernoulli(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """D(Bern(p) || Bern(q)) = p log(p/q) + (1-p) log((1-p)/(1-q)), elementwise, in nats."""
    return _xlogy(p, p) - _xlogy(p, q) + _xlogy(1 - p, 1 - p) - _xlogy(1 - p, 1 - q)


# ----------------------------------------------------------------------------------------
# Monte Carlo


@dataclass(frozen=True)
class MonteCarloEstimate:
    """A Monte Carlo estimate: the mean over ``samples`` draws and its standard error."""

    estimate: torch.Tensor
    stderr: torch.Tensor
    samples: int

    def __iter__(self):  # allows ``est, se = kl_monte_carlo(...)``
        yield self.estimate
        yield self.stderr


def kl_monte_carlo(
    q: Distribution,
    p: Distribution,
    samples: int = 1000,
    *,
    generator_seed: int | None = None,
) -> MonteCarloEstimate:
    """Estimate D(q || p) = E_{z~q}[log q(z) - log p(z)] by Monte Carlo, in nats.

    Draws ``samples`` z_i ~ q (``rsample`` when available, so the estimate is
    differentiable in q's parameters; ``sample`` otherwise) and returns the mean of
    log q(z_i) - log p(z_i) with its standard error s / sqrt(samples) (sample std, ddof=1),
    per batch element. Works for any pair with ``log_prob``, e.g. a Gaussian posterior
    against a mixture prior, where no closed form exists.
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2 to estimate a standard error, got {samples}")
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    z = q.rsample((samples,)) if q.has_rsample else q.sample((samples,))
    diff = q.log_prob(z) - p.log_prob(z)
    mean = diff.mean(dim=0)
    stderr = diff.detach().std(dim=0, unbiased=True) / math.sqrt(samples)
    return MonteCarloEstimate(mean, stderr, samples)


def summary(p: Any, q: Any, *, base: float = math.e) -> dict[str, float]:
    """All the quantities ``vaekit info`` prints for two discrete distributions p, q."""
    values = {
        "entropy_p": entropy(p, base=base),
        "entropy_q": entropy(q, base=base),
        "cross_entropy_pq": cross_entropy(p, q, base=base),
        "cross_entropy_qp": cross_entropy(q, p, base=base),
        "kl_pq": kl_divergence(p, q, base=base),
        "kl_qp": kl_divergence(q, p, base=base),
    }
    out = {k: float(v) for k, v in values.items()}
    out["base"] = float(base)
    return out
