"""Fast training steps: a hand-written forward and backward pass of a standard model, registered by the types of
its parts as the evaluation's kernels are (:mod:`vaekit.bounds.kernels`), with the autograd step
(:mod:`vaekit.training.step`) for everything else.

A fast step computes what the autograd step computes for the plain ELBO objective, -mean_x [E_q log p(x|z) -
beta KL(q(z|x) || p(z))] with one draw per example, from the same noise draws (the same generator calls, of the
same shapes), writes the gradients into buffers kept between steps, and hands them to the same fused Adam update
on the same parameter tensors (so checkpoints, resume and everything downstream are unchanged). It returns the
same (loss, [sum ELBO, sum reconstruction, sum KL]) the loop records, in nats. The two agree to float rounding,
not bit for bit (another order of summation); ``tests/test_fast_step.py`` holds them within 1e-5 over 100 steps.

A factory is ``factory(model, rows) -> pass | None`` (None where the model is not one it computes after all), found by
:func:`find_fast_step` for the closest registered (network, posterior, prior, likelihood) types of the model's
parts; :func:`fast_step_for` says whether a run may take it at all: the ELBO of :class:`~vaekit.objectives.Objective`
(no objective of its own), fp32 on the CPU, a fused Adam over all the model's parameters, and none of ``k`` > 1,
``encoder_noise``, ``clip_grad``, ``compile``, DDP, an estimator, auxiliary optimizers or ``fast_step = false``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vaekit.bounds.kernels import subtract_log_halves_
from vaekit.components.likelihoods import BernoulliLikelihood
from vaekit.components.posteriors import GaussianPosterior
from vaekit.components.priors import StandardNormalPrior
from vaekit.config import TrainConfig
from vaekit.models import VAE
from vaekit.nn import MLP
from vaekit.objectives import Objective
from vaekit.training.step import _AdamUpdate, _skip_flag

Step = Callable[..., tuple[torch.Tensor, torch.Tensor]]
Factory = Callable[[Any, int], "Any | None"]
_FAST_STEPS: dict[tuple[type, type, type, type], Factory] = {}


def register_fast_step(network: type, posterior: type, prior: type, likelihood: type) -> Callable[[Factory], Factory]:
    """Decorator: ``factory(model, rows)`` gives the forward and backward pass (an object with ``run(x, beta) ->
    (loss, stats)`` for batches of up to ``rows`` examples, that writes the gradient of each parameter into its
    buffer in ``grads``, a dict parameter -> tensor) of a model whose encoder and decoder are of type
    ``network`` and whose posterior, prior and likelihood are of the other types (or subclasses of them)."""

    def decorate(factory: Factory) -> Factory:
        _FAST_STEPS[(network, posterior, prior, likelihood)] = factory
        return factory

    return decorate


def find_fast_step(*types: type) -> Factory | None:
    """The factory registered for the closest (network, posterior, prior, likelihood) base classes of ``types`` (by
    method resolution order), or None."""
    keys = [key for key in _FAST_STEPS if all(issubclass(t, k) for t, k in zip(types, key))]
    if not keys:
        return None
    return _FAST_STEPS[min(keys, key=lambda key: tuple(t.__mro__.index(k) for t, k in zip(types, key)))]


def _plain_run(cfg: TrainConfig, objective: Objective, distributed: bool, estimator: Any,
               auxiliary: dict | None) -> bool:
    """Whether the run's settings leave the step the plain ELBO's: one draw, no noise, clipping, compile, DDP,
    estimator or auxiliary optimizer, fp32, and an objective whose loss is the base class's beta-ELBO."""
    return (cfg.fast_step and not cfg.compile and cfg.clip_grad is None and cfg.precision == "fp32" and cfg.k == 1
            and cfg.encoder_noise == 0 and not distributed and estimator is None and not auxiliary
            and type(objective).loss is Objective.loss and objective.k == 1 and not objective.auxiliary)


