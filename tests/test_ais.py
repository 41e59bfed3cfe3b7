"""Annealed importance sampling and BDMC against the closed-form log p(x) of linear-Gaussian models.

Tolerances: an estimate's error against the exact log p(x) is averaged over n examples, and its standard error
is that of the per-example errors over the examples (it holds both the Monte Carlo error of the chains and
nothing else: the exact value is subtracted example by example); 3 SE is the band of a chance deviation.
"""

from __future__ import annotations

import math

import pytest
import torch

import vaekit
from vaekit.bounds.ais import AISSettings, ais, annealing_schedule, check_annealable, log_mean_exp
from vaekit.bounds.bdmc import bdmc, simulate
from vaekit.errors import VaekitError
from vaekit.models.linear_gaussian import LinearGaussian

pytestmark = pytest.mark.usefixtures("single_thread")


def _error(estimate: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """(mean error, its standard error over the examples), nats."""
    d = estimate - exact
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def test_schedules_run_from_zero_to_one_and_the_sigmoid_crowds_both_ends():
    for kind in ("linear", "sigmoid"):
        b = annealing_schedule(100, kind)
        assert b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())
    lin, sig = annealing_schedule(100, "linear"), annealing_schedule(100, "sigmoid")
    assert sig.diff()[0] < lin.diff()[0] and sig.diff()[-1] < lin.diff()[-1]
    assert torch.equal(annealing_schedule(1, "sigmoid"), torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(VaekitError, match="unknown annealing schedule"):
        annealing_schedule(10, "cosine")
    with pytest.raises(VaekitError, match="at least 1"):
        annealing_schedule(0)


def test_log_mean_exp_and_its_delta_method_error():
    log_w = torch.log(torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64))
    est, se = log_mean_exp(log_w)
    assert math.isclose(float(est), math.log(3.0), rel_tol=1e-12)
    w = torch.tensor([1.0, 2.0, 3.0, 6.0])
    assert math.isclose(float(se), float(w.std() / (2 * w.mean())), rel_tol=1e-6)


def test_forward_ais_converges_to_the_exact_log_px_from_below():
    """A posterior far narrower than the prior (std 0.15-0.18 in 3 units): at T = 4 AIS falls far short, at T = 300
    it agrees with the closed form; at every T it is a lower bound in expectation."""
    lg = LinearGaussian.random(data_dim=16, latent=3, sigma=0.3, seed=0)
    x = lg.sample_data(32, seed=1)
    exact = lg.log_marginal(x)
    errors = {}
    for t in (4, 300):
        r = ais(lg, x, AISSettings(steps=t, chains=32, leapfrog=5, seed=3))
        errors[t] = _error(r.log_px, exact)
        mean, se = errors[t]
        assert mean <= 3 * se, (t, mean, se)  # a lower bound in expectation
        assert 0.5 < float(r.acceptance.mean()) < 0.95  # adapted toward 0.65
        assert r.evaluations > 32 * 32 * (1 + (t - 1) * 5)  # the pilot's too
        assert r.log_weights.shape == (32, 32)
    (short, short_se), (last, last_se) = errors[4], errors[300]
    assert short < -3 * short_se  # far short with few temperatures
    assert abs(last) <= 3 * last_se and last_se < 0.05  # converged within its standard error
    # the reported Monte Carlo standard error across chains is of the size of the error's spread over examples
    assert 0.5 < r.mean_stderr / last_se < 2.0


def test_bdmc_sandwiches_the_exact_log_px():
    """On data simulated from the model, forward AIS is below and reverse AIS above log p(x) in expectation, and
    at T = 200 both are within 0.05 nats of it (their standard errors are ~0.015, so
    that 0.05 nats is over 3 of them)."""
    lg = LinearGaussian.random(data_dim=16, latent=2, sigma=0.3, seed=0)
    settings = AISSettings(steps=1, chains=32, leapfrog=5, seed=0)
    res = bdmc(lg, 48, (4, 200), settings)
    x, _ = simulate(lg, 48, settings.seed)
    exact = lg.log_marginal(x)
    assert [r.steps for r in res.rows] == [4, 200] and res.n == 48
    lower, upper = _error(res.per_example["lower"], exact), _error(res.per_example["upper"], exact)
    assert lower[0] <= 3 * lower[1] and upper[0] >= -3 * upper[1]  # lower and upper bounds in expectation
    assert abs(lower[0]) < 0.05 and abs(upper[0]) < 0.05 and max(lower[1], upper[1]) < 0.05 / 3
    first, last = res.rows
    assert first.width > last.width and first.width > 3 * first.width_stderr  # loose at T = 4, tight at T = 200
    assert abs(last.width) <= 3 * last.width_stderr + 1e-12
    s = res.summary()
    assert s["bdmc_lower"] == last.lower and s["bdmc_upper"] == last.upper and s["n"] == 48
    assert math.isclose(s["bdmc_width"], last.upper - last.lower, rel_tol=1e-9, abs_tol=1e-12)


def test_ais_is_deterministic_for_a_seed_and_batches_examples():
    lg = LinearGaussian.random(data_dim=8, latent=2, sigma=0.5, seed=1)
    x = lg.sample_data(6, seed=2)
    s = AISSettings(steps=5, chains=4, leapfrog=2, seed=7)
    a, b = ais(lg, x, s), ais(lg, x, s)
    assert torch.equal(a.log_px, b.log_px) and a.log_px.shape == (6,)
    c = ais(lg, x, AISSettings(steps=5, chains=4, leapfrog=2, seed=8))
    assert not torch.equal(a.log_px, c.log_px)


def test_models_without_a_continuous_latent_density_are_refused():
    torch.manual_seed(0)
    discrete = vaekit.VAE(latent=4, shape=(1, 4, 4), posterior="categorical", prior={"name": "categorical"},
                          hidden=[8])
    with pytest.raises(VaekitError, match="continuous latent space"):
        check_annealable(discrete)
    with pytest.raises(VaekitError, match="continuous latent space"):
        ais(discrete, torch.zeros(2, 16), AISSettings(steps=2))
    with pytest.raises(VaekitError, match="chains must be >= 1"):
        AISSettings(steps=3, chains=0)


def test_ais_follows_its_temperatures_over_every_batch_of_examples():
    lg = LinearGaussian.random(data_dim=8, latent=2, sigma=0.5, seed=0)
    x = lg.sample_data(6, seed=1)
    seen: list[tuple[int, int]] = []
    from vaekit.bounds.ais import GRADIENT_FACTOR
    from vaekit.bounds.sizing import bytes_per_row

    budget = 2 * GRADIENT_FACTOR * bytes_per_row(lg, 2)  # two chains' rows: one example per batch, 6 batches
    ais(lg, x, AISSettings(steps=4, chains=2, leapfrog=2, seed=0), memory_budget=budget,
        progress=lambda done, total: seen.append((done, total)))
    total = 6 * 4
    assert seen[0] == (0, total) and seen[-1] == (total, total)
    assert all(t == total for _, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)
