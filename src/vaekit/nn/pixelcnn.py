"""Masked convolutions and the PixelCNN network (van den Oord et al., 2016) used by the autoregressive
likelihood of :mod:`vaekit.components.pixelcnn`: logits that depend on the pixels before each one in raster
order and on a conditioning feature map.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


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


class CategoricalPixelCNN(nn.Module):
    """l = CategoricalPixelCNN(z): K logits at each position of a grid of K-way categorical variables (a VQ-VAE's
    code grid), from the one-hot grid z (N, K, h, w) before each position in raster order:

        h_1 = relu(A(z)),  h_{k+1} = h_k + relu(B_k(h_k)),  l = B_out(h_L)      (A, B: masked k x k convolutions)

    so that log p(z) = sum_(i,j) log softmax(l_ij)[z_ij] is an autoregressive distribution over the whole grid
    (mask A hides the position itself, as in :class:`PixelCNN` with one image channel)."""

    def __init__(self, classes: int, channels: int = 64, layers: int = 6, kernel: int = 3):
        super().__init__()
        self.classes, self.channels, self.layers, self.kernel = classes, channels, layers, kernel
        self.first = MaskedConv2d(classes, channels, kernel, "A")
        self.hidden = nn.ModuleList(MaskedConv2d(channels, channels, kernel, "B") for _ in range(layers - 1))
        self.out = MaskedConv2d(channels, classes, 1, "B")
        self.act = nn.ReLU()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.act(self.first(z))
        for conv in self.hidden:
            h = h + self.act(conv(h))
        return self.out(h)