def fast_step_for(model: Any, objective: Objective, optimizer: torch.optim.Optimizer, cfg: TrainConfig, rows: int, *,
                  distributed: bool = False, estimator: Any = None, auxiliary: dict | None = None) -> Step | None:
    """The fast step of this run (``step(x, beta, y=None) -> (loss, stats)``, as the autograd step's) for batches of
    up to ``rows`` examples, or None where the autograd step must run (see the module docstring)."""
    if not _plain_run(cfg, objective, distributed, estimator, auxiliary):
        return None
    parts = [getattr(model, name, None) for name in ("encoder", "posterior_family", "prior", "likelihood")]
    if any(part is None for part in parts) or type(model.decoder) is not type(model.encoder):
        return None
    factory = find_fast_step(*(type(part) for part in parts))
    fast = factory(model, max(1, int(rows))) if factory is not None else None
    params = list(model.parameters())
    if fast is None or {id(p) for p in params} != {id(p) for p in fast.grads}:
        return None
    owned = [p for group in optimizer.param_groups for p in group["params"]]
    skip = _skip_flag(optimizer)
    update = _AdamUpdate(optimizer, skip)
    if (skip is None or not update.direct or len(owned) != len(params) or {id(p) for p in owned} != set(map(id, params))
            or not all(p.requires_grad for p in params)):
        if skip is not None:
            optimizer.found_inf = None  # no flag left behind for an autograd step that will set its own
        return None
    pairs = list(fast.grads.items())

    def step(x: torch.Tensor, beta: float, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        for p, g in pairs:
            if p.grad is not g:
                p.grad = g
        with torch.no_grad():
            loss, stats = fast.run(x.reshape(x.shape[0], -1), beta)
        skip.masked_fill_(~torch.isfinite(loss), 1.0)  # sticky, as the autograd step's
        update()
        return loss, stats

    return step


# -- the MLP VAE: Gaussian q(z|x), N(0, I) prior, Bernoulli pixels --------------------------------------------

_ACTIVATIONS = (nn.ReLU, nn.Tanh)


def _dense_layers(mlp: nn.Module, in_features: int, out_features: int) -> list[tuple[nn.Linear, type | None]] | None:
    """[(Linear, the activation after it or None)] of a vaekit MLP that is Linear (+ ReLU or tanh) layers with biases,
    no conditioning, ``in_features`` -> ``out_features``; None for any other network."""
    if type(mlp).forward is not MLP.forward or getattr(mlp, "condition", 0):
        return None
    layers, out = list(mlp), []
    for i, layer in enumerate(layers):
        if type(layer) is nn.Linear and layer.bias is not None:
            out.append((layer, None))
        elif type(layer) in _ACTIVATIONS and out and out[-1][1] is None and i < len(layers) - 1:
            out[-1] = (out[-1][0], type(layer))
        else:
            return None
    if not out or out[-1][1] is not None or out[0][0].in_features != in_features \
            or out[-1][0].out_features != out_features:
        return None
    return out


def _same_method(obj: Any, base: type, *names: str) -> bool:
    return all(getattr(type(obj), name) is getattr(base, name) for name in names)


class _Dense:
    """An MLP's layers run forward into buffers kept between steps, and back by hand: for y = h W^T + b,
    dL/dW = g^T h, dL/db = sum_n g, dL/dh = g W, through ReLU (g where y > 0) or tanh (g (1 - y^2))."""

    def __init__(self, layers: list[tuple[nn.Linear, type | None]], rows: int, grads: dict[torch.nn.Parameter, Any]):
        self.layers = layers
        self.out = [torch.empty(rows, lin.out_features) for lin, _ in layers]
        self.back = [torch.empty(rows, lin.in_features) for lin, _ in layers[1:]]  # dL/d(input of layer i + 1)
        for lin, _ in layers:
            grads[lin.weight], grads[lin.bias] = torch.empty_like(lin.weight), torch.empty_like(lin.bias)
        self.grads = grads

    def forward(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's input and the last output: [h, y_1, ..., y_last] (n rows)."""
        seen = [h]
        for (lin, act), buf in zip(self.layers, self.out):
            y = torch.addmm(lin.bias, seen[-1], lin.weight.t(), out=buf[: h.shape[0]])
            if act is nn.ReLU:
                y.relu_()
            elif act is nn.Tanh:
                y.tanh_()
            seen.append(y)
        return seen

    def backward(self, seen: list[torch.Tensor], g: torch.Tensor, input_grad: torch.Tensor | None) -> None:
        """From g = dL/d(last output): every weight's and bias's gradient; dL/d(input) into ``input_grad``."""
        n = g.shape[0]
        for i in range(len(self.layers) - 1, -1, -1):
            lin, _ = self.layers[i]
            torch.mm(g.t(), seen[i], out=self.grads[lin.weight])
            torch.sum(g, 0, out=self.grads[lin.bias])
            if i == 0 and input_grad is None:
                return
            below = input_grad if i == 0 else self.back[i - 1][:n]
            torch.mm(g, lin.weight, out=below)
            if i > 0:
                act = self.layers[i - 1][1]
                if act is nn.ReLU:
                    torch.ops.aten.threshold_backward.grad_input(below, seen[i], 0, grad_input=below)
                elif act is nn.Tanh:
                    torch.ops.aten.tanh_backward.grad_input(below, seen[i], grad_input=below)
            g = below


class _GaussianBernoulliPass:
    """One step's forward and backward pass of the MLP VAE with q(z|x) = N(mu, diag exp(v)), v = max(logvar,
    min_logvar), p(z) = N(0, I) and Bernoulli pixels, for the loss L = -(1/N) sum_n [log p(x_n|z_n) - beta KL_n]:

        z = mu + exp(v / 2) eps,  KL_n = 1/2 sum_j (mu_j^2 + e^v_j - 1 - v_j),
        log p(x|z) = sum_d [x_d l_d - softplus(l_d)],  l = decoder(z),

    dL/dl = (sigmoid(l) - x) / N, dL/dmu = dL/dz + (beta / N) mu, dL/dv = dL/dz eps e^(v/2) / 2 + (beta / N)
    (e^v - 1) / 2 (0 where logvar < min_logvar, as the clamp's own gradient). The sum of the softplus is taken as
    sum relu(l) - sum log sigmoid(|l|), the sigmoids those of the backward pass, their logs as logs of products of
    32 factors (:func:`~vaekit.bounds.kernels.subtract_log_halves_`; one transcendental pass over the logits
    instead of three)."""

    def __init__(self, model: Any, encoder: list, decoder: list, rows: int):
        self.latent, self.min_logvar = model.posterior_family.latent, float(model.posterior_family.min_logvar)
        self.grads: dict[torch.nn.Parameter, torch.Tensor] = {}
        self.encoder, self.decoder = _Dense(encoder, rows, self.grads), _Dense(decoder, rows, self.grads)
        pixels, latent = decoder[-1][0].out_features, self.latent
        self.lat = {name: torch.empty(rows, latent) for name in ("v", "std", "ev", "eps", "z", "dz", "t")}
        self.mask = torch.empty(rows, latent, dtype=torch.bool)
        self.dparams = torch.empty(rows, 2 * latent)
        self.pix = torch.empty(rows, pixels), torch.empty(rows, pixels)

    def run(self, x: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, [sum ELBO, sum reconstruction, sum KL] as float64) of the batch x (n, D); the gradients written."""
        n, m = x.shape[0], self.latent
        enc = self.encoder.forward(x)
        params = enc[-1]
        mu, logvar = params[:, :m], params[:, m:]
        b = {name: buf[:n] for name, buf in self.lat.items()}
        torch.clamp(logvar, min=self.min_logvar, out=b["v"])
        torch.mul(b["v"], 0.5, out=b["std"]).exp_()
        torch.randn((n, m), out=b["eps"])  # the draws of DiagonalNormal.rsample: the same generator, the same shape
        torch.addcmul(mu, b["std"], b["eps"], out=b["z"])
        dec = self.decoder.forward(b["z"])
        kl = self._kl(mu, b)
        rec, g = self._bernoulli(dec[-1], x)
        self.decoder.backward(dec, g, b["dz"])
        self._posterior_grad(mu, logvar, b, beta / n)
        self.encoder.backward(enc, self.dparams[:n], None)
        stats = torch.stack([rec - kl, rec, kl])
        return (beta * kl - rec) / n, stats.double()

    def _kl(self, mu: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """sum_n KL_n = 1/2 sum_nj (mu^2 + e^v - 1 - v), nats."""
        torch.exp(b["v"], out=b["ev"])
        t = torch.sub(b["ev"], b["v"], out=b["t"]).addcmul_(mu, mu).sub_(1.0)
        return t.sum() * 0.5

    def _bernoulli(self, logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum_n log p(x_n|z_n), dL/dl = (sigmoid(l) - x) / n); the logits are overwritten."""
        n = x.shape[0]
        g, low = self.pix[0][:n], self.pix[1][:n]
        xl = torch.dot(x.reshape(-1), logits.reshape(-1))
        torch.sigmoid(logits, out=g)
        softplus = logits.clamp_min_(0.0).sum().reshape(1)  # sum relu(l), then minus sum log sigmoid(|l|):
        torch.sub(g, 0.5, out=low).abs_().add_(0.5)  # sigmoid(|l|) = 1/2 + |sigmoid(l) - 1/2|
        subtract_log_halves_(softplus, low.reshape(1, -1))
        g.sub_(x).mul_(1.0 / n)
        return xl - softplus[0], g

    def _posterior_grad(self, mu: torch.Tensor, logvar: torch.Tensor, b: dict[str, torch.Tensor], c: float) -> None:
        """dL/d(mu, logvar) into ``dparams`` from dL/dz; ``c`` = beta / n, the KL's weight per example."""
        n, m = mu.shape[0], self.latent
        dparams = self.dparams[:n]
        torch.add(b["dz"], mu, alpha=c, out=dparams[:, :m])
        t = torch.mul(b["dz"], b["eps"], out=b["t"]).mul_(b["std"]).mul_(0.5)
        t.add_(b["ev"], alpha=0.5 * c).sub_(0.5 * c)
        torch.mul(t, torch.ge(logvar, self.min_logvar, out=self.mask[:n]), out=dparams[:, m:])


@register_fast_step(MLP, GaussianPosterior, StandardNormalPrior, BernoulliLikelihood)
def gaussian_bernoulli_mlp(model: Any, rows: int) -> _GaussianBernoulliPass | None:
    """The MLP VAE of vaekit's networks (ReLU or tanh, any hidden widths) with a Gaussian q(z|x), the standard
    normal prior and Bernoulli pixels, in float32 on the CPU; None for anything else (a subclass that overrides
    what this pass computes, a conditional model, other dtypes or devices)."""
    if not isinstance(model, VAE) or not _same_method(model, VAE, "posterior", "encode", "decode", "log_likelihood",
                                                      "prior_distribution", "as_data") or model.condition:
        return None
    post, prior, lik = model.posterior_family, model.prior, model.likelihood
    if not (_same_method(post, GaussianPosterior, "forward") and _same_method(prior, StandardNormalPrior,
                                                                             "distribution", "log_prob")
            and _same_method(lik, BernoulliLikelihood, "log_prob") and lik.event_dims == len(model.shape)):
        return None
    latent, pixels = post.latent, math.prod(model.shape)
    encoder = _dense_layers(model.encoder, pixels, 2 * latent)
    decoder = _dense_layers(model.decoder, latent, pixels)
    params = list(model.parameters())
    if encoder is None or decoder is None or any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        return None
    return _GaussianBernoulliPass(model, encoder, decoder, rows)

