"""The three kinds of component a latent-variable model is made of, and their registries.

* a **posterior** family turns the encoder's output into q(z|x), a ``torch.distributions.Distribution`` over
  codes z of size L (:data:`POSTERIORS`: ``gaussian``, ``iaf``, ``planar``, and the discrete ``categorical``
  and ``bernoulli``);
* a **prior** is p(z) as a distribution (:data:`PRIORS`: ``standard``, ``vamp``, ``mixture``, ``categorical``,
  ``bernoulli``);
* a **likelihood** turns the decoder's output into p(x|z), a distribution over images (C, H, W)
  (:data:`LIKELIHOODS`: ``bernoulli``, ``gaussian``, ``continuous-bernoulli``, ``pixelcnn``, and the
  probabilities of integer pixel values ``discretized-logistic``, ``discretized-logistic-mixture``,
  ``categorical-256``).

The contracts, which every component documents and user code can rely on:

* ``Posterior.param_size`` numbers per example come out of the encoder, (N, param_size); ``posterior(params)``
  returns q(z|x) with batch shape (N,) and event shape (L,), supporting ``rsample(sample_shape)`` and ``log_prob``.
* ``Likelihood.param_shape`` comes out of the decoder for each code: (P * C, H, W) for P parameters per
  sub-pixel (channel p * C + c holds parameter p of image channel c), or a shape of the likelihood's own where
  its parameters are not P per sub-pixel (the mixture of logistics: M (1 + 2C + C (C - 1) / 2) channels, which
  overrides ``param_shape`` and ``split``); a model sizes its decoder by ``param_shape`` alone.
  ``likelihood(params)`` returns p(x|z) with event shape (C, H, W), whose ``log_prob(x)`` sums over pixels
  (nats) and broadcasts x (N, C, H, W) against params (..., N, *param_shape).
* ``Likelihood.levels`` says what log p(x|z) is: an integer L for a probability of values on the grid
  x = k / (L - 1), k = 0..L-1 (2 for binary pixels; then bits/dim need no correction), None for a density.
* ``Prior.distribution()`` returns p(z) with event shape (L,).

A component stores each of its settings as an attribute of the same name, so that :meth:`Component.config`
can describe it in a run folder, and is rebuilt from that description by its registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit import distributions as vd
from vaekit.registry import Registry

#: Posterior families q(z|x): encoder output -> distribution over z.
POSTERIORS = Registry("posterior")
#: Priors p(z).
PRIORS = Registry("prior")
#: Observation models p(x|z): decoder output -> distribution over x.
LIKELIHOODS = Registry("likelihood")

_KINDS = {"posterior": POSTERIORS, "prior": PRIORS, "likelihood": LIKELIHOODS}


class Component(nn.Module):
    """A registered part of a model; ``name`` is set by its registration."""

    name: str = ""
    kind: str = ""

    def config(self) -> dict[str, Any]:
        """``{"name": ..., setting: value, ...}``: what the registry needs to build this component again."""
        registry = _KINDS.get(self.kind)
        out: dict[str, Any] = {"name": self.name}
        if registry is not None and self.name in registry:
            for f in dataclasses.fields(registry.entry(self.name).config):
                value = getattr(self, f.name, f.default)
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")


class Posterior(Component):
    """q(z|x) from the encoder's output; ``latent`` is the number of latent variables, :attr:`code_size` the
    size of the code z the decoder is given (the same for real-valued z; G * K for G one-hot K-way variables)."""

    kind = "posterior"
    #: Whether z is discrete (no reparameterization; training needs an estimator, vaekit.objectives.discrete).
    discrete: bool = False
    #: Whether q(z|x) is a point mass (a deterministic autoencoder, which defines no ELBO).
    autoencoder: bool = False
    #: Whether log q(z|x) can be evaluated at any z, not only at its own draws (a flow's density comes with them).
    density_anywhere: bool = True
    #: The prior that the name ``standard`` means for codes of this family (N(0, I) for real-valued codes).
    default_prior: str = "standard"

    def __init__(self, latent: int):
        super().__init__()
        if int(latent) < 1:
            raise ValueError(f"latent must be >= 1, got {latent}")
        self.latent = int(latent)

    @property
    def param_size(self) -> int:
        """How many numbers per example the encoder gives this posterior."""
        raise NotImplementedError

    @property
    def code_size(self) -> int:
        """The size of a code z, the decoder's input."""
        return self.latent

    def forward(self, params: torch.Tensor) -> Distribution:  # pragma: no cover - interface
        """q(z|x) for the encoder output ``params`` (N, param_size): batch (N,), event (L,)."""
        raise NotImplementedError

    def inference_modules(self) -> list[nn.Module]:
        """Modules of q(z|x) that this component owns (a flow's steps), trained with the encoder."""
        return [self]


