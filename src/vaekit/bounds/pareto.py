"""The Pareto k-hat of importance weights: can an importance-sampled log p(x) be trusted? (PSIS diagnostics;
Vehtari, Simpson, Gelman, Yao and Gabry 2024.)

The upper tail of the K weights w_i = p(x, z_i) / q(z_i|x) of one example is fitted with a generalized Pareto
distribution GPD(k, sigma), density (1/sigma) (1 + k u / sigma)^(-1/k - 1) for exceedances u >= 0. Its shape k
says how many moments the weights have: Var(w) is finite only for k < 1/2, E[w] only for k < 1. Following PSIS,
k-hat > 0.7 marks an estimate whose error is, in practice, unbounded at any reachable K (the central limit theorem
does not apply: the standard error and the effective sample size understate it); 0.5 < k-hat <= 0.7 converges
slowly; k-hat <= 0.5 is reliable.

The fit, as in PSIS: the M = ceil(min(K / 5, 3 sqrt(K))) largest weights, as exceedances over the (M + 1)-th
largest, are fitted by Zhang and Stephens' (2009) empirical-Bayes estimator: a quadrature over m = 30 +
floor(sqrt(M)) values of theta = -k / sigma,

    theta_j = 1 / u_(M) + (1 - sqrt(m / (j - 1/2))) / (3 u_([M/4 + 1/2])),   j = 1..m,
    k(theta) = mean_i log(1 - theta u_i),    l(theta) = M [log(-theta / k(theta)) - k(theta) - 1],

theta-hat = sum_j theta_j softmax(l)_j, k-hat = mean_i log(1 - theta-hat u_i), sigma-hat = -k-hat / theta-hat, and
k-hat is then shrunk toward 0.5 by Vehtari et al.'s weakly informative prior, k-hat <- (M k-hat + 5) / (M + 10).
Everything is vectorised over examples. A tail of fewer than :data:`MIN_TAIL` weights (K < 25) gives NaN; a tail
whose weights are equal to rounding (an exact posterior: every w_i = p(x)) has no tail to fit: k-hat = -inf.
"""

from __future__ import annotations

import math

import torch

#: k-hat above this: the importance-sampled estimate cannot be trusted (Vehtari et al.).
K_THRESHOLD = 0.7
#: The fewest tail weights a fit is made from.
MIN_TAIL = 5
#: Examples fitted at once (the quadrature holds examples x m x M numbers).
_CHUNK = 256


def tail_length(k: int) -> int:
    """M, the number of largest weights fitted for K weights: ceil(min(K / 5, 3 sqrt(K)))."""
    return int(math.ceil(min(0.2 * k, 3.0 * math.sqrt(k))))


def gpd_fit(u: torch.Tensor, prior: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Zhang and Stephens' estimate (k, sigma) of a generalized Pareto distribution, for exceedances ``u`` (..., M)
    sorted in increasing order, each row with u_(M) > 0; ``prior``: shrink k toward 0.5 as PSIS does (the module
    docstring). Returns two tensors of the batch shape (...)."""
    u = u.to(torch.float64)
    lead, n = u.shape[:-1], u.shape[-1]
    flat = u.reshape(-1, n)
    ks, sigmas = [], []
    for start in range(0, flat.shape[0], _CHUNK):
        k, sigma = _zhang_stephens(flat[start : start + _CHUNK])
        ks.append(k)
        sigmas.append(sigma)
    k, sigma = torch.cat(ks), torch.cat(sigmas)
    if prior:
        k = (n * k + 10 * 0.5) / (n + 10)
    return k.reshape(lead), sigma.reshape(lead)


def _zhang_stephens(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, sigma) for rows of sorted exceedances u (B, M), without the prior on k."""
    n = u.shape[-1]
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=u.dtype, device=u.device)
    quarter = u[:, int(n / 4 + 0.5) - 1 : int(n / 4 + 0.5)]
    theta = 1 / u[:, -1:] + (1 - torch.sqrt(m / (j - 0.5))) / (3 * quarter)  # (B, m)
    k_theta = torch.log1p(-theta.unsqueeze(-1) * u.unsqueeze(-2)).mean(-1)  # (B, m)
    profile = n * (torch.log(-theta / k_theta) - k_theta - 1)
    weights = torch.softmax(torch.nan_to_num(profile, nan=-math.inf), -1)
    theta_hat = (theta * weights).sum(-1, keepdim=True)
    k = torch.log1p(-theta_hat * u).mean(-1)
    return k, -k / theta_hat.squeeze(-1)


