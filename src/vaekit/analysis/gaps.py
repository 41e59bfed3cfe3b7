"""The ELBO's gap split into approximation and amortization (Cremer, Li and Duvenaud 2018).

For an example x, with q_phi(z|x) the encoder's posterior and q*(z|x) the best member of the same family for that
example alone (its parameters fitted to x directly),

    log p(x) - ELBO[q_phi]  =  (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q_phi])            (nats)
                               approximation gap         amortization gap

The approximation gap is KL(q* || p(z|x)): what the family cannot represent. The amortization gap is what the
encoder loses by predicting q's parameters from x instead of fitting them to each x.

q* is fitted per example from the encoder's output lambda_phi(x) (the posterior family's parameters: a VAE's
encoder output, or a diagonal Gaussian's mean and log-variance) by Adam on the reparameterized Monte Carlo ELBO,
``steps`` steps of ``draws`` draws, at the learning rate ``lr`` for the first three quarters of the steps and then
decayed to lr / 100 along a cosine (which settles the parameters' Monte Carlo jitter); all examples at once (the
loss is a sum over examples, so every example's parameters follow their own gradient). The network weights, p(z)
and p(x|z) stay as they are.

Convergence check, at the full learning rate: the ELBO at the average of the parameters over the steps from 55% to
75% of the way is less than :data:`CONVERGED_NATS` above the ELBO at their average over the steps from 35% to 55%
(``converged``; False for fewer than 20 steps). Averages, because Adam at a fixed learning rate leaves the
parameters jittering about the optimum; both ELBOs on the same :data:`CHECK_DRAWS` base draws, so that the rise is
measured without their noise.

The encoder's q and the fitted one are then compared on ``draws_eval`` fresh draws and the better is kept (so
ELBO[q*] >= ELBO[q_phi] up to Monte Carlo error); finally both ELBOs are estimated on another ``draws_eval``
draws, the same base draws for both (common random numbers: the amortization gap is then a difference of strongly
correlated estimates, and exactly 0 where the encoder's q is kept). The ELBO uses the closed-form KL(q || p(z))
where one is registered, else log q - log p(z) at the draws.

log p(x) comes from outside (AIS, :mod:`vaekit.bounds.ais`, or an exact value); a lower bound on it (AIS or
IWAE_K) makes the approximation gap a lower estimate. Standard errors are over the examples (each example's
estimate carries its Monte Carlo error with it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.distributions import Distribution

from vaekit.bounds.kernels import likelihood_kernel
from vaekit.bounds.sizing import DEFAULT_MEMORY_BUDGET, bytes_per_row, model_device_dtype
from vaekit.distributions import DiagonalNormal, rsample_and_log_prob
from vaekit.distributions.kl import closed_form_kl
from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Adam steps, draws per step, the starting learning rate, and the draws of the final estimates, by default.
DEFAULT_STEPS = 500
DEFAULT_DRAWS = 8
DEFAULT_LR = 0.05
#: The fraction of the steps taken at the full learning rate, before its decay.
CONSTANT_FRACTION = 0.75
DEFAULT_EVAL_DRAWS = 1000
#: The rise of the ELBO over the second window of the convergence check below which a fit has converged, nats.
CONVERGED_NATS = 0.05
#: Draws of the ELBO estimates of the convergence check.
CHECK_DRAWS = 256
#: Where the two windows of the convergence check start, as fractions of the steps (the second ends at 75%).
CHECK_WINDOWS = (0.35, 0.55)


@dataclass
class GapResult:
    """Per-example ELBOs (CPU float64, nats) and the two gaps, with how they were obtained."""

    elbo_amortized: torch.Tensor  # (N,) ELBO[q_phi]
    elbo_optimal: torch.Tensor  # (N,) ELBO[q*]
    elbo_optimal_stderr: torch.Tensor  # (N,) Monte Carlo standard error of each ELBO[q*] estimate
    log_px: torch.Tensor  # (N,) the log p(x) given
    converged: torch.Tensor  # (N,) bool: the fit's convergence check
    fitted: torch.Tensor  # (N,) bool: the fitted q was kept (else the encoder's was better)
    steps: int
    draws: int
    lr: float
    seconds: float

    @property
    def approximation(self) -> torch.Tensor:
        """log p(x) - ELBO[q*] per example, nats."""
        return self.log_px - self.elbo_optimal

    @property
    def amortization(self) -> torch.Tensor:
        """ELBO[q*] - ELBO[q_phi] per example, nats."""
        return self.elbo_optimal - self.elbo_amortized

    def summary(self) -> dict[str, Any]:
        """Means over the examples with their standard errors: ``approximation_gap``, ``amortization_gap`` (and
        ``_stderr`` twins), ``elbo_optimal``, the fit's settings and the fraction that converged."""
        out: dict[str, Any] = {}
        for name, values in (("approximation_gap", self.approximation), ("amortization_gap", self.amortization),
                             ("elbo_optimal", self.elbo_optimal)):
            out[name], out[name + "_stderr"] = float(values.mean()), _stderr(values)
        out |= {"gaps_steps": self.steps, "gaps_draws": self.draws, "gaps_lr": self.lr,
                "gaps_converged": float(self.converged.double().mean()),
                "gaps_fitted": float(self.fitted.double().mean()), "gaps_seconds": self.seconds}
        return out


