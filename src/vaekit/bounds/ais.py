"""Annealed importance sampling (AIS; Neal 2001) of log p(x), forward and reverse, with HMC transitions.

The path runs from the prior to the posterior through the geometric intermediate densities

    f_t(z) = p(z) p(x|z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1,   Z_t = integral f_t(z) dz,

so Z_0 = 1 and Z_T = p(x). **Forward AIS**: z ~ p(z); for t = 1..T the log-weight gains
(beta_t - beta_{t-1}) log p(x|z) at the current z, and z then moves by an HMC transition that leaves
f_t / Z_t invariant. Each chain's weight w has E[w] = Z_T / Z_0 = p(x), so with C chains per example

    log p_AIS(x) = logsumexp_c log w_c - log C,     E[log p_AIS(x)] <= log p(x)   (Jensen),

a *stochastic lower bound* on log p(x), in nats, whose shortfall vanishes as T grows (and as C grows, more
slowly). **Reverse AIS** (Grosse et al. 2015) runs the same path backwards, from beta = 1 to 0, starting
from an exact posterior sample z ~ p(z|x): its weight has E[w] = Z_0 / Z_T = 1 / p(x), so
-(logsumexp_c log w_c - log C) is a stochastic *upper* bound on log p(x). Exact posterior samples exist for
data simulated from the model (the z that generated x): bidirectional Monte Carlo (BDMC) sandwiches
log p(x) between the two (:mod:`vaekit.bounds.bdmc`).

Schedules: ``linear`` beta_t = t / T; ``sigmoid`` (Grosse et al. 2015) beta_t = (s_t - s_0) / (s_T - s_0)
with s_t = sigmoid(delta (2 t / T - 1)), delta = 4, which spends more steps near both ends.

HMC (Neal 2011): momentum r ~ N(0, I), L leapfrog steps of size eps on the energy
U(z) = -log p(z) - beta log p(x|z), accepted with probability min(1, exp(H_0 - H_L)), H = U + |r|^2 / 2;
a proposal with a non-finite energy is rejected. Gradients come from autograd through the model's log p(z)
and log p(x|z) (:func:`vaekit.bounds.kernels.likelihood_kernel`), so any model with a continuous,
differentiable latent space qualifies.

Step sizes: one per example and temperature, shared by its chains. A *pilot* run of a few chains adapts
them toward the target acceptance rate (log eps <- log eps + (a - target), a: the fraction of the pilot's
chains that accepted), and the schedule eps_t it found is then *fixed* for the runs whose weights count:
every transition of those runs is then a fixed HMC kernel invariant for f_t, and E[w] is exactly p(x) (or
1 / p(x)). Adapting on the same chains' own history, as is often done, would make the kernels depend on the
past and the weights no longer exactly unbiased.

Standard error of one example's estimate, across its C chains (the delta method): with w the chains' weights,
SE = sd_c(w) / (sqrt(C) mean_c(w)) nats. It is a small-sample estimate: with heavy-tailed weights it
understates. Chains are batched over examples and chains, z of shape (C, B, L): one decoder call per leapfrog
step for all of them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from vaekit.bounds.kernels import likelihood_kernel
from vaekit.bounds.sizing import DEFAULT_MEMORY_BUDGET, bytes_per_row, model_device_dtype
from vaekit.distributions import sample as draw
from vaekit.distributions import support_size
from vaekit.errors import ConfigError, VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The annealing schedules by name.
SCHEDULES = ("sigmoid", "linear")
#: delta of the sigmoidal schedule (Grosse et al. 2015).
SIGMOID_DELTA = 4.0
#: Chains per example, leapfrog steps per transition and the HMC acceptance rate aimed at, by default.
DEFAULT_CHAINS = 16
DEFAULT_LEAPFROG = 10
TARGET_ACCEPTANCE = 0.65
#: Chains per example of the pilot run that adapts the step sizes (at most the chains of the run itself).
PILOT_CHAINS = 4
#: The pilot run anneals over at most this many temperatures (of the same schedule).
PILOT_STEPS = 50
#: The step size the pilot starts from, at beta = 0 (the prior).
INITIAL_STEP = 0.2
#: A decoder with gradients keeps about this many times the activations of a forward pass alone.
GRADIENT_FACTOR = 3


def annealing_schedule(steps: int, kind: str = "sigmoid", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """beta_0 = 0 < beta_1 < ... < beta_T = 1 (T = ``steps``), a tensor (T + 1,); see the module docstring."""
    if steps < 1:
        raise VaekitError(f"AIS needs at least 1 annealing step, got {steps}")
    if kind not in SCHEDULES:
        raise VaekitError(f"unknown annealing schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    if kind == "linear" or steps == 1:
        betas = t
    else:
        s = torch.sigmoid(SIGMOID_DELTA * (2 * t - 1))
        betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0
    return betas.to(dtype)


def check_annealable(model: LatentVariableModel, settings: AISSettings | None = None,
                     memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
    """Raise :class:`VaekitError` unless AIS applies: a continuous latent space with a density p(z) that can be
    differentiated in z (not discrete codes, not an autoencoder without a fitted density); with ``settings``, a
    :class:`ConfigError` when the chains of one example do not fit ``memory_budget``."""
    prior = model.prior_distribution()
    if model.is_discrete or support_size(prior) is not None:
        raise VaekitError("AIS needs a continuous latent space (HMC moves z along gradients); this model's codes "
                          "are discrete: its log p(x) is exact by a sum over every code (vaekit evaluate, "
                          "vaekit bound)")
    if model.is_autoencoder and getattr(getattr(model, "prior", None), "fitted", True) is False:
        raise VaekitError("this autoencoder defines no density p(z) (none has been fitted to its codes), so no "
                          "log p(x) for AIS to estimate; vaekit train fits one at the end of training")
    if settings is not None:
        _batch_size(model, settings.chains, 1, memory_budget)


@dataclass
class AISResult:
    """Per-example AIS estimates (CPU float64, nats) and how they were obtained."""

    log_px: torch.Tensor  # (N,) logsumexp_c log w_c - log C (forward); minus that (reverse)
    stderr: torch.Tensor  # (N,) Monte Carlo standard error across the C chains (delta method)
    acceptance: torch.Tensor  # (N,) mean HMC acceptance rate over the transitions and chains of the counted run
    log_weights: torch.Tensor  # (C, N)
    step_sizes: torch.Tensor  # (T + 1, N): eps at each temperature (found by the pilot run)
    steps: int
    chains: int
    leapfrog: int
    schedule: str
    reverse: bool = False
    seconds: float = 0.0
    evaluations: int = 0  # log p(x, z) evaluations with their gradient (pilot included), one per chain and step
    notes: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """The mean over examples of the per-example estimates, nats."""
        return float(self.log_px.mean())

    @property
    def mean_stderr(self) -> float:
        """The Monte Carlo standard error of :attr:`mean`: sqrt(sum_n SE_n^2) / N (chains independent)."""
        return float(self.stderr.pow(2).sum().sqrt() / self.stderr.numel())

    @property
    def evaluations_per_second(self) -> float:
        return self.evaluations / self.seconds if self.seconds > 0 else math.inf


@dataclass
class _State:
    """Chains at their current codes z (C, B, L): log p(x|z), log p(z) (C, B) and their gradients in z."""

    z: torch.Tensor
    loglik: torch.Tensor
    logprior: torch.Tensor
    grad_lik: torch.Tensor
    grad_prior: torch.Tensor

    def where(self, keep_new: torch.Tensor, new: _State) -> _State:
        """The state of ``new`` where ``keep_new`` (C, B), else this one."""
        m = keep_new.unsqueeze(-1)
        return _State(torch.where(m, new.z, self.z), torch.where(keep_new, new.loglik, self.loglik),
                      torch.where(keep_new, new.logprior, self.logprior), torch.where(m, new.grad_lik, self.grad_lik),
                      torch.where(m, new.grad_prior, self.grad_prior))


class _Target:
    """log p(x|z) and log p(z) of a batch of examples x (B, D) at codes z (C, B, L), with gradients in z."""

    def __init__(self, model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None):
        self.kernel = likelihood_kernel(model, x, True, y)
        self.log_prior = model.log_prior
        self.evaluations = 0

    def __call__(self, z: torch.Tensor) -> _State:
        z = z.detach()
        with torch.enable_grad():  # two leaves, so that one backward pass gives both gradients
            z_lik, z_prior = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
            loglik, logprior = self.kernel(z_lik), self.log_prior(z_prior)
            grad_lik, grad_prior = torch.autograd.grad(loglik.sum() + logprior.sum(), (z_lik, z_prior))
        self.evaluations += loglik.numel()
        return _State(z, loglik.detach(), logprior.detach(), grad_lik, grad_prior)


def _hmc(target: _Target, s: _State, beta: float, eps: torch.Tensor, leapfrog: int,
         generator: torch.Generator) -> tuple[_State, torch.Tensor]:
    """One HMC transition invariant for f(z) = p(z) p(x|z)^beta: ``leapfrog`` steps of size eps (B,) per example;
    (the new state, accepted (C, B) bool)."""
    e = eps.unsqueeze(-1)  # (B, 1), broadcast over chains and latent units

    def force(st: _State) -> torch.Tensor:  # -grad U
        return st.grad_prior + beta * st.grad_lik

    r0 = torch.randn(s.z.shape, generator=generator, device=s.z.device, dtype=s.z.dtype)
    r = r0 + 0.5 * e * force(s)
    cur = s
    for step in range(leapfrog):
        cur = target(cur.z + e * r)
        r = r + (e if step < leapfrog - 1 else 0.5 * e) * force(cur)
    h0 = -(s.logprior + beta * s.loglik) + 0.5 * r0.pow(2).sum(-1)
    h1 = -(cur.logprior + beta * cur.loglik) + 0.5 * r.pow(2).sum(-1)
    u = torch.rand(h0.shape, generator=generator, device=h0.device, dtype=h0.dtype)
    accept = torch.log(u) < h0 - h1  # False where h1 is NaN or infinite
    return s.where(accept, cur), accept


def _anneal(target: _Target, state: _State, betas: torch.Tensor, eps: torch.Tensor, leapfrog: int,
            generator: torch.Generator, adapt: float | None = None,
            tick: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Anneal along ``betas`` (g_0, ..., g_T) from chains distributed as f_{g_0}: for t = 1..T the log-weight
    gains (g_t - g_{t-1}) log p(x|z), then (t < T) z moves by HMC at g_t with step size eps[t] (B,).
    Returns (log w (C, B), acceptance (B,) averaged over the transitions and chains). With ``adapt`` (a target
    acceptance rate) eps[t] is adapted in place after each transition (a pilot run)."""
    log_w = torch.zeros_like(state.loglik)
    accepted = torch.zeros(state.z.shape[1], device=log_w.device, dtype=torch.float64)
    steps = len(betas) - 1
    for t in range(1, steps + 1):
        log_w = log_w + (betas[t] - betas[t - 1]) * state.loglik
        if t == steps:
            break
        if adapt is not None:
            eps[t] = eps[t - 1]
        state, accept = _hmc(target, state, float(betas[t]), eps[t], leapfrog, generator)
        if tick is not None:
            tick(t)
        rate = accept.to(torch.float64).mean(0)
        accepted += rate
        if adapt is not None:
            eps[t] = eps[t] * torch.exp(rate - adapt).to(eps.dtype)
    return log_w, accepted / max(1, steps - 1)


