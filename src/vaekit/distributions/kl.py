"""Closed-form KL divergences between vaekit's distributions, registered with ``torch.distributions``.

    KL(N(mu, diag s^2) || N(0, I))             = 1/2 sum_j (mu_j^2 + s_j^2 - 1 - log s_j^2)
    KL(N(mu, diag s^2) || N(m, diag v))        = 1/2 sum_j (log v_j - log s_j^2 + (s_j^2 + (mu_j - m_j)^2) / v_j - 1)

all in nats. ``torch.distributions.kl_divergence`` finds these; for pairs without a closed form it raises
``NotImplementedError`` and the objectives estimate the KL by Monte Carlo, E_q[log q(z) - log p(z)].
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, kl_divergence, register_kl

from vaekit.distributions.normal import DiagonalNormal, StandardNormal
from vaekit.distributions.normal import sum_event as _sum_event


@register_kl(DiagonalNormal, StandardNormal)
def _kl_diagonal_standard(q: DiagonalNormal, p: StandardNormal) -> torch.Tensor:
    return 0.5 * (q.loc.pow(2) + q.logvar.exp() - 1.0 - q.logvar).sum(-1)


@register_kl(DiagonalNormal, DiagonalNormal)
def _kl_diagonal_diagonal(q: DiagonalNormal, p: DiagonalNormal) -> torch.Tensor:
    per = p.logvar - q.logvar + (q.logvar.exp() + (q.loc - p.loc).pow(2)) * torch.exp(-p.logvar) - 1.0
    return 0.5 * _sum_event(per, q.event_dims)


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
    return closed_form_kl(factors_q(), factors_p())