def _stderr(values: torch.Tensor) -> float:
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else math.nan


def check_fittable(model: LatentVariableModel) -> None:
    """Raise :class:`VaekitError` for a model whose q(z|x) is discrete or a point mass (nothing to fit per example
    by gradients); the other refusals come with the parameters (:func:`local_parameters`)."""
    if model.is_discrete or model.is_autoencoder:
        raise VaekitError("the gap decomposition fits a continuous, reparameterized q(z|x) per example; this model's "
                          f"q is {'discrete' if model.is_discrete else 'a point mass (an autoencoder)'}")


def local_parameters(model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, Callable[[torch.Tensor], Distribution]]:
    """(lambda (N, P), the map from parameters to q(z|x)): the encoder's output and the posterior family of a VAE;
    the mean and log-variance of a diagonal Gaussian q otherwise. Raises :class:`VaekitError` for a q that has no
    per-example parameters to fit (discrete codes, a point mass, a two-level posterior)."""
    check_fittable(model)
    family, encode = getattr(model, "posterior_family", None), getattr(model, "encode", None)
    if family is not None and callable(encode):
        return encode(x, y).detach(), family
    q = model.posterior(x) if y is None else model.posterior(x, y)
    if isinstance(q, DiagonalNormal) and q.event_dims == 1:
        latent = q.loc.shape[-1]
        return (torch.cat([q.loc, q.logvar], -1).detach(),
                lambda p: DiagonalNormal(p[..., :latent], p[..., latent:]))
    raise VaekitError(f"the gap decomposition needs q(z|x)'s per-example parameters; this model's q is a "
                      f"{type(q).__name__} without them (a VAE's posterior family, or a diagonal Gaussian)")


def elbo_draws(q: Distribution, log_prior: Callable[[torch.Tensor], torch.Tensor], prior: Distribution,
               loglik: Callable[[torch.Tensor], torch.Tensor], draws: int,
               generator: torch.Generator) -> torch.Tensor:
    """Per-draw ELBO terms (S, N), nats: log p(x|z_s) - KL(q || p(z)) with the closed-form KL where registered,
    else log p(x|z_s) + log p(z_s) - log q(z_s); their mean over s estimates the ELBO (reparameterized)."""
    z, log_q = rsample_and_log_prob(q, (draws,), generator)
    kl = closed_form_kl(q, prior)
    return loglik(z) - kl if kl is not None else loglik(z) + log_prior(z) - log_q


def _fit(start: torch.Tensor, build: Callable[[torch.Tensor], Distribution],
         terms: Callable[[Distribution, int, torch.Generator], torch.Tensor], steps: int, draws: int, lr: float,
         seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on -sum_n ELBO_n over the parameters (N, P) from ``start`` (the module docstring): (the fitted
    parameters, converged (N,) bool). Gradients reach the parameters alone, never the model's weights."""
    params = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([params], lr=lr)
    constant = int(CONSTANT_FRACTION * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 if i < constant else 0.01 + 0.99 * 0.5 * (
        1 + math.cos(math.pi * (i - constant) / max(1, steps - constant))))
    generator = _seeded(start.device, seed)
    bounds = [int(f * steps) for f in CHECK_WINDOWS] + [constant]
    averages = [torch.zeros_like(start), torch.zeros_like(start)]
    for i in range(steps):
        with torch.enable_grad():
            elbo = terms(build(params), draws, generator).mean(0)
            (params.grad,) = torch.autograd.grad(-elbo.sum(), params)
        opt.step()
        schedule.step()
        for w in range(2):
            if bounds[w] <= i < bounds[w + 1]:
                averages[w] += params.detach() / (bounds[w + 1] - bounds[w])
    if steps < 20:
        return params.detach(), torch.zeros(start.shape[0], dtype=torch.bool)
    with torch.no_grad():  # the same base draws for both: the rise without their noise
        first, last = (terms(build(a), CHECK_DRAWS, _seeded(start.device, seed + 1)).mean(0) for a in averages)
    return params.detach(), (last - first < CONVERGED_NATS).cpu()


def _seeded(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed) % 2**63)


