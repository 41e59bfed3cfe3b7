"""Priors p(z): the standard normal and the VampPrior.

Each prior is a module whose :meth:`~vaekit.components.base.Prior.distribution` is p(z) as a
``torch.distributions`` object: :class:`~vaekit.distributions.StandardNormal` (closed-form KL to a diagonal
Gaussian q, registered in :mod:`vaekit.distributions.kl`) or a
:class:`~vaekit.distributions.DiagonalGaussianMixture` (the VampPrior; its KL is estimated by Monte Carlo).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.components.base import PRIORS, Prior
from vaekit.distributions import DiagonalGaussianMixture, StandardNormal


@PRIORS.register("standard", help="standard normal p(z) = N(0, I)")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def distribution(self) -> StandardNormal:
        anchor = self._anchor
        cached = self.__dict__.get("_cached")
        if cached is None or cached._device != anchor.device or cached._dtype != anchor.dtype:
            cached = StandardNormal(self.latent, device=anchor.device, dtype=anchor.dtype)
            self.__dict__["_cached"] = cached  # immutable: one object serves every call
        return cached


@dataclass
class VampConfig:
    components: int = 500  # pseudo-inputs K

    def __post_init__(self) -> None:
        if not 1 <= self.components <= 2**31 - 1:
            raise ValueError(f"components must be an integer >= 1, got {self.components}")


@PRIORS.register("vamp", VampConfig, help="VampPrior: a mixture of the posteriors of K learned pseudo-inputs")
class VampPrior(Prior):
    """The VampPrior (Tomczak & Welling, 2018): p(z) = (1/K) sum_k q(z | u_k).

    A mixture of the encoder's own posteriors at K learned pseudo-inputs u_k (images in [0, 1], kept there by a
    hard tanh as in the paper). The model attaches its guide x -> q(z|x), which must give diagonal Gaussians
    (with a flow: its base Gaussian is mixed). log p(z) is a logsumexp over the components, the quadratic
    forms matrix products.
    """

    def __init__(self, latent: int, shape: tuple[int, ...], components: int = 500,
                 init_mean: float = 0.05, init_std: float = 0.01):
        super().__init__(latent)
        self.components = int(components)
        self.shape = tuple(int(s) for s in shape)
        self.data_dim = math.prod(self.shape)
        self.pseudo_inputs = nn.Parameter(init_mean + init_std * torch.randn(self.components, self.data_dim))
        self._encode: Callable[[torch.Tensor], Distribution] | None = None
        self._frozen: DiagonalGaussianMixture | None = None

    trains_with_encoder = True

    def attach(self, encode: Callable[[torch.Tensor], Distribution]) -> None:
        object.__setattr__(self, "_encode", encode)  # not a sub-module: the model owns the encoder

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Within the block the K components q(z|u_k) are encoded once and reused (no gradients).

        For evaluation, where the weights do not change: without it every log p(z) call re-encodes the K
        pseudo-inputs, about a tenth of the work of an importance-sampled log p(x).
        """
        with torch.no_grad():
            self._frozen = None
            mixture = self.distribution()
        self._frozen = mixture
        try:
            yield
        finally:
            self._frozen = None

    def components_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of the K components q(z|u_k), each (K, L)."""
        d = self.distribution()
        return d.loc, d.logvar

    def distribution(self) -> DiagonalGaussianMixture:
        if self._frozen is not None:
            return self._frozen
        if self._encode is None:
            raise RuntimeError("the VampPrior is not attached to an encoder; build it inside a model (vaekit.VAE)")
        u = torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0).reshape(self.components, *self.shape)
        q = self._encode(u)
        q = getattr(q, "base", q)  # a flow's base Gaussian
        if not (hasattr(q, "loc") and hasattr(q, "logvar")):
            raise TypeError(f"the VampPrior mixes diagonal Gaussian posteriors; this model's q(z|x) is a "
                            f"{type(q).__name__}")
        return DiagonalGaussianMixture(q.loc, q.logvar)


@dataclass
class FittedMixtureConfig:
    components: int = 10  # C: Gaussian components fitted to the training codes

    def __post_init__(self) -> None:
        if isinstance(self.components, bool) or not 1 <= self.components <= 2**16:
            raise ValueError(f"components must be an integer from 1 to 65536, got {self.components}")


@PRIORS.register("fitted-gmm", FittedMixtureConfig, prefix="gmm",
                 help="a Gaussian mixture fitted after training to an autoencoder's codes (vaekit.analysis.posthoc)")
class FittedMixturePrior(Prior):
    """p(z) = sum_c pi_c N(z; m_c, diag v_c), fitted to the training codes after training (not trained by
    gradient; scikit-learn's ``GaussianMixture``, as pythae's GMM sampler and the RAE paper do). Until it is
    fitted (``fitted_flag`` 1) it refuses to be used."""

    fitted_after_training = True

    def __init__(self, latent: int, components: int = 10):
        super().__init__(latent)
        self.components = int(components)
        self.register_buffer("loc", torch.zeros(self.components, self.latent))
        self.register_buffer("fitted_flag", torch.zeros(()))
        self.register_buffer("logvar", torch.zeros(self.components, self.latent))
        self.register_buffer("logits", torch.zeros(self.components))

    def set_mixture(self, loc: torch.Tensor, logvar: torch.Tensor, weights: torch.Tensor) -> None:
        self.loc.copy_(loc)
        self.logvar.copy_(logvar)
        self.logits.copy_(torch.log(weights))
        self.fitted_flag.fill_(1.0)

    @property
    def fitted(self) -> bool:
        return bool(self.fitted_flag > 0)

    def distribution(self) -> DiagonalGaussianMixture:
        if not self.fitted:
            raise RuntimeError("the fitted-gmm prior has not been fitted yet "
                               "(vaekit.analysis.posthoc.fit_code_density)")
        return DiagonalGaussianMixture(self.loc, self.logvar, self.logits)
