"""The VQ-VAE (van den Oord et al., 2017): a conv encoder's grid of vectors, quantized to the nearest of K codebook
vectors (:mod:`vaekit.components.quantizer`), decoded by the transposed conv network; a prior over the code grid
fitted afterwards.

As a latent-variable model, z is the grid of G = h w codes (one-hot, K values each), q(z|x) the point mass on the
codes of x (entropy 0), p(x|z) the likelihood of the decoded codebook vectors and p(z) a prior over grids:

    ELBO(x) = log p(x | z_q(x)) + log p(z_q(x))  <=  log p(x)                      (nats)

While the autoencoder trains, p(z) is uniform, log p(z) = -G log K, a constant. Then, as in the paper, a PixelCNN
over the codes (:class:`~vaekit.components.quantizer.PixelCNNCodePrior`) is fitted to the codes of the training set
with the autoencoder fixed: ``vaekit train --config RUN/config.json --prior-of RUN --out RUN-prior`` (the family's
``prior_of``), or :func:`prior_stage` and :func:`vaekit.fit` in Python. Every figure says which prior it used.

One file registers the model (``model.json`` kind ``vqvae``) and the family (``--family vqvae --codes K --code-dim
D``, with ``--vq-commitment``, ``--vq-ema``, ``--vq-decay``, ``--vq-epsilon``, ``--prior-of RUN`` and the prior's
``--vq-prior-channels``, ``--vq-prior-layers``, ``--vq-prior-kernel``); its objective is
:mod:`vaekit.objectives.vqvae`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from vaekit.components.base import LIKELIHOODS, Likelihood
from vaekit.components.quantizer import (
    CodeGridDistribution,
    CodePixelCNNConfig,
    OneHotPointMass,
    Quantized,
    QuantizerConfig,
    VectorQuantizer,
    code_prior,
    one_hot_grid,
)
from vaekit.errors import ConfigError
from vaekit.models.base import LatentVariableModel, ShapeError, register_model
from vaekit.models.families import FAMILIES, Family
from vaekit.models.persistence import MAX_PIXELS, Persistent, load_model
from vaekit.models.vae import make_component
from vaekit.nn import ACTIVATIONS, GridDecoder, GridEncoder

#: The keys of a ``model.json`` of kind ``vqvae``.
SPEC_KEYS = frozenset({"format", "model", "shape", "codes", "code_dim", "commitment", "ema", "decay", "epsilon",
                       "channels", "activation", "likelihood", "prior"})


def _parameters(shape: Sequence[int], channels: Sequence[int], codes: int, code_dim: int, params: int,
                prior: dict[str, Any]) -> int:
    """About how many parameters a VQ-VAE of these sizes has (4x4 convolutions both ways, the codebook, the
    prior's masked convolutions): what is checked against the memory budget before anything is built."""
    widths = [int(shape[0]), *channels]
    convs = sum(16 * a * b + b for a, b in zip(widths, widths[1:]))
    total = 2 * convs + 2 * code_dim * channels[-1] + 16 * channels[0] * params * shape[0] + codes * code_dim
    if prior.get("name") == "pixelcnn":
        ch, k2 = int(prior.get("channels", 64)), int(prior.get("kernel", 3)) ** 2
        total += codes * ch * k2 + (int(prior.get("layers", 6)) - 1) * ch * ch * k2 + ch * codes
    return total


@register_model("vqvae")
class VQVAE(Persistent, LatentVariableModel):
    """A VQ-VAE for images of ``shape`` (C, H, W): the encoder's grid of ``code_dim`` vectors, a quantizer of
    ``codes`` codebook vectors (``commitment`` beta; ``ema`` codebook with ``decay`` and ``epsilon``), the conv
    networks of ``channels`` (stride-2 layers) and ``activation``, a registered ``likelihood`` and a code ``prior``
    ({"name": "uniform"} or {"name": "pixelcnn", "channels", "layers", "kernel"})."""

    condition = 0
    noun = "VQ-VAE"

    def __init__(self, shape: Sequence[int] = (1, 28, 28), codes: int = 512, code_dim: int = 64, *,
                 commitment: float = 0.25, ema: bool = False, decay: float = 0.99, epsilon: float = 1e-5,
                 channels: Sequence[int] = (32, 64), activation: str = "relu", likelihood: Any = "bernoulli",
                 prior: dict[str, Any] | None = None):
        super().__init__()
        shape, channels = tuple(int(s) for s in shape), [int(c) for c in channels]
        if len(shape) != 3 or min(shape) < 1 or math.prod(shape) > MAX_PIXELS:
            raise ShapeError(f"a VQ-VAE takes images (C, H, W) of positive sizes, got shape {shape}")
        if not channels or min(channels) < 1 or min(shape[1:]) < 2:
            raise ShapeError(f"channels must be positive sizes and images at least 2x2; got {channels}, {shape}")
        if activation not in ACTIVATIONS and activation != "gated":
            raise ConfigError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)} or gated")
        QuantizerConfig(codes, code_dim, commitment, ema, decay, epsilon)  # range checks before any allocation
        prior = dict(prior or {"name": "uniform"})
        self.shape, self.channels, self.activation = shape, channels, activation
        self.likelihood: Likelihood = make_component(LIKELIHOODS, likelihood, Likelihood, shape=shape,
                                                     latent=code_dim)
        self._check_memory(codes, code_dim, prior)
        self.encoder = GridEncoder(shape, code_dim, channels, activation)
        self.grid = self.encoder.grid
        self.quantizer = VectorQuantizer(codes, code_dim, commitment, ema, decay, epsilon)
        self.decoder = GridDecoder(code_dim, shape, self.likelihood.param_shape[0], list(reversed(channels)),
                                   activation)
        self.prior = code_prior(prior, codes, self.grid)
        self.autoencoder_frozen = False

    def _check_memory(self, codes: int, code_dim: int, prior: dict[str, Any]) -> None:
        from vaekit.resources import check_parameters

        count = _parameters(self.shape, self.channels, codes, code_dim, self.likelihood.params_per_pixel, prior)
        try:
            check_parameters(count, "this VQ-VAE", "codes, code_dim, the conv channels or the prior's sizes")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    # -- the code grid ------------------------------------------------------------------------------
    @property
    def codes(self) -> int:
        return self.quantizer.codes

    @property
    def latent_size(self) -> int:
        """G K: z is the flat one-hot code grid."""
        return math.prod(self.grid) * self.codes

    @property
    def default_objective(self) -> str:
        return "vqvae"

    @property
    def supports_surgery(self) -> bool:
        return False  # q(z|x) is a point mass on one grid: no aggregate posterior density to estimate

    @property
    def one_hot_codes(self) -> bool:
        """q(z|x) is a point mass on one-hot codes: the ELBO is log p(x|z_q) + log p(z_q), exactly, and every
        importance weight of q is the same (the evaluator reports that bound, ``vq_elbo``)."""
        return True

    @property
    def code_prior_name(self) -> str:
        return self.prior.name

    def quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """(z_e(x) (N, D, h, w), the quantizer's pass over it) for images x (N, C, H, W) (flat (N, D') reshaped)."""
        z_e = self.encoder(self.as_data(x))
        return z_e, self.quantizer(z_e)

    def log_code_prior(self, indices: torch.Tensor) -> torch.Tensor:
        """log p(z) of code grids (N, h, w), (N,) nats, under the model's prior (uniform or the fitted PixelCNN)."""
        return self.prior.log_prob(indices)

    def decode_grid(self, z_q: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters (N, *param_shape) for a grid of vectors z_q (N, D, h, w)."""
        return self.decoder(z_q)

    # -- the protocol -------------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor, y: Any = None) -> Distribution:
        """q(z|x): the point mass on the one-hot codes of x, (N, G K)."""
        self.conditioning(y)
        indices = self.quantizer.nearest(self.encoder(self.as_data(x)))
        return OneHotPointMass(one_hot_grid(indices, self.codes).to(self.quantizer.codebook.dtype))

    def prior_distribution(self) -> Distribution:
        """p(z) over flat one-hot code grids (uniform, or the fitted PixelCNN)."""
        anchor = self.quantizer.codebook
        return CodeGridDistribution(self.prior, anchor.device, anchor.dtype)

    def decode(self, z: torch.Tensor, y: Any = None) -> torch.Tensor:
        """The likelihood's parameters for codes z (..., G K) (one-hot, or soft: a mix of codebook vectors)."""
        self.conditioning(y)
        if z.shape[-1] != self.latent_size:
            raise ShapeError(f"codes of this VQ-VAE are ({self.latent_size},) one-hot grids ({self.grid[0]} x "
                             f"{self.grid[1]} positions of {self.codes} codes); got a batch of shape {tuple(z.shape)}")
        lead = z.shape[:-1]
        grid = z.reshape(-1, *self.grid, self.codes)
        out = self.decoder(self.quantizer.lookup(grid))
        return out.reshape(*lead, *self.likelihood.param_shape)

    def inference_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters (the codebook belongs to p(x|z) as much as to q(z|x))."""
        return list(self.encoder.parameters())

    # -- the prior stage ----------------------------------------------------------------------------
    def with_pixelcnn_prior(self, channels: int = 64, layers: int = 6, kernel: int = 3) -> VQVAE:
        """This model with a new (untrained) PixelCNN prior over its codes and everything else fixed (no gradient,
        no moving-average updates): what fitting the prior trains. Returns the model itself."""
        spec = {"name": "pixelcnn", **CodePixelCNNConfig(channels, layers, kernel).__dict__}
        self._check_memory(self.codes, self.quantizer.code_dim, spec)
        device = self.quantizer.codebook.device
        self.prior = code_prior(spec, self.codes, self.grid).to(device)
        for module in (self.encoder, self.decoder, self.quantizer, self.likelihood):
            module.requires_grad_(False)
        self.autoencoder_frozen = True
        return self

    # -- persistence --------------------------------------------------------------------------------
    def own_description(self) -> dict[str, Any]:
        """The settings of ``model.json`` (after its format and kind)."""
        return {"shape": list(self.shape), **self.quantizer.config(), "channels": list(self.channels),
                "activation": self.activation, "likelihood": self.likelihood.config(), "prior": self.prior.config()}

    @staticmethod
    def check_spec(spec: dict[str, Any]) -> dict[str, Any]:
        """Validate a description read from a file (the keys and values :meth:`describe` writes); ValueError."""
        from vaekit.components import kinds
        from vaekit.models.persistence import _counts

        unknown, missing = sorted(set(spec) - SPEC_KEYS), sorted(SPEC_KEYS - set(spec))
        if unknown or missing:
            raise ValueError(f"unknown settings {unknown[:3]}" if unknown else f"missing settings {missing[:3]}")
        shape = _counts(spec["shape"], "shape")
        if len(shape) != 3 or math.prod(shape) > MAX_PIXELS:
            raise ValueError(f"shape must be (C, H, W) of at most {MAX_PIXELS} values, got {shape}")
        _counts(spec["channels"], "channels")
        if spec["activation"] not in ACTIVATIONS and spec["activation"] != "gated":
            raise ValueError(f"unknown activation {spec['activation']!r}")
        QuantizerConfig(*(spec[k] for k in ("codes", "code_dim", "commitment", "ema", "decay", "epsilon")))
        if not isinstance(spec["likelihood"], dict) or not isinstance(spec["prior"], dict):
            raise ValueError("the likelihood and the prior must be tables with a name")
        spec["likelihood"] = kinds()["likelihood"].spec(spec["likelihood"])
        prior = dict(spec["prior"])
        if prior.get("name") == "pixelcnn":
            settings = {k: v for k, v in prior.items() if k != "name"}
            prior = {"name": "pixelcnn", **CodePixelCNNConfig(**settings).__dict__}
        elif prior != {"name": "uniform"}:
            raise ValueError(f"the code prior must be uniform or pixelcnn, got {prior!r}")
        spec["prior"] = prior
        return spec

    @staticmethod
    def spec_parameters(spec: dict[str, Any]) -> int:
        """About how many parameters a description implies (checked before anything is built); the decoder's
        outputs per pixel bounded by the likelihood's ``levels``, ``params`` or 10 per mixture component."""
        lik = spec["likelihood"]
        per_pixel = max([2, int(lik.get("levels", 0)), int(lik.get("params", 0)), 10 * int(lik.get("mixtures", 0))])
        return _parameters(spec["shape"], spec["channels"], int(spec["codes"]), int(spec["code_dim"]), per_pixel,
                           spec["prior"])

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> VQVAE:
        return cls(tuple(spec["shape"]), int(spec["codes"]), int(spec["code_dim"]), commitment=spec["commitment"],
                   ema=spec["ema"], decay=spec["decay"], epsilon=spec["epsilon"], channels=spec["channels"],
                   activation=spec["activation"], likelihood=spec["likelihood"], prior=spec["prior"])

    def extra_repr(self) -> str:
        return (f"shape={list(self.shape)}, grid={list(self.grid)}, codes={self.codes}, "
                f"code_dim={self.quantizer.code_dim}, prior={self.prior.name}")


def _check_autoencoder_run(run: str | Path) -> None:
    """Refuse, from its ``model.json`` alone, a ``prior_of`` run that is no VQ-VAE trained with the uniform prior."""
    from vaekit.errors import VaekitError
    from vaekit.models.persistence import read_spec

    if not Path(run).is_dir():
        raise ConfigError(f"prior_of: run directory {run} not found; give a VQ-VAE run of 'vaekit train --family "
                          "vqvae'")
    try:
        spec, _ = read_spec(Path(run))
    except VaekitError as exc:
        raise ConfigError(f"prior_of: {exc}") from None
    if spec.get("model") != "vqvae":
        raise ConfigError(f"prior_of: {run} holds a {spec.get('model')} model, not a VQ-VAE (--family vqvae)")
    if spec["prior"]["name"] != "uniform":
        raise ConfigError(f"prior_of: {run} has a fitted {spec['prior']['name']} prior already; give the run of the "
                          "autoencoder (trained with the uniform prior)")


def prior_stage(run: str | Path, channels: int = 64, layers: int = 6, kernel: int = 3) -> VQVAE:
    """The VQ-VAE of ``run`` (its best weights) with a new PixelCNN prior over its codes, the rest fixed: train it
    with :func:`vaekit.fit` on the same data to fit the prior (``vaekit train --prior-of RUN`` does the same)."""
    _check_autoencoder_run(run)
    model = load_model(Path(run))
    assert isinstance(model, VQVAE)
    return model.with_pixelcnn_prior(channels, layers, kernel)


@dataclass
class VQVAEConfig:
    codes: int = 512  # K: codebook vectors
    code_dim: int = 64  # D: dimensions of each (the encoder's output channels)
    commitment: float = 0.25  # beta of the commitment loss
    ema: bool = False  # codebook by exponential moving averages instead of the codebook loss
    decay: float = 0.99  # gamma of the moving averages
    epsilon: float = 1e-5  # their Laplace smoothing
    prior_of: str | None = None  # a trained VQ-VAE run: fit a PixelCNN prior over its codes, the rest fixed
    prior_channels: int = 64  # the PixelCNN prior's features per layer
    prior_layers: int = 6  # its masked convolutions
    prior_kernel: int = 3  # their odd kernel size

    def __post_init__(self) -> None:
        QuantizerConfig(self.codes, self.code_dim, self.commitment, self.ema, self.decay, self.epsilon)
        CodePixelCNNConfig(self.prior_channels, self.prior_layers, self.prior_kernel)
        if self.prior_of is not None and (not isinstance(self.prior_of, str) or not self.prior_of):
            raise ValueError(f"prior_of must be a run directory, got {self.prior_of!r}")


@FAMILIES.register("vqvae", VQVAEConfig, prefix="vq",
                   flags={"codes": "codes", "code_dim": "code_dim", "prior_of": "prior_of"},
                   help="VQ-VAE: conv networks and a codebook of --codes K vectors of --code-dim D; --prior-of RUN "
                   "fits a PixelCNN prior over a trained one's codes")
class VQVAEFamily(Family):
    """Builds a :class:`VQVAE` of the settings' conv channels and activation, or with ``prior_of`` the VQ-VAE of
    that run with a PixelCNN prior to fit (:func:`prior_stage`)."""

    def __init__(self, **settings: Any):
        self.settings = VQVAEConfig(**settings)

    @staticmethod
    def defaults(settings: dict[str, Any]) -> None:
        settings.setdefault("model", "conv")

    def check(self, cfg: Any) -> None:
        wrong = [f"{key} {getattr(cfg, key)!r}" for key, ok in (
            ("levels", 1), ("model", "conv"), ("posterior", "gaussian"), ("prior", "standard"), ("k", 1),
            ("estimator", None), ("conditional", False)) if getattr(cfg, key) != ok]
        if cfg.objective not in ("elbo", "vqvae"):
            wrong.append(f"objective {cfg.objective}")
        if wrong:
            raise ConfigError(f"family vqvae is conv networks, a codebook and its own objective (q(z|x) is a point "
                              f"mass on its codes); leave out {', '.join(wrong)}")
        if self.settings.prior_of is not None:
            _check_autoencoder_run(self.settings.prior_of)

    def build(self, cfg: Any, shape: tuple[int, ...], likelihood: dict[str, Any],
              condition: int = 0) -> LatentVariableModel:
        s = self.settings
        if s.prior_of is not None:
            model = prior_stage(s.prior_of, s.prior_channels, s.prior_layers, s.prior_kernel)
            if tuple(model.shape) != tuple(shape):
                raise ConfigError(f"prior_of: {s.prior_of} holds a VQ-VAE for images of shape {model.shape}, not "
                                  f"{tuple(shape)}; give the data set it was trained on (--config RUN/config.json)")
            return model
        return VQVAE(shape, s.codes, s.code_dim, commitment=s.commitment, ema=s.ema, decay=s.decay,
                     epsilon=s.epsilon, channels=cfg.conv_channels, activation=cfg.activation, likelihood=likelihood)
