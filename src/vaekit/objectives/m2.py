"""The objective of semi-supervised M2 (Kingma et al., 2014, eqs. 6-9), per example, in nats.

With C classes, p(y) = 1/C, q(y|x) = pi(x), one draw z ~ q(z|x, y) per class and the KL in closed form:

    -L(x, y) = log p(x|y, z) + log p(y) - KL(q(z|x, y) || N(0, I))            (labelled x, its class y)
    -U(x)    = sum_y pi_y(x) (-L(x, y)) - sum_y pi_y(x) log pi_y(x)           (unlabelled x: y summed exactly)

and the loss of a batch is the mean over its examples of

    U(x)                                  for an unlabelled example (label -1),
    L(x, y) - (alpha / N_l) log q(y|x)    for a labelled one,

so that over an epoch it is (1/N) [sum_l L + sum_u U + alpha E_labelled(-log q(y|x))], Kingma et al.'s J^alpha
divided by the N training examples: ``alpha`` weighs the mean classification loss over the N_l labelled examples
against the bound summed over the data. Their choice, alpha = 0.1 N, is the default (``--m2-alpha``).

Every class is scored for every example (one batch of C N rows), so the reported terms are those of the bound
on log p(x) with y summed out, for labelled and unlabelled examples alike:

    elbo = -U(x),   reconstruction = sum_y pi_y E_q log p(x|y, z),
    kl = sum_y pi_y [KL(q(z|x, y) || p(z)) + log pi_y - log p(y)] = KL(q(y, z|x) || p(y, z)),

and validation adds ``error``, the classification error of argmax_y q(y|x) on the validation labels (reported as
``valid_error``; it does not choose the kept epoch, the validation -U(x) does, which uses no labels).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from vaekit.errors import ConfigError, in_python_call
from vaekit.objectives.base import OBJECTIVES, Loss, Objective
from vaekit.objectives.terms import ElboTerms

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Kingma et al.'s weight of the classification term, as a fraction of the training set's size N.
ALPHA_FRACTION = 0.1


def unlabelled_terms(log_pi: torch.Tensor, rec: torch.Tensor, kl: torch.Tensor) -> ElboTerms:
    """-U(x) and its terms (N,) from log q(y|x) (N, C) and each class's log p(x|y, z) and KL(q(z|x, y) || p(z))
    (C, N): the sum over the C classes, exact (see the module docstring)."""
    classes = log_pi.shape[-1]
    pi = log_pi.exp()
    reconstruction = (pi * rec.t()).sum(-1)
    kl_total = (pi * (kl.t() + log_pi + math.log(classes))).sum(-1)
    return ElboTerms(reconstruction - kl_total, reconstruction, kl_total)


def labelled_bound(rec: torch.Tensor, kl: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-L(x, y) = log p(x|y, z) + log p(y) - KL(q(z|x, y) || p(z)) at each example's class y (N,) (labels >= 0),
    from the classes' terms (C, N); nats."""
    classes = rec.shape[0]
    index = y.clamp_min(0).unsqueeze(0)
    return (rec.gather(0, index) - kl.gather(0, index)).squeeze(0) - math.log(classes)


@dataclass
class M2ObjectiveConfig:
    # the classification term's weight; None: 0.1 N (N the training examples)
    alpha: float | None = field(default=None, metadata={"default_help": "0.1 x the training images"})

    def __post_init__(self) -> None:
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a number >= 0, got {self.alpha}")


@OBJECTIVES.register("m2", M2ObjectiveConfig, prefix="m2",
                     help="semi-supervised M2: the labelled bound + alpha-weighted classification, and the bound "
                     "with y summed out for unlabelled examples (family m2)")
class M2Objective(Objective):
    """The loss of the module docstring: -L(x, y) + alpha-weighted log q(y|x) for labelled examples (label >= 0),
    -U(x) for unlabelled ones (label -1, or no labels at all)."""

    def __init__(self, alpha: float | None = None, k: int = 1, beta: float = 1.0, warmup: int = 0,
                 data_size: int = 0):
        super().__init__(k, beta, warmup, data_size)
        self.alpha = alpha
        self.labelled = 0

    def check(self, model: LatentVariableModel) -> None:
        if not getattr(model, "semi_supervised", False):
            what = "vaekit.models.m2.M2" if in_python_call() else "--family m2"
            raise ConfigError(f"objective m2 trains the semi-supervised M2 model ({what}); this model has no latent "
                              "class")
        if self.k != 1 or self.beta != 1.0 or self.warmup != 0:
            raise ConfigError(f"objective m2 takes one draw of z per class and the plain bound; leave out k {self.k}, "
                              f"beta {self.beta}, warmup {self.warmup}")
        self.labelled = int(model.labels)

    @property
    def weight(self) -> float:
        """alpha / N_l: the weight of -log q(y|x) for each labelled example in the summed objective."""
        alpha = self.alpha if self.alpha is not None else ALPHA_FRACTION * self.data_size
        return float(alpha) / max(1, self.labelled)

    def row_fields(self) -> dict[str, Any]:
        return {"objective": "m2", "m2_alpha": self.weight * max(1, self.labelled)}

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        x = model.as_data(x)
        log_pi = model.class_log_probs(x if encoder_input is None else encoder_input)
        rec, kl = model.class_terms(x, encoder_input)
        terms = unlabelled_terms(log_pi, rec, kl)
        per = -terms.elbo
        if y is not None:
            y = torch.as_tensor(y, device=x.device).long().reshape(-1)
            known = y >= 0
            if bool(known.any()):
                classify = log_pi.gather(1, y.clamp_min(0).unsqueeze(1)).squeeze(1)
                labelled = -labelled_bound(rec, kl, y) - self.weight * classify
                per = torch.where(known, labelled, per)
        return Loss(per.mean(), terms)

    def validation_terms(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None,
                         generator: torch.Generator | None = None) -> ElboTerms:
        """The validation ELBO: -U(x), y summed out whatever the labels (a bound on log p(x) that uses none)."""
        x = model.as_data(x)
        rec, kl = model.class_terms(x, generator=generator)
        return unlabelled_terms(model.class_log_probs(x), rec, kl)

    def validation_sums(self, model: LatentVariableModel, x: torch.Tensor, y: Any, generator: torch.Generator,
                        batch_size: int, autocast: contextlib.AbstractContextManager | None = None
                        ) -> dict[str, torch.Tensor]:
        """``error``: the number of validation examples whose argmax_y q(y|x) is not their label (no labels:
        nothing)."""
        if y is None:
            return {}
        wrong = torch.zeros((), dtype=torch.float64, device=x.device)
        for start in range(0, x.shape[0], batch_size):
            with autocast or contextlib.nullcontext():
                guess = model.classify(x[start : start + batch_size])
            wrong += (guess != y[start : start + batch_size].to(guess.device)).sum().double()
        return {"error": wrong}
