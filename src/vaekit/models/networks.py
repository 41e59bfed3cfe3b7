"""Helper constructors for the encoder and decoder networks the command line and the recipes use.

A network description is a small dict saved in a run folder: ``{"name": "mlp", "hidden": [400],
"activation": "relu"}`` or ``{"name": "conv", "channels": [32, 64], "hidden": 256, "activation": "gated"}``.
``{"name": "custom", "class": ...}`` marks a network the user built; it is never rebuilt from the file.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from torch import nn

from vaekit.errors import ArgumentError, ConfigError
from vaekit.nn import ACTIVATIONS, MLP, ConvDecoder, ConvEncoder

ARCHITECTURES = ("mlp", "conv")
CUSTOM = "custom"


def network_spec(arch: str = "mlp", hidden: Sequence[int] = (400,), activation: str = "relu",
                 conv_channels: Sequence[int] = (32, 64)) -> dict[str, Any]:
    """The description of a built-in network: ``arch`` mlp (hidden sizes) or conv (channels and one hidden width)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be mlp or conv, got {arch!r}")
    if activation not in ACTIVATIONS and activation != "gated":
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)} or gated")
    hidden = widths(hidden, "hidden")  # an empty list: linear MLPs
    if arch == "mlp":
        return {"name": "mlp", "hidden": hidden, "activation": activation}
    return {"name": "conv", "channels": [int(c) for c in conv_channels], "hidden": hidden[0] if hidden else 256,
            "activation": activation}


def widths(values: Any, name: str) -> list[int]:
    """Layer widths ``values`` (a sequence of whole numbers >= 1) as ints; otherwise one error naming ``name``:
    an :class:`~vaekit.errors.ArgumentError` for a wrong type, a :class:`~vaekit.errors.ConfigError` (a
    ``ValueError``) for a width below 1."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence | range) and not hasattr(values, "tolist"):
        raise ArgumentError(f"{name} must be a list of layer widths (whole numbers >= 1), got {values!r}")
    out = list(values.tolist() if hasattr(values, "tolist") else values)
    if any(isinstance(h, bool) or not isinstance(h, numbers.Integral) for h in out):
        raise ArgumentError(f"{name} sizes must be whole numbers >= 1, got {out!r}")
    out = [int(h) for h in out]
    if any(h < 1 for h in out):
        raise ConfigError(f"{name} sizes must be >= 1, got {out}")
    return out


def custom_spec(network: nn.Module) -> dict[str, Any]:
    return {"name": CUSTOM, "class": type(network).__qualname__}


def build_encoder(spec: dict[str, Any], shape: tuple[int, ...], out_features: int, condition: int = 0) -> nn.Module:
    """The encoder ``spec`` describes: data (N, *shape) -> (N, out_features)."""
    name = spec.get("name")
    if name == "mlp":
        return MLP(math.prod(shape), spec["hidden"], out_features, spec["activation"], in_shape=shape,
                   condition=condition)
    if name == "conv":
        if len(shape) != 3:
            raise ValueError(f"the conv encoder needs images (C, H, W), got shape {shape}")
        return ConvEncoder(shape, out_features, spec["channels"], spec["hidden"], spec["activation"], condition)
    raise ValueError(f"cannot build an encoder of kind {name!r}")


def build_decoder(spec: dict[str, Any], latent: int, shape: tuple[int, ...], param_shape: tuple[int, ...],
                  condition: int = 0) -> nn.Module:
    """The decoder ``spec`` describes: codes (N, latent) -> likelihood parameters (N, *param_shape)."""
    name = spec.get("name")
    if name == "mlp":
        return MLP(latent, list(reversed(spec["hidden"])), math.prod(param_shape), spec["activation"],
                   out_shape=param_shape, condition=condition)
    if name == "conv":
        if len(shape) != 3:
            raise ValueError(f"the conv decoder needs images (C, H, W), got shape {shape}")
        return ConvDecoder(latent, shape, param_shape[0], list(reversed(spec["channels"])), spec["hidden"],
                           spec["activation"], condition)
    raise ValueError(f"cannot build a decoder of kind {name!r}")
