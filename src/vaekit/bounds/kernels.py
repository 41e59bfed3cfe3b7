"""Fast log-likelihood kernels, registered by (network type, likelihood type) as ``torch.distributions`` registers
KL terms (``register_kl``): the evaluation's inner loop, log p(x|z) for many codes z of the same examples x.

A kernel is ``factory(decoder, likelihood, x) -> (z -> log p(x|z))`` (or None where it does not apply after all);
:func:`likelihood_kernel` finds the most specific registered pair for a model that decodes directly (its
``decodes_directly``: p(x|z) = likelihood(decoder(z)), no conditioning), and falls back on ``model.log_likelihood``.
Every kernel must give the same numbers as the model to float rounding (tests check the registered ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from vaekit.components.likelihoods import BernoulliLikelihood
from vaekit.nn import MLP

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

Kernel = Callable[[torch.Tensor], torch.Tensor]
_KERNELS: dict[tuple[type, type], Callable[..., Kernel | None]] = {}


def register_kernel(network: type, likelihood: type) -> Callable[[Callable[..., Kernel | None]], Callable]:
    """Decorator: ``factory(decoder, likelihood, x)`` computes log p(x|z) for decoders of type ``network`` (and
    subclasses) with likelihoods of type ``likelihood``."""

    def decorate(factory: Callable[..., Kernel | None]) -> Callable[..., Kernel | None]:
        _KERNELS[(network, likelihood)] = factory
        return factory

    return decorate


def find_kernel(network: type, likelihood: type) -> Callable[..., Kernel | None] | None:
    """The factory registered for the closest pair of base classes (by method resolution order), or None."""
    pairs = [(n, lik) for n, lik in _KERNELS if issubclass(network, n) and issubclass(likelihood, lik)]
    if not pairs:
        return None
    best = min(pairs, key=lambda p: (network.__mro__.index(p[0]), likelihood.__mro__.index(p[1])))
    return _KERNELS[best]


def likelihood_kernel(model: LatentVariableModel, x: torch.Tensor, fast: bool = True,
                      y: torch.Tensor | None = None) -> Kernel:
    """A function z (..., B, L) -> log p(x|z) (..., B) for the flat batch x (B, D) (and labels y): a registered
    kernel where one applies (``fast``, no labels, a model that decodes directly), else the model's own."""
    if fast and y is None and getattr(model, "decodes_directly", False):
        factory = find_kernel(type(model.decoder), type(model.likelihood))
        kernel = factory(model.decoder, model.likelihood, x) if factory is not None else None
        if kernel is not None:
            return kernel
    if y is None:
        return lambda z: model.log_likelihood(x, z)
    return lambda z: model.log_likelihood(x, z, y)