def log_mean_exp(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logsumexp_c log w_c - log C, its delta-method standard error sd_c(w) / (sqrt(C) mean_c(w))) over dim 0."""
    c = log_w.shape[0]
    est = torch.logsumexp(log_w, 0) - math.log(c)
    if c < 2:
        return est, torch.full_like(est, math.nan)
    w = torch.exp(log_w - log_w.max(0).values)
    return est, w.std(0) / (math.sqrt(c) * w.mean(0))


@dataclass
class AISSettings:
    """The settings of an AIS run: T annealing steps, C chains per example, L leapfrog steps per transition."""

    steps: int
    chains: int = DEFAULT_CHAINS
    leapfrog: int = DEFAULT_LEAPFROG
    schedule: str = "sigmoid"
    target_acceptance: float = TARGET_ACCEPTANCE
    pilot_chains: int = PILOT_CHAINS
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "chains", "leapfrog", "pilot_chains"):
            if int(getattr(self, name)) < 1:
                raise VaekitError(f"AIS {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.target_acceptance < 1:
            raise VaekitError(f"the target acceptance rate must be in (0, 1), got {self.target_acceptance}")
        annealing_schedule(1, self.schedule)  # the name is checked


def _batch_size(model: LatentVariableModel, chains: int, n: int, memory_budget: int) -> int:
    """Examples per batch so that chains x examples decoder rows with gradients fit ``memory_budget``; a
    :class:`ConfigError` when the chains of one example do not."""
    row = GRADIENT_FACTOR * bytes_per_row(model, int(model.latent_size))
    rows = max(1, memory_budget // max(1, row))
    if chains > rows:
        raise ConfigError(f"AIS with {chains:,} chains per example needs {chains * row / 2**20:,.0f} MB of decoder "
                          f"activations at once, over the memory budget of {memory_budget / 2**20:,.0f} MB; use at "
                          f"most {rows:,} chains (--ais-chains)")
    return max(1, min(n, rows // chains))


def _prior_state(model: LatentVariableModel, target: _Target, chains: int, b: int,
                 generator: torch.Generator) -> _State:
    return target(draw(model.prior_distribution(), (chains, b), generator))


#: The random streams of one seed: the pilot run's, the forward run's and the reverse run's.
_STREAMS = {"pilot": 0, "forward": 1, "reverse": 2}


def _generator(device: torch.device, seed: int, stream: str) -> torch.Generator:
    """A generator of its own for each stream of ``seed``, seeded far from ``seed`` itself (a generator seeded
    with ``seed``, which drew the data, must not give the chains the same numbers)."""
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + (_STREAMS[stream] + 1) * 0xBF58476D1CE4E5B9) % 2**63
    return torch.Generator(device=device).manual_seed(mixed)


def pilot_step_sizes(model: LatentVariableModel, target: _Target, betas: torch.Tensor, b: int,
                     settings: AISSettings, generator: torch.Generator) -> torch.Tensor:
    """The step sizes (T + 1, B) at the temperatures ``betas``, from a pilot forward run of
    ``settings.pilot_chains`` chains over at most :data:`PILOT_STEPS` temperatures of the same schedule, adapted
    toward the target acceptance rate at each (the module docstring); log eps is interpolated linearly in beta
    between them. The pilot's weights are discarded."""
    chains = min(settings.pilot_chains, settings.chains)
    coarse = annealing_schedule(min(settings.steps, PILOT_STEPS), settings.schedule, betas.dtype).to(betas.device)
    state = _prior_state(model, target, chains, b, generator)
    eps = torch.full((len(coarse), b), INITIAL_STEP, device=state.z.device, dtype=state.z.dtype)
    _anneal(target, state, coarse, eps, settings.leapfrog, generator, adapt=settings.target_acceptance)
    eps[-1] = eps[-2]
    eps[0] = eps[1]
    right = torch.searchsorted(coarse, betas).clamp(1, len(coarse) - 1)
    frac = ((betas - coarse[right - 1]) / (coarse[right] - coarse[right - 1])).clamp(0, 1).unsqueeze(-1)
    log_eps = eps.log()
    return torch.exp(log_eps[right - 1] * (1 - frac) + log_eps[right] * frac)


