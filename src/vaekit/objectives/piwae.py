"""The partially importance-weighted autoencoder (PIWAE; Rainforth et al., 2018, "Tighter variational bounds are
not necessarily better") as an objective: the generative model and q(z|x) trained on different bounds of the same
M K draws z_mk ~ q(z|x),

    theta (p(z), p(x|z)):  max IWAE_{MK}(x)   = log (1/(M K)) sum_{m,k} w_mk              (the tighter bound)
    phi   (q(z|x)):        max MIWAE_{M,K}(x) = (1/M) sum_m log (1/K) sum_k w_mk         (the better gradient)

with w_mk = p(x, z_mk) / q(z_mk|x), in nats per example (``--m M``, ``--k K``). The decoder gets the tightest
bound of the draws (its gradient's signal-to-noise ratio grows as sqrt(M K)); the encoder the MIWAE estimate,
whose gradient keeps its signal as K grows (sqrt(M / K) instead of IWAE's 1 / sqrt(M K)). One forward pass gives
both bounds from one set of log weights; the loss is -IWAE_{MK} and :attr:`vaekit.objectives.Loss.inference` is
-MIWAE_{M,K}, which the trainer routes into the parameters of q(z|x) (the model's ``inference_parameters()``),
the loss into the others. A prior built from the encoder (the VampPrior) trains its pseudo-inputs with the
decoder on IWAE_{MK}; the encoder's weights take the MIWAE gradient along every path. PIWAE_{1,K} = IWAE_K.

The kept epoch is chosen by the validation IWAE_{MK} of the generative model (``valid_iwae_mk``); the encoder's
MIWAE_{M,K} is reported beside it (``valid_miwae``). The log weights come from the objectives' one sampler
(:func:`vaekit.objectives.terms.sampled_terms`); the KL weight ``beta`` does not apply (as for IWAE).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch

from vaekit.errors import ConfigError
from vaekit.objectives.base import OBJECTIVES, Loss, Objective, Score
from vaekit.objectives.miwae import (
    MIWAEConfig,
    bound_sums,
    check_reparameterized,
    grouped_log_weights,
    iwae_from_log_weights,
    miwae_from_log_weights,
)

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@OBJECTIVES.register("piwae", MIWAEConfig, prefix="piwae", flags={"m": "m"},
                     help="PIWAE: the decoder on IWAE of --m x --k draws, the encoder on MIWAE(--m, --k) of the same "
                     "draws (Rainforth et al. 2018)")
class PIWAE(Objective):
    """Loss -mean_x IWAE_{MK}(x) for p(z) and p(x|z), -mean_x MIWAE_{M,K}(x) for q(z|x) (``Loss.inference``);
    the ELBO terms reported are the M K draws' Monte Carlo ELBO."""

    bounds = ("iwae_mk", "miwae")
    importance_weighted = True  # a sum over examples of a function of each one's log weights (DReG applies)
    core_settings = ("k",)

    def __init__(self, m: int = 1, **shared: Any):
        super().__init__(**shared)
        self.m = int(m)

    def check(self, model: LatentVariableModel) -> None:
        super().check(model)
        check_reparameterized(self.name, model)
        try:
            own = model.inference_parameters()
        except NotImplementedError:
            raise ConfigError(f"objective piwae trains the parameters of q(z|x) apart, but {type(model).__name__} "
                              "does not name them (inference_parameters()); use --objective miwae or iwae") from None
        if not own:
            raise ConfigError("objective piwae trains q(z|x) on its own bound, but this model's q(z|x) has no "
                              "parameters of its own (it is the exact posterior); use --objective iwae")

    def draws(self) -> int:
        return self.m * self.k

    def selection(self) -> tuple[str, Score]:
        """The generative model's bound: IWAE of the M K draws pooled (a metrics row's name: at most 60 characters)."""
        return f"valid IWAE_MK bound (M = {self.m}, K = {self.k})", lambda v: v["iwae_mk"]

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        log_w, terms = grouped_log_weights(model, x, self.m, self.k, y=y, encoder_input=encoder_input)
        return Loss(-iwae_from_log_weights(log_w).mean(), terms, inference=-miwae_from_log_weights(log_w).mean())

    def validation_sums(self, model: LatentVariableModel, x: torch.Tensor, y: Any, generator: torch.Generator,
                        batch_size: int, autocast: contextlib.AbstractContextManager | None = None
                        ) -> dict[str, torch.Tensor]:
        """sum_x IWAE_{MK}(x) and sum_x MIWAE_{M,K}(x), from the same draws, over chunks of 8 x ``batch_size``
        (example, draw) pairs, so memory stays bounded."""

        def figures(chunk: torch.Tensor, labels: Any) -> dict[str, torch.Tensor]:
            log_w, _ = grouped_log_weights(model, chunk, self.m, self.k, generator, labels)
            return {"iwae_mk": iwae_from_log_weights(log_w), "miwae": miwae_from_log_weights(log_w)}

        return bound_sums(figures, x, y, max(1, 8 * batch_size // self.draws()), autocast)
