"""The VQ-VAE's objective (van den Oord et al., 2017, eq. 3), per example x, in nats and squared distances:

    loss(x) = -log p(x | z_q(x)) + ||sg[z_e(x)] - e||^2 + beta ||z_e(x) - sg[e]||^2 - log p(z_q(x))

with the decoder's gradient passed straight through the quantizer to the encoder, the codebook loss dropped for a
moving-average codebook (whose update this objective makes, once per training batch), and the distances summed
over the grid and the code dimensions (:mod:`vaekit.components.quantizer`). The last term is a constant under the
uniform prior; when the PixelCNN prior is fitted (the autoencoder fixed, ``--prior-of RUN``) it is the only term
with a gradient. The reported terms are those of the bound:

    elbo = log p(x|z_q) + log p(z_q),   reconstruction = log p(x|z_q),   kl = KL(q(z|x) || p(z)) = -log p(z_q)

(q(z|x) is a point mass on the codes, of entropy 0), and the kept epoch is chosen by the validation ``vq_elbo``,
this bound. ``beta`` (the KL weight), ``warmup`` and ``k`` do not apply.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch

from vaekit.errors import ConfigError, in_python_call
from vaekit.objectives.base import OBJECTIVES, Loss, Objective, Score
from vaekit.objectives.terms import ElboTerms

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The name of the VQ-VAE's bound, log p(x|z_q) + log p(z_q), wherever it is reported.
VQ_ELBO = "vq_elbo"


@OBJECTIVES.register("vqvae", help="the VQ-VAE's reconstruction + codebook + commitment losses (family vqvae)")
class VQVAEObjective(Objective):
    """-mean_x [log p(x|z_q) - codebook - commitment + log p(z_q)]; see the module docstring."""

    def __init__(self, k: int = 1, beta: float = 1.0, warmup: int = 0, data_size: int = 0):
        super().__init__(k, beta, warmup, data_size)
        self.code_prior = "uniform"

    def check(self, model: LatentVariableModel) -> None:
        if not callable(getattr(model, "quantize", None)):
            what = "vaekit.models.vqvae.VQVAE" if in_python_call() else "--family vqvae"
            raise ConfigError(f"objective vqvae trains a VQ-VAE ({what}); this model has no codebook")
        self.code_prior = str(model.code_prior_name)

    def selection(self) -> tuple[str, Score]:
        return f"valid {VQ_ELBO} ({self.code_prior} prior)", lambda v: v["elbo"]

    def row_fields(self) -> dict[str, Any]:
        return {"objective": "vqvae"}  # the prior is named in selected_by

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        x = model.as_data(x)
        frozen = bool(getattr(model, "autoencoder_frozen", False))
        with torch.no_grad() if frozen else contextlib.nullcontext():
            z_e, out = model.quantize(x if encoder_input is None else encoder_input)
            rec = model.likelihood.log_prob(x, model.decode_grid(out.z_q))
        if model.training and model.quantizer.ema and not frozen:
            model.quantizer.ema_update(z_e, out.indices)
        log_pz = model.log_code_prior(out.indices).to(rec.dtype)
        terms = ElboTerms(rec + log_pz, rec, -log_pz)
        return Loss(-(rec - out.codebook_loss - out.commitment_loss + log_pz).mean(), terms)
