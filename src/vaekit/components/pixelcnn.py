"""An autoregressive observation model: a conditional PixelCNN over binary pixels (PixelVAE, Gulrajani et
al. 2017; the PixelHVAE of Tomczak & Welling 2018).

For an image x in {0, 1}^(C x H x W), with pixels ordered by row, then column, then channel
(the raster order of van den Oord et al. 2016; for C = 1 it is the flat index order d = i W + j),

    p(x|z) = prod_d Bernoulli(x_d ; sigmoid(l_d)),   l = PixelCNN(x, c),   c = decoder(z)

    log p(x|z) = sum_d [x_d l_d - softplus(l_d)]     (nats)

where l_d depends only on the pixels x_<d before d and on the conditioning c: the decoder's P * D
outputs reshaped to P * C feature maps (P = ``params``, the likelihood's ``params_per_pixel``).
The causal structure comes from masked convolutions: mask A on the first layer (the centre pixel is
hidden), mask B on the later ones (the centre is visible, it carries only the past). The conditioning
enters every layer through a 1x1 convolution, and the logits also through a direct 1x1 path, so a
PixelCNN whose masked weights are zero is the plain Bernoulli decoder.

Teacher forcing makes log p(x|z) one parallel pass; sampling is sequential: one pass per pixel, on
the cone of pixels that can reach it (``radius`` = layers * (kernel // 2) rows above and columns to
either side for the input, shrinking by kernel // 2 per layer). There is no closed form for E[x|z]:
:meth:`PixelCNNLikelihood.mean` returns the conditional probabilities sigmoid(l_d) along sampled
sequences, an unbiased estimate of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from vaekit.components.base import LIKELIHOODS, Likelihood
from vaekit.nn.pixelcnn import PixelCNN


class PixelCNNDistribution(Distribution):
    """p(x|z) of a :class:`PixelCNNLikelihood` as a ``torch.distributions`` object with event shape (C, H, W)."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 3)
    has_rsample = False

    def __init__(self, likelihood: PixelCNNLikelihood, params: torch.Tensor):
        self.likelihood, self.params = likelihood, params
        super().__init__(batch_shape=params.shape[:-3], event_shape=torch.Size(likelihood.shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.likelihood.log_prob(value, self.params)

    def sample(self, sample_shape: torch.Size | Sequence[int] = (),
               generator: torch.Generator | None = None) -> torch.Tensor:
        params = self.params.expand(*sample_shape, *self.params.shape)
        return self.likelihood.sample(params, generator=generator)

    @property
    def mean(self) -> torch.Tensor:
        return self.likelihood.mean(self.params)


@dataclass
class PixelCNNConfig:
    params: int = 4  # decoder outputs (conditioning channels) per pixel
    layers: int = 6  # masked convolutions
    channels: int = 64  # features per layer
    kernel: int = 3  # odd kernel size of the masked convolutions

    def __post_init__(self) -> None:
        for key, high in (("params", 256), ("layers", 64), ("channels", 4096)):
            value = getattr(self, key)
            if not 1 <= value <= high:
                raise ValueError(f"{key} must be an integer from 1 to {high}, got {value}")
        if self.kernel < 3 or self.kernel % 2 != 1 or self.kernel > 15:
            raise ValueError(f"kernel must be an odd integer from 3 to 15 (3, 5, 7, ...), got {self.kernel}")


@LIKELIHOODS.register("pixelcnn", PixelCNNConfig, help="conditional PixelCNN over binary pixels (autoregressive)")
class PixelCNNLikelihood(Likelihood):
    """p(x|z) = prod_d Bernoulli(x_d ; sigmoid(l_d)), l = PixelCNN(x, c): binary pixels, autoregressive.

    ``shape``: the image (C, H, W); ``params``: conditioning channels per image channel (the decoder
    gives (P * C, H, W) numbers); ``layers`` masked k x k convolutions of ``channels`` features, ``kernel`` = k.
    """

    mean_is_estimate = True  # E[x|z] has no closed form: :meth:`mean` is a Monte Carlo estimate
    levels = 2  # a probability of binary pixels

    @staticmethod
    def example_settings() -> dict[str, int]:
        """Flat settings of a tiny run (as :meth:`vaekit.models.families.Family.example_settings`): 2 layers of 8
        features, where the default 6 x 64 makes every decoder pass of a small test costly."""
        return {"pixelcnn_layers": 2, "pixelcnn_channels": 8}

    def __init__(self, shape: Sequence[int], params: int = 4, layers: int = 6, channels: int = 64,
                 kernel: int = 3):
        super().__init__(tuple(shape))
        if len(self.shape) != 3:
            raise ValueError(f"the pixelcnn likelihood needs images (C, H, W), got shape {self.shape}")
        for key, value in (("params", params), ("layers", layers), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"pixelcnn {key} must be an integer >= 1, got {value!r}")
        if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 3 or kernel % 2 != 1:
            raise ValueError(f"pixelcnn kernel must be an odd integer >= 3, got {kernel!r}")
        self.params_per_pixel = params
        self.params = params
        self.layers, self.channels, self.kernel = layers, channels, kernel
        self.net = PixelCNN(self.shape[0], params * self.shape[0], channels, layers, kernel)

    # -- shapes -------------------------------------------------------------------------------
    def _images(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Size, torch.Tensor, torch.Tensor]:
        """Broadcast x (..., C, H, W) against params (..., P*C, H, W): lead shape, x (N, C, H, W), c (N, P*C, H, W)."""
        c, h, w = self.shape
        if tuple(params.shape[-3:]) != self.param_shape:
            raise ValueError(f"pixelcnn expects decoder outputs of shape {self.param_shape}, "
                             f"got {tuple(params.shape[-3:])}")
        if tuple(x.shape[-3:]) != self.shape:
            raise ValueError(f"pixelcnn expects images of shape {self.shape}, got {tuple(x.shape)}")
        lead = torch.broadcast_shapes(x.shape[:-3], params.shape[:-3])
        xs = x.to(params.dtype).expand(*lead, c, h, w).reshape(-1, c, h, w)
        cs = params.expand(*lead, *self.param_shape).reshape(-1, *self.param_shape)
        return lead, xs, cs

    def logits(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """l_d = PixelCNN(x, c)_d, (..., C, H, W): the log-odds of x_d = 1 given x_<d and z."""
        lead, xs, cs = self._images(x, params)
        return self.net(xs, cs).reshape(*lead, *self.shape)

    # -- the Likelihood interface ---------------------------------------------------------------
    def forward(self, params: torch.Tensor) -> PixelCNNDistribution:
        return PixelCNNDistribution(self, params)

    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = sum_d [x_d l_d - softplus(l_d)], nats, in one teacher-forced pass.

        x (N, C, H, W) broadcasts against params (S, N, P*C, H, W) -> (S, N).
        """
        lead, xs, cs = self._images(x, params)
        logits = self.net(xs, cs)
        return -F.binary_cross_entropy_with_logits(logits, xs, reduction="none").flatten(1).sum(-1).reshape(lead)

    @torch.no_grad()
    def sample_with_probs(self, params: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x ~ p(x|z) pixel by pixel in raster order, and p_d = sigmoid(l_d(x_<d)) along that draw;
        (..., C, H, W) each. One network pass per pixel (and per channel), on the window that reaches it."""
        c_img, h, w = self.shape
        lead = params.shape[:-3]
        _, x, cs = self._images(params.new_zeros(self.shape), params)
        x = x.clone()
        probs = torch.zeros_like(x)
        cone = self.net.padded(x, cs)
        n, r = x.shape[0], self.net.radius
        for i in range(h):
            for j in range(w):
                for ch in range(c_img):
                    p = torch.sigmoid(self.net.cone_logits(cone, i, j)[:, ch])
                    u = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype)
                    cone.x[:, ch, i + r, j + r] = (u < p).to(x.dtype)
                    probs[:, ch, i, j] = p
        x = cone.x[:, :, r:, r : r + w]
        return x.reshape(*lead, *self.shape), probs.reshape(*lead, *self.shape)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z): sequential, D passes; reproducible with ``generator``."""
        return self.sample_with_probs(params, generator)[0]

    def mean(self, params: torch.Tensor, samples: int = 1, seed: int = 0) -> torch.Tensor:
        """An estimate of E[x_d|z] = E_{x_<d ~ p}[sigmoid(l_d(x_<d))] (no closed form): the probabilities
        sigmoid(l_d) along ``samples`` sequences x ~ p(x|z), averaged (unbiased, and of lower variance than
        averaging the draws x_d themselves). Deterministic: the sequences come from a generator seeded
        with ``seed``, not from the global random state."""
        gen = torch.Generator(device=params.device).manual_seed(int(seed))
        total = params.new_zeros(*params.shape[:-3], *self.shape)
        for _ in range(max(1, int(samples))):
            total += self.sample_with_probs(params, gen)[1]
        return total / max(1, int(samples))
