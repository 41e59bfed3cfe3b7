"""The discrete estimators against exact gradients, on models small enough to enumerate every code.

Two tiny VAEs (float64): a categorical one (G = 2 groups of K = 3 classes, 9 codes) and a Bernoulli one (d = 3
units, 8 codes), on 4 examples of 4 binary pixels. The exact mean ELBO, and the exact K-sample bound IWAE_K,
are brute-force Python sums over codes (over K-tuples of codes for IWAE_K), written here independently of
vaekit's enumeration; their gradients by autograd are the references, for ALL parameters (encoder, decoder).

Statistics. One trial is the gradient of the surrogate on the batch repeated R times: the mean of R independent
estimates. T trials give, per coordinate j, the mean m_j and its standard error SE_j = sd_j / sqrt(T); for an
unbiased estimator z_j = (m_j - g*_j) / SE_j follows Student's t with T - 1 degrees of freedom (the trials are
means of R = 400 draws, close to normal). We test max_j |z_j| against the Bonferroni bound
t_{T-1}^{-1}(1 - ALPHA / (2 P)), so that the test fails with probability at most ALPHA = 1e-3 for an unbiased
estimator whatever the correlations between coordinates (a mean-squared-z test would need them). The seeds are
fixed. That the same test does fail for a biased estimator (straight-through) shows that it has power.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from vaekit import VAE
from vaekit.analysis.gradient_variance import exact_gradient, exact_objective, summarize
from vaekit.errors import ConfigError
from vaekit.objectives.discrete import (
    ESTIMATORS,
    DiscreteEstimator,
    EstimatorSettings,
    check_estimator,
    default_estimator,
    is_discrete,
    latent_support_size,
)

pytestmark = pytest.mark.usefixtures("single_thread")

ALPHA = 1e-3
TRIALS = 100
REPEATS = 400
X = torch.tensor([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 1], [0, 1, 0, 0]], dtype=torch.float64).reshape(4, 1, 1, 4)


def _categorical() -> VAE:
    torch.manual_seed(0)
    return VAE(latent=2, shape=(1, 1, 4), posterior={"name": "categorical", "classes": 3}, hidden=[6]).double()


def _bernoulli() -> VAE:
    torch.manual_seed(1)
    return VAE(latent=3, shape=(1, 1, 4), posterior="bernoulli", hidden=[6]).double()


MODELS = {"categorical": _categorical, "bernoulli": _bernoulli}


def _codes(model: VAE) -> list[torch.Tensor]:
    """Every code, built here by itertools (not by enumerate_support)."""
    if model.posterior_family.name == "categorical":
        eye = torch.eye(3, dtype=torch.float64)
        return [torch.cat([eye[i], eye[j]]) for i, j in itertools.product(range(3), repeat=2)]
    return [torch.tensor(c, dtype=torch.float64) for c in itertools.product([0.0, 1.0], repeat=3)]


def _log_joint_and_q(model: VAE, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per code: log p(x, z) (N,) and log q(z|x) (N,), with gradients for every parameter."""
    q, p = model.posterior(x), model.prior_distribution()
    joint, log_q = [], []
    for c in _codes(model):
        z = c.expand(x.shape[0], -1)
        joint.append(model.log_likelihood(x, z) + p.log_prob(z))
        log_q.append(q.log_prob(z))
    return joint, log_q


