"""ELBO and IWAE: analytic vs Monte Carlo KL, IWAE_1 = ELBO, IWAE_k increasing in k."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.distributions import DiagonalNormal
from vaekit.errors import VaekitError
from vaekit.models import VAE
from vaekit.objectives import elbo, iwae_bound, iwae_terms, kl_weight, log_importance_weights


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = VAE(shape=(1, 8, 8), latent=4, hidden=[32])
    # a little structure so that the posterior is not the prior
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)
    return m


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.rand(64, 64, generator=g), generator=g)


def test_analytic_and_monte_carlo_kl_agree(model, x):
    with torch.no_grad():
        analytic = elbo(model, x, analytic_kl=True).kl
        g = torch.Generator().manual_seed(2)
        mc = elbo(model, x, samples=4000, analytic_kl=False, generator=g).kl
        # the per-example standard error of the MC KL: std of log q - log p over draws / sqrt(S)
        q = model.posterior(x)
        mu, logvar = q.loc, q.logvar
        z = DiagonalNormal(mu, logvar).rsample((4000,), torch.Generator().manual_seed(3))
        d = DiagonalNormal(mu, logvar).log_prob(z) - model.prior.log_prob(z)
        se = d.std(0) / math.sqrt(4000)
    assert ((mc - analytic).abs() / se).max() < 4.5  # 64 examples, each ~N(0,1) in SE units
    assert analytic.mean() > 0.5  # a non-trivial posterior


def test_iwae_k1_equals_the_elbo_estimate(model, x):
    with torch.no_grad():
        bound = iwae_bound(model, x, 1, torch.Generator().manual_seed(5))
        terms = elbo(model, x, analytic_kl=False, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(bound, terms.elbo)


def test_iwae_terms_mean_of_log_weights_is_the_elbo(model, x):
    with torch.no_grad():
        bound, terms = iwae_terms(model, x, 7, torch.Generator().manual_seed(6))
        log_w = log_importance_weights(model, x, 7, torch.Generator().manual_seed(6))
    torch.testing.assert_close(terms.elbo, log_w.mean(0))
    torch.testing.assert_close(bound, torch.logsumexp(log_w, 0) - math.log(7))
    assert (bound >= terms.elbo - 1e-5).all()  # Jensen, per draw


def test_iwae_bound_increases_with_k_on_average(model, x):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        means, ses = [], []
        for k in (1, 5, 50):
            vals = torch.stack([iwae_bound(model, x, k, g) for _ in range(40)])  # (40, B)
            per_rep = vals.mean(1)
            means.append(per_rep.mean().item())
            ses.append(per_rep.std().item() / math.sqrt(40))
    for (m1, s1), (m2, s2) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert m2 - m1 > 4 * math.hypot(s1, s2), (means, ses)


def test_elbo_terms_and_units(model, x):
    t = elbo(model, x)
    torch.testing.assert_close(t.elbo, t.reconstruction - t.kl)
    assert t.elbo.shape == (64,)
    assert (t.reconstruction <= 0).all()  # Bernoulli log-probabilities
    assert (t.kl >= 0).all()


def test_elbo_gradients_reach_the_encoder(model, x):
    (-elbo(model, x).elbo.mean()).backward()
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert model.decoder[0].weight.grad.abs().sum() > 0


def test_vamp_prior_elbo_uses_monte_carlo_kl():
    torch.manual_seed(0)
    m = VAE(shape=(1, 8, 8), latent=4, hidden=[32], prior={"name": "vamp", "components": 5})
    x = torch.bernoulli(torch.rand(16, 64))
    t = elbo(m, x)
    assert torch.isfinite(t.elbo).all()
    with pytest.raises(VaekitError, match="has no closed form registered"):
        elbo(m, x, analytic_kl=True)


def test_kl_warmup_schedule():
    assert kl_weight(0, 1.0, 0) == 1.0
    assert kl_weight(0, 1.0, 4) == 0.25
    assert kl_weight(3, 2.0, 4) == 2.0
    assert kl_weight(10, 1.0, 4) == 1.0
    with pytest.raises(ValueError):
        iwae_bound(VAE(shape=(1, 2, 2), latent=1, hidden=[2]), torch.zeros(1, 4), 0)


def test_the_elbo_encodes_the_vampprior_pseudo_inputs_once():
    model = VAE(shape=(1, 4, 4), latent=2, hidden=[8], prior={"name": "vamp", "components": 5})
    batches = []
    model.encoder.register_forward_hook(lambda _m, inputs, _o: batches.append(inputs[0].shape[0]))
    elbo(model, torch.bernoulli(torch.full((3, 1, 4, 4), 0.5)))
    assert batches == [3, 5]  # the data, then the 5 pseudo-inputs: one pass each per step
