"""Objectives: the bounds and their terms (:mod:`vaekit.objectives.terms`), and the registered objectives that
train a model (:mod:`vaekit.objectives.base`): ``elbo`` (default), ``iwae``, ``autoencoder``, Rainforth et al.'s
multi-sample bounds ``miwae``, ``ciwae`` and ``piwae``, and for disentangling ``beta-tcvae``, ``dip-vae-i``,
``dip-vae-ii``, ``annealed-capacity`` and ``factorvae`` (with its family), and the MMD family ``wae-mmd`` and
``infovae-mmd`` (:mod:`vaekit.objectives.mmd`), the VQ-VAE's ``vqvae`` (with its family), and semi-supervised
M2's ``m2`` (:mod:`vaekit.objectives.m2`, with its family).

For one example x, with z ~ q(z|x) drawn by reparameterization:

    ELBO(x)   = E_q[log p(x|z)] - KL(q(z|x) || p(z))            <= log p(x)
    IWAE_k(x) = E[ log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i|x) ] <= log p(x),  IWAE_1 = ELBO,

in nats per example. A new objective is one class plus one registration in :data:`OBJECTIVES`. The encoder's
gradient is estimated by the pathwise gradient, STL or DReG for a reparameterized q(z|x)
(:mod:`vaekit.objectives.reparameterized`), by the estimators of :mod:`vaekit.objectives.discrete` for a discrete one.
"""

from vaekit.objectives import (  # noqa: F401 - the built-in registrations
    autoencoder,
    beta_tcvae,
    capacity,
    ciwae,
    dip_vae,
    evidence,
    factorvae,
    importance,
    infovae_mmd,
    m2,
    miwae,
    piwae,
    vqvae,
    wae_mmd,
)
from vaekit.objectives.base import INFERENCE, OBJECTIVES, Loss, Objective, Score, build_objective
from vaekit.objectives.terms import (
    ElboTerms,
    autoencoder_terms,
    elbo,
    iwae_bound,
    iwae_terms,
    kl_weight,
    log_importance_weights,
    sampled_terms,
)

__all__ = ["INFERENCE", "OBJECTIVES", "ElboTerms", "Loss", "Objective", "Score", "autoencoder_terms",
           "build_objective", "elbo", "iwae_bound", "iwae_terms", "kl_weight", "log_importance_weights",
           "sampled_terms"]
