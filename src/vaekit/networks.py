"""Encoder and decoder building blocks: MLPs and small convolutional stacks, plain or gated.

A network maps a flat input to a flat output; the VAE decides what the outputs mean
(the encoder's 2 * latent numbers are the mean and log-variance of q(z|x); the decoder's
are the parameters of p(x|z)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


class _Gated(nn.Module):
    """h = A(x) * sigmoid(B(x)) for two layers A = ``self.h`` and B = ``self.g`` of the same shape."""

    h: nn.Module
    g: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class GatedDense(_Gated):
    """A gated layer (Dauphin et al., 2017; used by Tomczak & Welling's VampPrior models):
    h = (W x + b) * sigmoid(V x + c)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.h = nn.Linear(in_features, out_features)
        self.g = nn.Linear(in_features, out_features)


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


class MLP(nn.Sequential):
    """in -> [Linear -> activation] * len(hidden) -> Linear -> out.

    ``activation="gated"`` uses :class:`GatedDense` layers instead of Linear + activation.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu"):
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            if activation == "gated":
                layers.append(GatedDense(width, h))
            else:
                layers += [nn.Linear(width, h), _activation(activation)]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)


def _conv_out(size: int) -> int:
    """Spatial size after a 4x4 conv with stride 2 and padding 1: floor((n + 2 - 4) / 2) + 1 = floor(n / 2)."""
    return size // 2


class ConvEncoder(nn.Module):
    """(C, H, W) image -> two stride-2 convolutions -> Linear -> hidden -> out.

    Works for any H, W >= 4 (28x28 MNIST, 8x8 digits, ...). Input is flat (B, C*H*W).
    ``activation="gated"`` uses :class:`GatedConv2d` in place of conv + activation and :class:`GatedDense`
    in place of the hidden Linear + activation; the output layer stays Linear.
    """

    def __init__(self, shape: Sequence[int], out_features: int, channels: Sequence[int] = (32, 64),
                 hidden: int = 256, activation: str = "relu"):
        super().__init__()
        c, h, w = shape
        if min(h, w) < 2 ** len(channels):
            raise ValueError(f"images of {h}x{w} are too small for {len(channels)} stride-2 convolutions; use arch mlp")
        self.shape = (c, h, w)
        gated = activation == "gated"
        convs: list[nn.Module] = []
        for ch in channels:
            if gated:
                convs.append(GatedConv2d(c, ch, kernel_size=4, stride=2, padding=1))
            else:
                convs += [nn.Conv2d(c, ch, kernel_size=4, stride=2, padding=1), _activation(activation)]
            c, h, w = ch, _conv_out(h), _conv_out(w)
        self.convs = nn.Sequential(*convs)
        dense = [GatedDense(c * h * w, hidden)] if gated else [nn.Linear(c * h * w, hidden), _activation(activation)]
        self.head = nn.Sequential(nn.Flatten(), *dense, nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.head(self.convs(x.reshape(-1, *self.shape))).reshape(*lead, -1)


class ConvDecoder(nn.Module):
    """latent -> Linear -> feature map -> two stride-2 transposed convolutions -> (C', H, W) flat.

    ``out_channels`` is the number of parameters per pixel times the image channels.
    ``activation="gated"`` uses :class:`GatedDense` for the two dense layers and :class:`GatedConvTranspose2d`
    for every transposed convolution but the last, which stays a plain ``ConvTranspose2d`` (it gives parameters).
    """

    def __init__(self, latent: int, shape: Sequence[int], out_channels: int, channels: Sequence[int] = (64, 32),
                 hidden: int = 256, activation: str = "relu"):
        super().__init__()
        _, h, w = shape
        self.out_hw = (h, w)
        n_up = len(channels)
        self.start_hw = (math.ceil(h / 2**n_up), math.ceil(w / 2**n_up))
        self.start_channels = channels[0]
        start = channels[0] * self.start_hw[0] * self.start_hw[1]
        if activation == "gated":
            self.fc = nn.Sequential(GatedDense(latent, hidden), GatedDense(hidden, start))
        else:
            self.fc = nn.Sequential(nn.Linear(latent, hidden), _activation(activation), nn.Linear(hidden, start),
                                    _activation(activation))
        ups: list[nn.Module] = []
        widths = list(channels[1:]) + [out_channels]
        c = channels[0]
        for i, ch in enumerate(widths):
            if i == len(widths) - 1:
                ups.append(nn.ConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1))
            elif activation == "gated":
                ups.append(GatedConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1))
            else:
                ups += [nn.ConvTranspose2d(c, ch, kernel_size=4, stride=2, padding=1), _activation(activation)]
            c = ch
        self.ups = nn.Sequential(*ups)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        y = self.fc(z.reshape(-1, z.shape[-1])).reshape(-1, self.start_channels, *self.start_hw)
        y = self.ups(y)[..., : self.out_hw[0], : self.out_hw[1]]
        # (N, P*C, H, W) -> (N, P, C*H*W): parameters first, then pixels in C order
        return y.reshape(*lead, -1)
