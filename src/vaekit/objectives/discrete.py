"""Training a discrete q(z|x): the estimators of grad E_q[f], each as a surrogate objective.

A discrete z has no reparameterization, so the gradient of the ELBO with respect to the encoder's weights phi
needs an estimator. Each one below returns, per example, a *surrogate* whose gradient is the estimator and
whose value is not reported, next to the ELBO terms that are (nats). With the KL to the prior in closed form
(categorical and Bernoulli codes), only E_q[log p(x|z)] needs the estimator; f(z) = log p(x|z) below.

* ``enumerate``: E_q[f] = sum_z q(z|x) f(z) over all K^G (or 2^d) codes: the exact gradient, zero variance
  (Pyro's TraceEnum_ELBO); only for small latent spaces.
* ``score``: the score function (REINFORCE), grad E_q[f] = E_q[f(z) grad log q(z|x)], no baseline.
* ``nvil``: the score function with the learning signal f - c - b(x) centred by a running mean c and a learned,
  input-dependent baseline b(x) (a small MLP trained to predict f - c by least squares; Mnih & Gregor, 2014).
  A baseline that does not depend on z keeps it unbiased. (NVIL's division by a running standard deviation is
  left out: it rescales the score term alone, which biases the gradient's direction.)
* ``vimco``: for the K-sample bound L = log (1/K) sum_i w_i, the score-function term of each draw gets the
  leave-one-out baseline L_{-i}, L with log w_i replaced by the mean of the other log w_j
  (Mnih & Rezende, 2016); unbiased, with the multi-sample objective (``objective = "iwae"``, K >= 2).
* ``gumbel``: the Gumbel-softmax (Concrete) relaxation, z = softmax((l + g) / tau) (binary Concrete for
  Bernoulli units), differentiable in phi (Jang et al. 2017; Maddison et al. 2017). The decoder sees relaxed
  codes, so the training objective is a *relaxed* ELBO, biased, the bias shrinking with the temperature tau;
  it is reported as such, and evaluation always uses the discrete model.
* ``straight-through``: the discrete one-hot (or 0/1) value forward, the Gumbel-softmax gradient backward;
  its reported value is that of a discrete draw (an unbiased ELBO estimate), its gradient is biased.

The temperature follows tau_t = max(tau_min, tau_0 exp(-r t)) at training step t (Jang et al. 2017).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.distributions import kl_divergence

from vaekit.distributions import sample, support_size
from vaekit.distributions.kl import has_closed_form_kl
from vaekit.errors import ConfigError, option
from vaekit.objectives import ElboTerms

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The estimators by name, with a one-line description each.
ESTIMATORS = {
    "enumerate": "exact sum over every code (zero variance; small latent spaces only)",
    "score": "score function (REINFORCE), no baseline",
    "nvil": "score function with a learned input-dependent baseline and a running mean (NVIL)",
    "vimco": "multi-sample score function with leave-one-out baselines (VIMCO; --objective iwae, --k >= 2)",
    "gumbel": "Gumbel-softmax / Concrete relaxation (a relaxed, biased objective)",
    "straight-through": "discrete value forward, Gumbel-softmax gradient backward",
}
#: Estimators whose decoder sees relaxed (non-discrete) codes in training.
RELAXED = ("gumbel",)
#: Estimators with a temperature (the Gumbel-softmax relaxation's, also used by straight-through's backward pass).
TEMPERED = ("gumbel", "straight-through")
#: The most codes the enumerate estimator sums over per example in training.
MAX_ENUMERATED = 4096


@dataclass
class EstimatorSettings:
    """The estimator's settings: the relaxations' temperature schedule and NVIL's baseline size."""

    temperature: float = 1.0  # tau_0
    temperature_min: float = 0.5  # tau_min
    anneal_rate: float = 1e-4  # r: tau_t = max(tau_min, tau_0 exp(-r t)) at step t
    baseline_hidden: int = 100  # NVIL: hidden units of the baseline b(x)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not (math.isfinite(self.temperature_min) and 0 < self.temperature_min <= self.temperature):
            raise ConfigError(f"temperature_min must be in (0, temperature], got {self.temperature_min}")
        if not (math.isfinite(self.anneal_rate) and self.anneal_rate >= 0):
            raise ConfigError(f"anneal_rate must be >= 0, got {self.anneal_rate}")
        if isinstance(self.baseline_hidden, bool) or not 1 <= int(self.baseline_hidden) <= 2**16:
            raise ConfigError(f"baseline_hidden must be an integer from 1 to 65536, got {self.baseline_hidden}")


