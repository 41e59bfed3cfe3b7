"""The protocol every latent-variable model of vaekit implements (Pyro's model/guide split):

    the guide      q(z|x[, y])  ``posterior(x, y)``        a ``torch.distributions.Distribution`` over z
    the model      p(z)         ``prior_distribution()``  and ``log_prior(z)``
                   p(x|z[, y])  ``observation(z, y)``     and ``log_likelihood(x, z, y)``
    generation     z ~ p(z), x ~ p(x|z)   ``sample(n, y)``

plus ``code(x)`` (the point in latent space that stands for q(z|x): its mean), ``reconstruct(x)``,
``inference_parameters()`` (the parameters of q alone) and ``latent_size``. The objectives in
:mod:`vaekit.objectives` and the evaluator use nothing else, so any model with these methods trains and
evaluates: the VAE (:mod:`vaekit.models.vae`), the two-level model and the linear-Gaussian model with a
closed-form log p(x). All densities are in nats, summed over dimensions. ``y`` is an optional conditioning
input (class labels of a conditional VAE); models without one refuse it.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit import distributions as vd
from vaekit.errors import VaekitError

#: Model kinds that a run folder's ``model.json`` may name ("vae", "hvae"), registered by :func:`register_model`.
MODELS: dict[str, type] = {}


def register_model(kind: str):
    """Class decorator: ``model.json`` files of kind ``kind`` rebuild with ``cls.from_spec(spec, ...)``; the class's
    ``model_kind`` is ``kind`` (what its ``describe()`` writes)."""

    def decorate(cls: type) -> type:
        MODELS[kind] = cls
        cls.model_kind = kind  # type: ignore[attr-defined]
        return cls

    return decorate


class Samples(NamedTuple):
    """Draws from the model: latent codes, decoded means E[x|z] and samples x ~ p(x|z)."""

    z: torch.Tensor
    means: torch.Tensor
    draws: torch.Tensor


class ShapeError(VaekitError, ValueError):
    """A network or a data batch has the wrong shape for the model; the message names both shapes."""


class LatentVariableModel(nn.Module):
    """Base class of vaekit's models: p(z) p(x|z) with a guide q(z|x); see the module docstring.

    Subclasses set ``shape`` (the data's (C, H, W), or (D,)) and ``condition`` (classes of y, 0: none) and
    implement :meth:`posterior`, :meth:`prior_distribution`, :meth:`decode` and a ``likelihood`` component.
    """

    shape: tuple[int, ...] | None = None
    condition: int = 0
    likelihood: Any  # the likelihood component (a sub-module)

    # -- inputs -----------------------------------------------------------------------------
    def as_data(self, x: torch.Tensor) -> torch.Tensor:
        """x as a batch of the model's data shape, (..., *shape): flat (N, D) batches are reshaped."""
        shape = self.shape
        if shape is None or tuple(x.shape[-len(shape):]) == tuple(shape):
            return x
        d = math.prod(shape)
        if x.shape[-1] == d:
            return x.reshape(*x.shape[:-1], *shape)
        raise ShapeError(f"the model is for data of shape {tuple(shape)}, but got a batch of shape {tuple(x.shape)}")

    def conditioning(self, y: Any, n: int | None = None) -> torch.Tensor | None:
        """The conditioning vector for y: one-hot (N, condition) for integer labels; None without conditioning."""
        if self.condition == 0:
            if y is not None:
                raise ShapeError("this model is not conditional (condition=0); call it without y")
            return None
        if y is None:
            raise ShapeError(f"this model is conditional on {self.condition} classes: give the labels y")
        y = torch.as_tensor(y)
        if not y.is_floating_point():
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.condition):
                raise ShapeError(f"labels must be 0..{self.condition - 1}; got values from {int(y.min())} "
                                 f"to {int(y.max())}")
            y = nn.functional.one_hot(y.long(), self.condition)
        if y.shape[-1] != self.condition:
            raise ShapeError(f"the conditioning input must be labels (N,) or one-hot (N, {self.condition}); "
                             f"got shape {tuple(y.shape)}")
        dtype = next((p.dtype for p in self.parameters()), torch.get_default_dtype())
        device = next((p.device for p in self.parameters()), y.device)
        return y.to(device=device, dtype=dtype)

    # -- facts (capabilities the trainer and the analyses read, instead of testing classes) ---------------
    @property
    def is_discrete(self) -> bool:
        """Whether q(z|x) is discrete (no reparameterization: training needs an estimator of its gradient)."""
        return bool(getattr(getattr(self, "posterior_family", None), "discrete", False))

    @property
    def is_autoencoder(self) -> bool:
        """Whether q(z|x) is a point mass z = f(x): a deterministic autoencoder, which has no ELBO."""
        return bool(getattr(getattr(self, "posterior_family", None), "autoencoder", False))

    @property
    def latent_penalty(self) -> float:
        """An autoencoder's lambda in its penalty (lambda / 2) ||f(x)||^2 (0 for other models)."""
        return float(getattr(getattr(self, "posterior_family", None), "latent_penalty", 0.0))

    @property
    def supports_surgery(self) -> bool:
        """Whether log q(z|x) can be evaluated at any z (what the ELBO surgery and the aggregate posterior need):
        not for flows, whose density comes with their own draws, nor for a point mass."""
        family = getattr(self, "posterior_family", None)
        return True if family is None else bool(family.density_anywhere)

    @property
    def decodes_directly(self) -> bool:
        """Whether p(x|z) = likelihood(decoder(z)) with nothing in between (a fast kernel may then compute it from
        the decoder and likelihood alone; :mod:`vaekit.bounds.kernels`). No by default."""
        return False

    @property
    def default_objective(self) -> str:
        """The registered objective that trains this model when none other is asked for."""
        return "autoencoder" if self.is_autoencoder else "elbo"

    # -- hooks (the trainer calls them; a model overrides those that concern it) -------------------------
    def seed_from_data(self, train: torch.Tensor, seed: int) -> None:
        """Set a data-dependent starting point before training (nothing by default); a resumed run's checkpoint
        replaces it. ``train``: the training examples; ``seed``: the run's seed (draw with its own generator)."""

    def auxiliary_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Optimizers of their own (by name) for sub-modules trained on the objective's auxiliary losses of the
        same name, e.g. a FactorVAE's discriminator (nanoGPT's ``configure_optimizers``); the model's optimizer
        trains every other parameter. None by default. ``lr``: the run's learning rate. Their parameters are saved
        with the model's weights, their states with the training checkpoint."""
        return {}

    # -- the protocol -------------------------------------------------------------------------
    @property
    def latent_size(self) -> int:
        """The size of a code z."""
        raise NotImplementedError

    def posterior(self, x: torch.Tensor, y: Any = None) -> Distribution:
        """q(z|x[, y]): batch (N,), event (latent_size,)."""
        raise NotImplementedError

    def prior_distribution(self) -> Distribution:
        """p(z): event (latent_size,)."""
        raise NotImplementedError

    def decode(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The parameters of p(x|z) for codes z (..., L): (..., *likelihood.param_shape)."""
        raise NotImplementedError

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), nats; z (..., L) -> (...)."""
        return self.prior_distribution().log_prob(z)

    def observation(self, z: torch.Tensor, y: Any = None) -> Distribution:
        """p(x|z[, y]) as a distribution over data of the model's shape."""
        return self.likelihood(self.decode(z, y))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """log p(x|z[, y]), nats; x (N, ...), z (..., N, L) -> (..., N)."""
        return self.likelihood.log_prob(self.as_data(x), self.decode(z, y))

    def code(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The point in latent space that stands for q(z|x) (its mean; see :func:`vaekit.distributions.point`)."""
        return vd.point(self.posterior(x, y))

    def inference_parameters(self) -> list[nn.Parameter]:
        """The parameters of q(z|x) alone; p(z) and p(x|z) own the rest."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, y: Any = None, generator: torch.Generator | None = None) -> Samples:
        """z ~ p(z), then the decoded means E[x|z] and draws x ~ p(x|z), each (n, *shape)."""
        z = vd.sample(self.prior_distribution(), (n,), generator)
        if y is not None and torch.as_tensor(y).dim() == 0:
            y = torch.full((n,), int(y), dtype=torch.long)
        params = self.decode(z, y)
        return Samples(z, self.likelihood.mean(params), self.likelihood.sample(params, generator=generator))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        """E[x | z = code(x)]: the decoded point code, shaped like x."""
        return self.likelihood.mean(self.decode(self.code(x, y), y)).reshape(x.shape)

    def frozen(self):
        """A context in which the model's weights are treated as fixed (the VampPrior caches its components)."""
        frozen = getattr(getattr(self, "prior", None), "frozen", None)
        return frozen() if frozen is not None else contextlib.nullcontext()
