"""The variance and bias of the discrete estimators' gradients, measured at a model's fixed weights.

For a batch x of N examples and an estimator (:mod:`vaekit.objectives.discrete`) with S samples per example
averaged inside one estimate, T independent estimates g_1..g_T of the gradient of the mean objective with
respect to the inference parameters phi (P coordinates) give

    variance  V  = (1/P) sum_j Var_t(g_tj)                    (unbiased per-coordinate variance, then averaged)
    bias^2    B  = (1/P) || E[g] - g* ||^2,  estimated by the U-statistic
                   (1/P) (1/(T(T-1))) sum_{s != t} (g_s - g*) . (g_t - g*)
                 = (1/P) ||mean_t g_t - g*||^2 - V/T          (the noise of the mean taken out; 0 when unbiased)

with g* the exact gradient, by enumeration of the codes. Both come with jackknife standard errors over the
T trials (each leaves one trial out), which hold whatever the correlations between coordinates. Units: the
gradients are of nats per example, so V and B are in nats^2 per example^2 per unit of parameter squared.

The exact gradients (only phi: z is discrete, so log p(x|z) + log p(z) does not depend on phi, only q does):

* ELBO:    grad_phi sum_z q(z|x) [log p(x|z) + log p(z) - log q(z|x)]                 (all K^G or 2^d codes)
* IWAE_S:  grad_phi sum_{z_1..z_S} prod_i q(z_i|x) log (1/S) sum_i w(z_i),  w = p(x, z)/q(z|x)
           (every S-tuple of codes, when there are few enough), the exact target of vimco with S samples
* log p(x) = log sum_z p(x, z) does not depend on phi: its gradient is 0, the limit of IWAE_S's as S grows.
  Where the S-tuples are too many, vimco's bias is measured against it, and labelled so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from vaekit.distributions import sample
from vaekit.errors import VaekitError
from vaekit.objectives.discrete import DiscreteEstimator, check_estimator, latent_support_size

if TYPE_CHECKING:
    from collections.abc import Callable

    from vaekit.models.base import LatentVariableModel

#: The most (example, S-tuple of codes) pairs summed for the exact gradient of IWAE_S.
MAX_TUPLE_ROWS = 2**24
#: Decoder rows (code, example) per chunk of the exact enumeration.
ENUMERATION_ROWS = 2**14
#: The targets a row's bias is measured against.
TARGETS = {"elbo": "exact ELBO gradient", "iwae": "exact IWAE_S gradient",
           "log_px": "gradient of log p(x) (0 for phi)"}


# -- statistics over trials --------------------------------------------------------------------------------


def _gram(rows: torch.Tensor) -> np.ndarray:
    """(T, T) inner products of the rows (float64, in column chunks)."""
    out = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64)
    step = 2**16
    for j in range(0, rows.shape[1], step):
        block = rows[:, j:j + step].double()
        out += block @ block.T
    return out.numpy()


def _jackknife(leave_one_out: np.ndarray) -> float:
    """The jackknife standard error from the T leave-one-out values."""
    t = leave_one_out.shape[0]
    return float(math.sqrt((t - 1) / t * ((leave_one_out - leave_one_out.mean()) ** 2).sum()))


def summarize(grads: torch.Tensor, exact: torch.Tensor | None) -> dict[str, float | None]:
    """Variance and bias^2 (means over the P coordinates) of T estimates ``grads`` (T, P), with jackknife SEs.

    ``exact`` (P,) is the exact gradient g*, or None (then no bias). Needs T >= 3.
    """
    t, p = grads.shape
    if t < 3:
        raise VaekitError(f"measuring a variance with its standard error needs at least 3 trials, got {t}")
    # the variance is the same about any reference; about the first trial, identical trials give exactly 0
    g = _gram(grads - grads[0]) / p
    tr, total, diag, rows = float(np.trace(g)), float(g.sum()), np.diag(g), g.sum(1)
    variance = (tr - total / t) / (t - 1)
    var_o = ((tr - diag) - (total - 2 * rows + diag) / (t - 1)) / (t - 2)  # leave trial i out
    out: dict[str, float | None] = {
        "variance": variance, "variance_stderr": _jackknife(var_o), "bias2": None, "bias2_stderr": None,
        "exact_norm2": None, "bias_relative": None,
    }
    if exact is not None:
        h = _gram(grads - exact.to(grads.dtype)) / p  # (T, T): (g_s - g*) . (g_t - g*) / P
        tr, total, diag, rows = float(np.trace(h)), float(h.sum()), np.diag(h), h.sum(1)
        bias2 = (total - tr) / (t * (t - 1))
        bias_o = ((total - 2 * rows + diag) - (tr - diag)) / ((t - 1) * (t - 2))
        norm2 = float(exact.double().pow(2).sum()) / p
        out.update(bias2=bias2, bias2_stderr=_jackknife(bias_o), exact_norm2=norm2,
                   bias_relative=math.sqrt(max(bias2, 0.0) / norm2) if norm2 > 0 else None)
    return out


# -- exact gradients by enumeration ---------------------------------------------------------------------


def _flat_grad(value: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


@torch.no_grad()
def joint_log_prob(model: LatentVariableModel, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """log p(x|z) + log p(z) for every code, (C, N) nats, without gradients; codes (C, 1, L), in chunks."""
    n = x.shape[0]
    prior = model.prior_distribution()
    step = max(1, ENUMERATION_ROWS // max(n, 1))
    parts = [model.log_likelihood(x, codes[i:i + step]) + prior.log_prob(codes[i:i + step])
             for i in range(0, codes.shape[0], step)]
    return torch.cat(parts, 0)


def _codes(model: LatentVariableModel) -> torch.Tensor:
    size = latent_support_size(model)
    if size is None:
        raise VaekitError("the exact gradient needs a latent space whose codes can be enumerated")
    return model.prior_distribution().enumerate_support(expand=False).reshape(size, 1, -1)


def exact_objective(model: LatentVariableModel, x: torch.Tensor, objective: str = "elbo", k: int = 1) -> torch.Tensor:
    """The exact per-example ELBO (``elbo``) or IWAE_k (``iwae``), (N,) nats, differentiable in phi only."""
    codes = _codes(model)
    a = joint_log_prob(model, x, codes).T  # (N, C), constant in phi
    log_q = model.posterior(x).log_prob(codes).T  # (N, C)
    if objective == "elbo" or k == 1:
        return (log_q.exp() * (a - log_q)).sum(1)
    if objective != "iwae":
        raise VaekitError(f"unknown objective {objective!r}; choose elbo or iwae")
    c = codes.shape[0]
    if c**k * x.shape[0] > MAX_TUPLE_ROWS:
        raise VaekitError(f"IWAE_{k} by enumeration sums over {c}^{k} tuples of codes per example, too many")
    log_w = a - log_q
    tuples = torch.cartesian_prod(*[torch.arange(c, device=log_q.device)] * k).reshape(-1, k)  # (C^k, k)
    total = log_q.new_zeros(x.shape[0])
    step = max(1, MAX_TUPLE_ROWS // 64 // (x.shape[0] * k))
    for i in range(0, tuples.shape[0], step):
        idx = tuples[i:i + step]
        lw, lq = log_w[:, idx], log_q[:, idx]  # (N, B, k)
        total = total + (lq.sum(-1).exp() * (torch.logsumexp(lw, -1) - math.log(k))).sum(1)
    return total


def can_enumerate_iwae(model: LatentVariableModel, n: int, k: int) -> bool:
    size = latent_support_size(model)
    return size is not None and size**k * n <= MAX_TUPLE_ROWS


def exact_gradient(model: LatentVariableModel, x: torch.Tensor, objective: str = "elbo", k: int = 1) -> torch.Tensor:
    """grad_phi of the mean exact objective over the batch, flat over ``model.inference_parameters()``."""
    params = model.inference_parameters()
    with torch.enable_grad():
        return _flat_grad(exact_objective(model, x, objective, k).mean(), params).detach()


# -- estimates --------------------------------------------------------------------------------------------


def _objective(name: str) -> str:
    return "iwae" if name == "vimco" else "elbo"


def estimate_gradients(model: LatentVariableModel, estimator: DiscreteEstimator, x: torch.Tensor, samples: int,
                       trials: int,
                       seed: int) -> torch.Tensor:
    """(T, P): T independent estimates of grad_phi of the mean objective, S = ``samples`` per example each
    (vimco: the IWAE_S bound; the others: S draws averaged inside the estimate)."""
    params = model.inference_parameters()
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    out = []
    with torch.enable_grad():
        for _ in range(trials):
            s, _, _ = estimator.surrogate(model, x, objective=_objective(estimator.name), k=samples,
                                          generator=gen)
            out.append(_flat_grad(s.mean(), params).detach().float().cpu())
    return torch.stack(out)


def _learning_signal(model: LatentVariableModel, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The score-function learning signal at one draw z ~ q(z|x) per example, as the nvil surrogate takes it:
    f = log p(x|z) when KL(q || p) is in closed form, else log p(x|z) - log q(z|x) + log p(z); (N,) nats."""
    from vaekit.distributions.kl import has_closed_form_kl

    with torch.no_grad():
        q, p = model.posterior(x), model.prior_distribution()
        z = sample(q, (), generator)
        f = model.log_likelihood(x, z)
        return f if has_closed_form_kl(q, p) else f - q.log_prob(z) + p.log_prob(z)


