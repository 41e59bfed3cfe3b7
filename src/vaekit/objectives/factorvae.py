"""FactorVAE (Kim & Mnih, 2018): a VAE whose total correlation is estimated by a discriminator and penalised.

    loss_VAE = -E_x [ E_q log p(x|z) - beta KL(q(z|x) || p(z)) - gamma (D_0(z) - D_1(z)) ],   z ~ q(z|x),
    loss_D   = CE(D(z), 0) + CE(D(z~), 1),   z~: each unit of the batch's codes permuted across the batch,

where D (two logits) tells codes of q(z) from samples of prod_j q(z_j) (the permuted codes), so that
D_0(z) - D_1(z) = log D(z) / (1 - D(z)) estimates log q(z) / prod_j q(z_j), the total correlation's integrand.
The discriminator is the model's own module, trained by an optimizer of its own (Adam, lr ``discriminator_lr``,
betas (0.5, 0.9), as in the paper) on ``loss_D`` with the codes detached; the VAE's optimizer never moves it.

One file registers all of it: the model (``model.json`` kind ``factorvae``, so that runs load again), the family
(``--family factorvae --factor-gamma G --discriminator-hidden H --discriminator-layers N --discriminator-lr R``)
and its objective (``factorvae``, the family's default). The kept epoch is chosen by the validation ELBO. The
paper's discriminator has 6 layers of 1000 units with leaky ReLUs; smaller ones are a setting away.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from vaekit.errors import ConfigError, in_python_call
from vaekit.models.base import LatentVariableModel, register_model
from vaekit.models.families import FAMILIES, Family
from vaekit.models.persistence import check_spec
from vaekit.models.vae import VAE
from vaekit.objectives.base import OBJECTIVES, Loss, Objective
from vaekit.objectives.terms import elbo
from vaekit.resources import mlp_parameters, spec_parameters


@dataclass
class FactorConfig:
    gamma: float = 10.0  # weight of the discriminator's total-correlation estimate
    discriminator_hidden: int = 1000  # units per hidden layer of D
    discriminator_layers: int = 6  # hidden layers of D
    discriminator_lr: float = 1e-4  # Adam's learning rate for D

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma}")
        for name in ("discriminator_hidden", "discriminator_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not 1 <= value <= 2**16:
                raise ValueError(f"{name} must be an integer from 1 to 65536, got {value}")
        if not (math.isfinite(self.discriminator_lr) and self.discriminator_lr > 0):
            raise ValueError(f"discriminator_lr must be a finite number > 0, got {self.discriminator_lr}")


def discriminator(latent: int, hidden: int, layers: int) -> nn.Sequential:
    """z (N, L) -> 2 logits (joint, product of marginals): ``layers`` Linear + LeakyReLU(0.2) of ``hidden`` units."""
    parts: list[nn.Module] = []
    width = latent
    for _ in range(layers):
        parts += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
        width = hidden
    return nn.Sequential(*parts, nn.Linear(width, 2))


@register_model("factorvae")
class FactorVAE(VAE):
    """A :class:`~vaekit.models.VAE` with a discriminator D on its codes (see the module docstring)."""

    def __init__(self, encoder: nn.Module | None = None, decoder: nn.Module | None = None, *, gamma: float = 10.0,
                 discriminator_hidden: int = 1000, discriminator_layers: int = 6, discriminator_lr: float = 1e-4,
                 **vae: Any):
        super().__init__(encoder, decoder, **vae)
        self.factor = FactorConfig(gamma, discriminator_hidden, discriminator_layers, discriminator_lr)
        self.discriminator = discriminator(self.latent_size, discriminator_hidden, discriminator_layers)

    @property
    def default_objective(self) -> str:
        return "factorvae"

    def auxiliary_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """D's own Adam (lr ``discriminator_lr``, betas (0.5, 0.9)); the VAE's optimizer takes the rest."""
        return {"discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=self.factor.discriminator_lr,
                                                  betas=(0.5, 0.9))}

    def own_description(self) -> dict[str, Any]:
        """The VAE's settings of ``model.json`` and the discriminator's (``factor``); the kind, ``factorvae``, is
        the one ``register_model`` gave the class."""
        return {**super().own_description(), "factor": asdict(self.factor)}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], encoder: nn.Module | None = None,
                  decoder: nn.Module | None = None) -> FactorVAE:
        base = {key: value for key, value in spec.items() if key != "factor"}
        return VAE.from_spec.__func__(functools.partial(cls, **spec["factor"]), base, encoder, decoder)

    @classmethod
    def check_spec(cls, spec: dict[str, Any]) -> dict[str, Any]:
        """The VAE's checks, and the discriminator's settings (a ValueError names the bad one)."""
        factor = spec.get("factor")
        if not isinstance(factor, dict):
            raise ValueError("a factorvae model needs its factor settings (a table)")
        checked = asdict(FactorConfig(**factor))
        base = check_spec({**{k: v for k, v in spec.items() if k != "factor"}, "model": "vae"})
        return {**base, "model": "factorvae", "factor": checked}

    @classmethod
    def spec_parameters(cls, spec: dict[str, Any]) -> int:
        f = spec["factor"]
        hidden = [int(f["discriminator_hidden"])] * int(f["discriminator_layers"])
        return spec_parameters({**spec, "model": "vae"}) + mlp_parameters([int(spec["latent"]), *hidden, 2])


@FAMILIES.register("factorvae", FactorConfig, prefix="factor",
                   flags={name: name for name in ("discriminator_hidden", "discriminator_layers", "discriminator_lr")},
                   help="FactorVAE: a VAE whose total correlation a discriminator estimates (its own optimizer)")
class FactorVAEFamily(Family):
    """Builds a :class:`FactorVAE` of the settings' networks and components (one level)."""

    def __init__(self, gamma: float = 10.0, discriminator_hidden: int = 1000, discriminator_layers: int = 6,
                 discriminator_lr: float = 1e-4):
        self.settings = {"gamma": gamma, "discriminator_hidden": discriminator_hidden,
                         "discriminator_layers": discriminator_layers, "discriminator_lr": discriminator_lr}

    def check(self, cfg: Any) -> None:
        if cfg.levels != 1:
            raise ConfigError("family factorvae has one level of latents; leave levels out")

    @staticmethod
    def example_settings() -> dict[str, Any]:
        return {"discriminator_hidden": 16, "discriminator_layers": 2}  # the default 6 x 1000 units take a minute

    def build(self, cfg: Any, shape: tuple[int, ...], likelihood: dict[str, Any],
              condition: int = 0) -> LatentVariableModel:
        return FactorVAE(**self.settings, latent=cfg.latent, shape=shape, posterior=cfg.component("posterior"),
                         likelihood=likelihood, prior=cfg.component("prior"), condition=condition, arch=cfg.model,
                         hidden=cfg.hidden, activation=cfg.activation, conv_channels=cfg.conv_channels)


