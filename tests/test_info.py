"""vaekit.analysis.info against scipy and torch.distributions, with property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from vaekit.analysis import info

RNG = np.random.default_rng(0)


def random_simplex(rng, shape, zeros=False):
    x = rng.gamma(0.5, size=shape)
    if zeros:
        x[rng.random(shape) < 0.2] = 0.0
        x[..., 0] += 1e-3  # keep every row normalizable
    return x / x.sum(axis=-1, keepdims=True)


# -- the worked example -------------------------------------------------------------------

def test_worked_example_nats():
    p, q = [0.5, 0.5], [0.1, 0.9]
    assert info.kl_divergence(p, q) == pytest.approx(0.5108, abs=5e-5)
    assert info.kl_divergence(q, p) == pytest.approx(0.3681, abs=5e-5)
    assert info.entropy(p) == pytest.approx(math.log(2))
    assert info.cross_entropy(p, q) == pytest.approx(-0.5 * math.log(0.1) - 0.5 * math.log(0.9))
    assert info.entropy(p, base=2) == pytest.approx(1.0)


# -- against scipy and torch ---------------------------------------------------------------

@pytest.mark.parametrize("zeros", [False, True])
def test_against_scipy(zeros):
    for n in (2, 3, 10, 100):
        p = random_simplex(RNG, (50, n), zeros=zeros)
        q = random_simplex(RNG, (50, n))
        for base in (math.e, 2.0, 10.0):
            np.testing.assert_allclose(
                info.entropy(p, base=base), scipy.stats.entropy(p, base=base, axis=-1), rtol=1e-10, atol=1e-12
            )
            np.testing.assert_allclose(
                info.kl_divergence(p, q, base=base),
                scipy.stats.entropy(p, q, base=base, axis=-1),
                rtol=1e-9, atol=1e-12,
            )


def test_axis_argument_matches_scipy():
    p = random_simplex(RNG, (4, 7)).T  # distributions down the columns
    q = random_simplex(RNG, (4, 7)).T
    np.testing.assert_allclose(info.kl_divergence(p, q, axis=0), scipy.stats.entropy(p, q, axis=0))


def test_categorical_against_torch_distributions():
    p = torch.from_numpy(random_simplex(RNG, (64, 5)))
    q = torch.from_numpy(random_simplex(RNG, (64, 5)))
    expected = kl_divergence(Categorical(probs=p), Categorical(probs=q))
    torch.testing.assert_close(info.kl_divergence(p, q), expected)
    torch.testing.assert_close(info.entropy(p), Categorical(probs=p).entropy())


def test_torch_in_torch_out_and_differentiable():
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    q = torch.softmax(torch.randn(3, 4, dtype=torch.float64), -1)
    kl = info.kl_divergence(torch.softmax(logits, -1), q)
    assert isinstance(kl, torch.Tensor) and kl.shape == (3,)
    kl.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # gradient of KL(softmax(l) || q) wrt l is p * (log p - log q - KL) per row
    p = torch.softmax(logits.detach(), -1)
    expected = p * (p.log() - q.log() - kl.detach()[:, None])
    torch.testing.assert_close(logits.grad, expected)


def test_numpy_in_numpy_out():
    out = info.entropy(np.array([[0.5, 0.5], [1.0, 0.0]]))
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    assert isinstance(info.entropy([0.25] * 4), (float, np.floating))


def test_zero_conventions():
    assert info.entropy([1.0, 0.0]) == 0.0
    assert info.kl_divergence([1.0, 0.0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert info.kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf
    assert info.cross_entropy([0.5, 0.5], [1.0, 0.0]) == math.inf
    # an outcome impossible under p costs nothing even where q is 0
    assert info.kl_divergence([1.0, 0.0], [1.0, 0.0]) == 0.0


# -- closed forms ---------------------------------------------------------------------------

def test_kl_diagonal_gaussians_against_torch():
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    lv_q, lv_p = torch.randn(10, 6, generator=g), torch.randn(10, 6, generator=g)
    q = Independent(Normal(mu_q, (0.5 * lv_q).exp()), 1)
    p = Independent(Normal(mu_p, (0.5 * lv_p).exp()), 1)
    torch.testing.assert_close(info.kl_diagonal_gaussians(mu_q, lv_q, mu_p, lv_p), kl_divergence(q, p))
    torch.testing.assert_close(info.kl_closed_form(q, p), kl_divergence(q, p))
    zeros = torch.zeros_like(mu_q)
    std = Independent(Normal(zeros, torch.ones_like(zeros)), 1)
    torch.testing.assert_close(info.kl_standard_normal(mu_q, lv_q), kl_divergence(q, std))


def test_kl_bernoulli_against_torch():
    p = torch.rand(100, dtype=torch.float64) * 0.98 + 0.01
    q = torch.rand(100, dtype=torch.float64) * 0.98 + 0.01
    torch.testing.assert_close(info.kl_bernoulli(p, q), kl_divergence(Bernoulli(probs=p), Bernoulli(probs=q)))
    two = torch.stack([p, 1 - p], -1), torch.stack([q, 1 - q], -1)
    torch.testing.assert_close(info.kl_bernoulli(p, q), info.kl_divergence(*two))


def test_kl_closed_form_missing_pair_says_what_to_use():
    mix = torch.distributions.MixtureSameFamily(
        Categorical(logits=torch.zeros(3)), Normal(torch.randn(3), torch.ones(3))
    )
    with pytest.raises(NotImplementedError, match="kl_monte_carlo"):
        info.kl_closed_form(Normal(0.0, 1.0), mix)


# -- Monte Carlo ----------------------------------------------------------------------------

def test_monte_carlo_kl_within_standard_errors_of_closed_form():
    torch.manual_seed(0)
    mu, sd = torch.randn(20), torch.rand(20) + 0.3
    q, p = Normal(mu, sd), Normal(torch.zeros(20), torch.ones(20))
    est = info.kl_monte_carlo(q, p, samples=20000, generator_seed=1)
    exact = kl_divergence(q, p)
    z = (est.estimate - exact) / est.stderr
    # 20 independent estimates, each ~N(0,1) in units of its standard error: all within 4.
    assert z.abs().max() < 4.0
    assert est.stderr.max() < 0.05


def test_monte_carlo_kl_is_differentiable_and_handles_mixtures():
    mu = torch.zeros(2, requires_grad=True)
    q = Normal(mu, torch.ones(2))
    mix = torch.distributions.MixtureSameFamily(
        Categorical(logits=torch.zeros(3)), Normal(torch.tensor([-1.0, 0.0, 1.0]), torch.ones(3))
    )
    p = torch.distributions.Independent(
        torch.distributions.MixtureSameFamily(
            Categorical(logits=torch.zeros(2, 3)), Normal(torch.tensor([[-1.0, 0.0, 1.0]] * 2), torch.ones(2, 3))
        ), 0
    )
    est, se = info.kl_monte_carlo(q, p, samples=500, generator_seed=0)
    est.sum().backward()
    assert mu.grad is not None
    assert torch.all(est > -4 * se)  # KL >= 0 within noise
    assert mix.log_prob(torch.zeros(1)).shape == (1,)


def test_monte_carlo_needs_two_samples():
    with pytest.raises(ValueError, match="samples"):
        info.kl_monte_carlo(Normal(0.0, 1.0), Normal(0.0, 1.0), samples=1)


# -- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "p, q, match",
    [
        ([0.5, -0.5], [0.5, 0.5], "negative"),
        ([0.5, float("nan")], [0.5, 0.5], "NaN"),
        ([0.5, float("inf")], [0.5, 0.5], "NaN or infinite"),
        ([0.5, 0.5], [0.2, 0.3, 0.5], "same shape"),
        ([0.3, 0.3], [0.5, 0.5], "does not sum to 1"),
        ([0.5, 0.5], [0.9, 0.9], "q does not sum to 1"),
        ([], [], "empty"),
        (0.5, 0.5, "at least one dimension"),
        ("ab", [0.5, 0.5], "array of numbers"),
    ],
)
def test_validation_errors(p, q, match):
    with pytest.raises(ValueError, match=match):
        info.kl_divergence(p, q)


@pytest.mark.parametrize("base", [1, 0, -2, float("nan"), float("inf"), "2", True])
def test_bad_base(base):
    with pytest.raises(ValueError, match="base"):
        info.entropy([0.5, 0.5], base=base)


def test_bad_axis():
    with pytest.raises(ValueError, match="axis"):
        info.entropy([0.5, 0.5], axis=3)


def test_normalize_counts():
    assert info.kl_divergence([1, 1], [1, 9], normalize=True) == pytest.approx(0.5108, abs=5e-5)
    with pytest.raises(ValueError, match="sums to 0"):
        info.entropy([0.0, 0.0], normalize=True)


def test_float32_rows_of_many_outcomes_pass_the_sum_check():
    p = torch.softmax(torch.randn(8, 10000), -1)  # float32 rounding in the sum ~ 1e-5
    assert torch.isfinite(info.entropy(p)).all()


# -- properties -----------------------------------------------------------------------------

weights = arrays(np.float64, st.integers(2, 12), elements=st.floats(0.0, 1e3, allow_subnormal=False))


def _pair(draw_w1, draw_w2):
    n = min(len(draw_w1), len(draw_w2))
    w1, w2 = draw_w1[:n] + 1e-9, draw_w2[:n] + 1e-9
    return w1 / w1.sum(), w2 / w2.sum()


@settings(max_examples=200, deadline=None)
@given(weights, weights)
def test_kl_properties(w1, w2):
    p, q = _pair(w1, w2)
    kl = info.kl_divergence(p, q)
    assert kl >= 0.0
    assert info.kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert kl == pytest.approx(info.cross_entropy(p, q) - info.entropy(p), rel=1e-9, abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(weights, st.sampled_from([2.0, 10.0, 3.5, 0.5]))
def test_base_conversion(w, base):
    p = (w + 1e-9) / (w + 1e-9).sum()
    q = np.full_like(p, 1 / len(p))
    assert info.entropy(p, base=base) == pytest.approx(info.entropy(p) / math.log(base), rel=1e-9, abs=1e-12)
    assert info.kl_divergence(p, q, base=base) == pytest.approx(
        info.kl_divergence(p, q) / math.log(base), rel=1e-9, abs=1e-12
    )
    # entropy is at most log n, reached by the uniform distribution
    assert info.entropy(p) <= math.log(len(p)) + 1e-12


def test_as_distribution_checks_or_normalizes_and_names_its_argument():
    assert info.as_distribution([1.0, 3.0], normalize=True).tolist() == [0.25, 0.75]
    with pytest.raises(ValueError, match="^q has negative"):
        info.as_distribution([1.0, -3.0], normalize=True, name="q")
    with pytest.raises(ValueError, match="sum"):
        info.as_distribution([0.5, 0.6])
