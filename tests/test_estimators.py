"""Tests for vaekit.analysis.estimators.

Statistical tolerances: a Monte Carlo mean is accepted within 4 of its standard errors
(SE = sample std / sqrt(m), which the estimators return as ``stderr``); a sample variance of
n iid draws is accepted within 4 of its standard error SE(s^2) ~= sqrt((mu4 - sigma^4) / n),
with mu4 known in closed form where the draws are Gaussian (mu4 = 3 sigma^4, so
SE(s^2) = sigma^2 sqrt(2 / n)) and estimated from the draws otherwise. All seeds are fixed.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import (
    AffineTransform,
    Bernoulli,
    Categorical,
    Distribution,
    MultivariateNormal,
    Normal,
    SigmoidTransform,
    TransformedDistribution,
    Uniform,
)

from vaekit.analysis.estimators import (
    ESTIMATORS,
    GradientEstimate,
    pathwise_gradient,
    reparameterized_gradient,
    score_function_gradient,
    worked_example_estimates,
    worked_example_experiment,
    worked_example_variance,
)

F64 = torch.float64
THETA = 1.5
TOL_SE = 4.0  # accepted deviation, in standard errors


def normal_unit(theta: torch.Tensor) -> Distribution:
    return Normal(theta, 1.0)


def square(x: torch.Tensor) -> torch.Tensor:
    return x * x


def assert_unbiased(est: GradientEstimate, true: torch.Tensor | float) -> None:
    g, se = torch.as_tensor(est.gradient), torch.as_tensor(est.stderr)
    z = (g - torch.as_tensor(true, dtype=g.dtype)).abs() / se
    assert torch.all(z < TOL_SE), f"estimate {g} vs true {true}: {z} standard errors off"


def logistic(loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    """Logistic(loc, scale) as loc + scale * (log u - log(1 - u)), u ~ Uniform(0, 1)."""
    zero, one = torch.zeros((), dtype=loc.dtype), torch.ones((), dtype=loc.dtype)
    return TransformedDistribution(
        Uniform(zero, one), [SigmoidTransform().inv, AffineTransform(loc, scale)]
    )


# ------------------------------------------------------------------ worked example: bias


@pytest.mark.parametrize("kind", ["pathwise", "score", "score_const", "score_loo"])
def test_worked_example_unbiased(kind: str) -> None:
    theta = torch.tensor(THETA, dtype=F64, requires_grad=True)
    m = 100_000
    if kind == "pathwise":
        est = pathwise_gradient(normal_unit, theta, square, m, seed=1)
    elif kind == "score":
        est = score_function_gradient(normal_unit, theta, square, m, seed=2)
    elif kind == "score_const":
        est = score_function_gradient(normal_unit, theta, square, m, seed=3, baseline=THETA**2 + 3)
    else:
        est = score_function_gradient(normal_unit, theta, square, m, seed=4,
                                      baseline="leave_one_out")
    assert est.samples == m
    assert est.gradient.shape == theta.shape
    assert_unbiased(est, 2 * THETA)
    assert theta.grad is None  # the caller's tensor is left alone


def test_pathwise_stderr_is_sample_std_over_sqrt_m() -> None:
    theta = torch.tensor(THETA, dtype=F64)
    m = 50_000
    est = pathwise_gradient(normal_unit, theta, square, m, seed=5)
    assert est.per_sample.shape == (m,)
    torch.testing.assert_close(est.gradient, est.per_sample.mean())
    torch.testing.assert_close(est.stderr, est.per_sample.std() / math.sqrt(m))
    # per-sample gradient 2x has std 2, so stderr ~ 2 / sqrt(m); the sample std of n Gaussian
    # draws has relative SE 1 / sqrt(2(n-1)) ~ 0.3 %, so 4 SE is ~ 1.3 %.
    assert est.stderr.item() == pytest.approx(2 / math.sqrt(m), rel=4 / math.sqrt(2 * (m - 1)))
    # E[f] = theta^2 + 1 with per-sample variance Var[x^2] = 4 theta^2 + 2
    assert abs(est.value.item() - (THETA**2 + 1)) < TOL_SE * math.sqrt((4 * THETA**2 + 2) / m)


# ------------------------------------------------------------------ non-Gaussian noise


def test_reparameterized_logistic_noise_unbiased() -> None:
    """x = theta + s v, v ~ Logistic(0, 1): E[x^2] = theta^2 + s^2 pi^2 / 3."""
    theta = torch.tensor(0.7, dtype=F64)
    s = torch.tensor(1.3, dtype=F64)
    noise = logistic(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    est = reparameterized_gradient(lambda t, sc, v: t + sc * v, (theta, s), noise, square,
                                   200_000, seed=6)
    assert isinstance(est.gradient, tuple) and len(est.gradient) == 2
    true = (2 * 0.7, 2 * 1.3 * math.pi**2 / 3)
    for g, se, t in zip(est.gradient, est.stderr, true, strict=True):
        assert g.shape == () and abs(g.item() - t) < TOL_SE * se.item()


def test_reparameterized_logistic_from_uniform_by_hand() -> None:
    """The same trick with v = log u - log(1 - u) written inside g: only uniform noise."""
    theta = torch.tensor(-0.4, dtype=F64)
    noise = Uniform(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))

    def g(t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return t + torch.log(u) - torch.log1p(-u)

    est = reparameterized_gradient(g, theta, noise, lambda x: torch.sin(x) + x**2, 200_000, seed=7)
    # d/dtheta E[sin(theta + v) + (theta + v)^2] = E[cos(theta + v)] + 2 theta, and for the
    # logistic E[cos(theta + v)] = cos(theta) * E[cos v] = cos(theta) * pi / sinh(pi)
    true = math.cos(-0.4) * math.pi / math.sinh(math.pi) + 2 * -0.4
    assert_unbiased(est, true)


@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_reparameterized_exponential_by_inverse_cdf(lam: float) -> None:
    """x = -log(u) / lam ~ Exp(lam): d/dlam E[x] = d/dlam (1/lam) = -1/lam^2."""
    noise = Uniform(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    est = reparameterized_gradient(lambda la, u: -torch.log(u) / la, torch.tensor(lam, dtype=F64),
                                   noise, lambda x: x, 100_000, seed=8)
    assert_unbiased(est, -1 / lam**2)


@pytest.mark.parametrize("estimator", ["pathwise", "score", "score_loo"])
def test_logistic_distribution_both_estimators_unbiased(estimator: str) -> None:
    loc, scale = torch.tensor(0.7, dtype=F64), torch.tensor(1.3, dtype=F64)
    m = 200_000
    if estimator == "pathwise":
        est = pathwise_gradient(logistic, (loc, scale), square, m, seed=9)
    elif estimator == "score":
        est = score_function_gradient(logistic, (loc, scale), square, m, seed=10)
    else:
        est = score_function_gradient(logistic, (loc, scale), square, m, seed=11,
                                      baseline="leave_one_out")
    true = (2 * 0.7, 2 * 1.3 * math.pi**2 / 3)
    for g, se, t in zip(est.gradient, est.stderr, true, strict=True):
        assert abs(g.item() - t) < TOL_SE * se.item()


def test_multivariate_normal_matrix_parameters() -> None:
    """E|x|^2 = |mu|^2 + tr(L L^T): gradients 2 mu and 2 L; the per-sample trick must keep the
    (m, d) and (m, d, d) stacked parameters apart."""
    mu = torch.tensor([0.5, -1.0], dtype=F64)
    L = torch.tensor([[1.0, 0.0], [0.3, 0.8]], dtype=F64)

    def make(m_: torch.Tensor, l_: torch.Tensor) -> Distribution:
        return MultivariateNormal(m_, scale_tril=l_)

    def f(x: torch.Tensor) -> torch.Tensor:
        return (x**2).sum()

    for est in (pathwise_gradient(make, (mu, L), f, 100_000, seed=12),
                score_function_gradient(make, (mu, L), f, 100_000, seed=13,
                                        baseline="leave_one_out")):
        assert est.gradient[0].shape == (2,) and est.gradient[1].shape == (2, 2)
        for g, se, t in zip(est.gradient, est.stderr, (2 * mu, 2 * L), strict=True):
            ok = (g - t).abs() <= TOL_SE * se
            ok |= (se == 0) & (g == t)  # the upper triangle: exactly zero
            assert torch.all(ok), (g, t, se)


def test_score_function_discrete_bernoulli() -> None:
    """d/dp E_{Bernoulli(p)}[f(x)] = f(1) - f(0), with f(x) = 3x + 1 -> 3."""
    p = torch.tensor(0.3, dtype=F64)
    est = score_function_gradient(lambda q: Bernoulli(probs=q), p, lambda x: 3 * x + 1, 100_000,
                                  seed=14)
    assert_unbiased(est, 3.0)
    with pytest.raises(ValueError, match="rsample"):
        pathwise_gradient(lambda q: Bernoulli(probs=q), p, lambda x: x, 10)


# ------------------------------------------------------------------ mechanics


def test_per_sample_gradients_match_the_noise_exactly() -> None:
    """x = theta + v: per-sample gradient of x^2 is 2 (theta + v_i), with v_i the draws that the
    seed produces; the global random state is left as it was."""
    noise = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    state = torch.get_rng_state()
    est = reparameterized_gradient(lambda t, v: t + v, torch.tensor(THETA, dtype=F64), noise,
                                   square, 7, seed=123)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    v = noise.sample((7,))
    torch.testing.assert_close(est.per_sample, 2 * (THETA + v))
    torch.testing.assert_close(est.value, ((THETA + v) ** 2).mean())


def test_seed_and_generator_reproducible() -> None:
    theta = torch.tensor(THETA)
    a = pathwise_gradient(normal_unit, theta, square, 50, seed=3)
    b = pathwise_gradient(normal_unit, theta, square, 50, seed=3)
    assert torch.equal(a.per_sample, b.per_sample)
    gen = torch.Generator().manual_seed(3)
    c = pathwise_gradient(normal_unit, theta, square, 50, generator=gen)
    d = pathwise_gradient(normal_unit, theta, square, 50, generator=gen)
    assert torch.equal(a.per_sample, c.per_sample)  # the generator's stream = the seed's
    assert not torch.equal(c.per_sample, d.per_sample)  # ... and it advances
    with pytest.raises(ValueError, match="either seed or generator"):
        pathwise_gradient(normal_unit, theta, square, 5, seed=1, generator=gen)


def test_trials_give_independent_estimates() -> None:
    theta = torch.tensor(THETA, dtype=F64)
    est = score_function_gradient(normal_unit, theta, square, 20, trials=30, seed=0)
    assert est.gradient.shape == (30,) and est.stderr.shape == (30,)
    assert est.per_sample.shape == (30, 20) and est.value.shape == (30,)
    torch.testing.assert_close(est.gradient, est.per_sample.mean(1))
    assert len(set(est.gradient.tolist())) == 30
    one = pathwise_gradient(normal_unit, theta, square, 1, seed=0)
    assert math.isnan(one.stderr.item())


def test_leave_one_out_is_sample_covariance() -> None:
    """(f_i - b_i) = m/(m-1) (f_i - mean f), so the estimate is the sample covariance of f and
    the score x - theta (exact identity, checked on the recorded draws)."""
    seen: dict[str, torch.Tensor] = {}

    def f(x: torch.Tensor) -> torch.Tensor:  # batched: all draws at once
        seen["x"] = x.detach().clone()
        return x * x

    theta = torch.tensor(THETA, dtype=F64)
    est = score_function_gradient(normal_unit, theta, f, 9, seed=21, baseline="leave_one_out",
                                  batched_f=True)
    x = seen["x"]
    fi, eps = x**2, x - THETA
    cov = ((fi - fi.mean()) * (eps - eps.mean())).sum() / 8
    torch.testing.assert_close(est.gradient, cov)
    torch.testing.assert_close(est.value, fi.mean())
    b = (fi.sum() - fi) / 8
    torch.testing.assert_close(est.per_sample, (fi - b) * eps)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: score_function_gradient(normal_unit, torch.tensor(1.0), square, 1,
                                         baseline="leave_one_out"), "samples >= 2"),
        (lambda: score_function_gradient(normal_unit, torch.tensor(1.0), square, 5,
                                         baseline="mean"), "baseline"),
        (lambda: score_function_gradient(normal_unit, torch.tensor(1.0), square, 5,
                                         baseline=math.inf), "finite"),
        (lambda: pathwise_gradient(normal_unit, torch.tensor(1.0), square, 0), "samples"),
        (lambda: pathwise_gradient(normal_unit, torch.tensor(1.0), square, 5, trials=0), "trials"),
        (lambda: pathwise_gradient(normal_unit, torch.tensor(1), square, 5), "floating"),
        (lambda: pathwise_gradient(normal_unit, (), square, 5), "empty"),
        (lambda: pathwise_gradient(normal_unit, torch.tensor(1.0), lambda x: torch.stack([x, x]),
                                   5), "scalar"),
        (lambda: pathwise_gradient(lambda a: Categorical(logits=torch.stack([a, -a])),
                                   torch.tensor(1.0), lambda x: x.double(), 5), "rsample"),
        (lambda: score_function_gradient(lambda a: Categorical(logits=torch.stack([a, -a])),
                                         torch.tensor(1.0), lambda x: x.double(), 5),
         "leading dimension"),
        (lambda: reparameterized_gradient(lambda t, v: t + v, torch.tensor(1.0), "noise", square,
                                          5), "noise"),
    ],
)
def test_clear_value_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_no_log_prob_is_a_value_error() -> None:
    class OnlySamples(Distribution):
        arg_constraints: dict = {}

        def __init__(self, loc: torch.Tensor) -> None:
            self.loc = loc
            super().__init__(batch_shape=loc.shape, validate_args=False)

        def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
            return self.loc.detach() + torch.randn(self._extended_shape(sample_shape))

    with pytest.raises(ValueError, match="log_prob"):
        score_function_gradient(OnlySamples, torch.tensor(1.0), square, 5)


# ------------------------------------------------------------------ analytic variances


def test_analytic_variance_formulas() -> None:
    t = THETA
    assert worked_example_variance("pathwise", t, 1) == 4.0
    assert worked_example_variance("pathwise", t, 8) == 0.5
    assert worked_example_variance("score_function", t, 1) == pytest.approx(t**4 + 14 * t**2 + 15)
    assert worked_example_variance("score_function", t, 1, baseline=t**2 + 1) == pytest.approx(
        8 * t**2 + 10)
    assert worked_example_variance("score_function", t, 1, baseline=t**2 + 3) == pytest.approx(
        8 * t**2 + 6)
    # leave-one-out -> the baseline E[f] = theta^2 + 1 as m grows
    m = 10**6
    assert m * worked_example_variance("score_function_baseline", t, m) == pytest.approx(
        8 * t**2 + 10, rel=1e-5)
    with pytest.raises(ValueError, match="samples >= 2"):
        worked_example_variance("score_function_baseline", t, 1)
    with pytest.raises(ValueError, match="unknown estimator"):
        worked_example_variance("reinforce", t, 1)


def test_score_function_closed_form_by_direct_draws() -> None:
    """Var[x^2 (x - theta)] = theta^4 + 14 theta^2 + 15, checked on 10^6 plain draws."""
    gen = torch.Generator().manual_seed(0)
    n = 1_000_000
    for theta in (0.0, 1.5, -2.0):
        eps = torch.randn(n, generator=gen, dtype=F64)
        y = (theta + eps) ** 2 * eps
        var = y.var().item()
        mu4 = ((y - y.mean()) ** 4).mean().item()
        se = math.sqrt((mu4 - var**2) / n)  # SE of a sample variance, mu4 from the draws
        assert abs(var - (theta**4 + 14 * theta**2 + 15)) < TOL_SE * se


def test_measured_variances_match_analytic() -> None:
    trials = 4000
    rows = worked_example_experiment(theta=THETA, samples=(1, 10, 100, 1000), trials=trials, seed=0)
    names = {(r.estimator, r.samples) for r in rows}
    assert names == {(e, m) for e in ESTIMATORS for m in (1, 10, 100, 1000)} - {
        ("score_function_baseline", 1)}
    for r in rows:
        assert r.trials == trials
        assert abs(r.bias_se) < TOL_SE, r
        assert r.analytic_variance == worked_example_variance(r.estimator, THETA, r.samples)
        if r.estimator == "pathwise":
            # the m-sample mean of 2(theta + eps) is exactly Gaussian: mu4 = 3 sigma^4,
            # SE(s^2) = sigma^2 sqrt(2 / (n - 1))
            se = r.analytic_variance * math.sqrt(2 / (trials - 1))
        else:
            # not Gaussian (heavy-ish tails at small m): mu4 estimated from the trials
            se = r.variance_stderr
        assert abs(r.variance - r.analytic_variance) < TOL_SE * se, r


def test_constant_baseline_variance_matches_analytic() -> None:
    trials, m, b = 4000, 10, THETA**2 + 3  # b = the variance-minimising constant
    est = score_function_gradient(normal_unit, torch.tensor(THETA, dtype=F64), square, m,
                                  baseline=b, trials=trials, seed=31).gradient
    var = est.var().item()
    mu4 = ((est - est.mean()) ** 4).mean().item()
    se = math.sqrt((mu4 - var**2) / trials)  # SE of a sample variance, mu4 from the draws
    analytic = worked_example_variance("score_function", THETA, m, baseline=b)
    assert abs(var - analytic) < TOL_SE * se
    assert analytic < worked_example_variance("score_function_baseline", THETA, m)


def test_experiment_chunks_and_validates() -> None:
    est = worked_example_estimates("pathwise", THETA, 3, 10)
    assert est.shape == (10,) and est.dtype == F64
    with pytest.raises(ValueError, match="trials"):
        worked_example_experiment(trials=1)
    with pytest.raises(ValueError, match="unknown estimator"):
        worked_example_estimates("reinforce", THETA, 3, 10)
