"""InfoVAE-MMD (Zhao et al., 2017/2019): the ELBO with the KL weighted down and an MMD between q(z) and p(z) added.

    loss = mean_x [ -E_q log p(x|z) + (1 - alpha) beta KL(q(z|x) || p(z)) ] + (alpha + lambda - 1) MMD_u^2(q(z), p(z)),

Zhao et al.'s objective with their D = MMD (eq. 6 of the paper, with the mutual-information weight alpha and the
divergence weight lambda); MMD_u^2 is the unbiased estimate between the batch's draws z ~ q(z|x) and as many draws of
p(z) = N(0, I) (:func:`vaekit.objectives.mmd.mmd2_unbiased`), and beta is vaekit's shared KL weight (1 unless
``--beta``/``--warmup`` say otherwise). They ask for lambda > 0, alpha <= 1 and alpha + lambda - 1 >= 0.

Defaults: alpha = 0 and lambda = 1000, the setting of Zhao et al.'s experiments (the "MMD-VAE": the ELBO with KL
weight 1 plus 999 MMD); the Gaussian (rbf) kernel with one bandwidth, exp(-|a - b|^2 / C), C = 2 d (sigma^2 = 1).
Needs a continuous q(z|x) with a density (a Gaussian posterior by default).

It is not a bound: the kept epoch is chosen by the validation objective E log p(x|z) - (1 - alpha) beta KL -
(alpha + lambda - 1) MMD; ``valid_mmd`` and the ELBO under N(0, I) are reported per epoch (that ELBO is a bound on
log p(x) of decoder + N(0, I)). After training a Gaussian mixture is fitted to draws of q(z|x) on the training
set, as for an autoencoder, and ``vaekit evaluate`` reports "decoder + fitted density" with q(z|x) as its proposal,
labelled (:mod:`vaekit.analysis.posthoc`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vaekit.objectives.base import OBJECTIVES, Loss, Score
from vaekit.objectives.mmd import MMDObjective, check_kernel, parse_scales
from vaekit.objectives.terms import elbo

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@dataclass
class InfoVAEConfig:
    kernel: str = "rbf"  # rbf | imq, base bandwidth C = 2 d sigma^2 with sigma^2 = 1
    weight: float = 1000.0  # lambda: the MMD's weight is alpha + lambda - 1
    alpha: float = 0.0  # the KL's weight is 1 - alpha
    scales: str = "1"  # multiples of C the kernel is summed over

    def __post_init__(self) -> None:
        check_kernel(self.kernel)
        for name in ("weight", "alpha"):
            value = getattr(self, name)
            if not (math.isfinite(value) and abs(value) <= 1e9):
                raise ValueError(f"{name} must be a finite number of at most 1e9 in size, got {value}")
        if self.weight <= 0 or self.alpha > 1 or self.alpha + self.weight - 1 < 0:
            raise ValueError(f"InfoVAE needs weight (lambda) > 0, alpha <= 1 and alpha + lambda - 1 >= 0; got "
                             f"weight {self.weight}, alpha {self.alpha}")
        parse_scales(self.scales)


@OBJECTIVES.register("infovae-mmd", InfoVAEConfig, prefix="mmd",
                     help="InfoVAE-MMD: -log p(x|z) + (1 - alpha) KL + (alpha + lambda - 1) MMD(q(z), N(0, I))")
class InfoVAEMMD(MMDObjective):
    """mean_x [-E_q log p(x|z) + (1 - alpha) beta KL] + (alpha + weight - 1) MMD_u^2; see the module docstring."""

    #: No bound of its own to report: a density is fitted to its codes after training (decoder + fitted density).
    fits_code_density = True

    def __init__(self, kernel: str = "rbf", weight: float = 1000.0, alpha: float = 0.0, scales: str = "1",
                 k: int = 1, beta: float = 1.0, warmup: int = 0, data_size: int = 0):
        InfoVAEConfig(kernel, weight, alpha, scales)  # the same checks for direct construction
        super().__init__(kernel, weight, scales, k, beta, warmup, data_size)
        self.alpha = float(alpha)

    @property
    def mmd_weight(self) -> float:
        """alpha + lambda - 1: what multiplies MMD_u^2 in the loss."""
        return self.alpha + self.weight - 1.0

    def selection(self) -> tuple[str, Score]:
        kl_weight, mmd_weight = (1.0 - self.alpha) * self.beta, self.mmd_weight
        return ("valid InfoVAE objective",
                lambda v: v["reconstruction"] - kl_weight * v["kl"] - mmd_weight * v["mmd"])

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        terms = elbo(model, x, y, samples=self.k, encoder_input=encoder_input)
        value = -(terms.reconstruction - (1.0 - self.alpha) * beta * terms.kl).mean()
        return Loss(value + self.mmd_weight * self.batch_mmd(terms.z), terms)
