"""The VAE: an encoder q_phi(z|x), a decoder p_theta(x|z) and a prior p(z), composed from plain modules.

    q_phi(z|x)   = posterior(encoder(x))        (the guide; e.g. N(mu(x), diag exp(logvar(x))))
    p_theta(x,z) = p(z) p_theta(x|z),  p_theta(x|z) = likelihood(decoder(z))      (the model)

``VAE(encoder=..., decoder=..., latent=L, shape=(C, H, W), posterior=..., likelihood=..., prior=...)`` takes any
``nn.Module`` encoder and decoder. The contract: the encoder is called on x (N, C, H, W) (and y, for a
conditional model) and returns the posterior's parameters, (N, posterior.param_size) (for the diagonal
Gaussian (N, 2L) = [mu, log-variance]); the decoder is called on z (N, L) (and y) and returns the likelihood's
parameters, (N, *likelihood.param_shape) (for the Bernoulli, logits (N, C, H, W)). Sample dimensions (the K of
importance sampling) are folded into N and back. Posterior, likelihood and prior are registered names
(``"gaussian"``, ``"bernoulli"``, ``"standard"``), ``{"name": ..., setting: value}`` dicts or component
objects. Without networks, ``arch``/``hidden``/``activation``/``conv_channels`` build vaekit's MLP or conv ones.
The objectives (ELBO, IWAE bound) live in :mod:`vaekit.objectives`; the model only gives distributions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.components.base import LIKELIHOODS, POSTERIORS, PRIORS, Likelihood, Posterior, Prior
from vaekit.errors import ConfigError, keywords_checked, whole_number
from vaekit.models.base import LatentVariableModel, ShapeError, register_model
from vaekit.models.networks import build_decoder, build_encoder, custom_spec, network_spec
from vaekit.models.persistence import Persistent, load_model

#: Phrases of torch's errors for tensors of the wrong size, as a network of the wrong shape raises them.
_SHAPE_PHRASES = ("shape", "size mismatch", "must match the size", "Expected", "channels", "cannot be multiplied")


def _reraise_network_failure(role: str, given: str, exc: RuntimeError) -> None:
    """A one-line error for a network that cannot take what the model gives it; other failures pass unchanged."""
    text = " ".join(str(exc).split())
    if not any(p in text for p in _SHAPE_PHRASES) or "out of memory" in text:
        raise exc
    raise ShapeError(f"the {role} failed on {given}: {text[:300]}; check that it takes the shapes of the contract "
                      "in vaekit.models.vae (encoder: x (N, C, H, W); decoder: z (N, L))") from exc


def _check_size(nets: dict[str, Any], registry: Any, component: Any, kind: str, latent: int,
                shape: tuple[int, ...]) -> None:
    """Refuse sizes whose parameters would not fit in memory (:mod:`vaekit.resources`), before building them."""
    from vaekit.resources import check_parameters, component_parameters, network_parameters

    try:
        spec = registry.spec(component) if isinstance(component, (str, dict)) else {}
    except (ConfigError, ValueError, TypeError):
        spec = {}  # the registry says what is wrong when the component is built
    total = component_parameters(kind, spec, latent, shape) if spec else 0
    if shape:
        d = math.prod(shape)
        for role, net in nets.items():
            if net:
                total += network_parameters(net, role, shape, latent, 2 * latent if role == "encoder" else d)
    try:
        check_parameters(total, f"this model ({kind} {spec.get('name', '')}, networks)", "the sizes: hidden, latent, "
                         "conv_channels, or the component's settings (--hidden, --latent, --conv-channels, ...)")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _family_prior(prior: Any, posterior: Posterior) -> Any:
    """``standard`` names the standard prior of the posterior's family: N(0, I) for real-valued codes, the
    uniform categorical for one-hot codes, Bernoulli(1/2) for binary ones."""
    name = prior if isinstance(prior, str) else prior.get("name") if isinstance(prior, dict) else None
    if name == "standard" and posterior.default_prior != "standard" and (isinstance(prior, str) or len(prior) == 1):
        return posterior.default_prior
    return prior


def make_component(registry: Any, spec: Any, base: type, **context: Any) -> Any:
    """A component from a registered name, a settings dict, or an instance of ``base`` (used as it is)."""
    if isinstance(spec, base):
        return spec
    if isinstance(spec, nn.Module):
        raise TypeError(f"expected a {registry.kind} component (a {base.__name__}), got a {type(spec).__name__}")
    try:
        return registry.build(spec, **context)
    except ConfigError:  # an unknown name or setting: the registry's own message
        raise
    except ValueError as exc:  # sizes the component cannot take
        raise ShapeError(f"cannot build the {registry.kind} {spec!r}: {exc}") from None


@register_model("vae")
class VAE(Persistent, LatentVariableModel):
    """A variational autoencoder: any encoder and decoder, a posterior family, a likelihood and a prior."""

    @keywords_checked
    def __init__(self, encoder: nn.Module | None = None, decoder: nn.Module | None = None, *, latent: int = 40,
                 shape: Sequence[int] | None = None, posterior: Any = "gaussian", likelihood: Any = "bernoulli",
                 prior: Any = "standard", condition: int = 0, arch: str = "mlp", hidden: Sequence[int] = (400,),
                 activation: str = "relu", conv_channels: Sequence[int] = (32, 64)):
        super().__init__()
        latent = whole_number(latent, "latent")
        condition = whole_number(condition, "condition (the number of classes)", 0)
        self.latent = int(latent)
        self.condition = int(condition)
        self._specs = {"likelihood": likelihood, "prior": prior}
        if isinstance(posterior, (str, dict)):  # a flow's size is a setting: checked before it is built
            _check_size({}, POSTERIORS, posterior, "posterior", self.latent, ())
        with torch.random.fork_rng(devices=[]):  # drawn again after the networks (build), as vaekit always has
            self.posterior_family: Posterior = make_component(POSTERIORS, posterior, Posterior, latent=self.latent)
        self._posterior_spec = None if isinstance(posterior, Posterior) else posterior
        self._specs["prior"] = _family_prior(prior, self.posterior_family)
        if (encoder is None or decoder is None) and shape is None:
            raise ShapeError("give the data shape (shape=(C, H, W)) for vaekit's networks, or both an encoder and "
                             "a decoder of your own")
        self.shape = None
        self._network_specs: dict[str, dict[str, Any]] = {}
        builtin = network_spec(arch, hidden, activation, conv_channels) if encoder is None or decoder is None \
            else None
        self._encoder_given, self._decoder_given = encoder, decoder
        if encoder is not None:
            self.encoder = encoder
            self._network_specs["encoder"] = custom_spec(encoder)
        if decoder is not None:
            self.decoder = decoder
            self._network_specs["decoder"] = custom_spec(decoder)
        self._builtin = builtin
        if shape is not None:
            self.build(tuple(int(s) for s in shape))

    # -- construction -------------------------------------------------------------------------
    def build(self, shape: tuple[int, ...]) -> VAE:
        """Build what depends on the data shape (C, H, W): the likelihood, the prior and vaekit's networks.

        Called by the constructor when ``shape`` is given, else on the first batch (or by :func:`vaekit.fit`).
        """
        if self.shape is not None:
            if tuple(shape) != tuple(self.shape):
                raise ShapeError(f"this model is built for data of shape {tuple(self.shape)}, not {tuple(shape)}")
            return self
        if not shape or min(shape) < 1:
            raise ShapeError(f"the data shape must be positive sizes like (C, H, W), got {shape}")
        self.shape = tuple(shape)
        if self._encoder_given is None or self._decoder_given is None or isinstance(self._specs["prior"], (str, dict)):
            _check_size({"encoder": self._builtin if self._encoder_given is None else {},
                         "decoder": self._builtin if self._decoder_given is None else {}},
                        PRIORS, self._specs["prior"], "prior", self.latent, self.shape)
        self.likelihood: Likelihood = make_component(LIKELIHOODS, self._specs["likelihood"], Likelihood,
                                                     shape=self.shape, latent=self.latent)
        if tuple(self.likelihood.shape) != self.shape:  # a component object built for other data
            raise ShapeError(f"the {self.likelihood.name} likelihood is for data of shape "
                             f"{tuple(self.likelihood.shape)}, not {self.shape}")
        try:
            if self._encoder_given is None:
                self.encoder = build_encoder(self._builtin, self.shape, self.posterior_family.param_size,
                                             self.condition)
                self._network_specs["encoder"] = self._builtin
            if self._decoder_given is None:
                self.decoder = build_decoder(self._builtin, self.posterior_family.code_size, self.shape,
                                             self.likelihood.param_shape, self.condition)
                self._network_specs["decoder"] = self._builtin
        except ValueError as exc:
            raise ShapeError(f"cannot build the networks for data of shape {self.shape}: {exc}") from None
        # built after the networks, in the order of vaekit's first releases: the same seed, the same weights
        self.prior: Prior = make_component(PRIORS, self._specs["prior"], Prior, latent=self.posterior_family.code_size,
                                           shape=self.shape, posterior=self.posterior_family)
        if self._posterior_spec is not None:  # its weights (a flow's) drawn last, after the prior's
            self.posterior_family = make_component(POSTERIORS, self._posterior_spec, Posterior, latent=self.latent)
        if self.condition and self.prior.trains_with_encoder:
            raise ShapeError(f"the {self.prior.name} prior is built from the encoder, which a conditional model "
                             "feeds labels too; use it without condition, or another prior")
        self.prior.attach(self._guide_of)
        return self

    def _built(self) -> None:
        if self.shape is None:
            raise ShapeError("the model does not know its data shape yet: give shape=(C, H, W), or call "
                             "model.build(shape) (vaekit.fit does it from the data)")

    # -- the guide q(z|x) -----------------------------------------------------------------------
    @property
    def latent_size(self) -> int:
        return self.posterior_family.code_size

    @property
    def decodes_directly(self) -> bool:
        """p(x|z) = likelihood(decoder(z)) with nothing in between (no conditioning): what a registered fast kernel
        (:mod:`vaekit.bounds.kernels`) may compute from the decoder and the likelihood alone."""
        return self.condition == 0

    def _mixture_table(self) -> nn.Linear | None:
        """The decoder's table when this VAE is a mixture of Bernoullis (one K-way categorical z, a decoder that is
        one linear layer giving one logit per pixel: component k's logits are its column k), else None."""
        decoder = self.decoder
        if not (isinstance(decoder, nn.Sequential) and len(decoder) == 1 and isinstance(decoder[0], nn.Linear)):
            return None
        family = self.posterior_family
        one_group = family.discrete and getattr(family, "classes", 0) == family.code_size == decoder[0].in_features
        binary = getattr(self.likelihood, "levels", None) == 2 and decoder[0].out_features == math.prod(self.shape)
        return decoder[0] if one_group and binary else None

    @torch.no_grad()
    def seed_from_data(self, train: torch.Tensor, seed: int) -> None:
        """A mixture of Bernoullis starts from K distinct training images, as EM's seeding does: component k's
        pixel logits logit(0.05 + 0.9 x_k) (its decoder column), the decoder bias 0, and a linear encoder at the
        exact posterior of that model. From the default initialisation every component decodes nearly the same
        image, q(z|x) is nearly uniform, and training collapses the mixture onto one component. Other VAEs start
        as initialised."""
        linear = self._mixture_table()
        if linear is None:
            return
        k = linear.weight.shape[1]
        gen = torch.Generator().manual_seed(seed * 7919 + 17)
        rows = torch.randperm(train.shape[0], generator=gen)[:k]
        images = train[rows.to(train.device)].reshape(len(rows), -1).to(linear.weight.dtype)
        logits = torch.logit(0.05 + 0.9 * images)  # (K, D)
        linear.weight[:, : len(rows)] = logits.T
        linear.bias.zero_()
        encoder = self.encoder
        first = encoder[0] if isinstance(encoder, nn.Sequential) and len(encoder) == 1 else None
        if isinstance(first, nn.Linear) and first.weight.shape[0] == len(rows):
            # q(z|x) starts at the exact posterior of this initial model, which is linear in x:
            # log p(z = k | x) = x . l_k - sum_d softplus(l_kd) + const  (uniform mixture weights)
            first.weight.copy_(logits)
            first.bias.copy_(-nn.functional.softplus(logits).sum(-1))

    def inference_parameters(self) -> list[nn.Parameter]:
        """The parameters of q(z|x) alone (encoder and posterior family, e.g. a flow)."""
        return list(self.encoder.parameters()) + list(self.posterior_family.parameters())

    def encode(self, x: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The encoder's output for x (N, C, H, W) (flat (N, D) is reshaped): (N, posterior.param_size)."""
        if self.shape is None:
            self.build(tuple(x.shape[1:]))
        x = self.as_data(x)
        c = self.conditioning(y)
        try:
            out = self.encoder(x) if c is None else self.encoder(x, c)
        except RuntimeError as exc:
            _reraise_network_failure("encoder", f"a batch {tuple(x.shape)}", exc)
        want = self.posterior_family.param_size
        if not isinstance(out, torch.Tensor) or out.shape[-1] != want or out.shape[:-1] != x.shape[:-len(self.shape)]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ShapeError(f"the encoder returned {got} for a batch {tuple(x.shape)}; the "
                             f"{self.posterior_family.name} posterior needs ({x.shape[0]}, {want}) (N x param_size)")
        return out

    def _guide_of(self, x: torch.Tensor) -> Distribution:
        return self.posterior_family(self.encode(x))

    def posterior(self, x: torch.Tensor, y: Any = None) -> Distribution:
        """q(z|x[, y]) as a ``torch.distributions`` object: batch (N,), event (L,)."""
        return self.posterior_family(self.encode(x, y))

    # -- the model p(z) p(x|z) --------------------------------------------------------------------
    def prior_distribution(self) -> Distribution:
        self._built()
        return self.prior.distribution()

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        self._built()
        return self.prior.log_prob(z)

    def decode(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The parameters of p(x|z) for z (..., L): (..., *likelihood.param_shape); sample dims folded into N."""
        self._built()
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        c = self.conditioning(y)
        try:
            if c is None:
                out = self.decoder(flat)
            else:
                c = c.expand(*lead, c.shape[-1]).reshape(-1, c.shape[-1])
                out = self.decoder(flat, c)
        except RuntimeError as exc:
            _reraise_network_failure("decoder", f"codes {tuple(flat.shape)}", exc)
        want = self.likelihood.param_shape
        if not isinstance(out, torch.Tensor) or tuple(out.shape[1:]) != want or out.shape[0] != flat.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ShapeError(f"the decoder returned {got} for codes {tuple(flat.shape)}; the {self.likelihood.name} "
                             f"likelihood needs ({flat.shape[0]}, {', '.join(map(str, want))}) (N x param_shape)")
        return out.reshape(*lead, *want)

    # -- persistence ----------------------------------------------------------------------------
    def own_description(self) -> dict[str, Any]:
        """The settings of ``model.json`` (after its format and kind): what rebuilds the model (with the same
        networks)."""
        self._built()
        return {"shape": list(self.shape), "latent": self.latent, "condition": self.condition,
                "posterior": self.posterior_family.config(), "prior": self.prior.config(),
                "likelihood": self.likelihood.config(), "encoder": self._network_specs["encoder"],
                "decoder": self._network_specs["decoder"]}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], encoder: nn.Module | None = None,
                  decoder: nn.Module | None = None) -> VAE:
        """The model a :meth:`describe` dict describes; user networks (``custom``) must be given again."""
        nets = {}
        for role, given in (("encoder", encoder), ("decoder", decoder)):
            s = spec[role]
            if s.get("name") == "custom":
                if given is None:
                    raise ShapeError(f"this model was saved with a {role} of your own ({s.get('class')}); build it "
                                     f"again and pass it: VAE.load(RUN, {role}={s.get('class')}(...))")
                nets[role] = given
            elif given is not None:
                nets[role] = given
        builtin = spec["encoder"] if spec["encoder"].get("name") != "custom" else spec["decoder"]
        kwargs: dict[str, Any] = {}
        if builtin.get("name") in ("mlp", "conv"):
            kwargs = {"arch": builtin["name"], "activation": builtin["activation"]}
            if builtin["name"] == "mlp":
                kwargs["hidden"] = builtin["hidden"]
            else:
                kwargs.update(hidden=[builtin["hidden"]], conv_channels=builtin["channels"])
        return cls(nets.get("encoder"), nets.get("decoder"), latent=int(spec["latent"]),
                   shape=tuple(spec["shape"]), posterior=spec["posterior"], likelihood=spec["likelihood"],
                   prior=spec["prior"], condition=int(spec.get("condition", 0)), **kwargs)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu", *, encoder: nn.Module | None = None,
             decoder: nn.Module | None = None) -> LatentVariableModel:
        """Load a trained model from a run directory (its best weights) or a model directory.

        Loads safetensors and JSON only: no code is executed and no module named in the folder is imported.
        A model trained with networks of your own loads into networks you build again and pass here. A model of
        any kind loads, as with ``vaekit.load`` (the other classes' ``load`` refuses kinds other than their own).
        """
        return load_model(Path(path), map_location=map_location, encoder=encoder, decoder=decoder)

    def extra_repr(self) -> str:
        if self.shape is None:
            return f"latent={self.latent}, shape=None"
        return json.dumps({"latent": self.latent, "shape": list(self.shape), "posterior": self.posterior_family.name,
                           "prior": self.prior.name, "likelihood": self.likelihood.name,
                           **({"condition": self.condition} if self.condition else {})})


def data_dim(model: LatentVariableModel) -> int:
    return math.prod(model.shape or ())