@OBJECTIVES.register("factorvae", help="FactorVAE's objective: the ELBO - gamma x the discriminator's TC estimate")
class FactorVAEObjective(Objective):
    """loss_VAE for the model's optimizer and loss_D (``discriminator``) for D's; see the module docstring."""

    auxiliary = ("discriminator",)

    def check(self, model: LatentVariableModel) -> None:
        super().check(model)
        if not isinstance(getattr(model, "discriminator", None), nn.Module) or model.is_discrete:
            what = "vaekit.objectives.factorvae.FactorVAE" if in_python_call() else "--family factorvae"
            raise ConfigError(f"objective factorvae trains a FactorVAE ({what}): a reparameterized q(z|x) and a "
                              "discriminator")

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        terms = elbo(model, x, y, encoder_input=encoder_input)  # one draw z ~ q(z|x), kept in the terms
        z, rec, kl = terms.z, terms.reconstruction, terms.kl
        logits = model.discriminator(z)
        tc = logits[:, 0] - logits[:, 1]
        codes = z.detach()
        permuted = torch.stack([codes[torch.randperm(codes.shape[0], device=codes.device), j]
                                for j in range(codes.shape[1])], 1)
        labels = torch.cat([torch.zeros(len(codes)), torch.ones(len(codes))]).long().to(codes.device)
        d_loss = nn.functional.cross_entropy(model.discriminator(torch.cat([codes, permuted])), labels)
        return Loss(-(rec - beta * kl - model.factor.gamma * tc).mean(), terms, {"discriminator": d_loss})