@contextlib.contextmanager
def _evaluating(model: LatentVariableModel):
    """The model in eval mode and its frozen context (a VampPrior encodes its pseudo-inputs once); the mode is
    restored after."""
    was_training = model.training
    model.eval()
    try:
        with model.frozen():
            yield
    finally:
        model.train(was_training)


def ais(model: LatentVariableModel, x: torch.Tensor, settings: AISSettings, *, y: torch.Tensor | None = None,
        z_exact: torch.Tensor | None = None, step_sizes: torch.Tensor | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET, progress: Callable[[int, int], None] | None = None) -> AISResult:
    """AIS estimates of log p(x), nats, for the examples x (N, ...) (labels ``y`` of a conditional model).
    ``progress(done, total)`` follows the temperatures annealed, over every batch of examples.

    Forward (``z_exact`` None): from the prior, a stochastic lower bound. Reverse (``z_exact`` (N, L), an exact
    posterior sample per example, e.g. the code that generated a simulated x): from beta = 1 down to 0, a
    stochastic upper bound, -(logsumexp_c log w_c - log C). ``step_sizes`` (T + 1, N): the step size of each
    temperature, instead of a pilot run's (:func:`pilot_step_sizes`). Examples go in batches whose chains x
    examples decoder rows with gradients fit ``memory_budget`` bytes; deterministic for a given seed and budget.
    """
    check_annealable(model)
    device, dtype = model_device_dtype(model)
    x = x.reshape(x.shape[0], -1)
    n, reverse = x.shape[0], z_exact is not None
    betas = annealing_schedule(settings.steps, settings.schedule, dtype).to(device)
    bsz = _batch_size(model, settings.chains, n, memory_budget)
    pilot, gen = (_generator(device, settings.seed, s) for s in ("pilot", "reverse" if reverse else "forward"))
    logs, accs, epss, evaluations = [], [], [], 0
    t0 = time.perf_counter()
    total = -(-n // bsz) * settings.steps
    if progress is not None:
        progress(0, total)
    with _evaluating(model):
        for start in range(0, n, bsz):
            xb = x[start : start + bsz].to(device=device, dtype=dtype)
            b = xb.shape[0]
            done = start // bsz * settings.steps

            def tick(t: int, done: int = done) -> None:
                if progress is not None:
                    progress(done + t, total)
            target = _Target(model, xb, y[start : start + b].to(device) if y is not None else None)
            eps = (step_sizes[:, start : start + b].to(device=device, dtype=dtype).clone() if step_sizes is not None
                   else pilot_step_sizes(model, target, betas, b, settings, pilot))
            if reverse:
                z0 = z_exact[start : start + b].to(device=device, dtype=dtype).expand(settings.chains, -1, -1)
                log_w, acc = _anneal(target, target(z0), betas.flip(0), eps.flip(0), settings.leapfrog, gen,
                                     tick=tick)
            else:
                state = _prior_state(model, target, settings.chains, b, gen)
                log_w, acc = _anneal(target, state, betas, eps, settings.leapfrog, gen, tick=tick)
            logs.append(log_w.detach().to("cpu", torch.float64))
            accs.append(acc.cpu())
            epss.append(eps.detach().to("cpu", torch.float64))
            evaluations += target.evaluations
    if progress is not None:
        progress(total, total)
    log_w = torch.cat(logs, 1)
    est, se = log_mean_exp(log_w)
    return AISResult(log_px=-est if reverse else est, stderr=se, acceptance=torch.cat(accs), log_weights=log_w,
                     step_sizes=torch.cat(epss, 1), steps=settings.steps, chains=settings.chains,
                     leapfrog=settings.leapfrog, schedule=settings.schedule, reverse=reverse,
                     seconds=time.perf_counter() - t0, evaluations=evaluations)
