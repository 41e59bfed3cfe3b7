"""Exact marginal likelihoods of discrete-latent models, by a sum over every code z.

For a prior with a finite support (categorical codes, K^G of them; Bernoulli codes, 2^d)::

    log p(x)     = logsumexp_z [log p(x|z) + log p(z)]                          (exact, nats)
    ELBO(x)      = sum_z q(z|x) [log p(x|z) + log p(z) - log q(z|x)]             (exact, no sampling)
                 = reconstruction - KL,   reconstruction = sum_z q(z|x) log p(x|z),
                                          KL = sum_z q(z|x) [log q(z|x) - log p(z)]
    gap(x)       = log p(x) - ELBO(x) = KL(q(z|x) || p(z|x)) >= 0,   p(z|x) = p(x, z) / p(x)

The codes go in chunks of C; each chunk is decoded ONCE (p(x|z) does not depend on x) and every example
of the batch is scored against it; running logsumexp values and q-weighted sums combine the chunks. With
a Bernoulli likelihood the score of a block of B examples is one matrix product,
log p(x|z) = x . l(z) - sum_d softplus(l_d(z)), x (B, D), logits l (C, D); other likelihoods broadcast
``likelihood.log_prob`` over (C, B). Memory stays within ``memory_budget`` bytes of decoder activations
(:mod:`vaekit.bounds.sizing`, the convention of the importance sampler): C * bytes_per_row <= budget, and the
(C, B) score block (B * C * D elements for a generic likelihood) fits it too. Cost: S decoder rows for
S codes, whatever the number of examples, plus N * S * D multiply-adds to score them.

A conditional model (labels y) decodes each chunk once per label present in the batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch.distributions import Distribution

from vaekit.bounds.sizing import CPU_ROWS, DEFAULT_MEMORY_BUDGET, bytes_per_row, model_device_dtype
from vaekit.distributions import FactorizedBernoulli, FactorizedCategorical, support_size
from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

__all__ = ["DEFAULT_LIMIT", "EnumeratedBound", "code_chunk", "enumerated_bound", "enumerated_log_marginal",
           "is_enumerable", "latent_codes"]

#: The most codes summed over by default (2^16: Bernoulli latents with d <= 16).
DEFAULT_LIMIT = 2**16


@dataclass
class EnumeratedBound:
    """Per-example exact values (N,), nats: log p(x), the ELBO and its terms; ``codes``: the number summed."""

    log_px: torch.Tensor
    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    codes: int

    @property
    def gap(self) -> torch.Tensor:
        """log p(x) - ELBO = KL(q(z|x) || p(z|x)), (N,)."""
        return self.log_px - self.elbo


def latent_codes(model: LatentVariableModel) -> int | None:
    """The number of codes z of the model's prior when its support can be enumerated, else None."""
    prior_of = getattr(model, "prior_distribution", None)
    if prior_of is None:
        return None
    try:
        prior = prior_of()
    except (NotImplementedError, ValueError, VaekitError):
        return None
    size = support_size(prior) if isinstance(prior, Distribution) else None
    return size if size is not None and not prior.batch_shape else None


def is_enumerable(model: LatentVariableModel, limit: int = DEFAULT_LIMIT) -> bool:
    """Whether log p(x) of ``model`` can be summed over every code: a prior with at most ``limit`` codes."""
    size = latent_codes(model)
    return size is not None and size <= limit


