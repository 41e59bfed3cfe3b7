"""WAE-MMD (Tolstikhin et al., 2018): the Wasserstein autoencoder with the MMD penalty.

    loss = -mean_x E_q log p(x|z) + lambda MMD_u^2(q(z), p(z)),

with the reconstruction cost -log p(x|z) in nats per example (summed over pixels) and MMD_u^2 the unbiased
estimate between the batch's codes z ~ q(z|x) and as many draws of p(z) = N(0, I)
(:func:`vaekit.objectives.mmd.mmd2_unbiased`). The encoder is typically deterministic (``--posterior delta``, as
in Tolstikhin et al.'s MNIST experiments); a Gaussian q(z|x) is trained the same way, with no KL term.

Defaults: the inverse multiquadratic kernel with C = 2 d (sigma^2 = 1) summed over Tolstikhin et al.'s scales
0.1, 0.2, 0.5, 1, 2, 5, 10, and lambda = 10, their MNIST value. Their cost was a squared error; here it is the
Bernoulli (or other) -log p(x|z) in nats, which on binarized MNIST is several times larger than the squared error
of the same reconstruction, so lambda = 10 weighs the MMD relatively less than in their runs.

It has no ELBO: the kept epoch is chosen by the validation objective E log p(x|z) - lambda MMD (``valid_mmd`` is
reported), and after training a Gaussian mixture fitted to the training codes makes "decoder + fitted density" a
model of x that ``vaekit evaluate`` reports, labelled (:mod:`vaekit.analysis.posthoc`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from vaekit.errors import ConfigError, option
from vaekit.objectives.base import OBJECTIVES, Loss, Score
from vaekit.objectives.mmd import WAE_SCALES, MMDObjective, check_kernel, parse_scales
from vaekit.objectives.terms import elbo

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@dataclass
class WAEConfig:
    kernel: str = "imq"  # rbf | imq, base bandwidth C = 2 d sigma^2 with sigma^2 = 1
    weight: float = 10.0  # lambda, the weight of MMD_u^2 against the reconstruction in nats
    scales: str = ",".join(f"{s:g}" for s in WAE_SCALES)  # multiples of C the kernel is summed over

    def __post_init__(self) -> None:
        check_kernel(self.kernel)
        if not (math.isfinite(self.weight) and 0 <= self.weight <= 1e9):
            raise ValueError(f"weight must be a number from 0 to 1e9, got {self.weight}")
        parse_scales(self.scales)


@OBJECTIVES.register("wae-mmd", WAEConfig, prefix="mmd",
                     help="WAE-MMD: -log p(x|z) + lambda MMD(q(z), N(0, I)) (deterministic encoder: posterior delta)")
class WAEMMD(MMDObjective):
    """-mean_x E_q log p(x|z) + weight MMD_u^2 of the batch's codes against N(0, I); see the module docstring."""

    trains_autoencoders = True
    #: No ELBO of its own: a density is fitted to its codes after training (decoder + fitted density).
    fits_code_density = True
    estimators_refused = "has no log q(z|x) term (its loss is the reconstruction and the MMD of the codes)"

    def __init__(self, kernel: str = "imq", weight: float = 10.0, scales: str = WAEConfig.scales, k: int = 1,
                 beta: float = 1.0, warmup: int = 0, data_size: int = 0):
        WAEConfig(kernel, weight, scales)  # the same checks for direct construction
        super().__init__(kernel, weight, scales, k, beta, warmup, data_size)

    def check(self, model: LatentVariableModel) -> None:
        super().check(model)
        if model.latent_penalty != 0.0:
            raise ConfigError(f"objective wae-mmd regularises the codes by the MMD; leave {option('latent_penalty')} "
                              "out")

    def selection(self) -> tuple[str, Score]:
        weight = self.weight
        return "valid WAE objective", lambda v: v["reconstruction"] - weight * v["mmd"]

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        source = model.as_data(x) if encoder_input is None else encoder_input.reshape(model.as_data(x).shape)
        q = model.posterior(source, y)
        terms = elbo(model, x, y, samples=self.k, posterior=q)  # an autoencoder's: reconstruction, kl = 0
        z = terms.z if terms.z is not None else q.rsample()
        return Loss(-terms.reconstruction.mean() + self.weight * self.batch_mmd(z), terms)
