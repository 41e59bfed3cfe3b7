"""The evidence lower bound as an objective (the default):

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x),

trained with the KL weighted by beta (beta-VAE; beta ramps up over ``warmup`` epochs) and ``k`` draws per example.
The KL is taken in closed form where one is registered, by Monte Carlo otherwise (:func:`vaekit.objectives.elbo`).
Its encoder's gradient is the pathwise one, or STL's (``--estimator stl``: log q(z|x) at stopped parameters and a
Monte Carlo KL, unbiased for the ELBO; :mod:`vaekit.objectives.reparameterized`); DReG of the ELBO is STL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vaekit.objectives.base import OBJECTIVES, Objective

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@OBJECTIVES.register("elbo", help="the ELBO, E_q[log p(x|z)] - beta KL(q(z|x) || p(z)) (default)")
class ELBO(Objective):
    """-mean_x [E_q[log p(x|z)] - beta KL]; the kept epoch is chosen by the same beta-weighted ELBO. The default
    objective: a model with no ELBO (an autoencoder) is trained by its own :attr:`default_objective` instead."""

    trains_autoencoders = True

    def for_model(self, model: LatentVariableModel) -> Objective:
        own = getattr(model, "default_objective", self.name)
        if own == self.name:
            return super().for_model(model)
        return OBJECTIVES.build(own, k=self.k, beta=self.beta, warmup=self.warmup,
                                data_size=self.data_size).for_model(model)
