"""Latent-variable models: the protocol (:mod:`~vaekit.models.base`), the VAE, the two-level VAE, the
linear-Gaussian model whose log p(x) is known in closed form, the VQ-VAE (:mod:`~vaekit.models.vqvae`),
semi-supervised M2 (:mod:`~vaekit.models.m2`), and the registered families that ``--family NAME`` builds
(:mod:`~vaekit.models.families`)."""

from vaekit.models.base import LatentVariableModel, Samples, ShapeError
from vaekit.models.families import FAMILIES, Family
from vaekit.models.hierarchical import HierarchicalVAE
from vaekit.models.linear_gaussian import LinearGaussian
from vaekit.models.m2 import M2
from vaekit.models.mixture import BernoulliMixture
from vaekit.models.persistence import load_model, save_model
from vaekit.models.vae import VAE
from vaekit.models.vqvae import VQVAE

__all__ = ["FAMILIES", "VAE", "BernoulliMixture", "Family", "HierarchicalVAE", "LatentVariableModel",
           "LinearGaussian", "M2", "Samples", "ShapeError", "VQVAE", "load_model", "save_model"]
