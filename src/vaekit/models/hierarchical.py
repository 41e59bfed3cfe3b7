"""A two-level hierarchical VAE (Tomczak & Welling, 2018, "HVAE (L = 2)"), z = (z1, z2), each of size L.

The model (generative direction z2 -> z1 -> x, and x also sees z2):

    p(x, z1, z2) = p(z2) p(z1|z2) p(x|z1, z2)
    p(z2)        = the configured prior (standard normal, or the VampPrior (1/K) sum_k q(z2|u_k))
    p(z1|z2)     = N(z1; mu_p(z2), diag exp(logvar_p(z2)))
    p(x|z1, z2)  = the configured likelihood, parameters from a decoder on [z1, z2]

The guide (inference direction x -> z2 -> z1):

    q(z1, z2|x)  = q(z2|x) q(z1|x, z2)
    q(z2|x)      = N(z2; mu_2(x), diag exp(logvar_2(x)))
    q(z1|x, z2)  = N(z1; mu_1(x, z2), diag exp(logvar_1(x, z2))),  a network on [features(x), features(z2)]

Both latents are drawn by reparameterization (z2 first, then z1 given that z2), so the ELBO

    ELBO(x) = E_q[log p(x|z1, z2) + log p(z1|z2) + log p(z2) - log q(z1|x, z2) - log q(z2|x)]

is estimated by Monte Carlo (no closed-form KL). All densities are in nats, summed over dimensions.
Latent codes are concatenated as z = [z1, z2] (..., 2L). ``posterior(x)`` is q(z1, z2|x) and
``prior_distribution()`` is p(z1, z2) as distributions over that code (:class:`TwoLevelPosterior`,
:class:`TwoLevelPrior`), so the objectives and the evaluator use the model through the protocol of
:mod:`vaekit.models.base`, like the VAE. ``model.prior`` is the component p(z2).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from vaekit import distributions as vd
from vaekit.components.base import LIKELIHOODS, PRIORS, Likelihood, Prior
from vaekit.components.posteriors import check_min_logvar
from vaekit.distributions import DiagonalNormal
from vaekit.distributions.sampled import SampledWithLogProb
from vaekit.errors import ConfigError, keywords_checked, whole_number
from vaekit.models.base import LatentVariableModel, ShapeError, register_model
from vaekit.models.networks import widths
from vaekit.models.persistence import Persistent
from vaekit.models.vae import make_component
from vaekit.nn import MLP, ConvDecoder, ConvEncoder, dense_features
from vaekit.nn import activation as make_activation


class TwoLevelPosterior(SampledWithLogProb):
    """q(z1, z2|x) = q(z2|x) q(z1|x, z2) over z = [z1, z2]; ``q_z1(z2)`` gives q(z1|x, z2) for this x."""

    arg_constraints: dict = {}
    support = constraints.real_vector

    def __init__(self, q_z2: DiagonalNormal, q_z1: Callable[[torch.Tensor], DiagonalNormal], latent: int):
        self.q_z2, self.q_z1, self.latent = q_z2, q_z1, latent
        super().__init__(batch_shape=q_z2.batch_shape, event_shape=torch.Size([2 * latent]), validate_args=False)

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple = (),
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z2 ~ q(z2|x), then z1 ~ q(z1|x, z2), by reparameterization; log q = log q(z2|x) + log q(z1|x, z2)."""
        z2 = self.q_z2.rsample(sample_shape, generator)
        q1 = self.q_z1(z2)
        z1 = q1.rsample((), generator)
        return torch.cat([z1, z2], -1), self.q_z2.log_prob(z2) + q1.log_prob(z1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z1, z2 = value[..., : self.latent], value[..., self.latent :]
        return self.q_z2.log_prob(z2) + self.q_z1(z2).log_prob(z1)

    def point(self) -> torch.Tensor:
        """The mean path: z2 = mu_2(x), z1 = the mean of q(z1|x, z2 = mu_2(x)); not the moments of q."""
        mu2 = self.q_z2.loc
        return torch.cat([self.q_z1(mu2).loc, mu2], -1)


class TwoLevelPrior(Distribution):
    """p(z1, z2) = p(z2) p(z1|z2) over z = [z1, z2]; ``p_z1(z2)`` gives p(z1|z2)."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, p_z2: Distribution, p_z1: Callable[[torch.Tensor], DiagonalNormal], latent: int):
        self.p_z2, self.p_z1, self.latent = p_z2, p_z1, latent
        super().__init__(batch_shape=torch.Size(), event_shape=torch.Size([2 * latent]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(z2) + log N(z1; mu_p(z2), diag exp(logvar_p(z2))), nats."""
        z1, z2 = value[..., : self.latent], value[..., self.latent :]
        return self.p_z2.log_prob(z2) + self.p_z1(z2).log_prob(z1)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            z2 = vd.sample(self.p_z2, sample_shape, generator)
            z1 = self.p_z1(z2).rsample((), generator)
        return torch.cat([z1, z2], -1)


@register_model("hvae")
class HierarchicalVAE(Persistent, LatentVariableModel):
    """A VAE with two stochastic layers z1 (bottom) and z2 (top), both diagonal Gaussian in q and p(z1|z2).

    Networks for ``arch == "mlp"`` (H = ``hidden``, h = H[-1], activation ``activation``):
    q(z2|x): MLP D -> H -> 2L (``encoder``); q(z1|x, z2): [dense D -> H, dense L -> h] -> h -> 2L;
    p(z1|z2): MLP L -> H -> 2L; p(x|z1, z2): MLP 2L -> reversed(H) -> P*D (``decoder``).
    For ``arch == "conv"`` the networks on x are :class:`ConvEncoder` / :class:`ConvDecoder` (hidden width
    h = H[0]; gated convolutions for ``"gated"``) and the z-to-z maps are one-hidden-layer MLPs of width h.
    """

    noun = "two-level model"

    @keywords_checked
    def __init__(self, *, shape: Sequence[int], latent: int = 40, arch: str = "mlp", hidden: Sequence[int] = (400,),
                 activation: str = "relu", conv_channels: Sequence[int] = (32, 64), prior: Any = "standard",
                 likelihood: Any = "bernoulli", min_logvar: float = -12.0):
        super().__init__()
        if arch not in ("mlp", "conv"):
            raise ValueError(f"arch must be mlp or conv, got {arch!r}")
        latent = whole_number(latent, "latent")
        self.shape = tuple(int(s) for s in shape)
        self.latent, self.arch, self.hidden = latent, arch, widths(hidden, "hidden")
        self.activation, self.conv_channels = activation, widths(conv_channels, "conv_channels")
        self.min_logvar = check_min_logvar(min_logvar)  # in MIN_LOGVAR_RANGE, as the Gaussian posterior's
        if not self.hidden:
            raise ConfigError(f"hidden sizes must be >= 1, got {self.hidden}")
        self.likelihood: Likelihood = make_component(LIKELIHOODS, likelihood, Likelihood, shape=self.shape,
                                                     latent=self.latent)
        if tuple(self.likelihood.shape) != self.shape:  # a component object built for other data
            raise ShapeError(f"the {self.likelihood.name} likelihood is for data of shape "
                             f"{tuple(self.likelihood.shape)}, not {self.shape}")
        self._check_size(prior)
        d = 1
        for s in self.shape:
            d *= s
        latent, act, out = self.latent, activation, self.likelihood.param_shape
        n_out = math.prod(out)
        try:
            if arch == "mlp":
                h = self.hidden[-1]
                self.encoder: nn.Module = MLP(d, self.hidden, 2 * latent, act, in_shape=self.shape)  # q(z2|x)
                self.q_z1_x: nn.Module = dense_features(d, self.hidden, act)
                self.p_z1: nn.Module = MLP(latent, self.hidden, 2 * latent, act)  # p(z1|z2)
                self.decoder: nn.Module = MLP(2 * latent, list(reversed(self.hidden)), n_out, act, out_shape=out)
            else:
                h = self.hidden[0]
                self.encoder = ConvEncoder(self.shape, 2 * latent, self.conv_channels, h, act)
                if act == "gated":  # the encoder's last Linear (h -> 2h) + GLU is a GatedDense layer h -> h
                    self.q_z1_x = nn.Sequential(ConvEncoder(self.shape, 2 * h, self.conv_channels, h, act),
                                                nn.GLU(dim=-1))
                else:
                    self.q_z1_x = nn.Sequential(ConvEncoder(self.shape, h, self.conv_channels, h, act),
                                                make_activation(act))
                self.p_z1 = MLP(latent, [h], 2 * latent, act)
                self.decoder = ConvDecoder(2 * latent, self.shape, out[0], list(reversed(self.conv_channels)), h, act)
        except ValueError as exc:
            raise ShapeError(f"cannot build the two-level networks for data of shape {self.shape}: {exc}") from None
        self.q_z1_z2: nn.Module = dense_features(latent, [h], act)
        self.q_z1_joint: nn.Module = MLP(2 * h, [h], 2 * latent, act)
        self.prior: Prior = make_component(PRIORS, prior, Prior, latent=latent, shape=self.shape)  # p(z2)
        self.prior.attach(self.posterior_z2)

    def _check_size(self, prior: Any) -> None:
        """Refuse sizes whose parameters would not fit in memory (:mod:`vaekit.resources`), before building."""
        from vaekit.resources import check_parameters, spec_parameters

        try:
            prior_spec = PRIORS.spec(prior) if isinstance(prior, (str, dict)) else {}
        except (ConfigError, ValueError, TypeError):
            prior_spec = {}
        spec = {"model": "hvae", "shape": list(self.shape), "latent": self.latent, "arch": self.arch,
                "hidden": self.hidden, "conv_channels": self.conv_channels, "prior": prior_spec}
        try:
            check_parameters(spec_parameters(spec), "this two-level model", "the sizes: hidden, latent, "
                             "conv_channels (--hidden, --latent, --conv-channels)")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def inference_parameters(self) -> list[nn.Parameter]:
        """The parameters of q(z2|x) q(z1|x,z2) alone; p(z2), p(z1|z2) and p(x|z) own the rest."""
        modules = (self.encoder, self.q_z1_x, self.q_z1_z2, self.q_z1_joint)
        return [p for m in modules for p in m.parameters()]

    @property
    def latent_size(self) -> int:
        """The size of a latent code z = [z1, z2]: 2L."""
        return 2 * self.latent

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z1, z2) from z = [z1, z2] (..., 2L)."""
        return z[..., : self.latent], z[..., self.latent :]

    def _gaussian(self, h: torch.Tensor) -> DiagonalNormal:
        mu, logvar = h.chunk(2, dim=-1)
        return DiagonalNormal(mu, logvar.clamp(min=self.min_logvar))

    # -- the guide q(z2|x) q(z1|x, z2) --------------------------------------------------------
    def posterior_z2(self, x: torch.Tensor) -> DiagonalNormal:
        """q(z2|x); the VampPrior's components use it on pseudo-inputs."""
        return self._gaussian(self.encoder(self.as_data(x)))

    def posterior_z1(self, features: torch.Tensor, z2: torch.Tensor) -> DiagonalNormal:
        """q(z1|x, z2) from the features of x (N, h) and z2 (..., N, L)."""
        fz = self.q_z1_z2(z2)
        return self._gaussian(self.q_z1_joint(torch.cat([features.expand(*fz.shape[:-1], -1), fz], -1)))

    @property
    def supports_surgery(self) -> bool:
        """No: the two-level q(z1, z2|x) is evaluated at its own draws only."""
        return False

    def posterior(self, x: torch.Tensor, y: Any = None) -> TwoLevelPosterior:
        """q(z1, z2|x) = q(z2|x) q(z1|x, z2) over z = [z1, z2]."""
        self.conditioning(y)
        x = self.as_data(x)
        features = self.q_z1_x(x if self.arch == "conv" else x.flatten(-len(self.shape)))
        return TwoLevelPosterior(self.posterior_z2(x), lambda z2: self.posterior_z1(features, z2), self.latent)

    # -- the model p(z2) p(z1|z2) p(x|z1, z2) -------------------------------------------------
    def prior_z1(self, z2: torch.Tensor) -> DiagonalNormal:
        """p(z1|z2) = N(mu_p(z2), diag exp(logvar_p(z2)))."""
        return self._gaussian(self.p_z1(z2))

    def prior_distribution(self) -> TwoLevelPrior:
        return TwoLevelPrior(self.prior.distribution(), self.prior_z1, self.latent)

    def decode(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The parameters of p(x|z1, z2) for z = [z1, z2] (..., 2L): (..., *likelihood.param_shape)."""
        self.conditioning(y)
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, z.shape[-1]))
        return out.reshape(*lead, *self.likelihood.param_shape)

    # -- persistence ----------------------------------------------------------------------------
    def own_description(self) -> dict[str, Any]:
        """The settings of ``model.json`` (after its format and kind)."""
        return {"shape": list(self.shape), "latent": self.latent, "arch": self.arch, "hidden": list(self.hidden),
                "activation": self.activation, "conv_channels": list(self.conv_channels),
                "min_logvar": self.min_logvar, "prior": self.prior.config(), "likelihood": self.likelihood.config()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> HierarchicalVAE:
        return cls(shape=spec["shape"], latent=spec["latent"], arch=spec["arch"], hidden=spec["hidden"],
                   activation=spec["activation"], conv_channels=spec["conv_channels"], prior=spec["prior"],
                   likelihood=spec["likelihood"], min_logvar=spec.get("min_logvar", -12.0))

    def extra_repr(self) -> str:
        return json.dumps({"levels": 2, "latent": [self.latent, self.latent], "arch": self.arch,
                           "prior": self.prior.name, "likelihood": self.likelihood.name})