class Prior(Component):
    """p(z) over codes of size ``latent``."""

    kind = "prior"

    def __init__(self, latent: int):
        super().__init__()
        self.latent = int(latent)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)  # follows .to(device, dtype)

    def attach(self, encode: Callable[[torch.Tensor], Distribution]) -> None:
        """Called by the model with its guide x -> q(z|x) (the VampPrior mixes over it); default: unused."""

    def distribution(self) -> Distribution:  # pragma: no cover - interface
        """p(z): event shape (L,)."""
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), nats; z (..., L) -> (...)."""
        return self.distribution().log_prob(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes z ~ p(z), (n, L)."""
        return vd.sample(self.distribution(), (n,), generator)

    #: Whether p(z) depends on the encoder's weights (then refitting q(z|x) alone would change it).
    trains_with_encoder: bool = False
    #: Whether p(z) is fitted to the codes after training, never trained with the model (a run cannot name it).
    fitted_after_training: bool = False


class Likelihood(Component):
    """p(x|z) over data of ``shape`` (C, H, W) from ``params_per_pixel`` decoder outputs per value."""

    kind = "likelihood"
    params_per_pixel: int = 1
    #: True when :meth:`mean` only estimates E[x|z]: by Monte Carlo (an autoregressive p(x|z)), or by an
    #: approximation (the colour-coupled mixture of logistics)
    mean_is_estimate: bool = False
    #: The grey levels L of a probability over x in {0, 1/(L-1), ..., 1} per value (2: binary pixels);
    #: None for a density (log p(x|z) then is no log-probability of discrete data)
    levels: int | None = None

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if not shape or min(shape) < 1:
            raise ValueError(f"shape must be positive sizes like (C, H, W), got {shape}")
        self.shape: tuple[int, ...] = shape

    @property
    def event_dims(self) -> int:
        return len(self.shape)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """The decoder's output per code: (P * C, H, W) (a likelihood with another layout overrides it)."""
        return (self.params_per_pixel * self.shape[0], *self.shape[1:])

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The P parameter blocks of ``params`` (..., P*C, H, W), each (..., C, H, W)."""
        return params.chunk(self.params_per_pixel, dim=-self.event_dims)

    def forward(self, params: torch.Tensor) -> Distribution:  # pragma: no cover - interface
        """p(x|z) for the decoder output ``params`` (..., P*C, H, W): event shape (C, H, W)."""
        raise NotImplementedError

    def distribution(self, params: torch.Tensor) -> Distribution:
        return self(params)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) summed over the pixels, nats; x (N, C, H, W), params (..., N, P*C, H, W) -> (..., N)."""
        return self(params).log_prob(x)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z], in the data's units."""
        return self(params).mean

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z), reproducible with ``generator``."""
        return vd.sample(self(params), (), generator)

    def floor_fraction(self, params: torch.Tensor) -> float | None:
        """The fraction of the values whose learned scale sits at its lower bound (a Gaussian variance at its
        floor), for the decoder output ``params``; None when the likelihood has no such bound."""
        return None


def kinds() -> dict[str, Registry]:
    """The component registries by kind."""
    return dict(_KINDS)
