"""Exact checks of the bound: the evaluator against a linear-Gaussian model's closed-form log p(x),
and grid integration over a 2-D latent space against the importance-sampled estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthetic import prototype_dataset
from vaekit.config import TrainConfig
from vaekit.evaluation import evaluate_model
from vaekit.evaluation.exact import LinearGaussian, compare_bounds, grid_log_marginal
from vaekit.models import VAE
from vaekit.objectives import log_importance_weights
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def lg():
    return LinearGaussian.random(data_dim=8, latent=2, sigma=0.5, seed=0)


@pytest.fixture
def x(lg):
    return lg.sample_data(20, seed=1)


def test_closed_forms_agree_with_torch_distributions(lg, x):
    # p(x) = integral p(z) p(x|z) dz: check log p(x) = log p(x|z) + log p(z) - log p(z|x) at any z
    z = torch.randn(20, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    post = lg.true_posterior(x)
    via_bayes = lg.log_likelihood(x, z) + lg.prior.log_prob(z) - post.log_prob(z)
    torch.testing.assert_close(via_bayes, lg.log_marginal(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("k", [1, 7, 1000])
def test_exact_posterior_makes_the_elbo_exact(lg, x, k):
    # q = p(z|x): every log w_i = log p(x), so ELBO = IWAE_K = log p(x) to float64 precision, any K
    r = evaluate_model(lg.set_exact_posterior(), x, k=k, seed=k)
    exact = lg.log_marginal(x).numpy()
    np.testing.assert_allclose(r.per_example["elbo"], exact, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r.per_example["log_px"], exact, rtol=0, atol=1e-9)
    assert abs(r.gap) < 1e-9 and lg.kl_to_posterior(x).abs().max() < 1e-9


def test_exact_posterior_in_float32_to_float_precision():
    lg32 = LinearGaussian.random(data_dim=8, latent=2, sigma=0.5, seed=0, dtype=torch.float32)
    xx = lg32.sample_data(20, seed=1)
    r = evaluate_model(lg32, xx, k=50, seed=0)
    exact = lg32.double().log_marginal(xx.double()).numpy()
    np.testing.assert_allclose(r.per_example["elbo"], exact, rtol=1e-5, atol=1e-4)


def test_elbo_is_log_px_minus_the_kl_to_the_posterior(lg, x):
    lg.set_wrong_posterior(shift=0.5, scale=1.5, seed=3)
    kl = lg.kl_to_posterior(x)  # KL(q || p(z|x)) from torch.distributions.kl_divergence
    assert (kl > 0.05).all()
    elbo = lg.elbo_closed_form(x)
    torch.testing.assert_close(elbo, lg.log_marginal(x) - kl, rtol=0, atol=1e-10)  # an identity
    assert (elbo < lg.log_marginal(x)).all()


def test_the_evaluators_elbo_and_gap_match_the_closed_forms(lg, x):
    lg.set_wrong_posterior(shift=0.5, scale=1.5, seed=3)
    k = 4000
    r = evaluate_model(lg, x, k=k, seed=0)
    exact, kl = lg.log_marginal(x).numpy(), lg.kl_to_posterior(x).numpy()
    # the Monte Carlo ELBO of each example has SE std(log w) / sqrt(K); over 20 independent examples the
    # mean error has SE sqrt(sum SE_i^2) / 20. Allow 4 SE.
    with torch.no_grad():
        sd = log_importance_weights(lg, x, 2000, torch.Generator().manual_seed(1)).std(0).numpy()
    se_mean = math.sqrt(((sd / math.sqrt(k)) ** 2).sum()) / len(sd)
    assert abs(r.elbo - float(lg.elbo_closed_form(x).mean())) < 4 * se_mean
    assert (r.per_example["elbo"] <= exact).all()  # ELBO <= log p(x) for every example
    # log p(x) - ELBO estimates KL(q || p(z|x)) with the same Monte Carlo error
    assert abs(float((exact - r.per_example["elbo"]).mean()) - kl.mean()) < 4 * se_mean
    # the gap IWAE - ELBO is short of the KL only by the IWAE bias (~ SE_i^2 / 2, tiny at this K) and noise
    iwae_se = math.sqrt((r.per_example["log_px_stderr"] ** 2).sum()) / len(sd)
    assert abs(r.gap - kl.mean()) < 4 * (se_mean + iwae_se)


def test_iwae_approaches_log_px_as_k_grows(lg, x):
    lg.set_wrong_posterior(shift=0.8, scale=1.5, seed=4)
    exact = lg.log_marginal(x).numpy()
    errors, ses = {}, {}
    for k in (1, 10, 100, 1000, 10000):
        r = evaluate_model(lg, x, k=k, seed=k)
        err = r.per_example["log_px"] - exact
        errors[k] = np.abs(err).mean()
        ses[k] = r.per_example["log_px_stderr"]
        assert (r.per_example["elbo"] <= exact).all()  # every ELBO below log p(x)
        if k == 1:
            assert err.mean() < -0.3  # IWAE_1 = ELBO: biased low by the KL (~0.9 nats here)
    # the error shrinks roughly like 1/sqrt(K): at least a factor 2 per factor 10 in K, from K = 10 on
    assert errors[1] > errors[10] > errors[100] > errors[1000] > errors[10000]
    assert errors[10000] < errors[100] / 4
    # at K = 10000, every example is within 4 of its Monte Carlo standard errors sqrt(1/ESS - 1/K)
    # (a delta-method SE; 20 examples, so 4 SE leaves a wide margin), and the average within 4 SE of the mean
    r = evaluate_model(lg, x, k=10000, seed=123)
    err = r.per_example["log_px"] - exact
    se = r.per_example["log_px_stderr"]
    assert (np.abs(err) < 4 * se).all()
    assert abs(err.mean()) < 4 * math.sqrt((se**2).sum()) / len(se)


def test_rotation_makes_any_linear_gaussian_exactly_representable():
    general = LinearGaussian.random(data_dim=8, latent=3, sigma=0.3, seed=5, orthogonal=False)
    with pytest.raises(ValueError, match="rotated"):
        general.set_exact_posterior()
    rot = general.rotated().set_exact_posterior()
    xx = general.sample_data(10, seed=2)
    torch.testing.assert_close(rot.log_marginal(xx), general.log_marginal(xx))
    r = evaluate_model(rot, xx, k=5, seed=0)
    np.testing.assert_allclose(r.per_example["elbo"], general.log_marginal(xx).numpy(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("exact_q", [True, False])
def test_grid_integration_is_exact_for_the_linear_gaussian(lg, x, exact_q):
    # a smooth Gaussian integrand: the grid sum converges far below float32 precision at 200 x 200
    lg.set_exact_posterior() if exact_q else lg.set_wrong_posterior(shift=1.0, scale=2.0)
    g = grid_log_marginal(lg, x)
    torch.testing.assert_close(g.log_px, lg.log_marginal(x), rtol=0, atol=1e-8)
    assert g.error.max() < 1e-8 and not g.edge.any()


@pytest.fixture(scope="module")
def trained_2d(tmp_path_factory):
    ds = prototype_dataset(240, 60, 60, labels=False, classes=None)
    run = tmp_path_factory.mktemp("bound") / "run"
    train(TrainConfig(dataset="synthetic", latent=2, hidden=[32], epochs=8, batch_size=40, device="cpu"), run,
          dataset=ds, progress=False)
    return VAE.load(run).eval(), ds.test[:12]


def _check_grid_vs_iwae(model, x, k=3000):
    c = compare_bounds(model, x, k=k, seed=0)
    assert {"grid", "grid_error", "iwae", "iwae_stderr", "elbo", "gap", "means"} <= set(c)
    # ELBO <= IWAE (same draws) and ELBO <= the grid value, for every example (1e-4: float32 rounding)
    assert (c["elbo"] <= c["iwae"] + 1e-4).all()
    assert (c["elbo"] <= c["grid"] + 1e-4).all()
    # the grid value is log p(x) up to its own error estimate; IWAE_K is within a few Monte Carlo SE of it
    # (IWAE's bias ~ SE^2 / 2 is negligible at this K). 5 SE + grid error + 2e-3 (float32 sums over 4e4 points).
    tol = 5 * c["iwae_stderr"] + c["grid_error"] + 2e-3
    assert (np.abs(c["iwae"] - c["grid"]) < tol).all(), (c["iwae"] - c["grid"], tol)
    assert (c["grid_error"] < 0.01).all()
    return c


def test_grid_matches_iwae_on_a_trained_2d_vae(trained_2d):
    model, x = trained_2d
    c = _check_grid_vs_iwae(model, x)
    assert (c["gap"] > 0).all()


def test_grid_matches_iwae_on_a_random_2d_vae():
    torch.manual_seed(3)
    model = VAE(shape=(1, 8, 8), latent=2, hidden=[16]).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(2.0)  # a sharper likelihood: a posterior unlike q and the prior
    x = torch.bernoulli(torch.rand(8, 64, generator=torch.Generator().manual_seed(4)))
    _check_grid_vs_iwae(model, x)


def test_grid_needs_a_2d_latent_space():
    model = VAE(shape=(1, 4, 4), latent=3, hidden=[8])
    with pytest.raises(ValueError, match="2-dimensional"):
        grid_log_marginal(model, torch.zeros(2, 16))
    c = compare_bounds(model, torch.zeros(2, 16), k=10)
    assert "grid" not in c and c["latent"] == 3
