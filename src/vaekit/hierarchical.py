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
Latent codes are concatenated as z = [z1, z2] (..., 2L); :meth:`HierarchicalVAE.log_prior` is
log p(z1|z2) + log p(z2), and the objectives in :mod:`vaekit.objectives` and the evaluator in
:mod:`vaekit.evaluate` use the model through the same interface as :class:`vaekit.model.VAE`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vaekit.likelihoods import Likelihood, make_likelihood
from vaekit.model import VAE, ModelConfig, PosteriorSampler, Samples
from vaekit.networks import MLP, ConvDecoder, ConvEncoder, GatedDense, _activation
from vaekit.priors import Prior, diagonal_normal_log_prob, make_prior


def dense_features(in_features: int, widths: Sequence[int], activation: str) -> nn.Sequential:
    """in -> [Linear -> activation] per width (or :class:`GatedDense` layers for ``"gated"``): hidden features."""
    layers: list[nn.Module] = []
    width = in_features
    for w in widths:
        layers += [GatedDense(width, w)] if activation == "gated" else [nn.Linear(width, w), _activation(activation)]
        width = w
    return nn.Sequential(*layers)


class HierarchicalVAE(nn.Module):
    """A VAE with two stochastic layers z1 (bottom) and z2 (top), both diagonal Gaussian in q and p(z1|z2).

    Networks for ``arch == "mlp"`` (H = ``config.hidden``, h = H[-1], activation ``config.activation``):
    q(z2|x): MLP D -> H -> 2L (``encoder``); q(z1|x, z2): [dense D -> H, dense L -> h] -> h -> 2L;
    p(z1|z2): MLP L -> H -> 2L; p(x|z1, z2): MLP 2L -> reversed(H) -> P*D (``decoder``).
    For ``arch == "conv"`` the networks on x are :class:`ConvEncoder` / :class:`ConvDecoder` (hidden width
    h = H[0]; gated convolutions for ``"gated"``) and the z-to-z maps are one-hidden-layer MLPs of width h.
    """

    def __init__(self, config: ModelConfig | None = None, **kwargs: Any):
        super().__init__()
        cfg = config if config is not None else ModelConfig(**{"levels": 2, **kwargs})
        if cfg.levels != 2:
            raise ValueError(f"HierarchicalVAE needs levels=2, got {cfg.levels}; use vaekit.model.build_model")
        self.config = cfg
        self.likelihood: Likelihood = make_likelihood(cfg.likelihood, shape=cfg.shape)
        d, latent = cfg.data_dim, cfg.latent
        act = cfg.activation
        if cfg.arch == "mlp":
            h = cfg.hidden[-1]
            self.encoder: nn.Module = MLP(d, cfg.hidden, 2 * latent, act)  # q(z2|x)
            self.q_z1_x: nn.Module = dense_features(d, cfg.hidden, act)
            self.p_z1: nn.Module = MLP(latent, cfg.hidden, 2 * latent, act)  # p(z1|z2)
            self.decoder: nn.Module = MLP(2 * latent, list(reversed(cfg.hidden)), self.likelihood.params_per_pixel * d,
                                          act)
        else:
            h = cfg.hidden[0] if cfg.hidden else 256
            self.encoder = ConvEncoder(cfg.shape, 2 * latent, cfg.conv_channels, h, act)
            if act == "gated":  # the encoder's last Linear (h -> 2h) + GLU is a GatedDense layer h -> h
                self.q_z1_x = nn.Sequential(ConvEncoder(cfg.shape, 2 * h, cfg.conv_channels, h, act), nn.GLU(dim=-1))
            else:
                self.q_z1_x = nn.Sequential(ConvEncoder(cfg.shape, h, cfg.conv_channels, h, act), _activation(act))
            self.p_z1 = MLP(latent, [h], 2 * latent, act)
            self.decoder = ConvDecoder(2 * latent, cfg.shape, self.likelihood.params_per_pixel * cfg.shape[0],
                                       list(reversed(cfg.conv_channels)), h, act)
        self.q_z1_z2: nn.Module = dense_features(latent, [h], act)
        self.q_z1_joint: nn.Module = MLP(2 * h, [h], 2 * latent, act)
        self.prior: Prior = make_prior(cfg.prior, latent, d)  # p(z2)
        if hasattr(self.prior, "bind"):
            self.prior.bind(self.encode_z2)

    def inference_parameters(self) -> list[nn.Parameter]:
        """The parameters of q(z2|x) q(z1|x,z2) alone; p(z2), p(z1|z2) and p(x|z) own the rest."""
        modules = (self.encoder, self.q_z1_x, self.q_z1_z2, self.q_z1_joint)
        return [p for m in modules for p in m.parameters()]

    # -- shapes -------------------------------------------------------------------------------
    @property
    def latent_size(self) -> int:
        """The size of a latent code z = [z1, z2]: 2L."""
        return 2 * self.config.latent

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() >= 3 and tuple(x.shape[-3:]) == self.config.shape:
            x = x.flatten(-3)
        return x

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z1, z2) from z = [z1, z2] (..., 2L)."""
        return z[..., : self.config.latent], z[..., self.config.latent :]

    def _gaussian(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar.clamp(min=self.config.min_logvar)

    # -- the guide q(z2|x) q(z1|x, z2) --------------------------------------------------------
    def encode_z2(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z2|x), each (..., L); the VampPrior's components use it on pseudo-inputs."""
        return self._gaussian(self.encoder(self._flat(x)))

    def features_x(self, x: torch.Tensor) -> torch.Tensor:
        """The features of x that q(z1|x, z2) sees, (..., h)."""
        return self.q_z1_x(self._flat(x))

    def encode_z1(self, features: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z1|x, z2) from ``features_x(x)`` (B, h) and z2 (..., B, L), each (..., B, L)."""
        fz = self.q_z1_z2(z2)
        return self._gaussian(self.q_z1_joint(torch.cat([features.expand(*fz.shape[:-1], -1), fz], -1)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A summary of q along its mean path, (mu, logvar) each (B, 2L) in the order [z1, z2]:
        z2's from q(z2|x), z1's from q(z1|x, z2 = mu_2(x)).

        Not the moments of the marginal q(z1|x) (a Gaussian mixture over z2); the mean path is what
        the active-unit count, reconstructions and interpolations use. Densities use :meth:`posterior_sampler`.
        """
        mu2, logvar2 = self.encode_z2(x)
        mu1, logvar1 = self.encode_z1(self.features_x(x), mu2)
        return torch.cat([mu1, mu2], -1), torch.cat([logvar1, logvar2], -1)

    def posterior_sampler(self, x: torch.Tensor) -> PosteriorSampler:
        """Encode x once; ``sampler(S, generator)`` draws z2 ~ q(z2|x) then z1 ~ q(z1|x, z2) and returns
        z = [z1, z2] (S, B, 2L) and log q(z1, z2|x) = log q(z2|x) + log q(z1|x, z2), nats (S, B);
        ``sampler(None)`` gives one draw without the sample axis."""
        mu2, logvar2 = self.encode_z2(x)
        feats = self.features_x(x)

        def draw(samples: int | None = None, generator: torch.Generator | None = None):
            z2 = VAE.reparameterize(mu2, logvar2, samples, generator)
            mu1, logvar1 = self.encode_z1(feats, z2)
            z1 = VAE.reparameterize(mu1, logvar1, None, generator)
            log_q = diagonal_normal_log_prob(z2, mu2, logvar2) + diagonal_normal_log_prob(z1, mu1, logvar1)
            return torch.cat([z1, z2], -1), log_q

        return draw

    # the same code as the VAE's, over z = [z1, z2]: draw (z, log q) from posterior_sampler; decode the
    # concatenated code; save through vaekit.checkpoint
    rsample_posterior = VAE.rsample_posterior
    decode = VAE.decode
    observation = VAE.observation
    save = VAE.save

    @property
    def has_analytic_kl(self) -> bool:
        """False: KL(q(z1, z2|x) || p(z1, z2)) has no closed form; the ELBO estimates it by Monte Carlo."""
        return False

    # -- the model p(z2) p(z1|z2) p(x|z1, z2) -------------------------------------------------
    def prior_z1(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of p(z1|z2), each (..., L)."""
        return self._gaussian(self.p_z1(z2))

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z1, z2) = log p(z2) + log N(z1; mu_p(z2), diag exp(logvar_p(z2))), nats; z (..., 2L) -> (...)."""
        z1, z2 = self.split(z)
        mu, logvar = self.prior_z1(z2)
        return self.prior.log_prob(z2) + diagonal_normal_log_prob(z1, mu, logvar)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z1, z2), nats; x (B, D), z (..., B, 2L) -> (..., B)."""
        return self.likelihood.log_prob(self._flat(x), self.decode(z))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Samples:
        """z2 ~ p(z2), z1 ~ p(z1|z2), then E[x|z] and x ~ p(x|z) as (n, C, H, W) images; z = [z1, z2]."""
        z2 = self.prior.sample(n, generator=generator)
        mu, logvar = self.prior_z1(z2)
        z = torch.cat([VAE.reparameterize(mu, logvar, None, generator), z2], -1)
        params = self.decode(z)
        shape = (n, *self.config.shape)
        means = self.likelihood.mean(params).reshape(shape)
        draws = self.likelihood.sample(params, generator=generator).reshape(shape)
        return Samples(z, means, draws)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = mean path of q] (see :meth:`encode`), shaped like x."""
        mu, _ = self.encode(x)
        return self.likelihood.mean(self.decode(mu)).reshape(x.shape)

    # -- persistence ----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> HierarchicalVAE:
        """Load a trained model from a run or model directory (safetensors only: no code is executed)."""
        from vaekit.checkpoint import load_model

        model = load_model(Path(path), map_location=map_location)
        if not isinstance(model, cls):
            from vaekit.errors import CheckpointError

            raise CheckpointError(f"{path} holds a {type(model).__name__}, not a two-level model; use vaekit.VAE.load")
        return model

    @classmethod
    def from_config_dict(cls, d: dict[str, Any]) -> HierarchicalVAE:
        return cls(ModelConfig(**d))

    def extra_repr(self) -> str:
        return json.dumps({"levels": 2, "latent": [self.config.latent, self.config.latent], "arch": self.config.arch,
                           "prior": self.config.prior["name"], "likelihood": self.config.likelihood["name"]})
