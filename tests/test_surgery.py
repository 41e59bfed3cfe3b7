"""ELBO surgery against the linear-Gaussian model, where every term is known in closed form.

x ~ N(b, C), C = W W^T + sigma^2 I, and q(z|x) = N(A x + c, S) give the aggregate posterior
q(z) = N(A b + c, A C A^T + S) (population), so

    I_q(x; z)       = 1/2 [log det(A C A^T + S) - log det S]
    KL(q(z) || p(z)) = KL(N(A b + c, A C A^T + S) || N(0, I))

The estimator uses the N examples of a data set as the distribution of x, a mixture of N Gaussians in place of
the population's Gaussian q(z): a lumpier aggregate, whose I_q exceeds the population's by O(1/N) (a kernel
density of N points with the posterior's width). With N = 20,000 examples in two latent dimensions and a broad
posterior (sigma = 1.5) that excess was measured at about one Monte Carlo standard error (two at N = 10,000),
so the estimates must agree with the closed forms within 4 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from vaekit.analysis.surgery import elbo_surgery
from vaekit.models.linear_gaussian import LinearGaussian


def _closed_forms(model: LinearGaussian) -> tuple[float, float]:
    a, c = model.enc_weight, model.enc_bias
    s = torch.diag(model.enc_logvar.exp())
    cov_x = model.marginal().covariance_matrix
    agg = MultivariateNormal(a @ model.bias + c, covariance_matrix=a @ cov_x @ a.T + s)
    info = 0.5 * (torch.logdet(agg.covariance_matrix) - torch.logdet(s))
    prior = MultivariateNormal(torch.zeros(model.latent, dtype=a.dtype), torch.eye(model.latent, dtype=a.dtype))
    return float(info), float(kl_divergence(agg, prior))


@pytest.mark.parametrize("which", ["exact", "wrong"])
def test_mutual_information_and_marginal_kl_match_the_closed_forms(which):
    model = LinearGaussian.random(data_dim=6, latent=2, sigma=1.5, seed=3).rotated()
    model.set_exact_posterior() if which == "exact" else model.set_wrong_posterior(shift=0.8, scale=1.3, seed=1)
    data = model.sample_data(20_000, seed=5)
    r = elbo_surgery(model, data, samples=10_000, seed=0, batch_size=5000)
    info, marginal = _closed_forms(model)
    assert abs(r.mutual_information - info) < 4 * r.mutual_information_stderr, (r, info)
    assert abs(r.marginal_kl - marginal) < 4 * r.marginal_kl_stderr, (r, marginal)
    if which == "exact":  # the exact posterior's aggregate is the prior itself
        assert marginal < 1e-10 and abs(r.marginal_kl) < 4 * r.marginal_kl_stderr
    # on the same draws the two parts add up to the average KL, whose value is also known per example
    assert r.average_kl == pytest.approx(r.mutual_information + r.marginal_kl, abs=1e-9)
    closed_kl = float(kl_divergence(model.posterior(data), model.prior_distribution()).mean())
    assert abs(r.average_kl - closed_kl) < 4 * r.average_kl_stderr, (r.average_kl, closed_kl)
    assert 0 < r.mutual_information < r.mutual_information_bound == math.log(20_000)


def test_a_posterior_that_ignores_x_carries_no_information():
    model = LinearGaussian.random(data_dim=6, latent=2, sigma=0.7, seed=3)
    model.set_encoder(torch.zeros(2, 6, dtype=torch.float64), torch.tensor([0.5, -1.0], dtype=torch.float64),
                      torch.zeros(2, dtype=torch.float64))
    r = elbo_surgery(model, model.sample_data(2000, seed=1), samples=4000)
    assert abs(r.mutual_information) < 1e-9  # q(z|x) = q(z): log q(z|x) - log q(z) is 0 at every draw
    assert r.marginal_kl == pytest.approx(0.5 * (0.5**2 + 1.0**2), abs=4 * r.marginal_kl_stderr)


def test_rate_plus_distortion_is_minus_the_elbo_on_the_same_draws():
    import vaekit
    from vaekit.evaluation import evaluate_model

    torch.manual_seed(0)
    model = vaekit.VAE(latent=3, shape=(1, 4, 4), hidden=[8])
    x = torch.bernoulli(torch.full((30, 16), 0.4))
    r = evaluate_model(model, x, k=20, surgery_samples=500)
    assert r.rate == r.kl and r.distortion == -r.reconstruction
    per = r.per_example
    assert abs((per["kl"] - per["reconstruction"] + per["elbo"]).max()) < 1e-12  # R + D = -ELBO per example
    assert r.rate + r.distortion == pytest.approx(-r.elbo, abs=1e-12)
    # the two parts of the rate from surgery agree with the evaluator's rate estimate within their errors
    se = math.hypot(r.rate_stderr, r.mutual_information_stderr, r.marginal_kl_stderr)
    assert abs(r.mutual_information + r.marginal_kl - r.rate) < 4 * se