def is_discrete(model: LatentVariableModel) -> bool:
    """Whether the model's q(z|x) is discrete (its posterior family says so)."""
    family = getattr(model, "posterior_family", None)
    return bool(getattr(family, "discrete", False))


def default_estimator(model: LatentVariableModel) -> str:
    """``enumerate`` when the latent space has at most :data:`MAX_ENUMERATED` codes, else ``gumbel``."""
    size = latent_support_size(model)
    return "enumerate" if size is not None and size <= MAX_ENUMERATED else "gumbel"


def latent_support_size(model: LatentVariableModel) -> int | None:
    """The number of codes z of a model with a discrete prior that can be enumerated, else None."""
    prior = model.prior_distribution()
    return support_size(prior)


def check_estimator(model: LatentVariableModel, name: str, objective: str, k: int) -> None:
    """Refuse an estimator that cannot train this model with this objective, in one line saying why."""
    if name not in ESTIMATORS:
        raise ConfigError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
    if not is_discrete(model):
        if name != "reparameterization":
            raise ConfigError(f"{option('estimator', name)} is for discrete latents "
                              f"({option('posterior', 'categorical')} or {option('posterior', 'bernoulli')}); this "
                              "model's q(z|x) is reparameterized")
        return
    if name == "vimco":
        if objective != "iwae" or k < 2:
            raise ConfigError(f"vimco trains the multi-sample bound: give {option('objective', 'iwae')} and "
                              f"{option('k', 2)} or more (K >= 2)")
    elif objective == "iwae":
        raise ConfigError(f"the IWAE objective with discrete latents is trained with {option('estimator', 'vimco')}, "
                          f"not {name}")
    if name == "enumerate":
        size = latent_support_size(model)
        if size is None or size > MAX_ENUMERATED:
            shown = "too many to count" if size is None else f"{size:,}"
            raise ConfigError(f"{option('estimator', 'enumerate')} sums over every code, and this latent space has "
                              f"{shown} (at most {MAX_ENUMERATED:,}); use gumbel, straight-through, nvil or vimco")