def fit_baseline(model: LatentVariableModel, estimator: DiscreteEstimator, x: torch.Tensor, steps: int = 300,
                 lr: float = 3e-3, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> tuple[float, float]:
    """Fit NVIL's baseline b(x) and running mean c on the batch x at the model's fixed weights: ``steps`` Adam
    steps on the squared error (f - c - b(x))^2 alone, one draw per example each (the model is not changed).
    Returns the mean squared error at the first step (c = 0 and b = 0 then) and at the last, nats^2.
    ``progress(done, steps)`` is called after each step (a :class:`vaekit.progress.Bar`: drawn, projected, and
    refused when the whole would take too long)."""
    opt = torch.optim.Adam(list(estimator.baseline.parameters()), lr=lr)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    estimator.train()
    first = last = math.nan
    try:
        with torch.enable_grad():
            for step in range(steps):
                _, loss = estimator._nvil_signal(x, _learning_signal(model, x, gen))
                loss = loss.mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                first = float(loss.detach()) if step == 0 else first
                last = float(loss.detach())
                if progress is not None:
                    progress(step + 1, steps)
    finally:
        estimator.eval()
    return first, last


@dataclass
class Row:
    """One estimator at one S: variance and bias^2 of its T estimates (means over the P coordinates)."""

    estimator: str
    samples: int | None  # None for enumerate: the number of samples does not apply
    objective: str  # elbo, or iwae (vimco: IWAE_S)
    target: str | None  # the exact gradient the bias is measured against (see TARGETS), None if none
    variance: float
    variance_stderr: float
    bias2: float | None
    bias2_stderr: float | None
    exact_norm2: float | None
    bias_relative: float | None
    seconds: float


@dataclass
class Measurement:
    rows: list[Row]
    n: int
    trials: int
    parameters: int
    support_size: int | None
    exact_elbo: float | None
    temperature: float
    baseline: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)