def khat_of_tail(top: torch.Tensor) -> torch.Tensor:
    """k-hat (N,) from the M + 1 largest log-weights of each example, ``top`` (M + 1, N) in any order: the M largest
    as exceedances over the (M + 1)-th (computed in float64, relative to the largest weight)."""
    top = top.detach().to("cpu", torch.float64).sort(0).values  # increasing (on the CPU: float64 everywhere)
    if top.shape[0] - 1 < MIN_TAIL:
        return torch.full((top.shape[1],), math.nan, dtype=torch.float64, device=top.device)
    largest, cutoff = top[-1], top[0]
    u = (torch.exp(top[1:] - largest) - torch.exp(cutoff - largest)).T  # (N, M), increasing
    rounding = 1e-9 + 1024 * torch.finfo(torch.float32).eps * (1 + largest.abs())
    flat = ~(largest - cutoff > rounding) | ~torch.isfinite(largest)
    k, _ = gpd_fit(torch.where(flat.unsqueeze(-1), torch.ones_like(u), u))
    return torch.where(flat, torch.full_like(k, -math.inf), k)


def pareto_khat(log_w: torch.Tensor) -> torch.Tensor:
    """k-hat (N,) of each example's K importance weights, from their logs ``log_w`` (K, N)."""
    m = tail_length(log_w.shape[0])
    return khat_of_tail(torch.topk(log_w, min(m + 1, log_w.shape[0]), dim=0).values)


class TailKeeper:
    """The M + 1 largest log-weights of each example seen so far, for weights drawn in chunks (the evaluation's):
    :meth:`update` with each chunk (k_chunk, N), then :meth:`khat`."""

    def __init__(self, k: int):
        self.keep = tail_length(k) + 1
        self.top: torch.Tensor | None = None

    def update(self, log_w: torch.Tensor) -> None:
        both = log_w if self.top is None else torch.cat([self.top, log_w], 0)
        self.top = torch.topk(both, min(self.keep, both.shape[0]), dim=0).values

    def khat(self) -> torch.Tensor:
        if self.top is None:
            raise ValueError("no log-weights seen")
        return khat_of_tail(self.top)


#: Examples named in a note, at most.
NAMED = 10


def khat_fraction(khat: torch.Tensor) -> float | None:
    """The fraction of examples with k-hat > :data:`K_THRESHOLD`, of those with a k-hat (None: none has one)."""
    fitted = ~torch.isnan(khat)
    if not bool(fitted.any()):
        return None
    return float((khat[fitted] > K_THRESHOLD).double().mean())


def khat_note(khat: torch.Tensor, k: int) -> str | None:
    """The caveat naming the examples (numbered from 0 in the evaluated order) whose K = ``k`` importance weights
    have k-hat > :data:`K_THRESHOLD`; None when there is none."""
    bad = torch.nonzero(khat > K_THRESHOLD).flatten().tolist()
    if not bad:
        return None
    named = ", ".join(f"#{i}" for i in bad[:NAMED]) + (f" and {len(bad) - NAMED} more" if len(bad) > NAMED else "")
    worst = float(khat[bad].max())
    return (f"the Pareto k-hat of the K = {k} importance weights is above {K_THRESHOLD} for {len(bad)} of "
            f"{khat.numel()} examples ({named}; largest {worst:.2f}): their importance-sampled log p(x) has an "
            "effectively unbounded error that its standard error and ESS understate (use AIS, vaekit evaluate "
            "--ais T, or a better q)")
