"""Annealed capacity (Burgess et al., 2018, "Understanding disentangling in beta-VAE"):

    loss = -E_x [ E_q log p(x|z) - gamma |KL(q(z|x) || p(z)) - C| ],

the KL held near a target capacity C (nats) raised linearly from 0 to ``max`` over the iterations of the first
``epochs`` epochs, so that the code takes on information gradually. The objective is not a bound on log p(x):
the kept epoch is chosen by the validation ELBO. gamma = 1000 and C up to 25 nats are the paper's dSprites
settings (per image; C moves at every iteration, as in the paper, and a metrics row reports the C of its epoch's
last step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vaekit.objectives.base import OBJECTIVES, Loss, Objective
from vaekit.objectives.terms import elbo

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@dataclass
class CapacityConfig:
    max: float = 25.0  # C at the end of the schedule, nats
    gamma: float = 1000.0  # the weight of |KL - C|
    epochs: int = 10  # epochs over which C rises linearly from 0 to max

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max) and self.max >= 0):
            raise ValueError(f"max must be a finite number >= 0, got {self.max}")
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma}")
        if isinstance(self.epochs, bool) or self.epochs < 1:
            raise ValueError(f"epochs must be an integer >= 1, got {self.epochs}")


@OBJECTIVES.register("annealed-capacity", CapacityConfig, prefix="capacity",
                     help="Burgess et al.'s annealed capacity: gamma |KL - C|, C raised linearly to --capacity-max")
class AnnealedCapacity(Objective):
    """-mean_x [E_q log p(x|z) - gamma |KL - C_epoch|]; see the module docstring."""

    def __init__(self, max: float = 25.0, gamma: float = 1000.0, epochs: int = 10, k: int = 1, beta: float = 1.0,
                 warmup: int = 0, data_size: int = 0):
        super().__init__(k, beta, warmup, data_size)
        self.max, self.gamma, self.epochs = float(max), float(gamma), int(epochs)
        self.capacity = 0.0

    def capacity_at(self, epoch: float) -> float:
        """C after ``epoch`` epochs of training (fractional; 0 at the start): max * min(1, epoch / epochs), nats."""
        return self.max * min(1.0, epoch / self.epochs)

    def start_epoch(self, epoch: int) -> None:
        self.capacity = self.capacity_at(epoch)

    def set_step(self, step: int, steps_per_epoch: int) -> None:
        self.capacity = self.capacity_at(step / steps_per_epoch)

    def row_fields(self) -> dict[str, Any]:
        return {"capacity": self.capacity}

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        if estimator is not None:
            return super().loss(model, x, y, beta=beta, encoder_input=encoder_input, estimator=estimator)
        terms = elbo(model, x, y, samples=self.k, encoder_input=encoder_input)
        return Loss(-(terms.reconstruction - self.gamma * (terms.kl - self.capacity).abs()).mean(), terms)
