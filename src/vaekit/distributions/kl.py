"""Closed-form KL divergences between vaekit's distributions, registered with ``torch.distributions``.

    KL(N(mu, diag s^2) || N(0, I))             = 1/2 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2)
    KL(N(mu, diag s^2) || N(m, diag v))        = 1/2 sum_j (log v_j - log s_j^2 + (s_j^2 + (mu_j - m_j)^2) / v_j - 1)

    KL(prod_g Cat(q_g) || prod_g Cat(p_g))   = sum_g sum_k q_gk (log q_gk - log p_gk)
    KL(prod_j Bern(q_j) || prod_j Bern(p_j)) = sum_j [q_j log(q_j / p_j) + (1 - q_j) log((1 - q_j) / (1 - p_j))]

all in nats. ``torch.distributions.kl_divergence`` finds these; for pairs without a closed form it raises
``NotImplementedError`` and the objectives estimate the KL by Monte Carlo, E_q[log q(z) - log p(z)].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, kl_divergence, register_kl

from vaekit.distributions.discrete import FactorizedBernoulli, FactorizedCategorical
from vaekit.distributions.normal import DiagonalNormal, StandardNormal
from vaekit.distributions.normal import sum_event as _sum_event


@register_kl(DiagonalNormal, StandardNormal)
def _kl_diagonal_standard(q: DiagonalNormal, p: StandardNormal) -> torch.Tensor:
    return 0.5 * (q.loc.pow(2) + q.logvar.exp() - 1.0 - q.logvar).sum(-1)


@register_kl(DiagonalNormal, DiagonalNormal)
def _kl_diagonal_diagonal(q: DiagonalNormal, p: DiagonalNormal) -> torch.Tensor:
    per = p.logvar - q.logvar + (q.logvar.exp() + (q.loc - p.loc).pow(2)) * torch.exp(-p.logvar) - 1.0
    return 0.5 * _sum_event(per, q.event_dims)


@register_kl(FactorizedCategorical, FactorizedCategorical)
def _kl_categorical_categorical(q: FactorizedCategorical, p: FactorizedCategorical) -> torch.Tensor:
    if (q.groups, q.classes) != (p.groups, p.classes):
        raise ValueError(f"KL between {q.groups}x{q.classes} and {p.groups}x{p.classes} categorical codes")
    return (q.probs * (q.logits - p.logits)).sum((-1, -2))


@register_kl(FactorizedBernoulli, FactorizedBernoulli)
def _kl_bernoulli_bernoulli(q: FactorizedBernoulli, p: FactorizedBernoulli) -> torch.Tensor:
    # log sigmoid(l) = -softplus(-l), log(1 - sigmoid(l)) = -softplus(l): stable for any logits
    probs = q.probs
    log_ratio_one = F.softplus(-p.logits) - F.softplus(-q.logits)
    log_ratio_zero = F.softplus(p.logits) - F.softplus(q.logits)
    return (probs * log_ratio_one + (1 - probs) * log_ratio_zero).sum(-1)


def has_closed_form_kl(q: Distribution, p: Distribution) -> bool:
    """Whether ``kl_divergence(q, p)`` has a registered closed form (looked up, not computed)."""
    try:
        from torch.distributions.kl import _dispatch_kl
    except ImportError:  # pragma: no cover - an older or newer torch without the lookup: compute it
        return closed_form_kl(q, p) is not None
    return _dispatch_kl(type(q), type(p)) is not NotImplemented


def closed_form_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) from the registry, or None when no closed form is registered for the pair."""
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return None


def kl_per_unit(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q_j || p_j) for each latent unit j of factorised q and p (their ``factors()``), or None."""
    factors_q, factors_p = getattr(q, "factors", None), getattr(p, "factors", None)
    if factors_q is None or factors_p is None:
        return None
    fq, fp = factors_q(), factors_p()
    shape = torch.broadcast_shapes(fq.batch_shape, fp.batch_shape)  # torch's Bernoulli KL does not broadcast
    return closed_form_kl(fq.expand(shape), fp.expand(shape))
