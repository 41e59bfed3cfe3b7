"""The VAE: an encoder q_phi(z|x), a decoder p_theta(x|z) and a prior p(z).

    q_phi(z|x)   = N(z; mu_phi(x), diag exp(logvar_phi(x)))       (the guide)
    p_theta(x,z) = p(z) p_theta(x|z)                                (the model)

z is drawn by reparameterization, z = mu + exp(logvar / 2) * eps with eps ~ N(0, I), so
gradients flow through the sample to the encoder. With a normalizing flow (``flow="iaf"`` or ``"planar"``,
:mod:`vaekit.flows`) that Gaussian is the base: z_0 ~ N(mu, diag exp(logvar)), z = f_T(...f_1(z_0)) and
log q(z|x) = log N(z_0; mu, diag exp(logvar)) - sum_t log|det df_t/dz_{t-1}|; the encoder then also outputs a
context vector h(x) of size ``flow_context`` for the flow (Kingma et al., 2016), and the KL is estimated by
Monte Carlo. The objectives (ELBO, IWAE bound) live in
:mod:`vaekit.objectives`; the model only evaluates densities and draws samples.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vaekit.flows import FLOWS, Flow
from vaekit.likelihoods import Likelihood, make_likelihood
from vaekit.networks import MLP, ConvDecoder, ConvEncoder
from vaekit.priors import Prior, diagonal_normal_log_prob, make_prior


@dataclass
class ModelConfig:
    """Everything needed to rebuild a VAE (saved as JSON next to its weights)."""

    shape: tuple[int, int, int] = (1, 28, 28)
    latent: int = 40
    arch: str = "mlp"  # mlp | conv
    hidden: list[int] = field(default_factory=lambda: [400])
    activation: str = "relu"
    likelihood: dict[str, Any] = field(default_factory=lambda: {"name": "bernoulli"})
    prior: dict[str, Any] = field(default_factory=lambda: {"name": "standard"})
    conv_channels: list[int] = field(default_factory=lambda: [32, 64])
    levels: int = 1  # stochastic layers: 1 (VAE) or 2 (hierarchical VAE, vaekit.hierarchical)
    min_logvar: float = -12.0  # floor on the encoder's log-variance, for numerical safety
    flow: str | None = None  # normalizing flow in q(z|x): None, "iaf" or "planar" (vaekit.flows); levels 1 only
    flow_steps: int = 2  # flow steps T
    flow_hidden: int = 320  # iaf: units per MADE hidden layer
    flow_layers: int = 2  # iaf: MADE hidden layers
    flow_context: int = 32  # size of the context h(x) the encoder gives the flow (0: none)

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        self.hidden = [int(h) for h in self.hidden]
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"shape must be (C, H, W) with positive sizes, got {self.shape}")
        if self.latent < 1:
            raise ValueError(f"latent must be >= 1, got {self.latent}")
        if self.arch not in ("mlp", "conv"):
            raise ValueError(f"arch must be mlp or conv, got {self.arch!r}")
        if self.levels not in (1, 2):
            raise ValueError(f"levels must be 1 or 2, got {self.levels}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {self.hidden}")
        if self.flow is not None:
            if self.flow not in FLOWS:
                raise ValueError(f"flow must be one of {', '.join(FLOWS)} (or None); got {self.flow!r}")
            if self.levels != 1:
                raise ValueError("a flow in q(z|x) needs levels=1; the two-level model has no flow")
            for name, low in (("flow_steps", 1), ("flow_hidden", 1), ("flow_layers", 1), ("flow_context", 0)):
                if int(getattr(self, name)) < low:
                    raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        self.min_logvar = float(self.min_logvar)
        if not math.isfinite(self.min_logvar):
            raise ValueError(f"min_logvar must be a finite number, got {self.min_logvar}")
        if isinstance(self.likelihood, str):
            self.likelihood = {"name": self.likelihood}
        if isinstance(self.prior, str):
            self.prior = {"name": self.prior}

    @property
    def data_dim(self) -> int:
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


PosteriorSampler = Callable[[int | None, torch.Generator | None], tuple[torch.Tensor, torch.Tensor]]


class Samples(NamedTuple):
    """Draws from the model: latent codes, decoded means E[x|z] and samples x ~ p(x|z)."""

    z: torch.Tensor
    means: torch.Tensor
    draws: torch.Tensor


class VAE(nn.Module):
    """A variational autoencoder with a diagonal Gaussian posterior, optionally followed by a flow."""

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any):
        super().__init__()
        cfg = config if config is not None else ModelConfig(**kwargs)
        self.config = cfg
        self.likelihood: Likelihood = make_likelihood(cfg.likelihood, shape=cfg.shape)
        d, latent = cfg.data_dim, cfg.latent
        out = self.likelihood.params_per_pixel * d
        enc = 2 * latent + (cfg.flow_context if cfg.flow else 0)  # [mu, logvar] and the flow's context h(x)
        if cfg.arch == "mlp":
            self.encoder: nn.Module = MLP(d, cfg.hidden, enc, cfg.activation)
            self.decoder: nn.Module = MLP(latent, list(reversed(cfg.hidden)), out, cfg.activation)
        else:
            hidden = cfg.hidden[0] if cfg.hidden else 256
            self.encoder = ConvEncoder(cfg.shape, enc, cfg.conv_channels, hidden, cfg.activation)
            self.decoder = ConvDecoder(latent, cfg.shape, self.likelihood.params_per_pixel * cfg.shape[0],
                                       list(reversed(cfg.conv_channels)), hidden, cfg.activation)
        self.prior: Prior = make_prior(cfg.prior, latent, d)
        if hasattr(self.prior, "bind"):
            self.prior.bind(self.encode)
        self.flow: Flow | None = None
        if cfg.flow:
            self.flow = Flow(cfg.flow, latent, cfg.flow_steps, cfg.flow_hidden, cfg.flow_layers, cfg.flow_context)

    # -- the guide q(z|x) -------------------------------------------------------------------
    def inference_parameters(self) -> list[nn.Parameter]:
        """The parameters of q(z|x) alone (encoder and flow); p(z) and p(x|z) own the rest."""
        modules = [self.encoder] + ([self.flow] if self.flow is not None else [])
        return [p for m in modules for p in m.parameters()]

    def encode_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(mu, logvar, h): the Gaussian's parameters (..., latent) and the flow's context (..., flow_context),
        None without a flow; x is (..., D) or (..., C, H, W)."""
        if x.dim() >= 3 and tuple(x.shape[-3:]) == self.config.shape:
            x = x.flatten(-3)
        out = self.encoder(x)
        n = self.config.latent
        mu, logvar = out[..., :n], out[..., n : 2 * n]
        context = out[..., 2 * n :] if out.shape[-1] > 2 * n else None
        return mu, logvar.clamp(min=self.config.min_logvar), context

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x), each (..., latent); x is (..., D) or (..., C, H, W).

        With a flow these are the parameters of its base distribution q_0(z_0|x), not moments of q(z|x):
        the active-unit count, interpolations and the VampPrior's components use them as they are.
        """
        mu, logvar, _ = self.encode_all(x)
        return mu, logvar

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) as ``Independent(Normal(mu, sigma), 1)`` (with a flow: its base distribution q_0(z_0|x))."""
        mu, logvar = self.encode(x)
        return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, samples: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I); shape (samples, ..., L) if samples."""
        shape = mu.shape if samples is None else (samples, *mu.shape)
        eps = torch.randn(shape, generator=generator, dtype=mu.dtype, device=mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    @staticmethod
    def posterior_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """log q(z|x), nats, summed over latent dimensions."""
        return diagonal_normal_log_prob(z, mu, logvar)

    def posterior_sampler(self, x: torch.Tensor) -> PosteriorSampler:
        """Encode x once; the result draws ``(z, log q(z|x))`` for any number of samples.

        ``sampler(S, generator)`` gives z ~ q(z|x) by reparameterization, (S, B, L), and
        log q(z|x) in nats, (S, B); ``sampler(None)`` gives one draw without the sample axis.
        Every latent-variable model in vaekit has this method; the objectives only use it,
        :meth:`log_prior` and :meth:`log_likelihood`. With a flow, z = f_T(...f_1(z_0)) for z_0 ~ N(mu, sigma^2)
        and log q(z|x) = log N(z_0; mu, sigma^2) - sum_t log|det df_t/dz_{t-1}|.
        """
        flow = getattr(self, "flow", None)  # getattr: vaekit.exact.LinearGaussian borrows this method
        context: torch.Tensor | None = None
        if flow is None:
            mu, logvar = self.encode(x)
        else:
            mu, logvar, context = self.encode_all(x)

        def draw(samples: int | None = None, generator: torch.Generator | None = None):
            z = self.reparameterize(mu, logvar, samples, generator)
            log_q = self.posterior_log_prob(z, mu, logvar)
            if flow is None:
                return z, log_q
            z, log_det = flow(z, context)
            return z, log_q - log_det

        return draw

    def rsample_posterior(self, x: torch.Tensor, samples: int | None = None,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ q(z|x) (reparameterized) and log q(z|x), nats: (S, B, L) and (S, B)."""
        return self.posterior_sampler(x)(samples, generator)

    @property
    def has_analytic_kl(self) -> bool:
        """Whether KL(q(z|x) || p(z)) has a closed form (diagonal Gaussian q without a flow, standard normal p)."""
        # getattr: vaekit.exact.LinearGaussian borrows this property and has no flow
        return getattr(self, "flow", None) is None and bool(self.prior.has_analytic_kl)

    # -- the model p(z) p(x|z) --------------------------------------------------------------
    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), nats, summed over latent dimensions; z (..., L) -> (...)."""
        return self.prior.log_prob(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The parameters of p(x|z) (e.g. Bernoulli logits), shape (..., P * D)."""
        return self.decoder(z)

    def observation(self, z: torch.Tensor) -> Distribution:
        """p(x|z) as a ``torch.distributions`` object over flat images."""
        return self.likelihood.distribution(self.decode(z))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z), nats; x (B, D), z (..., B, L) -> (..., B)."""
        return self.likelihood.log_prob(x, self.decode(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Samples:
        """z ~ p(z), then the decoded means E[x|z] and draws x ~ p(x|z), as (n, C, H, W) images."""
        z = self.prior.sample(n, generator=generator)
        params = self.decode(z)
        shape = (n, *self.config.shape)
        means = self.likelihood.mean(params).reshape(shape)
        draws = self.likelihood.sample(params, generator=generator).reshape(shape)
        return Samples(z, means, draws)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = mu(x)]: the decoded posterior mean (with a flow, z = f_T(...f_1(mu))), shaped like x."""
        mu, _, context = self.encode_all(x)
        z = mu if self.flow is None else self.flow(mu, context)[0]
        return self.likelihood.mean(self.decode(z)).reshape(x.shape)

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors`` and ``model.json`` into ``directory`` (atomically)."""
        from vaekit.checkpoint import save_model

        save_model(self, Path(directory))

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> VAE:
        """Load a trained model from a run directory (its best weights) or a model directory.

        Loads safetensors only: no code is executed.
        """
        from vaekit.checkpoint import load_model

        return load_model(Path(path), map_location=map_location)

    @classmethod
    def from_config_dict(cls, d: dict[str, Any]) -> VAE:
        return cls(ModelConfig(**d))

    def extra_repr(self) -> str:
        return json.dumps({"latent": self.config.latent, "arch": self.config.arch,
                           "prior": self.config.prior["name"], "likelihood": self.config.likelihood["name"],
                           **({"flow": self.config.flow, "flow_steps": self.config.flow_steps} if self.config.flow
                              else {})})


Vae = VAE


def build_model(config: ModelConfig) -> nn.Module:
    """The model a :class:`ModelConfig` describes: a :class:`VAE` (one stochastic layer) or a
    hierarchical VAE (``levels=2``, :mod:`vaekit.hierarchical`)."""
    if config.levels == 1:
        return VAE(config)
    from vaekit.hierarchical import HierarchicalVAE

    return HierarchicalVAE(config)
