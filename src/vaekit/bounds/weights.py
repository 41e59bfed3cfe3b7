"""The log-weight engine: log w = log p(x|z) + log p(z) - log q(z|x) at draws z ~ q(z|x), the one place where the
importance weights of every bound are formed (the IWAE objective and its validation figure, the evaluation, vaekit
bound and compare); exact enumeration sums over codes instead (:mod:`~vaekit.bounds.enumeration`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from vaekit.bounds.kernels import likelihood_kernel
from vaekit.bounds.pareto import TailKeeper
from vaekit.distributions import FactorizedCategorical, point, rsample_and_log_prob
from vaekit.distributions.kl import kl_per_unit
from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


def draw_log_weights(q: Any, log_prior: Callable[[torch.Tensor], torch.Tensor],
                     log_likelihood: Callable[[torch.Tensor], torch.Tensor], k: int,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For k draws z_i ~ q(z|x) (reparameterized): (log p(x|z_i), log q(z_i|x) - log p(z_i)), each (k, N), nats;
    log w_i is the first minus the second."""
    z, log_q = rsample_and_log_prob(q, (k,), generator)  # (k, N, L), (k, N)
    return log_likelihood(z), log_q - log_prior(z)


@torch.inference_mode()
def log_weight_stats(model: LatentVariableModel, x: torch.Tensor, k: int, k_chunk: int, generator: torch.Generator,
                     fast: bool = True, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-example statistics of K importance weights for a flat batch x (B, D), drawn k_chunk at a time.

    Returns (B,) tensors: ``log_px`` = logsumexp log w - log K, ``elbo`` = mean log w, ``reconstruction``
    = mean log p(x|z), ``kl`` = mean [log q - log p(z)], ``ess`` = (sum w)^2 / sum w^2, ``pareto_k`` = the
    Pareto k-hat of the K weights (:mod:`~vaekit.bounds.pareto`; NaN for K < 25); the point codes
    ``code`` (B, L) of q(z|x) and, where q and p(z) factorise with a closed form per unit, ``kl_units`` (B, L);
    for G groups of one-hot categorical codes ``kl_units`` is (B, G), one KL per group, and ``groups`` = G.
    """
    q = model.posterior(x) if y is None else model.posterior(x, y)
    if getattr(q, "is_point_mass", False):  # an autoencoder: "decoder + fitted density", with its proposal
        if not q.has_proposal or getattr(model.prior, "fitted", True) is False:
            raise VaekitError("this autoencoder defines no density log p(x): q(z|x) is a point mass and no density "
                              "has been fitted to its codes (vaekit train fits one at the end of training; for an "
                              "older run, vaekit.analysis.posthoc.fit_run_density(RUN, training images))")
        q = q.proposal()
    prior = model.prior_distribution()
    loglik = likelihood_kernel(model, x, fast, y)
    b = x.shape[0]
    lse = torch.full((b,), -math.inf, device=x.device, dtype=x.dtype)
    lse2 = torch.full((b,), -math.inf, device=x.device, dtype=x.dtype)
    sum_rec = torch.zeros(b, device=x.device, dtype=torch.float64)
    sum_kl = torch.zeros(b, device=x.device, dtype=torch.float64)
    tail = TailKeeper(k)
    for start in range(0, k, k_chunk):
        kc = min(k_chunk, k - start)
        rec, kl = draw_log_weights(q, prior.log_prob, loglik, kc, generator)  # (kc, B) each
        log_w = rec - kl
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        lse2 = torch.logaddexp(lse2, torch.logsumexp(2 * log_w, 0))
        tail.update(log_w)
        sum_rec += rec.sum(0, dtype=torch.float64)
        sum_kl += kl.sum(0, dtype=torch.float64)
    rec_mean, kl_mean = sum_rec / k, sum_kl / k
    out = {"log_px": lse.double() - math.log(k), "elbo": rec_mean - kl_mean, "reconstruction": rec_mean,
           "kl": kl_mean, "ess": torch.exp(2 * lse.double() - lse2.double()), "code": point(q),
           "pareto_k": tail.khat()}
    groups = getattr(q, "groups", None) if isinstance(q, FactorizedCategorical) else None
    if groups is not None:
        out["groups"] = torch.tensor(int(groups))
    units = kl_per_unit(q, prior)
    if units is not None and (units.shape == out["code"].shape or units.shape == (b, groups)):
        out["kl_units"] = units
    return out
