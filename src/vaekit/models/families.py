"""Model families: what ``--family NAME`` builds, registered like the components.

A family is one class plus one registration::

    @dataclass
    class FactorConfig:
        gamma: float = 10.0

    @FAMILIES.register("factorvae", FactorConfig, prefix="factor")
    class FactorFamily(Family):
        def __init__(self, gamma: float = 10.0):
            self.gamma = gamma

        def build(self, cfg, shape, likelihood, condition=0):
            return FactorVAE(gamma=self.gamma, latent=cfg.latent, shape=shape, likelihood=likelihood, ...)

after which ``--family factorvae --factor-gamma 6`` works on the command line, ``[family] name = "factorvae"`` in a
config file and ``family="factorvae"`` in :func:`vaekit.config.from_dict`. A family may fill in what it implies
(:meth:`Family.defaults`, before the settings are checked), refuse settings that contradict it (:meth:`Family.check`)
and name the fitters it supports (``fitters``: gradient training ``vae``, and e.g. exact ``em``). What the trainer
needs to know of the built model (its objective, seeding from data, auxiliary optimizers) the model says itself
(:class:`~vaekit.models.base.LatentVariableModel`).
"""

from __future__ import annotations

from typing import Any

from vaekit.errors import ConfigError
from vaekit.models.base import LatentVariableModel
from vaekit.models.hierarchical import HierarchicalVAE
from vaekit.models.vae import VAE
from vaekit.registry import Registry

#: The registered model families: name -> class and settings dataclass (``--family NAME``).
FAMILIES = Registry("family")


class Family:
    """The plain VAE family: one level (``levels`` 1, :class:`~vaekit.models.VAE`) or two
    (:class:`~vaekit.models.HierarchicalVAE`), of the settings' networks and components."""

    name: str = "family"  # set by the registration
    #: How a model of this family may be fitted (``fit``): ``vae`` is gradient training by the trainer.
    fitters: tuple[str, ...] = ("vae",)
    #: Whether the setting ``components`` (mixture components K) is this family's.
    takes_components: bool = False

    @staticmethod
    def defaults(settings: dict[str, Any]) -> None:
        """Fill in, in the flat settings ``settings`` (TrainConfig keys), what this family implies unless given."""

    def check(self, cfg: Any) -> None:
        """Refuse, in one line (ConfigError), settings ``cfg`` (a TrainConfig) that contradict this family."""

    @staticmethod
    def example_settings() -> dict[str, Any]:
        """Flat settings of a tiny run of this family (seconds on a CPU, for tests that run every kind of run)
        beyond small networks and one epoch: a family whose own defaults are large names smaller ones here."""
        return {}

    def build(self, cfg: Any, shape: tuple[int, ...], likelihood: dict[str, Any],
              condition: int = 0) -> LatentVariableModel:
        """The model of ``cfg`` for data of ``shape``, with the ``likelihood`` spec, conditional on ``condition``
        classes (0: none)."""
        if cfg.levels == 2:
            return HierarchicalVAE(shape=shape, latent=cfg.latent, arch=cfg.model, hidden=cfg.hidden,
                                   activation=cfg.activation, conv_channels=cfg.conv_channels,
                                   prior=cfg.component("prior"), likelihood=likelihood)
        return VAE(latent=cfg.latent, shape=shape, posterior=cfg.component("posterior"), likelihood=likelihood,
                   prior=cfg.component("prior"), condition=condition, arch=cfg.model, hidden=cfg.hidden,
                   activation=cfg.activation, conv_channels=cfg.conv_channels)


@FAMILIES.register("vae", help="a VAE of the chosen networks and components (default)")
class VAEFamily(Family):
    """A VAE of the chosen networks, posterior, prior and likelihood (``levels`` 2: the two-level model)."""


@FAMILIES.register("gmvae", help="a Gaussian q(z|x) with the Gaussian-mixture prior (--clusters C)")
class GMVAEFamily(Family):
    """The Gaussian-mixture VAE: a Gaussian (or flow) q(z|x) and the learned mixture prior."""

    @staticmethod
    def defaults(settings: dict[str, Any]) -> None:
        settings.setdefault("prior", "mixture")

    def check(self, cfg: Any) -> None:
        if cfg.prior != "mixture" or cfg.posterior not in ("gaussian", "iaf", "planar"):
            raise ConfigError(f"family gmvae is a Gaussian q(z|x) with the mixture prior; got posterior "
                              f"{cfg.posterior} and prior {cfg.prior}")


@FAMILIES.register("bernoulli-mixture", help="one categorical z with --components classes and linear networks "
                   "(--fit em: exact EM)")
class BernoulliMixtureFamily(Family):
    """The mixture of Bernoullis: one K-way categorical z (``components``), a learned prior and linear networks;
    fitted by gradient training (as a VAE) or by exact EM (``fit em``)."""

    fitters = ("vae", "em")
    takes_components = True
    FIXED = {"posterior": "categorical", "latent": 1, "prior": "categorical", "levels": 1, "model": "mlp"}

    @staticmethod
    def defaults(settings: dict[str, Any]) -> None:
        for key, value in (("posterior", "categorical"), ("latent", 1), ("prior", "categorical"), ("hidden", [])):
            settings.setdefault(key, value)
        classes = settings.get("components")
        if settings.get("posterior") == "categorical":
            posterior = dict(settings.get("posterior_settings") or {})
            if classes is not None:
                if posterior.get("classes", classes) != classes:
                    raise ConfigError(f"components {classes} and classes {posterior['classes']} disagree; give one")
                posterior["classes"] = classes
            posterior.setdefault("classes", 10)
            settings["posterior_settings"] = posterior
        if settings.get("prior") == "categorical":
            settings["prior_settings"] = {"learned": True, **(settings.get("prior_settings") or {})}

    @staticmethod
    def example_settings() -> dict[str, Any]:
        return {"binarize": "threshold"}  # the mixture of Bernoullis fits binary pixels

    def check(self, cfg: Any) -> None:
        wrong = [f"{k} {getattr(cfg, k)!r}" for k, v in self.FIXED.items() if getattr(cfg, k) != v]
        if wrong or cfg.hidden != []:
            shown = ", ".join(wrong + ([f"hidden {cfg.hidden}"] if cfg.hidden != [] else []))
            raise ConfigError(f"family bernoulli-mixture is one categorical z with --components classes and linear "
                              f"networks; leave out {shown}")
