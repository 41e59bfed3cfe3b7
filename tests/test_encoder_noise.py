"""The denoising encoder (``--encoder-noise``): q(z|x~) with x~ = x + sigma * eps, decoder scoring x.

ELBO(x; q(.|x~)) = log p(x) - KL(q(z|x~) || p(z|x)), so it stays a lower bound on log p(x); on the
linear-Gaussian model every term is available in closed form and the Monte Carlo ELBO is checked
against that identity.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import kl_divergence

from cli_run import run_cli
from vaekit.distributions import DiagonalNormal
from vaekit.evaluation.exact import LinearGaussian
from vaekit.models import VAE
from vaekit.objectives import elbo, iwae_terms
from vaekit.train import LossModule


@pytest.fixture
def lg():
    return LinearGaussian.random(data_dim=8, latent=2, sigma=0.5, seed=0)


def test_noisy_encoder_elbo_is_log_px_minus_kl_of_the_noisy_q(lg):
    x = lg.sample_data(16, seed=1)
    x_noisy = x + 0.7 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    s = 20_000
    with torch.no_grad():
        terms = elbo(lg, x, samples=s, encoder_input=x_noisy, generator=torch.Generator().manual_seed(3))
        # per-example standard error of the Monte Carlo reconstruction term
        q = lg.posterior(x_noisy)
        z = DiagonalNormal(q.loc, q.logvar).rsample((s,), torch.Generator().manual_seed(3))
        se = lg.log_likelihood(x, z).std(0) / math.sqrt(s)
    expected = lg.log_marginal(x) - kl_divergence(lg.q_distribution(x_noisy), lg.true_posterior(x))
    assert ((terms.elbo - expected).abs() / se).max() < 4.5  # 16 examples, each ~N(0, 1) in SE units
    # strictly below log p(x) (= the clean ELBO: the clean encoder holds the exact posterior)
    assert (expected < lg.log_marginal(x) - 1e-3).all()


def test_iwae_with_a_noisy_encoder_uses_q_of_the_noisy_input(lg):
    x = lg.sample_data(4, seed=5)
    x_noisy = x + 0.5
    with torch.no_grad():
        bound, terms = iwae_terms(lg, x, 3, torch.Generator().manual_seed(6), encoder_input=x_noisy)
        q = lg.posterior(x_noisy)
        mu, logvar = q.loc, q.logvar
        z = DiagonalNormal(mu, logvar).rsample((3,), torch.Generator().manual_seed(6))
        log_w = lg.log_likelihood(x, z) + lg.prior.log_prob(z) - DiagonalNormal(mu, logvar).log_prob(z)
    torch.testing.assert_close(bound, torch.logsumexp(log_w, 0) - math.log(3))
    torch.testing.assert_close(terms.elbo, log_w.mean(0))


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_loss_module_adds_noise_to_the_encoders_input_only(sigma):
    torch.manual_seed(0)
    model = VAE(shape=(1, 8, 8), latent=4, hidden=[32])
    x = torch.bernoulli(torch.full((64, 64), 0.3, dtype=torch.float32))
    seen: list[torch.Tensor] = []
    model.encoder.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    decoded: list[torch.Tensor] = []
    original = model.log_likelihood
    model.log_likelihood = lambda xx, z, y=None: (decoded.append(xx), original(xx, z, y))[1]
    loss, stats, _ = LossModule(model, "elbo", 1, encoder_noise=sigma)(x, 1.0)
    (encoder_input,) = seen  # the networks see images (N, C, H, W)
    torch.testing.assert_close(decoded[0].reshape(x.shape), x)  # the decoder scores the clean image
    noise = encoder_input.reshape(x.shape) - x
    if sigma == 0:
        assert torch.equal(noise, torch.zeros_like(x))
    else:
        # the standard deviation of 4096 N(0, sigma^2) draws has SE sigma / sqrt(2 * 4096)
        assert abs(noise.std().item() - sigma) < 5 * sigma / math.sqrt(2 * noise.numel())
        assert abs(noise.mean().item()) < 5 * sigma / math.sqrt(noise.numel())
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_cli_records_encoder_noise_and_rejects_a_negative_one(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--out", str(out), "--epochs", "1", "--encoder-noise", "0.4", "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["encoder_noise"] == 0.4
    bad = ["train", "--out", str(tmp_path / "bad"), "--epochs", "1", "--encoder-noise", "-0.1"]
    code, _, err = run_cli(bad, capsys)
    assert code == 2
    assert "encoder_noise must be a finite number >= 0" in err
    assert "Traceback" not in err
