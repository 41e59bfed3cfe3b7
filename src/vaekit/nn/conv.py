"""Small convolutional encoders and decoders for images, plain or gated (Dauphin et al., 2017).

:class:`ConvEncoder`: (N, C, H, W) -> two stride-2 convolutions -> dense -> (N, out).
:class:`ConvDecoder`: (N, L) -> dense -> feature map -> stride-2 transposed convolutions -> (N, C', H, W).
Both take an optional conditioning vector y (N, condition), appended to the dense layers' input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from vaekit.nn.dense import GatedDense, _Gated, activation


class GatedConv2d(_Gated):
    """A gated convolution (Dauphin et al., 2017; Tomczak & Welling's convHVAE):
    h = (W * x + b) * sigmoid(V * x + c), with * a 2-D convolution (``nn.Conv2d`` arguments)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.h = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.g = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)


class GatedConvTranspose2d(_Gated):
    """A gated transposed convolution: h = (W *^T x + b) * sigmoid(V *^T x + c) (``nn.ConvTranspose2d`` arguments)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.h = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.g = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)


def _conv_out(size: int) -> int:
    """Spatial size after a 4x4 conv with stride 2 and padding 1: floor((n + 2 - 4) / 2) + 1 = floor(n / 2)."""
    return size // 2


class ConvEncoder(nn.Module):
    """(C, H, W) image -> stride-2 convolutions -> Linear -> hidden -> out.

    Works for any H, W >= 2^len(channels) (28x28 MNIST, 8x8 digits, ...); takes images (N, C, H, W) or flat
    (N, C*H*W). ``activation="gated"`` uses :class:`GatedConv2d` in place of conv + activation and
    :class:`GatedDense` in place of the hidden Linear + activation; the output layer stays Linear.
    """

    def __init__(self, shape: Sequence[int], out_features: int, channels: Sequence[int] = (32, 64),
                 hidden: int = 256, activation: str = "relu", condition: int = 0):
        super().__init__()
        c, h, w = shape
        if min(h, w) < 2 ** len(channels):
            raise ValueError(f"images of {h}x{w} are too small for {len(channels)} stride-2 convolutions; use arch mlp")
        self.shape = (c, h, w)
        self.condition = int(condition)
        gated = activation == "gated"
        convs: list[nn.Module] = []
        for ch in channels:
            if gated:
                convs.append(GatedConv2d(c, ch, kernel_size=4, stride=2, padding=1))
            else:
                convs += [nn.Conv2d(c, ch, kernel_size=4, stride=2, padding=1), _act(activation)]
            c, h, w = ch, _conv_out(h), _conv_out(w)
        self.convs = nn.Sequential(*convs)
        width = c * h * w + self.condition
        dense = [GatedDense(width, hidden)] if gated else [nn.Linear(width, hidden), _act(activation)]
        self.head = nn.Sequential(nn.Flatten(), *dense, nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        lead = x.shape[:-3] if x.dim() >= 4 and tuple(x.shape[-3:]) == self.shape else x.shape[:-1]
        features = self.convs(x.reshape(-1, *self.shape)).flatten(1)
        if self.condition:
            if y is None:
                raise ValueError("this network is conditional: call it with the conditioning input y")
            features = torch.cat([features, y.reshape(-1, y.shape[-1]).to(features.dtype)], -1)
        return self.head(features).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """latent -> Linear -> feature map -> stride-2 transposed convolutions -> (N, out_channels, H, W).

    ``out_channels`` is the number of parameters per pixel times the image channels (channel p * C + c holds
    parameter p of image channel c). ``activation="gated"`` uses :class:`GatedDense` for the two dense layers and
    :class:`GatedConvTranspose2d` for every transposed convolution but the last, which stays a plain
    ``ConvTranspose2d`` (it gives parameters).
    """

    def __init__(self, latent: int, shape: Sequence[int], out_channels: int, channels: Sequence[int] = (64, 32),
                 hidden: int = 256, activation: str = "relu", condition: int = 0):
        super().__init__()
        _, h, w = shape
        self.out_hw = (h, w)
        self.out_channels = int(out_channels)
        self.condition = int(condition)
        n_up = len(channels)
        self.start_hw = (math.ceil(h / 2**n_up), math.ceil(w / 2**n_up))
        self.start_channels = channels[0]
        start = channels[0] * self.start_hw[0] * self.start_hw[1]
        width = latent + self.condition
        if activation == "gated":
            self.fc = nn.Sequential(GatedDense(width, hidden), GatedDense(hidden, start))
        else:
            self.fc = nn.Sequential(nn.Linear(width, hidden), _act(activation), nn.Linear(hidden, start),
                                    _act(activation))
        ups: list[nn.Module] = []
        widths = list(channels[1:]) + [out_channels]
        c = channels[0]
        for i, ch in enumerate(widths):
            if i == len(widths) - 1:
                ups.append(nn.ConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1))
            elif activation == "gated":
                ups.append(GatedConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1))
            else:
                ups += [nn.ConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1), _act(activation)]
            c = ch
        self.ups = nn.Sequential(*ups)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        lead = z.shape[:-1]
        z = z.reshape(-1, z.shape[-1])
        if self.condition:
            if y is None:
                raise ValueError("this network is conditional: call it with the conditioning input y")
            z = torch.cat([z, y.reshape(-1, y.shape[-1]).to(z.dtype)], -1)
        out = self.fc(z).reshape(-1, self.start_channels, *self.start_hw)
        out = self.ups(out)[..., : self.out_hw[0], : self.out_hw[1]]
        return out.reshape(*lead, *out.shape[1:])


def _act(name: str) -> nn.Module:
    return activation(name)


class GridEncoder(nn.Module):
    """(N, C, H, W) -> stride-2 convolutions -> 1x1 convolution -> (N, out, h, w): a grid of ``out``-vectors
    (the VQ-VAE's z_e(x)), h = ceil(H / 2^n), w = ceil(W / 2^n) for n = len(channels). The image is zero-padded at
    the bottom and right to a multiple of 2^n first, so that :class:`GridDecoder` maps the grid back to H x W.
    The convolutions are those of :class:`ConvEncoder` (4x4, stride 2, padding 1; gated with ``"gated"``)."""

    def __init__(self, shape: Sequence[int], out_channels: int, channels: Sequence[int] = (32, 64),
                 activation: str = "relu"):
        super().__init__()
        c, h, w = shape
        self.shape, self.factor = (c, h, w), 2 ** len(channels)
        self.grid = (math.ceil(h / self.factor), math.ceil(w / self.factor))
        convs: list[nn.Module] = []
        for ch in channels:
            if activation == "gated":
                convs.append(GatedConv2d(c, ch, kernel_size=4, stride=2, padding=1))
            else:
                convs += [nn.Conv2d(c, ch, kernel_size=4, stride=2, padding=1), _act(activation)]
            c = ch
        self.convs = nn.Sequential(*convs, nn.Conv2d(c, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, *self.shape)
        pad_h, pad_w = self.grid[0] * self.factor - self.shape[1], self.grid[1] * self.factor - self.shape[2]
        return self.convs(nn.functional.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x)


class GridDecoder(nn.Module):
    """(N, D, h, w) -> 1x1 convolution -> stride-2 transposed convolutions -> (N, out_channels, H, W), cropped to
    ``shape``'s H x W: the inverse of :class:`GridEncoder` (the transposed convolutions of :class:`ConvDecoder`, the
    last one plain: it gives the likelihood's parameters)."""

    def __init__(self, in_channels: int, shape: Sequence[int], out_channels: int, channels: Sequence[int] = (64, 32),
                 activation: str = "relu"):
        super().__init__()
        self.out_hw = tuple(shape[1:])
        gated = activation == "gated"
        first = channels[0]
        ups: list[nn.Module] = [GatedConv2d(in_channels, first, 1)] if gated else \
            [nn.Conv2d(in_channels, first, 1), _act(activation)]
        widths = list(channels[1:]) + [out_channels]
        c = first
        for i, ch in enumerate(widths):
            if i == len(widths) - 1:
                ups.append(nn.ConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1))
            elif gated:
                ups.append(GatedConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1))
            else:
                ups += [nn.ConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1), _act(activation)]
            c = ch
        self.ups = nn.Sequential(*ups)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.ups(z)[..., : self.out_hw[0], : self.out_hw[1]]
