"""The importance-weighted bound (IWAE; Burda et al., 2016) as an objective:

    IWAE_k(x) = E[ log (1/k) sum_i p(x, z_i) / q(z_i|x) ],  z_i ~ q(z|x),   ELBO <= IWAE_k <= log p(x),

trained on its k-sample estimate; a discrete q(z|x) trains it with VIMCO, a reparameterized one by the pathwise
gradient, STL or DReG (``importance_weighted``: :mod:`vaekit.objectives.reparameterized`). The kept epoch is chosen
by the validation IWAE_k, reported as ``valid_iwae`` beside the ELBO and its terms from the same draws.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch

from vaekit.objectives.base import OBJECTIVES, Loss, Objective, Score
from vaekit.objectives.terms import iwae_terms

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@OBJECTIVES.register("iwae", help="the importance-weighted bound IWAE_k (--k draws per example)")
class IWAE(Objective):
    """-mean_x IWAE_k(x); the ELBO terms reported are the k draws' Monte Carlo ELBO."""

    discrete_target = "iwae"
    importance_weighted = True
    bounds = ("iwae",)
    core_settings = ("k",)

    def selection(self) -> tuple[str, Score]:
        return f"valid IWAE bound (k = {self.k})", lambda v: v["iwae"]

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        if estimator is not None:
            return super().loss(model, x, y, beta=beta, encoder_input=encoder_input, estimator=estimator)
        bound, terms = iwae_terms(model, x, self.k, encoder_input=encoder_input, y=y)
        return Loss(-bound.mean(), terms)

    def validation_sums(self, model: LatentVariableModel, x: torch.Tensor, y: Any, generator: torch.Generator,
                        batch_size: int, autocast: contextlib.AbstractContextManager | None = None
                        ) -> dict[str, torch.Tensor]:
        """sum_x IWAE_k(x) over chunks of 8 x ``batch_size`` (example, draw) pairs, so memory stays bounded."""
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        rows = max(1, 8 * batch_size // self.k)
        for start in range(0, x.shape[0], rows):
            part = y[start : start + rows] if y is not None else None
            with autocast or contextlib.nullcontext():
                bound, _ = iwae_terms(model, x[start : start + rows], self.k, generator, y=part)
            total += bound.double().sum()
        return {"iwae": total}