@register_kernel(MLP, BernoulliLikelihood)
def bernoulli_mlp_kernel(decoder: MLP, likelihood: BernoulliLikelihood,
                         x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """log p(x|z) for an MLP decoder with a Bernoulli likelihood (None when its last layer is not Linear).

    log p(x|z) = sum_d [x_d l_d - softplus(l_d)], l = W h + b, and sum_d x_d l_d = h . (W^T x) + b . x,
    so only the softplus needs all D logits. Without gradients each layer's output for a chunk (the logits
    included) is written into a buffer reused by every chunk (a fresh one per chunk costs its page faults), and
    the logits are reduced in place by :func:`softplus_sum_`.
    """
    if not isinstance(decoder[-1], torch.nn.Linear):
        return None
    layers = list(decoder)
    body, last = torch.nn.Sequential(*layers[:-1]), layers[-1]
    weight, bias = last.weight, last.bias
    xw = x @ weight  # (B, H)
    xb = x @ bias if bias is not None else torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    buffers = _Buffers()

    def kernel(z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        in_place = not torch.is_grad_enabled() and z.dtype in (torch.float32, torch.float64)
        if in_place:
            flat = _layers_in_place(layers[:-1], z.reshape(-1, z.shape[-1]), buffers)
            logits = _linear_into(last, flat, buffers.get(len(layers) - 1, flat.shape[0], weight.shape[0], flat))
            softplus = softplus_sum_(logits)
        else:
            flat = body(z).reshape(-1, weight.shape[1])
            logits = torch.addmm(bias, flat, weight.t()) if bias is not None else flat @ weight.t()
            softplus = F.softplus(logits).sum(-1)
        h = flat.reshape(*lead, -1)
        return torch.einsum("...bh,bh->...b", h, xw) + xb - softplus.reshape(lead)  # h . (W^T x): a bmm

    return kernel


class _Buffers:
    """Output buffers of a chunked no-gradient computation, one per layer, reused from chunk to chunk (a partial
    last chunk uses the first rows); a fresh tensor per chunk would cost its page faults every time."""

    def __init__(self) -> None:
        self.slots: dict[int, torch.Tensor] = {}

    def get(self, slot: int, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        buf = self.slots.get(slot)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != cols or buf.dtype != like.dtype \
                or buf.device != like.device:
            buf = self.slots[slot] = torch.empty(rows, cols, device=like.device, dtype=like.dtype)
        return buf[:rows]


def _linear_into(layer: torch.nn.Linear, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``layer(h)`` for a flat batch h (N, in), written into ``out`` (N, out)."""
    if layer.bias is not None:
        return torch.addmm(layer.bias, h, layer.weight.t(), out=out)
    return torch.mm(h, layer.weight.t(), out=out)


_IN_PLACE_ACTIVATIONS = {torch.nn.ReLU: torch.relu_, torch.nn.Tanh: torch.tanh_, torch.nn.Sigmoid: torch.sigmoid_}


def _layers_in_place(layers: list[torch.nn.Module], h: torch.Tensor, buffers: _Buffers) -> torch.Tensor:
    """The layers applied in turn to a flat batch h (N, F) without gradients: Linear layers write into reused
    buffers and ReLU / tanh / sigmoid act in place; any other layer is called as it is."""
    for i, layer in enumerate(layers):
        if type(layer) is torch.nn.Linear:
            h = _linear_into(layer, h, buffers.get(i, h.shape[0], layer.out_features, h))
        elif type(layer) in _IN_PLACE_ACTIVATIONS and i > 0 and type(layers[i - 1]) is torch.nn.Linear:
            _IN_PLACE_ACTIVATIONS[type(layer)](h)  # h is the buffer the Linear before it wrote
        else:
            h = layer(h)
    return h


#: Factors multiplied together by :func:`softplus_sum_` before one log: each is in [1/2, 1], so a product of 32
#: stays above 2**-32, far from underflow in float32.
_PRODUCT_GROUP = 32


def softplus_sum_(logits: torch.Tensor) -> torch.Tensor:
    """sum_d softplus(l_d) over the last dimension of ``logits`` (N, D), which it overwrites; float32 or float64.

    softplus(l) = relu(l) - log sigmoid(|l|), relu(l) = (l + |l|) / 2, and the logs of the sigmoids are summed
    as the logs of products of :data:`_PRODUCT_GROUP` of them: one transcendental pass (the sigmoid) where
    ``F.softplus`` takes two (exp and log1p), and no temporary as large as the logits. The products' rounding
    (a relative 2**-24 per factor) is of the order of the float32 sum's own.
    """
    total = logits.sum(-1)
    logits.abs_()
    total += logits.sum(-1)
    total *= 0.5  # sum_d relu(l_d)
    return subtract_log_halves_(total, logits.sigmoid_())  # sigmoid(|l|), in [1/2, 1]


def subtract_log_halves_(total: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``total`` (N,) minus sum_d log f_d over the last dimension of ``factors`` (N, D), each in [1/2, 1], in place:
    the logs taken of products of :data:`_PRODUCT_GROUP` factors (one log per group; a product stays above 2**-32)."""
    d = factors.shape[-1]
    whole = d - d % _PRODUCT_GROUP
    if whole:
        total -= factors[:, :whole].reshape(factors.shape[0], -1, _PRODUCT_GROUP).prod(-1).log_().sum(-1)
    if whole < d:
        total -= factors[:, whole:].prod(-1).log_()
    return total