def brute_elbo(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """sum_z q(z|x) [log p(x, z) - log q(z|x)], (N,)."""
    joint, log_q = _log_joint_and_q(model, x)
    return sum(lq.exp() * (j - lq) for j, lq in zip(joint, log_q))


def brute_iwae(model: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """sum over K-tuples prod_i q(z_i|x) log (1/K) sum_i w_i, w = p(x, z)/q(z|x), (N,)."""
    joint, log_q = _log_joint_and_q(model, x)
    log_w = [j - lq for j, lq in zip(joint, log_q)]
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for tup in itertools.product(range(len(log_w)), repeat=k):
        weight = sum(log_q[i] for i in tup).exp()
        total = total + weight * (torch.logsumexp(torch.stack([log_w[i] for i in tup]), 0) - math.log(k))
    return total


def _flat(value: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def _trials(model: VAE, est: DiscreteEstimator, *, objective: str = "elbo", k: int = 1, seed: int = 0,
            trials: int = TRIALS, repeats: int = REPEATS) -> torch.Tensor:
    """(T, P): each row the gradient (all parameters) of the surrogate's mean over the batch repeated R times,
    i.e. the mean of R independent estimates of the gradient of the mean objective over X."""
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(seed)
    x = X.repeat(repeats, 1, 1, 1)
    rows = []
    for _ in range(trials):
        s, _, _ = est.surrogate(model, x, objective=objective, k=k, generator=gen)
        rows.append(_flat(s.mean(), params))
    return torch.stack(rows)


def _max_z(grads: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """(max |z| over coordinates, the Bonferroni bound it must stay under); coordinates whose estimates never
    vary must equal the exact gradient."""
    t = grads.shape[0]
    mean, se = grads.mean(0), grads.std(0) / math.sqrt(t)
    fixed = se <= 1e-14
    assert torch.allclose(mean[fixed], exact[fixed], atol=1e-12)
    z = ((mean - exact)[~fixed] / se[~fixed]).abs()
    bound = float(stats.t.ppf(1 - ALPHA / (2 * z.numel()), t - 1))
    return float(z.max()), bound


def _estimator(name: str, temperature: float = 1.0) -> DiscreteEstimator:
    settings = EstimatorSettings(temperature=temperature, temperature_min=temperature, anneal_rate=0.0)
    return DiscreteEstimator(name, 4, settings).double().eval()


# -- the exact references -----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", MODELS)
def test_enumerate_is_the_exact_gradient_of_every_parameter(family: str) -> None:
    model = MODELS[family]()
    params = list(model.parameters())
    exact = brute_elbo(model, X)
    s, terms, bound = _estimator("enumerate").surrogate(model, X)
    assert bound is None
    torch.testing.assert_close(terms.elbo, exact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(s, exact, rtol=1e-12, atol=1e-12)  # beta = 1: the surrogate is the ELBO
    g_exact, g_enum = _flat(exact.mean(), params), _flat(s.mean(), params)
    assert g_exact.abs().max() > 1e-3  # not a trivial zero
    torch.testing.assert_close(g_enum, g_exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", MODELS)
def test_the_measurement_module_enumerates_the_same_objectives(family: str) -> None:
    """vaekit.analysis.gradient_variance's exact ELBO / IWAE_K and their phi-gradients against the brute-force sums."""
    model = MODELS[family]()
    phi = model.inference_parameters()
    n_phi = sum(p.numel() for p in phi)
    torch.testing.assert_close(exact_objective(model, X), brute_elbo(model, X), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(exact_gradient(model, X), _flat(brute_elbo(model, X).mean(), phi), rtol=1e-10,
                               atol=1e-12)
    for k in (2, 3):
        brute = brute_iwae(model, X, k)
        torch.testing.assert_close(exact_objective(model, X, "iwae", k), brute, rtol=1e-12, atol=1e-12)
        g = exact_gradient(model, X, "iwae", k)
        assert g.shape == (n_phi,)
        torch.testing.assert_close(g, _flat(brute.mean(), phi), rtol=1e-10, atol=1e-12)
    # IWAE_1 = ELBO <= IWAE_2 <= IWAE_3 <= log p(x)
    joint, _ = _log_joint_and_q(model, X)
    log_px = torch.logsumexp(torch.stack(joint), 0)
    chain = [brute_elbo(model, X), brute_iwae(model, X, 2), brute_iwae(model, X, 3), log_px]
    for lo, hi in itertools.pairwise(chain):
        assert bool((lo <= hi + 1e-12).all())


# -- unbiased estimators --------------------------------------------------------------------------------------


def _trained_nvil(model: VAE) -> DiscreteEstimator:
    """NVIL with a baseline fitted briefly (120 Adam steps on the baseline alone) at the model's weights."""
    from vaekit.analysis.gradient_variance import fit_baseline

    est = _estimator("nvil")
    first, last = fit_baseline(model, est, X.repeat(16, 1, 1, 1), steps=120, lr=1e-2, seed=3)
    assert last < first  # it learned something
    assert float(est.signal_mean) != 0.0
    return est


def _random_nvil(model: VAE) -> DiscreteEstimator:
    """NVIL with an untrained baseline made nonzero: random output weights and a running mean c = -3."""
    torch.manual_seed(5)
    est = _estimator("nvil")
    torch.nn.init.normal_(est.baseline[2].weight, std=2.0)
    torch.nn.init.normal_(est.baseline[2].bias, std=2.0)
    est.signal_mean.fill_(-3.0)
    b = est.baseline(X.reshape(4, -1)).squeeze(-1).detach()
    assert float(b.abs().min()) > 1e-3 and float(b.std()) > 1e-2  # a real, input-dependent baseline
    return est


UNBIASED = {
    "score": lambda m: (_estimator("score"), "elbo", 1),
    "score-3-samples": lambda m: (_estimator("score"), "elbo", 3),
    "nvil-untrained": lambda m: (_random_nvil(m), "elbo", 1),
    "nvil-trained": lambda m: (_trained_nvil(m), "elbo", 1),
    "vimco-2": lambda m: (_estimator("vimco"), "iwae", 2),
    "vimco-3": lambda m: (_estimator("vimco"), "iwae", 3),
}


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("case", UNBIASED)
def test_unbiased_estimators_match_the_exact_gradient(family: str, case: str) -> None:
    model = MODELS[family]()
    est, objective, k = UNBIASED[case](model)
    if objective == "iwae":
        exact = _flat(brute_iwae(model, X, k).mean(), list(model.parameters()))
    else:
        exact = _flat(brute_elbo(model, X).mean(), list(model.parameters()))
    grads = _trials(model, est, objective=objective, k=k, seed=11)
    z, bound = _max_z(grads, exact)
    assert z < bound, f"{case}: max |z| = {z:.2f} >= {bound:.2f}"


def test_the_z_test_detects_a_biased_estimator() -> None:
    """Straight-through at tau = 1 is biased; the same test on as many trials must say so."""
    model = _categorical()
    exact = _flat(brute_elbo(model, X).mean(), list(model.parameters()))
    z, bound = _max_z(_trials(model, _estimator("straight-through", 1.0), seed=11), exact)
    assert z > bound


def test_vimco_is_unbiased_for_iwae_not_for_the_elbo() -> None:
    """vimco's K = 2 estimates are rejected against the ELBO's gradient: the z test tells the two targets apart."""
    model = _categorical()
    grads = _trials(model, _estimator("vimco"), objective="iwae", k=2, seed=11)
    z, bound = _max_z(grads, _flat(brute_elbo(model, X).mean(), list(model.parameters())))
    assert z > bound


# -- the relaxations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("name", ["gumbel", "straight-through"])
def test_relaxation_bias_shrinks_with_the_temperature(family: str, name: str) -> None:
    """bias^2 = (1/P) ||E[g] - g*||^2 against the exact discrete ELBO gradient (all parameters), estimated from T
    trials with the noise V/T taken out and a jackknife SE (vaekit.analysis.gradient_variance.summarize): it is positive
    at tau = 1 and smaller at tau = 0.1 by more than 4 combined standard errors."""
    model = MODELS[family]()
    exact = _flat(brute_elbo(model, X).mean(), list(model.parameters()))
    hot = summarize(_trials(model, _estimator(name, 1.0), seed=21, trials=60), exact)
    cold = summarize(_trials(model, _estimator(name, 0.1), seed=22, trials=60), exact)
    assert hot["bias2"] > 4 * hot["bias2_stderr"]  # biased at tau = 1
    gap = hot["bias2"] - cold["bias2"]
    assert gap > 4 * math.hypot(hot["bias2_stderr"], cold["bias2_stderr"]), (hot, cold)


def test_summarize_on_known_noise() -> None:
    """Gaussian estimates g_t = g* + b + sigma * eps: V -> sigma^2 and bias^2 -> |b|^2 / P, each within 4 SE."""
    gen = torch.Generator().manual_seed(0)
    p, t, sigma = 200, 400, 0.5
    exact = torch.randn(p, generator=gen, dtype=torch.float64)
    b = torch.full((p,), 0.05, dtype=torch.float64)
    noise = sigma * torch.randn(t, p, generator=gen, dtype=torch.float64)
    s = summarize(exact + b + noise, exact)
    assert abs(s["variance"] - sigma**2) < 4 * s["variance_stderr"]
    assert abs(s["bias2"] - 0.05**2) < 4 * s["bias2_stderr"]
    assert s["bias2"] > 4 * s["bias2_stderr"]
    unbiased = summarize(exact + noise, exact)
    assert abs(unbiased["bias2"]) < 4 * unbiased["bias2_stderr"]
    assert s["exact_norm2"] == pytest.approx(float(exact.pow(2).mean()))


# -- the schedule and the refusals --------------------------------------------------------------------------------


def test_set_step_follows_the_annealing_schedule() -> None:
    settings = EstimatorSettings(temperature=2.0, temperature_min=0.3, anneal_rate=1e-3)
    est = DiscreteEstimator("gumbel", 4, settings)
    for step in (0, 1, 10, 500, 1000, 1897, 1898, 5000, 10**6):
        est.set_step(step)
        want = max(0.3, 2.0 * math.exp(-1e-3 * step))
        assert float(est.temperature) == pytest.approx(want, rel=1e-6)
    est.set_step(10**6)
    assert float(est.temperature) == pytest.approx(0.3)
    est.set_step(0)
    assert float(est.temperature) == pytest.approx(2.0)
    assert "temperature 2" in est.describe()


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_check_estimator_refusals_are_one_line() -> None:
    cat = _categorical()
    assert is_discrete(cat) and latent_support_size(cat) == 9 and default_estimator(cat) == "enumerate"
    with pytest.raises(ConfigError) as exc:
        check_estimator(cat, "vimco", "elbo", 1)
    assert "--objective iwae" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        check_estimator(cat, "vimco", "iwae", 1)
    assert "K >= 2" in _one_line(exc)
    check_estimator(cat, "vimco", "iwae", 2)
    with pytest.raises(ConfigError) as exc:
        check_estimator(cat, "score", "iwae", 5)
    assert "vimco" in _one_line(exc)
    with pytest.raises(ConfigError) as exc:
        check_estimator(cat, "bogus", "elbo", 1)
    assert "unknown estimator" in _one_line(exc)

    big = VAE(latent=13, shape=(1, 1, 4), posterior="bernoulli", hidden=[4])  # 2^13 = 8192 codes
    assert latent_support_size(big) == 8192 and default_estimator(big) == "gumbel"
    with pytest.raises(ConfigError) as exc:
        check_estimator(big, "enumerate", "elbo", 1)
    assert "8,192" in _one_line(exc)
    for name in ("score", "nvil", "gumbel", "straight-through"):
        check_estimator(big, name, "elbo", 1)

    gauss = VAE(latent=2, shape=(1, 1, 4), hidden=[4])
    assert not is_discrete(gauss)
    for name in ESTIMATORS:
        with pytest.raises(ConfigError) as exc:
            check_estimator(gauss, name, "elbo", 1)
        assert "discrete latents" in _one_line(exc)
