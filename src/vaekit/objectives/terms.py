"""Objectives: the evidence lower bound (ELBO) and the importance-weighted bound (IWAE).

For one example x, with z ~ q(z|x) drawn by reparameterization:

    ELBO(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))            <= log p(x)
    IWAE_k(x) = E[ log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i|x) ] <= log p(x),  IWAE_1 = ELBO,

and IWAE_k increases with k towards log p(x) (Burda et al., 2016). All values are in nats per example
(summed over pixels); losses average over the batch. The objectives see a model only through the protocol of
:mod:`vaekit.models.base` (``posterior``, ``prior_distribution``, ``log_prior``, ``log_likelihood``): they do
not know which families they combine. The KL term is taken in closed form when
``torch.distributions.kl_divergence`` has one registered for the pair (q, p), and estimated by Monte Carlo,
log q(z|x) - log p(z) at the same draws, otherwise (as Pyro's TraceMeanField_ELBO does).

The draws of :func:`elbo` and :func:`sampled_terms` (every objective's) go through the gradient estimator of a
reparameterized q(z|x) when one is active (:mod:`vaekit.objectives.reparameterized`: STL and DReG take log q(z|x)
at stopped-gradient parameters, so the KL is then always the Monte Carlo one); the values are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.distributions import kl_divergence

from vaekit.bounds.weights import draw_log_weights
from vaekit.distributions import rsample, rsample_and_log_prob, sample
from vaekit.distributions.kl import has_closed_form_kl
from vaekit.errors import VaekitError
from vaekit.objectives.reparameterized import active_session

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@dataclass
class ElboTerms:
    """Per-example ELBO and its two terms (nats): elbo = reconstruction - kl; ``z``: the draws they were taken at
    (where :func:`elbo` drew them), for objectives that use the codes too (a discriminator on them)."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    z: torch.Tensor | None = field(default=None, repr=False)


