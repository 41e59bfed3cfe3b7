"""Objectives: the evidence lower bound (ELBO) and the importance-weighted bound (IWAE).

For one example x, with z ~ q(z|x) drawn by reparameterization:

    ELBO(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))            <= log p(x)
    IWAE_k(x) = E[ log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i|x) ] <= log p(x),  IWAE_1 = ELBO,

and IWAE_k increases with k towards log p(x) (Burda et al., 2016). All values are in nats
per example (summed over pixels); losses average over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vaekit.model import VAE


@dataclass
class ElboTerms:
    """Per-example ELBO and its two terms (nats): elbo = reconstruction - kl."""

    elbo: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def _flat_inputs(x: torch.Tensor, encoder_input: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, the encoder's input), both flat (B, D): images (B, C, H, W) are flattened; no encoder_input means x."""
    x = x.flatten(1) if x.dim() > 2 else x
    return x, (x if encoder_input is None else encoder_input.reshape(x.shape))


def elbo(
    model: VAE,
    x: torch.Tensor,
    *,
    samples: int = 1,
    analytic_kl: bool | None = None,
    generator: torch.Generator | None = None,
    encoder_input: torch.Tensor | None = None,
) -> ElboTerms:
    """Monte Carlo ELBO with ``samples`` reparameterized draws per example.

    reconstruction = (1/S) sum_s log p(x | z_s);  kl = KL(q(z|x) || p(z)) in closed form when
    the prior has one (``analytic_kl`` None or True), else (1/S) sum_s [log q(z_s|x) - log p(z_s)].
    x: (B, D) flat, or images (B, C, H, W).

    ``encoder_input`` (same shape as x, e.g. a noisy copy x~) makes the encoder see x~ while the
    decoder still scores x: E_q(z|x~)[log p(x|z)] - KL(q(z|x~) || p(z)). That is still a lower
    bound on log p(x), since q(z|x~) is just another distribution over z (the denoising VAE used
    for amortized inference regularisation, Shu et al., 2018).
    """
    x, x_enc = _flat_inputs(x, encoder_input)
    draws = samples if samples > 1 else None
    use_analytic = model.has_analytic_kl if analytic_kl is None else analytic_kl
    if use_analytic:
        mu, logvar = model.encode(x_enc)
        z = model.reparameterize(mu, logvar, draws, generator)
        reconstruction = model.log_likelihood(x, z)
        kl = model.prior.analytic_kl(mu, logvar)
    else:
        z, log_q = model.rsample_posterior(x_enc, draws, generator)
        reconstruction = model.log_likelihood(x, z)
        kl = log_q - model.log_prior(z)
    if samples > 1:
        reconstruction = reconstruction.mean(0)
        kl = kl.mean(0) if kl.dim() > 1 else kl
    return ElboTerms(reconstruction - kl, reconstruction, kl)


def _sampled_terms(
    model: VAE, x: torch.Tensor, k: int, generator: torch.Generator | None,
    encoder_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For k draws z_i ~ q(z|x): log p(x|z_i) and log q(z_i|x) - log p(z_i), each (k, B), nats.

    With ``encoder_input`` x~ the proposal is q(z|x~) (see :func:`elbo`); the bound still holds.
    """
    x, x_enc = _flat_inputs(x, encoder_input)
    z, log_q = model.rsample_posterior(x_enc, k, generator)  # (k, B, L), (k, B)
    return model.log_likelihood(x, z), log_q - model.log_prior(z)


def log_importance_weights(
    model: VAE, x: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x) for z_i ~ q(z|x); shape (k, B), nats."""
    rec, kl = _sampled_terms(model, x, k, generator)
    return rec - kl


def iwae_bound(model: VAE, x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """IWAE_k(x) = log (1/k) sum_i w_i, per example (B,), nats; computed with logsumexp."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    log_w = log_importance_weights(model, x, k, generator)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def iwae_terms(
    model: VAE, x: torch.Tensor, k: int, generator: torch.Generator | None = None,
    encoder_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ElboTerms]:
    """The IWAE_k bound and, from the same k draws, the Monte Carlo ELBO and its terms.

    With log w_i = log p(x|z_i) - [log q(z_i|x) - log p(z_i)], the mean over i of log w_i is an
    unbiased ELBO estimate (reconstruction minus Monte Carlo KL); the logsumexp is the bound.
    """
    rec, kl = _sampled_terms(model, x, k, generator, encoder_input)
    log_w = rec - kl
    bound = torch.logsumexp(log_w, dim=0) - math.log(k)
    rec_m, kl_m = rec.mean(0), kl.mean(0)
    return bound, ElboTerms(rec_m - kl_m, rec_m, kl_m)


def kl_weight(epoch: int, beta: float = 1.0, warmup_epochs: int = 0) -> float:
    """The KL weight for an epoch (0-based): beta * min(1, (epoch + 1) / warmup_epochs)."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, (epoch + 1) / warmup_epochs)
