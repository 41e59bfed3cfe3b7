"""The VAE's pieces: shapes, densities against torch.distributions, gradients through z."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Bernoulli, ContinuousBernoulli, Independent, Normal

from vaekit.components.likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood, GaussianLikelihood
from vaekit.distributions import DiagonalNormal
from vaekit.models import VAE, HierarchicalVAE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 12, 10)])
def test_shapes(arch, shape):
    model = VAE(shape=shape, latent=3, arch=arch, hidden=[32])
    x = torch.rand(5, *shape)
    q = model.posterior(x)
    mu, logvar = q.loc, q.logvar
    assert mu.shape == logvar.shape == (5, 3)
    assert model.posterior(x.flatten(1)).loc.shape == (5, 3)
    z = DiagonalNormal(mu, logvar).rsample((4,))
    assert z.shape == (4, 5, 3)
    assert model.log_likelihood(x.flatten(1), z).shape == (4, 5)
    s = model.sample(6)
    assert s.means.shape == s.draws.shape == (6, *shape)
    assert ((s.draws == 0) | (s.draws == 1)).all()
    assert model.reconstruct(x).shape == x.shape


SHAPE = (1, 4, 5)  # 20 pixels


def test_bernoulli_likelihood_matches_torch():
    logits, x = torch.randn(7, *SHAPE), torch.bernoulli(torch.rand(7, *SHAPE))
    expected = Independent(Bernoulli(logits=logits.flatten(1)), 1).log_prob(x.flatten(1))
    torch.testing.assert_close(BernoulliLikelihood(SHAPE).log_prob(x, logits), expected)


def test_continuous_bernoulli_likelihood_matches_torch():
    logits, x = torch.randn(7, *SHAPE), torch.rand(7, *SHAPE)
    expected = Independent(ContinuousBernoulli(logits=logits.flatten(1)), 1).log_prob(x.flatten(1))
    torch.testing.assert_close(ContinuousBernoulliLikelihood(SHAPE).log_prob(x, logits), expected)


@pytest.mark.parametrize("variance", ["fixed", "learned", "per-pixel"])
def test_gaussian_likelihood_matches_torch(variance):
    lik = GaussianLikelihood(SHAPE, variance=variance, sigma=0.3)
    params = torch.randn(7, *lik.param_shape)
    assert lik.param_shape == (lik.params_per_pixel * SHAPE[0], *SHAPE[1:])
    x = torch.rand(7, *SHAPE)
    torch.testing.assert_close(lik.log_prob(x, params), lik.distribution(params).log_prob(x))
    if variance != "per-pixel":
        expected = Independent(Normal(torch.sigmoid(params.flatten(1)), 0.3), 1).log_prob(x.flatten(1))
        torch.testing.assert_close(lik.log_prob(x, params), expected)


def test_vamp_prior_matches_mixture_log_prob():
    model = VAE(shape=(1, 8, 8), latent=3, hidden=[16], prior={"name": "vamp", "components": 7})
    z = torch.randn(4, 5, 3)
    expected = model.prior.distribution().log_prob(z)
    torch.testing.assert_close(model.prior.log_prob(z), expected, rtol=1e-5, atol=1e-5)
    assert model.prior.sample(9).shape == (9, 3)


def test_posterior_log_prob_matches_torch():
    model = VAE(shape=(1, 8, 8), latent=3, hidden=[16])
    x = torch.rand(4, 64)
    q = model.posterior(x)
    mu, logvar = q.loc, q.logvar
    z = DiagonalNormal(mu, logvar).rsample((2,))
    expected = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
    torch.testing.assert_close(DiagonalNormal(mu, logvar).log_prob(z), expected)
    torch.testing.assert_close(q.log_prob(z), expected)


def test_reparameterized_sample_carries_gradients_to_the_encoder():
    """d/dphi of f(z), z = mu_phi(x) + sigma_phi(x) eps, by autograd equals finite differences."""
    model = VAE(shape=(1, 4, 4), latent=2, hidden=[8]).double()
    x = torch.rand(3, 16, dtype=torch.float64)
    eps = torch.randn(3, 2, dtype=torch.float64)
    weight = model.encoder[0].weight

    def f(w: torch.Tensor) -> torch.Tensor:
        saved = weight.data.clone()
        weight.data = w
        q = model.posterior(x)
        mu, logvar = q.loc, q.logvar
        z = mu + torch.exp(0.5 * logvar) * eps
        out = (z.sin() * z).sum()
        weight.data = saved
        return out

    q = model.posterior(x)
    mu, logvar = q.loc, q.logvar
    z = mu + torch.exp(0.5 * logvar) * eps
    (z.sin() * z).sum().backward()
    grad = weight.grad.clone()
    assert grad.abs().sum() > 0
    h = 1e-6
    w0 = weight.detach().clone()
    for idx in [(0, 0), (3, 7), (7, 15)]:
        wp, wm = w0.clone(), w0.clone()
        wp[idx] += h
        wm[idx] -= h
        fd = (f(wp) - f(wm)) / (2 * h)
        assert grad[idx].item() == pytest.approx(fd.item(), rel=1e-5, abs=1e-8)


def test_config_validation():
    with pytest.raises(ValueError, match="arch"):
        VAE(shape=(1, 4, 4), arch="rnn")
    with pytest.raises(ValueError, match="latent"):
        VAE(shape=(1, 4, 4), latent=0)
    with pytest.raises(ValueError, match="arch"):
        HierarchicalVAE(shape=(1, 4, 4), arch="rnn")
    with pytest.raises(ValueError, match="latent"):
        HierarchicalVAE(shape=(1, 4, 4), latent=0)
    with pytest.raises(ValueError, match="likelihood"):
        VAE(shape=(1, 4, 4), likelihood="poisson")
    with pytest.raises(ValueError, match="prior"):
        VAE(shape=(1, 4, 4), prior="laplace")


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "continuous-bernoulli"])
@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_sampling_is_reproducible_with_a_generator_and_keeps_the_dtype(likelihood, prior):
    model = VAE(shape=(1, 4, 4), latent=2, hidden=[8], likelihood=likelihood,
                prior={"name": prior, "components": 3} if prior == "vamp" else prior).double()
    a = model.sample(5, generator=torch.Generator().manual_seed(3))
    b = model.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.draws, b.draws) and torch.equal(a.z, b.z)
    assert a.draws.dtype == torch.float64 and a.means.dtype == torch.float64
