"""Objectives as registered objects (Pyro's ``Trace_ELBO`` classes are the model).

An objective holds its settings, computes the loss the optimizer minimises on a batch and the terms it reports,
adds what it needs to the validation figures, names the validation score that chooses the kept epoch, and says
which models it applies to. A new objective is one class plus one registration::

    @dataclass
    class TCConfig:
        alpha: float = 1.0

    @OBJECTIVES.register("beta-tcvae", TCConfig, prefix="tc")
    class BetaTCVAE(Objective):
        def __init__(self, alpha: float = 1.0, **shared): ...
        def loss(self, model, x, y=None, *, beta=1.0, encoder_input=None, estimator=None) -> Loss: ...

after which ``objective="beta-tcvae"`` works in :func:`vaekit.fit`, ``--objective beta-tcvae --tc-alpha 2`` on the
command line and ``[objective] name = "beta-tcvae"`` in a config file. The settings every objective shares (``k``
samples per example, the KL weight ``beta`` and its ``warmup`` epochs, the training set's size ``data_size``) are
passed to ``__init__`` where it names them. All values are in nats per example.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from vaekit.errors import ConfigError
from vaekit.objectives.terms import ElboTerms, elbo, kl_weight
from vaekit.registry import Registry

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The registered objectives: name -> class and settings dataclass (``--objective NAME``).
OBJECTIVES = Registry("objective")

#: A validation score: the validation figures of an epoch (means, nats) -> the number to maximise.
Score = Callable[[dict[str, float]], float]


#: The name under which a :class:`Loss`'s ``inference`` loss travels beside the auxiliary losses (from the
#: objective's module to the step that routes each loss to its parameters); no auxiliary optimizer may take it.
INFERENCE = "q(z|x)"


@dataclass
class Loss:
    """One batch's loss: ``loss`` (a scalar) for the model's optimizer, the per-example ``terms`` reported in the
    metrics (nats), and the losses of the model's auxiliary modules by name (each minimised by its own optimizer,
    see :meth:`vaekit.models.base.LatentVariableModel.auxiliary_modules`).

    ``inference`` (a scalar, or None): where an objective trains q(z|x) on another loss than the generative model
    (Rainforth et al.'s PIWAE), the loss whose gradient the parameters of q(z|x) take
    (:meth:`~vaekit.models.base.LatentVariableModel.inference_parameters`); ``loss`` then trains the others (p(z),
    p(x|z)) alone. Both come from one forward pass: the step walks the graph back once per loss, each time into its
    own parameters (``torch.autograd.backward(..., inputs=...)``), so that the one update of the model's optimizer
    holds d ``loss`` / d theta for the generative parameters theta and d ``inference`` / d phi for those of q(z|x).
    None: ``loss`` trains every parameter."""

    loss: torch.Tensor
    terms: ElboTerms
    auxiliary: dict[str, torch.Tensor] = field(default_factory=dict)
    inference: torch.Tensor | None = None


class Objective:
    """The base of vaekit's objectives: maximise E_x[ELBO(x)] with the KL weighted by ``beta`` (see
    :class:`vaekit.objectives.evidence.ELBO`). Subclasses override the hooks that differ; a loss may train q(z|x)
    on a loss of its own (:attr:`Loss.inference`, e.g. :class:`vaekit.objectives.piwae.PIWAE`)."""

    name: str = "objective"  # set by the registration
    #: The bound a discrete q(z|x)'s estimator trains (``elbo``, or ``iwae`` for the multi-sample VIMCO).
    discrete_target: str = "elbo"
    #: Those of its validation figures (:meth:`validation_sums`) that are bounds on log p(x), in nats: on integer
    #: data under a density they are dequantised bounds, shifted by D log L as the ELBO is.
    bounds: tuple[str, ...] = ()
    #: The auxiliary losses it gives (by name), one for each of the model's auxiliary optimizers (FactorVAE's
    #: discriminator).
    auxiliary: tuple[str, ...] = ()
    #: Settings a run's page shows even at their defaults (IWAE's k).
    core_settings: tuple[str, ...] = ()
    #: Whether it trains a deterministic autoencoder (a point-mass q(z|x), which has no density).
    trains_autoencoders: bool = False
    #: Whether the model it trains is evaluated as "decoder + a density fitted to its codes after training" (the
    #: objective has no bound of its own: WAE-MMD, InfoVAE-MMD); a point-mass q(z|x) always is.
    fits_code_density: bool = False
    #: Whether it is an importance-weighted bound: a loss that is a sum over examples of a function of each example's
    #: log weights log w = log p(x, z) - log q(z|x), drawn through :mod:`vaekit.objectives.terms` (IWAE, and the
    #: multi-sample bounds made of them). The DReG estimator applies to these
    #: (:mod:`vaekit.objectives.reparameterized`).
    importance_weighted: bool = False
    #: Why the encoder estimators ``stl`` and ``dreg`` (:mod:`vaekit.objectives.reparameterized`) do not apply, or
    #: None where they do: they act on the draws made through :func:`vaekit.objectives.terms.elbo` and
    #: :func:`~vaekit.objectives.terms.sampled_terms`, so an objective that draws z itself, or has no log q(z|x)
    #: term, says so here and ``--estimator stl|dreg`` is refused up front rather than silently pathwise.
    estimators_refused: str | None = None
    #: Why the encoder cannot see noisy inputs (``encoder_noise``), or None where it can: refused with the other
    #: settings, before a run folder is written.
    encoder_noise_refused: str | None = None

    def __init__(self, k: int = 1, beta: float = 1.0, warmup: int = 0, data_size: int = 0):
        self.k, self.beta, self.warmup, self.data_size = int(k), float(beta), int(warmup), int(data_size)

    # -- facts ----------------------------------------------------------------------------------------------
    def check(self, model: LatentVariableModel) -> None:
        """Refuse, in one line, a model this objective cannot train (default: any model with a density q(z|x))."""
        if getattr(model, "is_autoencoder", False) and not self.trains_autoencoders:
            raise ConfigError(f"objective {self.name} needs a density q(z|x); this model is an autoencoder "
                              "(posterior delta): train it with objective elbo (its reconstruction objective)")

    def for_model(self, model: LatentVariableModel) -> Objective:
        """The objective that trains ``model`` for this one (itself, once :meth:`check` accepts the model)."""
        self.check(model)
        return self

    def start_epoch(self, epoch: int) -> None:
        """Called by the loop before each training epoch (0-based), for objectives with a schedule (nothing here)."""

    def set_step(self, step: int, steps_per_epoch: int) -> None:
        """Called by the loop before each training step with the 0-based step count since training began, for
        objectives whose schedule moves per iteration (nothing here)."""

    def beta_at(self, epoch: int) -> float:
        """The KL weight at ``epoch`` (0-based): beta * min(1, (epoch + 1) / warmup)."""
        return kl_weight(epoch, self.beta, self.warmup)

    def selection(self) -> tuple[str, Score]:
        """(name, score): the validation score that chooses the kept epoch; by default the beta-weighted ELBO,
        E_q[log p(x|z)] - beta KL, which is the ELBO for beta = 1."""
        if self.beta != 1.0:
            beta = self.beta
            return f"valid beta-ELBO (beta = {beta:g})", lambda v: v["reconstruction"] - beta * v["kl"]
        return "valid ELBO", lambda v: v["elbo"]

    def row_fields(self) -> dict[str, Any]:
        """What a metrics row says about the objective besides its figures (nothing by default)."""
        return {}

    # -- the work -------------------------------------------------------------------------------------------
    def draws(self) -> int:
        """The draws z ~ q(z|x) a training step takes per example (``k``; MIWAE's M K): what sizes its memory."""
        return self.k

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        """The loss of a batch x: -mean_x [E_q[log p(x|z)] - beta KL(q(z|x) || p(z))], with ``k`` draws per
        example; a discrete q(z|x) trains through its ``estimator``'s surrogate (same value, its gradient)."""
        if estimator is not None:
            surrogate, terms, _ = estimator.surrogate(model, x, y, objective=self.discrete_target, k=self.k,
                                                      beta=beta, encoder_input=encoder_input)
            return Loss(-surrogate.mean(), terms)
        terms = elbo(model, x, y, samples=self.k, encoder_input=encoder_input)
        return Loss(-(terms.reconstruction - beta * terms.kl).mean(), terms)

    def validation_sums(self, model: LatentVariableModel, x: torch.Tensor, y: Any, generator: torch.Generator,
                        batch_size: int, autocast: contextlib.AbstractContextManager | None = None
                        ) -> dict[str, torch.Tensor]:
        """Figures this objective adds to the validation ELBO terms, as sums over ``x`` (float64 scalars); the
        trainer divides them by the number of examples and reports them as ``valid_NAME``. None by default."""
        return {}


def build_objective(spec: str | dict[str, Any], **shared: Any) -> Objective:
    """The objective ``spec`` names (``"iwae"`` or ``{"name": ..., **settings}``), given the shared settings
    (``k``, ``beta``, ``warmup``, ``data_size``) that its ``__init__`` takes."""
    objective = OBJECTIVES.build(spec, **shared)
    if not isinstance(objective, Objective):
        raise ConfigError(f"objective {objective.name!r} is a {type(objective).__name__}, not a "
                          "vaekit.objectives.Objective")
    return objective
