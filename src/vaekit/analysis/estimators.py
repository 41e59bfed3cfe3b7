r"""Gradient estimators for :math:`\nabla_\theta\, \mathbb{E}_{x \sim q_\theta}[f(x)]`.

Two ways to take the gradient of an expectation through samples:

* **Pathwise (reparameterization).** Write the sample as a deterministic, differentiable
  function of the parameters and independent noise, :math:`x = g_\theta(v)`,
  :math:`v \sim p(v)`. Then

  .. math::
      \nabla_\theta \mathbb{E}_v[f(g_\theta(v))] = \mathbb{E}_v[\nabla_\theta f(g_\theta(v))]
      \approx \frac1m \sum_{i=1}^m \nabla_\theta f(g_\theta(v_i)).

  :func:`pathwise_gradient` uses a distribution's own ``rsample`` (e.g.
  ``Normal(mu, s)``: :math:`x = \mu + s\varepsilon`); :func:`reparameterized_gradient`
  takes any ``g`` and any noise, e.g. logistic or uniform noise -- nothing here needs a
  Gaussian.

* **Score function (REINFORCE).** With :math:`\nabla_\theta q = q\, \nabla_\theta \log q`,

  .. math::
      \nabla_\theta \mathbb{E}_{q_\theta}[f(x)]
      = \mathbb{E}_{q_\theta}[(f(x) - b)\, \nabla_\theta \log q_\theta(x)]
      \approx \frac1m \sum_i (f(x_i) - b_i)\, \nabla_\theta \log q_\theta(x_i),

  valid for any ``f`` (not differentiable, discrete ``x``) but usually of much higher
  variance. :func:`score_function_gradient` takes an optional baseline ``b``.

Every estimator returns a :class:`GradientEstimate`: the mean of the ``m`` per-sample
gradients and its standard error (sample standard deviation over the ``m`` samples
divided by :math:`\sqrt m`). Per-sample gradients are computed in one backward pass:
the parameters are copied once per sample, stacked along a leading dimension, and
``d/dP sum_i h_i(P_i)`` has row ``i`` equal to ``dh_i/dtheta`` -- no Python loop over samples.
With ``trials=T`` the estimators compute ``T`` independent ``m``-sample estimates at once
(leading dimension ``T``), which is how :func:`worked_example_experiment` measures
their variance.

The worked example (:func:`worked_example_variance`): :math:`x = \theta + \varepsilon`,
:math:`\varepsilon \sim N(0, 1)`, :math:`f(x) = x^2`, true gradient :math:`2\theta`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from torch.distributions import Distribution

Params = Tensor | Sequence[Tensor]
Grad = Tensor | tuple[Tensor, ...]

#: Estimator names used by :func:`worked_example_experiment` and ``vaekit gradients``;
#: ``score_function_baseline`` is the score function with the leave-one-out baseline.
ESTIMATORS: tuple[str, ...] = ("pathwise", "score_function", "score_function_baseline")

#: Draws per vectorised call in :func:`worked_example_experiment` (bounds memory).
_CHUNK_DRAWS = 1 << 21


@dataclass(frozen=True)
class GradientEstimate:
    r"""A Monte Carlo gradient estimate from ``samples`` draws.

    Attributes:
        gradient: :math:`\hat g = \frac1m \sum_i g_i`, same shape as the parameter (a tuple
            for several parameters); with ``trials=T`` a leading dimension ``T``.
        stderr: per-coordinate standard error :math:`s_g / \sqrt m`, where :math:`s_g` is
            the sample standard deviation (``m - 1`` denominator) of the per-sample
            gradients; NaN when ``m = 1``. Same structure as ``gradient``.
        samples: ``m``, the number of draws per estimate.
        value: :math:`\frac1m \sum_i f(x_i)`, the estimate of :math:`\mathbb{E}[f]`
            (shape ``()``, or ``(T,)`` with trials).
        per_sample: the per-sample gradients :math:`g_i`, shape ``(m, *param.shape)``
            (or ``(T, m, *param.shape)``); same structure as ``gradient``.
    """

    gradient: Grad
    stderr: Grad
    samples: int
    value: Tensor
    per_sample: Grad = field(repr=False)


# --------------------------------------------------------------------------- helpers


def _as_params(params: Params) -> tuple[tuple[Tensor, ...], bool]:
    """Return (tuple of detached tensors, whether a single tensor was given)."""
    single = isinstance(params, Tensor)
    seq = (params,) if single else tuple(params)
    if not seq:
        raise ValueError("params is empty: pass a tensor or a sequence of tensors")
    for k, p in enumerate(seq):
        if not isinstance(p, Tensor):
            raise ValueError(f"params[{k}] is a {type(p).__name__}, expected a torch.Tensor")
        if not p.is_floating_point():
            raise ValueError(
                f"params[{k}] has dtype {p.dtype}; gradients need a floating-point tensor"
            )
    return tuple(p.detach() for p in seq), single


def _check_counts(samples: int, trials: int | None) -> int:
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise ValueError(f"trials must be a positive integer or None, got {trials!r}")
    return samples * (trials or 1)


def _stacked(params: tuple[Tensor, ...], n: int) -> tuple[Tensor, ...]:
    """One independent copy of each parameter per draw, stacked along dim 0, as leaves."""
    return tuple(p.unsqueeze(0).expand(n, *p.shape).clone().requires_grad_(True) for p in params)


@contextmanager
def _random_scope(
    seed: int | None, generator: torch.Generator | None, device: torch.device
) -> Iterator[None]:
    """Draw from ``seed`` or ``generator`` without disturbing the global RNG.

    ``torch.distributions`` samples from the global generator, so a private stream is
    made by forking the global state; a ``generator`` is advanced past the draws used.
    """
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if seed is None and generator is None:
        yield
        return
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        if seed is not None:
            if cuda:
                torch.cuda.manual_seed(seed)
            else:
                torch.default_generator.manual_seed(int(seed))
        else:
            assert generator is not None
            if generator.device.type != device.type:
                raise ValueError(
                    f"generator is on {generator.device} but the parameters are on {device}"
                )
            if cuda:
                torch.cuda.set_rng_state(generator.get_state(), device)
            else:
                torch.set_rng_state(generator.get_state())
        yield
        if generator is not None:
            generator.set_state(torch.cuda.get_rng_state(device) if cuda else torch.get_rng_state())


def _apply_f(f: Callable[..., Tensor], args: tuple[Tensor, ...], n: int, batched: bool) -> Tensor:
    """``f`` on each of the ``n`` draws (vectorised with ``torch.func.vmap`` unless batched)."""
    out = f(*args) if batched else torch.func.vmap(f)(*args)
    if not isinstance(out, Tensor) or out.shape != (n,):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        how = "f(x_batch) must return shape (n,)" if batched else "f must return a scalar tensor"
        raise ValueError(f"{how} per draw; got {shape} for {n} draws")
    if not out.is_floating_point():
        out = out.to(torch.get_default_dtype())
    return out


def _build_batched(make_dist: Callable[..., Distribution], params: tuple[Tensor, ...],
                   stacked: tuple[Tensor, ...], n: int) -> Distribution:
    ref = make_dist(*params)
    if not isinstance(ref, Distribution):
        raise ValueError(
            f"make_dist must return a torch.distributions.Distribution, got {type(ref).__name__}"
        )
    dist = make_dist(*stacked)
    want = torch.Size((n,)) + ref.batch_shape
    if dist.batch_shape != want or dist.event_shape != ref.event_shape:
        raise ValueError(
            "make_dist must treat a leading dimension of its parameters as a batch dimension "
            f"(as torch.distributions constructors do): with parameters stacked to {n} copies it "
            f"built batch_shape {tuple(dist.batch_shape)}, event_shape {tuple(dist.event_shape)}; "
            f"expected {tuple(want)}, {tuple(ref.event_shape)}"
        )
    return dist


def _per_sample_grads(total: Tensor, stacked: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    grads = torch.autograd.grad(total, stacked, allow_unused=True)
    return tuple(torch.zeros_like(s) if g is None else g for g, s in zip(grads, stacked, strict=True))


def _summarise(per: tuple[Tensor, ...], fx: Tensor, samples: int, trials: int | None,
               single: bool) -> GradientEstimate:
    """Mean and standard error over the ``m`` draws of each estimate."""
    lead = (trials, samples) if trials is not None else (samples,)
    dim = len(lead) - 1
    per = tuple(g.reshape(*lead, *g.shape[1:]).detach() for g in per)
    mean = tuple(g.mean(dim) for g in per)
    if samples > 1:
        err = tuple(g.std(dim) / math.sqrt(samples) for g in per)
    else:
        err = tuple(torch.full_like(m, math.nan) for m in mean)
    value = fx.detach().reshape(lead).mean(dim)

    def pack(t: tuple[Tensor, ...]) -> Grad:
        return t[0] if single else t

    return GradientEstimate(pack(mean), pack(err), samples, value, pack(per))


def _check_baseline(baseline: float | str | None, samples: int) -> None:
    """Refuse a baseline other than ``None``, a finite number or ``"leave_one_out"`` (which needs ``samples >= 2``)."""
    loo = isinstance(baseline, str)
    if loo and baseline != "leave_one_out":
        raise ValueError(f"baseline must be None, a number or 'leave_one_out', got {baseline!r}")
    if loo and samples < 2:
        raise ValueError("the leave-one-out baseline needs samples >= 2 (it averages the others)")
    if not loo and baseline is not None:
        if isinstance(baseline, bool) or not isinstance(baseline, int | float):
            raise ValueError(f"baseline must be None, a number or 'leave_one_out', got {baseline!r}")
        if not math.isfinite(baseline):
            raise ValueError(f"baseline must be finite, got {baseline!r}")


def _sample_with_log_prob(dist: Distribution, n: int) -> tuple[Tensor, Tensor]:
    """``n`` draws x (not differentiated) and log q(x) of each, summed over the batch dimensions, shape ``(n,)``."""
    with torch.no_grad():
        x = dist.sample()
    try:
        logq = dist.log_prob(x)
    except NotImplementedError:
        raise ValueError(
            f"{type(dist).__name__} does not implement log_prob, which the score-function "
            "estimator needs"
        ) from None
    return x, logq.reshape(n, -1).sum(1)


def _baseline_values(fx: Tensor, baseline: float | str | None, samples: int, n: int) -> Tensor | float:
    r"""The baseline :math:`b_i` of each draw: leave-one-out :math:`\frac{1}{m-1}\sum_{j \ne i} f(x_j)` within
    its estimate (shape ``(n,)``), else the constant (0 for ``None``)."""
    if isinstance(baseline, str):
        fm = fx.reshape(-1, samples)
        return ((fm.sum(1, keepdim=True) - fm) / (samples - 1)).reshape(n)
    return float(baseline or 0.0)


# --------------------------------------------------------------------------- estimators


def pathwise_gradient(
    make_dist: Callable[..., Distribution],
    params: Params,
    f: Callable[[Tensor], Tensor],
    samples: int = 1,
    *,
    trials: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batched_f: bool = False,
) -> GradientEstimate:
    r"""Pathwise (reparameterization) estimate of :math:`\nabla_\theta \mathbb{E}_{q_\theta}[f(x)]`.

    .. math::
        \hat g = \frac1m \sum_{i=1}^m \nabla_\theta f(x_i), \qquad
        x_i = \texttt{make\_dist}(\theta).\texttt{rsample}(),

    unbiased whenever ``rsample`` is a differentiable map of parameter-free noise and
    ``f`` is differentiable (a.e., with an integrable gradient).

    Args:
        make_dist: ``make_dist(*params) -> Distribution`` with ``rsample``. It must treat a
            leading dimension of its parameters as a batch dimension, as every
            ``torch.distributions`` constructor does (``Normal(mu, s)`` with ``mu`` of shape
            ``(n, d)`` is ``n`` independent Normals); this is checked.
        params: a floating tensor or a sequence of them (e.g. leaf tensors with
            ``requires_grad``; they are detached, their ``.grad`` is left alone).
        f: maps one sample ``x`` (shape ``batch_shape + event_shape`` of the distribution)
            to a scalar tensor; vectorised with ``torch.func.vmap``. With ``batched_f=True``
            ``f`` gets all ``n`` samples stacked on dim 0 and returns shape ``(n,)``.
        samples: ``m``, draws per estimate.
        trials: compute this many independent estimates at once (leading dimension).
        seed, generator: a private random stream (the global RNG is left untouched).

    Returns:
        :class:`GradientEstimate`; ``gradient`` has the shape of ``params`` (a tuple for
        several), ``stderr`` is the sample std of the per-sample gradients over :math:`\sqrt m`.

    Raises:
        ValueError: the distribution has no ``rsample`` (use :func:`score_function_gradient`),
            ``make_dist`` does not broadcast, ``f`` does not return one scalar per sample.
    """
    ps, single = _as_params(params)
    n = _check_counts(samples, trials)
    ref = make_dist(*ps)
    if not getattr(ref, "has_rsample", False):
        raise ValueError(
            f"{type(ref).__name__} has no rsample (has_rsample=False), so the pathwise estimator "
            "cannot differentiate through its samples; use score_function_gradient, or write the "
            "sample as x = g(theta, v) with parameter-free noise v and use reparameterized_gradient"
        )
    with torch.enable_grad(), _random_scope(seed, generator, ps[0].device):
        stacked = _stacked(ps, n)
        dist = _build_batched(make_dist, ps, stacked, n)
        x = dist.rsample()
        fx = _apply_f(f, (x,), n, batched_f)
        per = _per_sample_grads(fx.sum(), stacked)
    return _summarise(per, fx, samples, trials, single)


def score_function_gradient(
    make_dist: Callable[..., Distribution],
    params: Params,
    f: Callable[[Tensor], Tensor],
    samples: int = 1,
    *,
    baseline: float | Literal["leave_one_out"] | None = None,
    trials: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batched_f: bool = False,
) -> GradientEstimate:
    r"""Score-function (REINFORCE) estimate of :math:`\nabla_\theta \mathbb{E}_{q_\theta}[f(x)]`.

    .. math::
        \hat g = \frac1m \sum_{i=1}^m (f(x_i) - b_i)\, \nabla_\theta \log q_\theta(x_i),
        \qquad x_i \sim q_\theta \text{ (not differentiated)}.

    ``f`` need not be differentiable and ``x`` may be discrete; ``q`` needs ``log_prob``.

    Baselines (control variates), both unbiased because
    :math:`\mathbb{E}_q[\nabla_\theta \log q_\theta(x)] = \nabla_\theta \int q_\theta = 0`:

    * ``baseline=b`` (a constant): :math:`\mathbb{E}[b\,\nabla \log q(x_i)] = b \cdot 0 = 0`.
    * ``baseline="leave_one_out"``: :math:`b_i = \frac{1}{m-1}\sum_{j \ne i} f(x_j)` depends
      only on the other draws, hence is independent of :math:`x_i`, so
      :math:`\mathbb{E}[b_i \nabla \log q(x_i)] = \mathbb{E}[b_i]\cdot 0 = 0`. Needs
      ``m >= 2``. Algebraically :math:`f_i - b_i = \frac{m}{m-1}(f_i - \bar f)`, so the
      estimate is the unbiased sample covariance of :math:`f` and the score. Its terms are
      not independent, so ``stderr`` (std / sqrt(m)) is then an approximation.

    Args:
        make_dist, params, f, samples, trials, seed, generator, batched_f: as in
            :func:`pathwise_gradient` (``make_dist`` need not have ``rsample``). The
            ``log_prob`` of a draw is summed over the distribution's batch dimensions.
        baseline: ``None`` (no baseline), a float, or ``"leave_one_out"``.

    Raises:
        ValueError: the distribution has no ``log_prob``, a bad baseline, ``m < 2`` with
            the leave-one-out baseline.
    """
    ps, single = _as_params(params)
    n = _check_counts(samples, trials)
    _check_baseline(baseline, samples)
    with torch.enable_grad(), _random_scope(seed, generator, ps[0].device):
        stacked = _stacked(ps, n)
        dist = _build_batched(make_dist, ps, stacked, n)
        x, logq = _sample_with_log_prob(dist, n)
        fx = _apply_f(f, (x,), n, batched_f).detach()
        b = _baseline_values(fx, baseline, samples, n)
        per = _per_sample_grads(((fx - b) * logq).sum(), stacked)
    return _summarise(per, fx, samples, trials, single)


def reparameterized_gradient(
    g: Callable[..., Tensor],
    params: Params,
    noise: Distribution,
    f: Callable[[Tensor], Tensor],
    samples: int = 1,
    *,
    trials: int | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batched: bool = False,
) -> GradientEstimate:
    r"""The reparameterization trick with any noise: :math:`x = g(\theta, v)`, :math:`v \sim p(v)`.

    .. math::
        \nabla_\theta \mathbb{E}_{v}[f(g(\theta, v))] = \mathbb{E}_v[\nabla_\theta f(g(\theta, v))]
        \approx \frac1m \sum_i \nabla_\theta f(g(\theta, v_i)).

    Nothing requires Gaussian noise, e.g. ``x = theta + s * v`` with ``v ~ Logistic(0, 1)``
    (``v = log u - log(1 - u)``, ``u ~ Uniform(0, 1)``), ``x = theta * u``, or
    ``x = -log(u) / lam`` (an exponential by its inverse CDF). Only ``g`` and ``f`` are
    differentiated; ``noise`` just needs ``sample`` and must not depend on ``params``.

    Args:
        g: ``g(*params, v) -> x`` for one noise draw ``v`` (vectorised with
            ``torch.func.vmap``); with ``batched=True``, ``g`` and ``f`` get all draws
            stacked on dim 0 (params too) and ``f`` returns shape ``(n,)``.
        params: a floating tensor or a sequence of them.
        noise: a ``torch.distributions`` distribution; one draw is ``noise.sample()``.
        f: one ``x`` -> scalar tensor.
        samples, trials, seed, generator: as in :func:`pathwise_gradient`.
    """
    ps, single = _as_params(params)
    n = _check_counts(samples, trials)
    if not isinstance(noise, Distribution):
        raise ValueError(f"noise must be a torch.distributions.Distribution, got {type(noise).__name__}")
    with torch.enable_grad(), _random_scope(seed, generator, ps[0].device):
        with torch.no_grad():
            v = noise.sample((n,))
        stacked = _stacked(ps, n)
        if batched:
            fx = _apply_f(f, (g(*stacked, v),), n, True)
        else:
            fx = _apply_f(lambda *a: f(g(*a)), (*stacked, v), n, False)
        per = _per_sample_grads(fx.sum(), stacked)
    return _summarise(per, fx, samples, trials, single)


# --------------------------------------------------------------------------- worked example


def worked_example_variance(estimator: str, theta: float, samples: int,
                            baseline: float = 0.0) -> float:
    r"""Analytic variance of an ``m``-sample estimate in the worked example.

    :math:`x = \theta + \varepsilon`, :math:`\varepsilon \sim N(0,1)`, :math:`f(x) = x^2`,
    :math:`\nabla_\theta \mathbb{E}[x^2] = 2\theta`. Gaussian moments
    :math:`\mathbb{E}\varepsilon^{2} = 1, \mathbb{E}\varepsilon^{4} = 3, \mathbb{E}\varepsilon^{6} = 15`,
    odd moments 0.

    ``"pathwise"``: per-sample gradient :math:`2x = 2\theta + 2\varepsilon`, variance 4, so

    .. math:: \operatorname{Var}\hat g = 4/m.

    ``"score_function"`` with constant baseline :math:`b` (default 0): the score is
    :math:`\partial_\theta \log N(x;\theta,1) = x - \theta = \varepsilon`; per-sample term
    :math:`(x^2 - b)\varepsilon = (c + 2\theta\varepsilon + \varepsilon^2)\varepsilon` with
    :math:`c = \theta^2 - b`, mean :math:`2\theta`, and second moment
    :math:`\mathbb{E}[(c\varepsilon + 2\theta\varepsilon^2 + \varepsilon^3)^2]
    = c^2 + 12\theta^2 + 15 + 2c\cdot 3 + 0 + 0`, so

    .. math:: \operatorname{Var}\hat g = (c^2 + 6c + 8\theta^2 + 15)/m,

    which for :math:`b = 0` is :math:`(\theta^4 + 14\theta^2 + 15)/m` and is smallest at
    :math:`b = \theta^2 + 3` (:math:`(8\theta^2 + 6)/m`).

    ``"score_function_baseline"`` (leave-one-out, ``m >= 2``): the estimate is the unbiased
    sample covariance of :math:`X = x^2` and :math:`Y = \varepsilon`, whose variance is
    :math:`\mu_{22}/m - \frac{m-2}{m(m-1)}\sigma_{XY}^2 + \frac{\sigma_X^2\sigma_Y^2}{m(m-1)}`
    with :math:`\sigma_{XY} = 2\theta`, :math:`\sigma_X^2 = 4\theta^2 + 2`, :math:`\sigma_Y^2 = 1`,
    :math:`\mu_{22} = \mathbb{E}[(2\theta\varepsilon + \varepsilon^2 - 1)^2\varepsilon^2]
    = 12\theta^2 + 10`:

    .. math::
        \operatorname{Var}\hat g = \frac{12\theta^2 + 10}{m} - \frac{(m-2)\,4\theta^2}{m(m-1)}
        + \frac{4\theta^2 + 2}{m(m-1)} \;\to\; \frac{8\theta^2 + 10}{m},

    the constant baseline :math:`b = \mathbb{E}[x^2] = \theta^2 + 1` in the limit.
    """
    m = samples
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    t2 = float(theta) ** 2
    if estimator == "pathwise":
        return 4.0 / m
    if estimator == "score_function":
        c = t2 - float(baseline)
        return (c * c + 6.0 * c + 8.0 * t2 + 15.0) / m
    if estimator == "score_function_baseline":
        if m < 2:
            raise ValueError("the leave-one-out baseline needs samples >= 2")
        return (12.0 * t2 + 10.0) / m - (m - 2) * 4.0 * t2 / (m * (m - 1)) + (4.0 * t2 + 2.0) / (
            m * (m - 1)
        )
    raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")


@dataclass(frozen=True)
class ExperimentRow:
    """Statistics of ``trials`` independent ``samples``-draw estimates of one estimator.

    ``variance`` is the sample variance over trials (``trials - 1`` denominator);
    ``stderr_of_mean = sqrt(variance / trials)``; ``bias_se = (mean - true) / stderr_of_mean``;
    ``variance_stderr`` is the standard error of the sample variance,
    ``sqrt((mu4 - variance**2) / trials)`` with ``mu4`` the fourth central moment of the
    estimates; ``variance_ratio = variance / analytic_variance``.
    """

    estimator: str
    samples: int
    trials: int
    mean: float
    variance: float
    stderr_of_mean: float
    bias_se: float
    analytic_variance: float
    variance_stderr: float
    variance_ratio: float


def worked_example_estimates(estimator: str, theta: float, samples: int, trials: int,
                             generator: torch.Generator | None = None) -> Tensor:
    """``trials`` independent ``samples``-draw estimates of :math:`\\partial_\\theta \\mathbb{E}[x^2]`,
    :math:`x \\sim N(\\theta, 1)`, in float64 (shape ``(trials,)``), computed in chunks."""
    th = torch.tensor(float(theta), dtype=torch.float64)

    def make_dist(t: Tensor) -> Distribution:
        return torch.distributions.Normal(t, 1.0)

    def f(x: Tensor) -> Tensor:
        return x * x

    per_call = max(1, _CHUNK_DRAWS // samples)
    out = []
    done = 0
    while done < trials:
        t = min(per_call, trials - done)
        if estimator == "pathwise":
            est = pathwise_gradient(make_dist, th, f, samples, trials=t, generator=generator)
        elif estimator == "score_function":
            est = score_function_gradient(make_dist, th, f, samples, trials=t, generator=generator)
        elif estimator == "score_function_baseline":
            est = score_function_gradient(make_dist, th, f, samples, trials=t, generator=generator,
                                          baseline="leave_one_out")
        else:
            raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
        out.append(est.gradient)
        done += t
    return torch.cat(out)


def worked_example_experiment(
    theta: float = 1.5,
    samples: Sequence[int] = (1, 10, 100, 1000),
    trials: int = 2000,
    seed: int = 0,
    estimators: Sequence[str] = ESTIMATORS,
) -> list[ExperimentRow]:
    """Measure mean and variance of each estimator in the worked example, against the analytic variance.

    For each estimator and ``m`` in ``samples``, ``trials`` independent ``m``-sample estimates
    are drawn in one vectorised call (a ``(trials, m)`` batch) from one generator seeded with
    ``seed``. The leave-one-out row is skipped for ``m = 1`` (it needs two draws). True
    gradient: ``2 * theta``.
    """
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 2:
        raise ValueError(f"trials must be an integer >= 2 to measure a variance, got {trials!r}")
    if not math.isfinite(theta):
        raise ValueError(f"theta must be finite, got {theta!r}")
    gen = torch.Generator().manual_seed(int(seed))
    true = 2.0 * float(theta)
    rows = []
    for name in estimators:
        for m in samples:
            if name == "score_function_baseline" and m < 2:
                continue
            est = worked_example_estimates(name, theta, m, trials, gen)
            mean = est.mean().item()
            var = est.var().item()
            mu4 = ((est - mean) ** 4).mean().item()
            se_mean = math.sqrt(var / trials)
            analytic = worked_example_variance(name, theta, m)
            rows.append(ExperimentRow(
                estimator=name, samples=m, trials=trials, mean=mean, variance=var,
                stderr_of_mean=se_mean,
                bias_se=(mean - true) / se_mean if se_mean > 0 else math.nan,
                analytic_variance=analytic,
                variance_stderr=math.sqrt(max(mu4 - var * var, 0.0) / trials),
                variance_ratio=var / analytic,
            ))
    return rows


__all__ = [
    "ESTIMATORS",
    "ExperimentRow",
    "GradientEstimate",
    "pathwise_gradient",
    "reparameterized_gradient",
    "score_function_gradient",
    "worked_example_estimates",
    "worked_example_experiment",
    "worked_example_variance",
]