def measure(model: LatentVariableModel, x: torch.Tensor, estimators: list[str], samples: list[int], trials: int,
            seed: int = 0,
            temperature: float = 0.5, baseline_steps: int = 300,
            progress: Callable[[int, int], None] | None = None) -> Measurement:
    """Variance and bias of each estimator's gradient of the mean objective w.r.t. phi on the batch x,
    for each S in ``samples`` (vimco: S >= 2 only; enumerate: one row), ``trials`` estimates each.
    ``progress``: follows the ``baseline_steps`` of NVIL's baseline fit (:func:`fit_baseline`).

    The model is used at its fixed weights (in eval mode); only phi takes gradients while it runs."""
    for name in estimators:
        check_estimator(model, name, _objective(name), 2)
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.inference_parameters():
            p.requires_grad_(True)
        return _measure(model, x, estimators, samples, trials, seed, temperature, baseline_steps, progress)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def _measure(model: LatentVariableModel, x: torch.Tensor, estimators: list[str], samples: list[int], trials: int,
             seed: int,
             temperature: float, baseline_steps: int,
             progress: Callable[[int, int], None] | None = None) -> Measurement:
    from vaekit.objectives.discrete import MAX_ENUMERATED, EstimatorSettings

    size = latent_support_size(model)
    enumerable = size is not None and size <= MAX_ENUMERATED
    n_params = sum(p.numel() for p in model.inference_parameters())
    exact = exact_gradient(model, x) if enumerable else None
    with torch.no_grad():
        exact_elbo = float(exact_objective(model, x).mean()) if enumerable else None
    settings = EstimatorSettings(temperature=temperature, temperature_min=temperature, anneal_rate=0.0)
    dim = math.prod(x.shape[1:])
    rows: list[Row] = []
    notes: list[str] = []
    baseline = None
    for e_index, name in enumerate(estimators):
        est = DiscreteEstimator(name, dim, settings).to(device=x.device, dtype=x.dtype).eval()
        if name == "nvil":
            first, last = fit_baseline(model, est, x, steps=baseline_steps, seed=seed + 7919, progress=progress)
            baseline = {"steps": baseline_steps, "squared_error_first": first, "squared_error_last": last}
        grid: list[int | None] = [None] if name == "enumerate" else [s for s in samples if name != "vimco" or s >= 2]
        if name == "vimco" and 1 in samples:
            notes.append("vimco needs S >= 2 (leave-one-out baselines in IWAE_S): no vimco row for S = 1")
        for s_index, s in enumerate(grid):
            start = time.perf_counter()
            row_seed = seed + 1_000_003 * (e_index + 1) + 10_007 * s_index
            grads = estimate_gradients(model, est, x, s or 1, trials, row_seed)
            target, ref = ("elbo", exact) if enumerable else (None, None)
            if name == "vimco" and enumerable:
                if can_enumerate_iwae(model, x.shape[0], int(s or 1)):
                    target, ref = "iwae", exact_gradient(model, x, "iwae", int(s or 1))
                else:
                    target, ref = "log_px", torch.zeros(n_params)
            stats = summarize(grads, ref)
            rows.append(Row(name, s, _objective(name), target, seconds=time.perf_counter() - start,
                            **stats))  # type: ignore[arg-type]
    if not enumerable:
        notes.append("the latent space is too large to enumerate: no exact gradient, so no bias")
    if any(r.target == "log_px" for r in rows):
        notes.append("vimco rows against log p(x): too many S-tuples of codes to enumerate IWAE_S, so the bias is "
                     "against the gradient of log p(x), 0 for phi, which IWAE_S's approaches as S grows")
    return Measurement(rows, int(x.shape[0]), trials, n_params, size, exact_elbo, temperature, baseline, notes)
