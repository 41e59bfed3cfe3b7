"""Dense building blocks: activations, gated layers and the MLP.

A network of vaekit maps a batch (N, ...) to a batch (N, ...); the model decides what the outputs mean
(e.g. the encoder's 2L numbers are the mean and log-variance of q(z|x)). An :class:`MLP` flattens its
input's trailing ``in_shape`` dimensions, optionally appends a conditioning vector y, and reshapes its
output to ``out_shape``, so it serves as an encoder of images and as a decoder to images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus}


def activation(name: str) -> nn.Module:
    """The activation module called ``name`` (relu, tanh, elu, gelu, softplus)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)} or gated") from None


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


def dense_features(in_features: int, widths: Sequence[int], act: str) -> nn.Sequential:
    """in -> [Linear -> activation] per width (or :class:`GatedDense` layers for ``"gated"``): hidden features."""
    layers: list[nn.Module] = []
    width = in_features
    for w in widths:
        layers += [GatedDense(width, w)] if act == "gated" else [nn.Linear(width, w), activation(act)]
        width = w
    return nn.Sequential(*layers)


class MLP(nn.Sequential):
    """in -> [Linear -> activation] * len(hidden) -> Linear -> out.

    ``activation="gated"`` uses :class:`GatedDense` layers instead of Linear + activation. With ``in_shape``
    the input's trailing dimensions of that shape are flattened first (images (N, C, H, W) -> (N, C*H*W));
    ``condition`` > 0 appends a conditioning vector y (N, condition) to the input (``forward(x, y)``);
    with ``out_shape`` the output is reshaped to (N, *out_shape).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, activation: str = "relu", *,
                 in_shape: Sequence[int] | None = None, out_shape: Sequence[int] | None = None,
                 condition: int = 0):
        layers: list[nn.Module] = []
        width = in_features + condition
        for h in hidden:
            if activation == "gated":
                layers.append(GatedDense(width, h))
            else:
                layers += [nn.Linear(width, h), _activation_module(activation)]
            width = h
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
        self.in_shape = torch.Size(in_shape) if in_shape is not None else None
        self.out_shape = tuple(out_shape) if out_shape is not None else None
        self.condition = int(condition)
        self._flatten = len(self.in_shape) if self.in_shape is not None and len(self.in_shape) > 1 else 0
        if self.in_shape is not None and math.prod(self.in_shape) != in_features:
            raise ValueError(f"in_shape {self.in_shape} has {math.prod(self.in_shape)} values, not {in_features}")
        if self.out_shape is not None and math.prod(self.out_shape) != out_features:
            raise ValueError(f"out_shape {self.out_shape} has {math.prod(self.out_shape)} values, not {out_features}")

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self._flatten and x.shape[-self._flatten:] == self.in_shape:  # (..., C, H, W) -> (..., C*H*W)
            x = x.flatten(-self._flatten)
        if self.condition:
            if y is None:
                raise ValueError("this network is conditional: call it with the conditioning input y")
            x = torch.cat([x, y.to(x.dtype).expand(*x.shape[:-1], y.shape[-1])], -1)
        for layer in self:
            x = layer(x)
        if self.out_shape is not None and len(self.out_shape) > 1:
            x = x.unflatten(-1, self.out_shape)
        return x


def _activation_module(name: str) -> nn.Module:
    return activation(name)
