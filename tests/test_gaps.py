"""The gap decomposition on a linear-Gaussian model whose posterior is correlated, so that a factorized q cannot
match it: the best factorized q has the posterior's mean and variances 1 / Lambda_jj (Lambda = S^-1, the posterior
precision), and KL(q* || p(z|x)) = (sum_j log Lambda_jj - log det Lambda) / 2, the same for every x.

Tolerances: 3 standard errors over the examples of the per-example differences from the closed forms (the exact
log p(x) is given, so they hold the Monte Carlo error of the ELBO estimates and what the fit leaves).
"""

from __future__ import annotations

import math

import pytest
import torch

import vaekit
from vaekit.analysis.gaps import gap_decomposition, local_parameters
from vaekit.errors import VaekitError
from vaekit.models.linear_gaussian import LinearGaussian

pytestmark = pytest.mark.usefixtures("single_thread")

N = 32


def _correlated_model() -> tuple[LinearGaussian, torch.Tensor, torch.Tensor, float]:
    """(model, x, exact log p(x), KL(q* || p(z|x))): columns of W at an angle, posterior correlation -0.79."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 2, generator=g, dtype=torch.float64)
    w[:, 1] = 0.9 * w[:, 0] + 0.45 * w[:, 1]
    lg = LinearGaussian(0.4 * w, 0.5 * torch.randn(16, generator=g, dtype=torch.float64), 0.5)
    x = lg.sample_data(N, seed=1)
    precision = torch.linalg.inv(lg.posterior_params()[1])
    kl_best = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    return lg, x, lg.log_marginal(x), kl_best


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def _set_best_factorized(lg: LinearGaussian) -> None:
    a, s = lg.posterior_params()
    lg.set_encoder(a, -a @ lg.bias, -torch.linalg.inv(s).diagonal().log())


def test_approximation_gap_is_the_kl_of_the_best_factorized_q_and_amortization_is_zero_at_it():
    lg, x, exact, kl_best = _correlated_model()
    assert kl_best > 0.4  # far from zero: the factorized family cannot hold the correlation
    _set_best_factorized(lg)
    r = gap_decomposition(lg, x, exact, steps=300, draws=8, draws_eval=4000, seed=0)
    mean, se = _mean_se(r.approximation - kl_best)
    assert abs(mean) <= 3 * se and se < 0.01
    mean, se = _mean_se(r.amortization)  # 0 where the encoder's q is kept; where the fit won, tiny
    assert abs(mean) <= 3 * se + 1e-12 and abs(mean) < 1e-3
    assert bool(r.converged.all())
    s = r.summary()
    assert s["approximation_gap"] == pytest.approx(float(r.approximation.mean()))
    assert s["gaps_steps"] == 300 and 0 <= s["gaps_fitted"] <= 1 and s["amortization_gap_stderr"] >= 0


def test_a_wrong_encoder_has_the_amortization_gap_of_its_kl_excess():
    """The encoder's q off in mean and 1.5 times too wide: amortization gap = KL(q_phi || p(z|x)) - KL(q* || p(z|x))
    example by example, and the fit still finds the best factorized q."""
    lg, x, exact, kl_best = _correlated_model()
    lg.set_wrong_posterior(shift=0.5, scale=1.5, seed=0)
    excess = lg.kl_to_posterior(x) - kl_best
    r = gap_decomposition(lg, x, exact, steps=300, draws=8, draws_eval=4000, seed=0)
    mean, se = _mean_se(r.amortization - excess)
    assert abs(mean) <= 3 * se and float(r.amortization.mean()) > 1.0
    mean, se = _mean_se(r.approximation - kl_best)
    assert abs(mean) <= 3 * se
    assert bool(r.fitted.all()) and bool(r.converged.all())
    # the two gaps add up to the whole gap log p(x) - ELBO[q_phi]
    torch.testing.assert_close(r.approximation + r.amortization, exact - r.elbo_amortized)


def test_models_without_per_example_parameters_are_refused_and_a_vae_gives_its_encoder_output():
    torch.manual_seed(0)
    discrete = vaekit.VAE(latent=4, shape=(1, 4, 4), posterior="categorical", prior={"name": "categorical"},
                          hidden=[8])
    with pytest.raises(VaekitError, match="q is discrete"):
        gap_decomposition(discrete, torch.zeros(2, 16), torch.zeros(2))
    vae = vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=[8])
    params, build = local_parameters(vae, torch.zeros(3, 16))
    assert params.shape == (3, vae.posterior_family.param_size) and not params.requires_grad
    assert build(params).batch_shape == (3,)
    with pytest.raises(VaekitError, match="steps >= 1"):
        gap_decomposition(vae, torch.zeros(2, 16), torch.zeros(2), steps=0)


def test_the_convergence_check_flags_a_fit_still_climbing():
    """At a learning rate ten times too small the fit is still climbing three quarters of the way: not converged."""
    lg, x, exact, _ = _correlated_model()
    lg.set_wrong_posterior(shift=0.5, scale=1.5, seed=0)
    slow = gap_decomposition(lg, x[:8], exact[:8], steps=300, lr=0.005, draws_eval=100)
    assert not bool(slow.converged.any()) and slow.summary()["gaps_converged"] == 0.0