def _batch_gaps(model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None, steps: int, draws: int,
                lr: float, draws_eval: int, seed: int) -> dict[str, torch.Tensor]:
    """The fit, the choice and the final estimates of the module docstring for one batch of examples."""
    start, build = local_parameters(model, x, y)
    prior, loglik = model.prior_distribution(), likelihood_kernel(model, x, True, y)

    def terms(q: Distribution, s: int, g: torch.Generator) -> torch.Tensor:
        return elbo_draws(q, model.log_prior, prior, loglik, s, g)

    fitted, converged = _fit(start, build, terms, steps, draws, lr, seed + 3)
    with torch.no_grad():
        choose = [terms(build(p), draws_eval, _seeded(x.device, seed + 1)).mean(0) for p in (start, fitted)]
        keep = choose[1] > choose[0]
        best = torch.where(keep.unsqueeze(-1), fitted, start)
        amortized, optimal = (terms(build(p), draws_eval, _seeded(x.device, seed + 2)).double() for p in (start, best))
    return {"elbo_amortized": amortized.mean(0), "elbo_optimal": optimal.mean(0),
            "elbo_optimal_stderr": optimal.std(0) / math.sqrt(draws_eval), "converged": converged, "fitted": keep}


def gap_decomposition(model: LatentVariableModel, x: torch.Tensor, log_px: torch.Tensor, *,
                      y: torch.Tensor | None = None, steps: int = DEFAULT_STEPS, draws: int = DEFAULT_DRAWS,
                      lr: float = DEFAULT_LR, draws_eval: int = DEFAULT_EVAL_DRAWS, seed: int = 0,
                      memory_budget: int = DEFAULT_MEMORY_BUDGET,
                      progress: Callable[[int, int], None] | None = None) -> GapResult:
    """The approximation and amortization gaps of each example x (N, ...) given its ``log_px`` (N,) (labels ``y`` of
    a conditional model); see the module docstring. Examples go in batches whose draws fit ``memory_budget``;
    ``progress(done, N)`` follows the examples fitted."""
    if steps < 1 or draws < 1 or draws_eval < 2 or not lr > 0:
        raise VaekitError(f"the gap fit needs steps >= 1, draws >= 1, draws_eval >= 2 and lr > 0; got steps={steps}, "
                          f"draws={draws}, draws_eval={draws_eval}, lr={lr}")
    device, dtype = model_device_dtype(model)
    x = x.reshape(x.shape[0], -1)
    rows = max(1, memory_budget // max(1, 3 * bytes_per_row(model, int(model.latent_size))))
    bsz = max(1, rows // max(3 * draws, draws_eval))
    parts: dict[str, list[torch.Tensor]] = {}
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with model.frozen():
            if progress is not None:
                progress(0, x.shape[0])
            for i, start in enumerate(range(0, x.shape[0], bsz)):
                xb = x[start : start + bsz].to(device=device, dtype=dtype)
                yb = y[start : start + bsz].to(device) if y is not None else None
                out = _batch_gaps(model, xb, yb, steps, draws, lr, draws_eval, seed * 1_000_003 + 4 * i)
                for key, value in out.items():
                    parts.setdefault(key, []).append(value.detach().cpu())
                if progress is not None:
                    progress(min(x.shape[0], start + bsz), x.shape[0])
    finally:
        model.train(was_training)
    cat = {key: torch.cat(values) for key, values in parts.items()}
    return GapResult(elbo_amortized=cat["elbo_amortized"].double(), elbo_optimal=cat["elbo_optimal"].double(),
                     elbo_optimal_stderr=cat["elbo_optimal_stderr"].double(),
                     log_px=torch.as_tensor(log_px, dtype=torch.float64).reshape(-1).cpu(),
                     converged=cat["converged"], fitted=cat["fitted"], steps=steps, draws=draws, lr=lr,
                     seconds=time.perf_counter() - t0)