class DiscreteEstimator(nn.Module):
    """One estimator of the ELBO's gradient for a discrete q(z|x); ``surrogate`` gives what to maximise.

    It owns NVIL's baseline network and running statistics (saved with a training checkpoint) and the
    temperature of the relaxations, set from the training step by :meth:`set_step`.
    """

    def __init__(self, name: str, data_dim: int, settings: EstimatorSettings | None = None):
        super().__init__()
        if name not in ESTIMATORS:
            raise ConfigError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
        self.name = name
        self.settings = settings or EstimatorSettings()
        self.register_buffer("temperature", torch.tensor(float(self.settings.temperature)), persistent=False)
        if name == "nvil":
            h = int(self.settings.baseline_hidden)
            self.baseline = nn.Sequential(nn.Linear(int(data_dim), h), nn.Tanh(), nn.Linear(h, 1))
            nn.init.zeros_(self.baseline[2].weight)
            nn.init.zeros_(self.baseline[2].bias)
            self.register_buffer("signal_mean", torch.zeros(()))
            self.register_buffer("signal_seen", torch.zeros((), dtype=torch.long))

    @property
    def relaxed(self) -> bool:
        return self.name in RELAXED

    def temperature_at(self, step: int) -> float:
        s = self.settings
        return max(s.temperature_min, s.temperature * math.exp(-s.anneal_rate * step))

    def set_step(self, step: int) -> None:
        """Set the relaxations' temperature for training step ``step`` (0-based)."""
        self.temperature.fill_(self.temperature_at(step))

    def describe(self) -> str:
        if self.name in TEMPERED:
            return f"{self.name} (temperature {float(self.temperature):.3g})"
        return self.name

    # -- the surrogates -----------------------------------------------------------------------------------
    def surrogate(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, objective: str = "elbo",
                  k: int = 1,
                  beta: float = 1.0, encoder_input: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, ElboTerms, torch.Tensor | None]:
        """(surrogate (N,), ELBO terms (N,), the K-sample bound (N,) or None) for a batch x.

        The gradient of ``surrogate.mean()`` is this estimator of the gradient of the mean training objective,
        E_q[log p(x|z)] - beta KL(q || p) (or the K-sample bound for vimco); its value is not meaningful.
        """
        x = model.as_data(x)
        x_enc = x if encoder_input is None else encoder_input.reshape(x.shape)
        q = model.posterior(x_enc, y)
        p = model.prior_distribution()
        if self.name == "vimco":
            return self._vimco(model, x, y, q, p, k, generator)
        closed = has_closed_form_kl(q, p)
        if self.name == "enumerate":
            return self._enumerate(model, x, y, q, p, beta, closed)
        shape = (k,) if k > 1 else ()
        if self.name in TEMPERED:
            if not closed:
                raise ConfigError(f"{self.name} needs the KL of q to the prior in closed form; "
                                  f"none is registered for {type(q).__name__} and {type(p).__name__}")
            z = q.relaxed_rsample(self.temperature, shape, generator, hard=self.name == "straight-through")
            rec = model.log_likelihood(x, z, y)
            rec = rec.mean(0) if k > 1 else rec
            kl = kl_divergence(q, p)
            return rec - beta * kl, ElboTerms(rec - kl, rec, kl), None
        # score and nvil
        z = sample(q, shape, generator)
        log_q = q.log_prob(z)
        rec = model.log_likelihood(x, z, y)
        if closed:
            kl = kl_divergence(q, p)
            kl_sample = kl.expand_as(rec) if k > 1 else kl
            signal = rec.detach()
        else:
            kl_sample = log_q - p.log_prob(z)
            kl = kl_sample
            signal = (rec - beta * kl_sample).detach()
        extra = 0.0
        if self.name == "nvil":
            centred, baseline_loss = self._nvil_signal(x, signal)
            signal = centred
            extra = -baseline_loss
        score = signal.detach() * log_q
        objective_value = rec - beta * kl_sample
        surrogate = objective_value + score
        if k > 1:
            surrogate, rec, kl_mean = surrogate.mean(0), rec.mean(0), kl_sample.mean(0)
        else:
            kl_mean = kl_sample
        return surrogate + extra, ElboTerms(rec - kl_mean, rec, kl_mean), None

    def _nvil_signal(self, x: torch.Tensor, signal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f - c - b(x), the baseline's squared error (N,)); updates the running mean c in training."""
        b = self.baseline(x.reshape(x.shape[0], -1)).squeeze(-1)  # (N,)
        residual = signal - self.signal_mean - b  # (S, N) or (N,)
        baseline_loss = residual.pow(2)
        baseline_loss = baseline_loss.mean(0) if baseline_loss.dim() > 1 else baseline_loss
        centred = residual.detach()
        if self.training:
            with torch.no_grad():
                batch = (signal - b.detach()).mean()  # the first batch sets the mean; decided on the device
                self.signal_mean.copy_(torch.where(self.signal_seen > 0, self.signal_mean * 0.8 + 0.2 * batch, batch))
                self.signal_seen.add_(1)
        return centred, baseline_loss

    def _enumerate(self, model: LatentVariableModel, x: torch.Tensor, y: Any, q: Any, p: Any, beta: float,
                   closed: bool) -> tuple[torch.Tensor, ElboTerms, None]:
        codes = q.enumerate_support(expand=False)  # (S, 1, L): decoded once, scored against every x
        if y is not None:
            codes = codes.expand(codes.shape[0], x.shape[0], codes.shape[-1])
        log_q = q.log_prob(codes)  # (S, N)
        weights = log_q.exp()
        rec = (weights * model.log_likelihood(x, codes, y)).sum(0)
        kl = kl_divergence(q, p) if closed else (weights * (log_q - p.log_prob(codes))).sum(0)
        return rec - beta * kl, ElboTerms(rec - kl, rec, kl), None

    def _vimco(self, model: LatentVariableModel, x: torch.Tensor, y: Any, q: Any, p: Any, k: int,
               generator: torch.Generator | None) -> tuple[torch.Tensor, ElboTerms, torch.Tensor]:
        z = sample(q, (k,), generator)  # (K, N, L), no gradient
        log_q = q.log_prob(z)
        rec = model.log_likelihood(x, z, y)
        kl = log_q - p.log_prob(z)
        log_w = rec - kl  # (K, N): its gradient holds the direct terms (decoder, prior, -log q)
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        lw = log_w.detach()
        others = (lw.sum(0, keepdim=True) - lw) / (k - 1)  # the mean of the other log w_j, (K, N)
        swapped = lw.unsqueeze(0).expand(k, *lw.shape).clone()  # row i: log w with entry i replaced
        index = torch.arange(k, device=lw.device)
        swapped[index, index] = others
        leave_one_out = torch.logsumexp(swapped, 1) - math.log(k)  # (K, N)
        signal = bound.detach().unsqueeze(0) - leave_one_out
        surrogate = bound + (signal * log_q).sum(0)
        rec_m, kl_m = rec.mean(0), kl.mean(0)
        return surrogate, ElboTerms(rec_m - kl_m, rec_m, kl_m), bound