def code_chunk(prior: Distribution, start: int, stop: int) -> torch.Tensor:
    """Codes number start..stop-1 of ``prior``'s support, (stop - start, L), in ``enumerate_support``'s order
    (the first group / unit varies slowest); built per chunk, so that 2^24 codes need not be held at once."""
    if isinstance(prior, (FactorizedCategorical, FactorizedBernoulli)):
        base = prior.classes if isinstance(prior, FactorizedCategorical) else 2
        digits = prior.groups if isinstance(prior, FactorizedCategorical) else prior.units
        device = prior.logits.device
        index = torch.arange(start, stop, device=device)
        powers = base ** torch.arange(digits - 1, -1, -1, device=device)
        d = (index[:, None] // powers) % base  # (C, digits)
        if isinstance(prior, FactorizedBernoulli):
            return d.to(prior.logits.dtype)
        return F.one_hot(d, base).to(prior.logits.dtype).flatten(-2)
    codes = prior.enumerate_support(expand=False)
    return codes.reshape(codes.shape[0], -1)[start:stop]


def _bernoulli_pixels(model: LatentVariableModel) -> bool:
    from vaekit.components.likelihoods import BernoulliLikelihood

    return type(getattr(model, "likelihood", None)) is BernoulliLikelihood


def _scorer(model: LatentVariableModel, fast: bool) -> Any:
    """A function of the decoded params of a chunk of codes (C, *param_shape), once per chunk, that returns the
    scorer of that chunk: x block (B, D) -> log p(x|z) (B, C)."""
    if fast and _bernoulli_pixels(model):
        def bernoulli(params: torch.Tensor) -> Any:
            logits = params.reshape(params.shape[0], -1)  # (C, D)
            softplus = F.softplus(logits).sum(-1)  # depends on the codes only: once per chunk, not per block
            return lambda xb: xb @ logits.t() - softplus

        return bernoulli

    def generic(params: torch.Tensor) -> Any:
        def score(xb: torch.Tensor) -> torch.Tensor:
            data = model.as_data(xb) if hasattr(model, "as_data") else xb
            expanded = params[:, None].expand(params.shape[0], xb.shape[0], *params.shape[1:])
            return model.likelihood.log_prob(data, expanded).t()  # (C, B) -> (B, C)

        return score

    return generic


def _log_q_form(q: Distribution) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(A (N, L), a (N,)) with log q(z|x_n) = A_n . z + a_n for every code z, for factorised categorical
    (A = the flat log-probabilities, a = 0) and Bernoulli (A = the logits, a = -sum_j softplus(l_j)) codes."""
    if isinstance(q, FactorizedCategorical) and len(q.batch_shape) == 1:
        flat = q.logits.flatten(-2)
        return flat, flat.new_zeros(flat.shape[0])
    if isinstance(q, FactorizedBernoulli) and len(q.batch_shape) == 1:
        return q.logits, -F.softplus(q.logits).sum(-1)
    return None


#: Examples per encoder call when q(z|x) is computed for the examples to score.
ENCODE_ROWS = 1024


def _posterior(model: LatentVariableModel, xf: torch.Tensor, labels: torch.Tensor | None) -> tuple[Any, Any]:
    """(None, (A, a)) of :func:`_log_q_form` for all examples, encoded :data:`ENCODE_ROWS` at a time;
    (q, None) for another family (q of all examples at once)."""
    parts = []
    for s in range(0, xf.shape[0], ENCODE_ROWS):
        xb = xf[s : s + ENCODE_ROWS]
        q = model.posterior(xb) if labels is None else model.posterior(xb, labels[s : s + ENCODE_ROWS])
        form = _log_q_form(q)
        if form is None:
            return (model.posterior(xf) if labels is None else model.posterior(xf, labels)), None
        parts.append(form)
    return None, (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))


def _plan(model: LatentVariableModel, n: int, size: int, d: int, fast: bool, chunk: int | None, batch_size: int | None,
          memory_budget: int) -> tuple[int, int]:
    """(codes per chunk C, examples per block B) within the memory budget."""
    device, dtype = model_device_dtype(model)
    row = max(1, bytes_per_row(model, int(model.latent_size)))
    rows = max(1, memory_budget // row)
    if device.type == "cpu":
        rows = min(rows, CPU_ROWS)
    c = max(1, min(size, chunk if chunk is not None else rows))
    itemsize = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    # the bytes of one example's row of the (B, C) score block: a few float64 temporaries, or with a generic
    # likelihood its D per-pixel terms (about one decoder row)
    per_example = c * (64 if fast and _bernoulli_pixels(model) else max(row, 8 * d * itemsize))
    b = max(1, min(n, memory_budget // max(1, per_example)))
    if batch_size is not None:
        b = max(1, min(b, batch_size))
    return c, b


def _labels(model: LatentVariableModel, y: Any, n: int, device: torch.device) -> torch.Tensor | None:
    """The class labels of the ``n`` examples as int64 (n,) on ``device`` for a conditional model, else None."""
    if not getattr(model, "condition", 0):
        return None
    if y is None:
        raise VaekitError("the model is conditional: give the labels y of the examples")
    labels = torch.as_tensor(y).long().reshape(-1).to(device)
    if labels.shape[0] != n:
        raise VaekitError(f"got {labels.shape[0]} labels for {n} examples")
    return labels


@torch.inference_mode()
def enumerated_bound(model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, posterior: bool = True,
                     chunk: int | None = None, batch_size: int | None = None,
                     memory_budget: int = DEFAULT_MEMORY_BUDGET, fast: bool = True,
                     progress: Callable[[int, int], None] | None = None) -> EnumeratedBound:
    """Exact log p(x), ELBO, reconstruction and KL per example (see the module docstring); x (N, ...) -> (N,).
    ``progress(done, total)`` follows the codes summed (0 first, then after every chunk of them).

    ``chunk``: codes per decoder call (default: as many as the memory budget allows); ``batch_size``:
    examples scored per block; ``posterior=False`` skips q(z|x) (the ELBO terms are then NaN); ``fast=False``
    scores through ``likelihood.log_prob`` even for Bernoulli pixels. Results do not depend on the chunking
    (up to rounding). The model's weights are treated as fixed (``model.frozen()``).
    """
    size = latent_codes(model)
    if size is None:
        raise VaekitError("the latent space of this model cannot be enumerated (its prior has no finite support); "
                          "estimate log p(x) by importance sampling instead")
    if chunk is not None and chunk < 1:
        raise VaekitError(f"chunk must be >= 1, got {chunk}")
    device, dtype = model_device_dtype(model)
    x = torch.as_tensor(x)
    n = x.shape[0]
    xf = x.reshape(n, -1).to(device=device, dtype=dtype)
    labels = _labels(model, y, n, device)
    c, b = _plan(model, n, size, xf.shape[1], fast, chunk, batch_size, memory_budget)
    score = _scorer(model, fast)
    tick = progress if progress is not None else (lambda done, total: None)
    lse = torch.full((n,), -math.inf, dtype=torch.float64, device=device)
    rec, kl = torch.zeros_like(lse), torch.zeros_like(lse)
    frozen = getattr(model, "frozen", None)
    with frozen() if frozen is not None else contextlib.nullcontext():
        prior = model.prior_distribution()
        q, form = _posterior(model, xf, labels) if posterior else (None, None)
        groups = [(None, torch.arange(n, device=device))] if labels is None else \
            [(int(v), (labels == v).nonzero().squeeze(-1)) for v in torch.unique(labels)]
        for start in range(0, size, c):
            tick(start, size)  # 0 first: the work starts
            codes = code_chunk(prior, start, min(size, start + c)).to(device=device, dtype=dtype)  # (C, L)
            log_prior = prior.log_prob(codes).double()  # (C,)
            # log q(z|x): a matrix product per block for categorical and Bernoulli codes, else log_prob over (C, N)
            log_q_all = q.log_prob(codes[:, None, :]).t().double() if q is not None else None
            for label, index in groups:
                yc = None if label is None else torch.full((codes.shape[0],), label, dtype=torch.long, device=device)
                params = model.decode(codes) if yc is None else model.decode(codes, yc)  # once per chunk
                score_chunk = score(params)
                for s in range(0, index.shape[0], b):
                    rows = index[s : s + b]
                    ll = score_chunk(xf[rows]).double()  # (B, C)
                    lse[rows] = torch.logaddexp(lse[rows], torch.logsumexp(ll + log_prior, -1))
                    if posterior:
                        log_q = (form[0][rows] @ codes.t() + form[1][rows, None]).double() if form is not None \
                            else log_q_all[rows]  # (B, C)
                        w = log_q.exp()
                        finite = log_q > -math.inf  # q(z|x) = 0 adds nothing (0 log 0 = 0)
                        rec[rows] += torch.where(finite, w * ll, 0.0).sum(-1)
                        kl[rows] += torch.where(finite, w * (log_q - log_prior), 0.0).sum(-1)
    tick(size, size)
    if not posterior:
        rec = kl = torch.full_like(lse, math.nan)
    return EnumeratedBound(log_px=lse, elbo=rec - kl, reconstruction=rec, kl=kl, codes=size)


def enumerated_log_marginal(model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, chunk: int | None = None,
                            batch_size: int | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                            fast: bool = True) -> torch.Tensor:
    """Exact log p(x) = logsumexp_z [log p(x|z) + log p(z)] per example, (N,) float64 nats, for a model whose
    prior has an enumerable support (:func:`is_enumerable`); see :func:`enumerated_bound` for the ELBO too."""
    return enumerated_bound(model, x, y, posterior=False, chunk=chunk, batch_size=batch_size,
                            memory_budget=memory_budget, fast=fast).log_px
