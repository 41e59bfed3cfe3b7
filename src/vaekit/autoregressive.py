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

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from vaekit.likelihoods import LIKELIHOODS, Likelihood


def _channel_groups(n: int, image_channels: int) -> torch.Tensor:
    """The image channel each of n feature channels belongs to (contiguous blocks)."""
    return torch.arange(n) * image_channels // n


class MaskedConv2d(nn.Conv2d):
    """A 'same' convolution whose kernel sees only the pixels before the centre in raster order.

    Mask A (first layer): at the centre, feature group g_in reaches group g_out only if g_in < g_out
    (for one image channel: the centre is hidden). Mask B: g_in <= g_out. Rows below the centre and
    pixels right of it on its row are always masked.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str,
                 image_channels: int = 1):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be A or B, got {mask_type!r}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.mask_type = mask_type
        k = kernel_size // 2
        mask = torch.zeros(out_channels, in_channels, kernel_size, kernel_size)
        mask[:, :, :k, :] = 1.0  # rows above
        mask[:, :, k, :k] = 1.0  # left of the centre on its row
        g_in = _channel_groups(in_channels, image_channels)
        g_out = _channel_groups(out_channels, image_channels)
        allowed = g_in[None, :] < g_out[:, None] if mask_type == "A" else g_in[None, :] <= g_out[:, None]
        mask[:, :, k, k] = allowed.to(mask.dtype)
        self.register_buffer("mask", mask, persistent=False)  # rebuilt from the config, not saved

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """l = PixelCNN(x, c): C logits per pixel from a binary image x (N, C, H, W) and features c (N, Q, H, W).

    h_1 = relu(A(x) + V_1 c),  h_{k+1} = h_k + relu(B_k(h_k) + V_{k+1} c),  l = B_out(h_L) + V_out c
    (A, B: masked k x k convolutions; B_out: masked 1x1; V: 1x1 convolutions of the conditioning).
    """

    def __init__(self, image_channels: int, cond_channels: int, channels: int = 64, layers: int = 6,
                 kernel: int = 3):
        super().__init__()
        if channels < image_channels:
            raise ValueError(f"channels ({channels}) must be >= the image channels ({image_channels})")
        self.image_channels, self.channels, self.layers, self.kernel = image_channels, channels, layers, kernel
        c = image_channels
        self.first = MaskedConv2d(c, channels, kernel, "A", c)
        self.hidden = nn.ModuleList(MaskedConv2d(channels, channels, kernel, "B", c) for _ in range(layers - 1))
        self.out = MaskedConv2d(channels, c, 1, "B", c)
        # one 1x1 convolution gives the conditioning of every layer and of the logits
        self.condition = nn.Conv2d(cond_channels, layers * channels + c, 1)
        self.act = nn.ReLU()

    @property
    def radius(self) -> int:
        """How far (rows above, columns either side) a logit sees: layers * (kernel // 2)."""
        return self.layers * (self.kernel // 2)

    def trunk(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, h, w) from x and precomputed ``features = self.condition(c)`` on the same pixels."""
        split = [self.channels] * self.layers + [self.image_channels]
        cond = features.split(split, dim=1)
        h = self.act(self.first(x) + cond[0])
        for conv, v in zip(self.hidden, cond[1:-1]):
            h = h + self.act(conv(h) + v)
        return self.out(h) + cond[-1]

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.trunk(x, self.condition(c))

    def padded(self, x: torch.Tensor, c: torch.Tensor) -> Cone:
        """x and the conditioning c zero-padded by ``radius`` above and to both sides, for
        :meth:`cone_logits`; write sampled pixels into ``cone.x`` at (i + radius, j + radius)."""
        r = self.radius
        pad = (r, r, r, 0)
        inside = F.pad(x.new_ones(1, 1, *x.shape[-2:]), pad)
        # the rows below the centre are masked anyway: keep the upper rows of each kernel
        weights = [((conv.weight * conv.mask)[:, :, : self.kernel // 2 + 1], conv.bias)
                   for conv in (self.first, *self.hidden)]
        return Cone(F.pad(x, pad), F.pad(c, pad), inside, weights, self.out.weight * self.out.mask)

    def cone_logits(self, cone: Cone, i: int, j: int) -> torch.Tensor:
        """The C logits at pixel (i, j), (N, C), equal to ``self(x, c)[:, :, i, j]``, computed on the pixels
        that reach it only: layer l (of L) on the rows i - r_l..i and the columns j - r_l..j + r_l,
        r_l = (L - l) * (kernel // 2), by valid convolutions with the kernel's upper rows (the rest is masked)."""
        k2, r = self.kernel // 2, self.radius
        rows, cols = slice(i, i + r + 1), slice(j, j + 2 * r + 1)  # the input's cone, in padded coordinates
        h, inside = cone.x[:, :, rows, cols], cone.inside[:, :, rows, cols]
        features = self.condition(cone.c[:, :, rows, cols])  # local (r, r) is the pixel (i, j)
        for layer, (weight, bias) in enumerate(cone.weights):
            rl = (self.layers - 1 - layer) * k2
            here = (slice(None), slice(None), slice(r - rl, r + 1), slice(r - rl, r + rl + 1))
            lo = layer * self.channels
            a = F.conv2d(h, weight, bias) + features[:, lo : lo + self.channels][here]
            a = self.act(a) if layer == 0 else h[:, :, k2:, k2 : k2 + 2 * rl + 1] + self.act(a)
            h = a * inside[here]  # zero outside the image, as the full pass's padding
        out = F.conv2d(h, cone.out_weight, self.out.bias)[:, :, 0, 0]
        return out + features[:, self.layers * self.channels :, r, r]

    def pixel_logits(self, x: torch.Tensor, c: torch.Tensor, i: int, j: int) -> torch.Tensor:
        """The C logits at pixel (i, j), (N, C): ``self(x, c)[:, :, i, j]`` by :meth:`cone_logits`."""
        return self.cone_logits(self.padded(x, c), i, j)


class Cone(NamedTuple):
    """Padded inputs and masked weights for :meth:`PixelCNN.cone_logits`."""

    x: torch.Tensor
    c: torch.Tensor
    inside: torch.Tensor
    weights: list[tuple[torch.Tensor, torch.Tensor | None]]
    out_weight: torch.Tensor


class PixelCNNDistribution(Distribution):
    """p(x|z) of a :class:`PixelCNNLikelihood` as a ``torch.distributions`` object with event shape (D,)."""

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)
    has_rsample = False

    def __init__(self, likelihood: PixelCNNLikelihood, params: torch.Tensor):
        self.likelihood, self.params = likelihood, params
        d = math.prod(likelihood.shape)
        super().__init__(batch_shape=params.shape[:-1], event_shape=torch.Size([d]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.likelihood.log_prob(value, self.params)

    def sample(self, sample_shape: torch.Size | Sequence[int] = (),
               generator: torch.Generator | None = None) -> torch.Tensor:
        params = self.params.expand(*sample_shape, *self.params.shape)
        return self.likelihood.sample(params, generator=generator)

    @property
    def mean(self) -> torch.Tensor:
        return self.likelihood.mean(self.params)


class PixelCNNLikelihood(Likelihood):
    """p(x|z) = prod_d Bernoulli(x_d ; sigmoid(l_d)), l = PixelCNN(x, c): binary pixels, autoregressive.

    ``shape``: the image (C, H, W); ``params``: conditioning channels per image channel (the decoder
    gives P * D numbers); ``layers`` masked k x k convolutions of ``channels`` features, ``kernel`` = k.
    """

    name = "pixelcnn"
    needs_shape = True
    mean_is_estimate = True  # E[x|z] has no closed form: :meth:`mean` is a Monte Carlo estimate

    def __init__(self, shape: Sequence[int], params: int = 4, layers: int = 6, channels: int = 64,
                 kernel: int = 3):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be (C, H, W) with positive sizes, got {shape}")
        for key, value in (("params", params), ("layers", layers), ("channels", channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"pixelcnn {key} must be an integer >= 1, got {value!r}")
        if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 3 or kernel % 2 != 1:
            raise ValueError(f"pixelcnn kernel must be an odd integer >= 3, got {kernel!r}")
        self.shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.params_per_pixel = params
        self.layers, self.channels, self.kernel = layers, channels, kernel
        self.net = PixelCNN(shape[0], params * shape[0], channels, layers, kernel)

    # -- shapes -------------------------------------------------------------------------------
    def _images(self, x: torch.Tensor, params: torch.Tensor) -> tuple[torch.Size, torch.Tensor, torch.Tensor]:
        """Broadcast x (..., D) against params (..., P*D): lead shape, x (N, C, H, W), c (N, P*C, H, W)."""
        c, h, w = self.shape
        d = c * h * w
        if params.shape[-1] != self.params_per_pixel * d:
            raise ValueError(f"pixelcnn expects {self.params_per_pixel} x {d} decoder outputs, got {params.shape[-1]}")
        if x.shape[-1] != d:
            raise ValueError(f"pixelcnn expects flat images of {d} pixels, got shape {tuple(x.shape)}")
        lead = torch.broadcast_shapes(x.shape[:-1], params.shape[:-1])
        xs = x.to(params.dtype).expand(*lead, d).reshape(-1, c, h, w)
        cs = params.expand(*lead, params.shape[-1]).reshape(-1, self.params_per_pixel * c, h, w)
        return lead, xs, cs

    def logits(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """l_d = PixelCNN(x, c)_d, flat (..., D): the log-odds of x_d = 1 given x_<d and z."""
        lead, xs, cs = self._images(x, params)
        return self.net(xs, cs).reshape(*lead, -1)

    # -- the Likelihood interface ---------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = sum_d [x_d l_d - softplus(l_d)], nats, in one teacher-forced pass.

        x (B, D) broadcasts against params (S, B, P*D) -> (S, B); x (B, D), params (B, P*D) -> (B,).
        """
        lead, xs, cs = self._images(x, params)
        logits = self.net(xs, cs)
        return -F.binary_cross_entropy_with_logits(logits, xs, reduction="none").flatten(1).sum(-1).reshape(lead)

    @torch.no_grad()
    def sample_with_probs(self, params: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x ~ p(x|z) pixel by pixel in raster order, and p_d = sigmoid(l_d(x_<d)) along that draw; (..., D) each.

        One network pass per pixel (and per channel), each on the window of pixels that reaches it.
        """
        c_img, h, w = self.shape
        lead = params.shape[:-1]
        _, x, cs = self._images(params.new_zeros(c_img * h * w), params)
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
        return x.reshape(*lead, -1), probs.reshape(*lead, -1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x ~ p(x|z): sequential, D passes; reproducible with ``generator``."""
        return self.sample_with_probs(params, generator)[0]

    def mean(self, params: torch.Tensor, samples: int = 1, seed: int = 0) -> torch.Tensor:
        """An estimate of E[x_d|z] = E_{x_<d ~ p}[sigmoid(l_d(x_<d))] (no closed form): the probabilities
        sigmoid(l_d) along ``samples`` sequences x ~ p(x|z), averaged (unbiased, and of lower variance than
        averaging the draws x_d themselves). Deterministic: the sequences come from a generator seeded
        with ``seed``, not from the global random state."""
        gen = torch.Generator(device=params.device).manual_seed(int(seed))
        total = torch.zeros_like(params[..., : math.prod(self.shape)])
        for _ in range(max(1, int(samples))):
            total += self.sample_with_probs(params, gen)[1]
        return total / max(1, int(samples))

    def distribution(self, params: torch.Tensor) -> Distribution:
        return PixelCNNDistribution(self, params)

    def config(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "params": self.params_per_pixel,
                "layers": self.layers, "channels": self.channels, "kernel": self.kernel}


LIKELIHOODS[PixelCNNLikelihood.name] = PixelCNNLikelihood