def _inputs(model: LatentVariableModel, x: torch.Tensor,
            encoder_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, the encoder's input) as batches of the model's data shape; no encoder_input means x."""
    x = model.as_data(x)
    return x, (x if encoder_input is None else encoder_input.reshape(x.shape))


def elbo(
    model: LatentVariableModel,
    x: torch.Tensor,
    y: Any = None,
    *,
    samples: int = 1,
    analytic_kl: bool | None = None,
    generator: torch.Generator | None = None,
    encoder_input: torch.Tensor | None = None,
    posterior: Any = None,
) -> ElboTerms:
    """Monte Carlo ELBO with ``samples`` reparameterized draws per example.

    reconstruction = (1/S) sum_s log p(x | z_s);  kl = KL(q(z|x) || p(z)) in closed form when one is registered
    (``analytic_kl`` None: where available; True: required; False: never), else
    (1/S) sum_s [log q(z_s|x) - log p(z_s)]. x: a batch (N, C, H, W) (or flat (N, D)); y: the conditioning.

    ``encoder_input`` (same shape as x, e.g. a noisy copy x~) makes the encoder see x~ while the decoder still
    scores x: E_q(z|x~)[log p(x|z)] - KL(q(z|x~) || p(z)). That is still a lower bound on log p(x), since
    q(z|x~) is just another distribution over z (the denoising VAE of Shu et al., 2018). ``posterior``: q(z|x) when
    the caller has it already (then the encoder is not run again and ``encoder_input`` is not used).
    """
    x, x_enc = _inputs(model, x, encoder_input)
    q = model.posterior(x_enc, y) if posterior is None else posterior
    session = active_session()
    if getattr(q, "is_point_mass", False) and session is None:
        return autoencoder_terms(model, x, q, y)
    p = model.prior_distribution()
    shape = (samples,) if samples > 1 else ()
    if session is not None:  # STL or DReG: log q at stopped parameters, so a Monte Carlo KL
        if analytic_kl:
            raise VaekitError(f"analytic_kl=True: the estimator {session.estimator.name} takes log q(z|x) at the "
                              "draws (a Monte Carlo KL); use analytic_kl=None")
        reconstruction, kl, z = session.draw(q, p.log_prob, lambda v: model.log_likelihood(x, v, y), shape,
                                             generator)
        if samples > 1:
            reconstruction, kl = reconstruction.mean(0), kl.mean(0)
        return ElboTerms(reconstruction - kl, reconstruction, kl, z)
    closed = analytic_kl is not False and has_closed_form_kl(q, p)
    if analytic_kl and not closed:
        raise VaekitError(f"KL({type(q).__name__} || {type(p).__name__}) has no closed form registered "
                          "(torch.distributions.register_kl); use analytic_kl=False")
    if closed:  # a discrete q (no rsample) gives the value; its gradient needs vaekit.objectives.discrete
        z = rsample(q, shape, generator) if q.has_rsample else sample(q, shape, generator)
        reconstruction = model.log_likelihood(x, z, y)
        kl = kl_divergence(q, p)
    else:
        z, log_q = rsample_and_log_prob(q, shape, generator)
        reconstruction = model.log_likelihood(x, z, y)
        kl = log_q - p.log_prob(z)  # p, not model.log_prior: a VampPrior would encode its pseudo-inputs again
    if samples > 1:
        reconstruction = reconstruction.mean(0)
        kl = kl.mean(0) if kl.dim() > 1 else kl
    return ElboTerms(reconstruction - kl, reconstruction, kl, z)


def autoencoder_terms(model: LatentVariableModel, x: torch.Tensor, q: Any, y: Any = None) -> ElboTerms:
    """A deterministic autoencoder's objective in the ELBO's place (it has none: a point mass has no density):
    reconstruction = log p(x | f(x)), ``kl`` = the latent penalty (lambda / 2) ||f(x)||^2, ``elbo`` =
    reconstruction - penalty, the quantity trained, which is not a bound on log p(x)."""
    rec = model.log_likelihood(x, q.rsample(), y)
    penalty = q.latent_penalty()
    return ElboTerms(rec - penalty, rec, penalty)


def sampled_terms(
    model: LatentVariableModel, x: torch.Tensor, k: int, generator: torch.Generator | None = None, y: Any = None,
    encoder_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For k draws z_i ~ q(z|x): log p(x|z_i) and log q(z_i|x) - log p(z_i), each (k, N), nats.

    With ``encoder_input`` x~ the proposal is q(z|x~) (see :func:`elbo`); the bound still holds.
    """
    x, x_enc = _inputs(model, x, encoder_input)
    q, session = model.posterior(x_enc, y), active_session()
    if session is not None:  # an estimator of the encoder's gradient acts on these draws (STL, DReG)
        return session.draw(q, model.log_prior, lambda z: model.log_likelihood(x, z, y), (k,), generator)[:2]
    return draw_log_weights(q, model.log_prior, lambda z: model.log_likelihood(x, z, y), k,
                            generator)  # the log-weight engine, (k, N) each


def log_importance_weights(
    model: LatentVariableModel, x: torch.Tensor, k: int, generator: torch.Generator | None = None, y: Any = None
) -> torch.Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for z_i ~ q(z|x); shape (k, N), nats."""
    rec, kl = sampled_terms(model, x, k, generator, y)
    return rec - kl


def iwae_bound(model: LatentVariableModel, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
               y: Any = None) -> torch.Tensor:
    """IWAE_k(x) = log (1/k) sum_i w_i, per example (N,), nats; computed with logsumexp."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    log_w = log_importance_weights(model, x, k, generator, y)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def iwae_terms(
    model: LatentVariableModel, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
    encoder_input: torch.Tensor | None = None, y: Any = None,
) -> tuple[torch.Tensor, ElboTerms]:
    """The IWAE_k bound and, from the same k draws, the Monte Carlo ELBO and its terms.

    With log w_i = log p(x|z_i) - [log q(z_i|x) - log p(z_i)], the mean over i of log w_i is an
    unbiased ELBO estimate (reconstruction minus Monte Carlo KL); the logsumexp is the bound.
    """
    rec, kl = sampled_terms(model, x, k, generator, y, encoder_input)
    log_w = rec - kl
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)
    rec_m, kl_m = rec.mean(0), kl.mean(0)
    return bound, ElboTerms(rec_m - kl_m, rec_m, kl_m)


def kl_weight(epoch: int, beta: float = 1.0, warmup_epochs: int = 0) -> float:
    """The KL weight for an epoch (0-based): beta * min(1, (epoch + 1) / warmup_epochs)."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, (epoch + 1) / warmup_epochs)
