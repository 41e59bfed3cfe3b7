"""A deterministic autoencoder's objective (posterior ``delta``): it has no ELBO, since a point mass has no density.

    objective(x) = log p(x | f(x)) - (lambda / 2) ||f(x)||^2,

the reconstruction minus the latent penalty (``--latent-penalty``), weighted by beta like a KL. It is not a bound
on log p(x); the kept epoch is chosen by the validation reconstruction (or by this objective when lambda > 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vaekit.errors import ConfigError
from vaekit.objectives.base import OBJECTIVES, Objective, Score

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@OBJECTIVES.register("autoencoder", help="a deterministic autoencoder's reconstruction - latent penalty "
                     "(posterior delta; the default objective of such a model)")
class Autoencoder(Objective):
    """-mean_x [log p(x | f(x)) - beta (lambda / 2) ||f(x)||^2]."""

    trains_autoencoders = True

    def __init__(self, k: int = 1, beta: float = 1.0, warmup: int = 0, data_size: int = 0):
        super().__init__(k, beta, warmup, data_size)
        self.latent_penalty = 0.0

    def check(self, model: LatentVariableModel) -> None:
        if not getattr(model, "is_autoencoder", False):
            raise ConfigError("objective autoencoder trains a deterministic autoencoder (posterior delta); this "
                              "model's q(z|x) is a density: train it with objective elbo")
        self.latent_penalty = float(model.latent_penalty)

    def selection(self) -> tuple[str, Score]:
        if self.latent_penalty == 0.0:
            return "valid reconstruction", lambda v: v["reconstruction"]
        beta = self.beta
        return "valid autoencoder objective", lambda v: v["reconstruction"] - beta * v["kl"]

    def row_fields(self) -> dict[str, Any]:
        return {"objective": "autoencoder"}
