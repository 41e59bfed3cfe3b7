"""Discrete latent codes: their distributions against torch.distributions, and training them end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tests.cli_run import run_cli
from torch.distributions import Bernoulli, Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

import vaekit
from vaekit.config import from_dict
from vaekit.distributions import DiagonalGaussianMixture, FactorizedBernoulli, FactorizedCategorical
from vaekit.errors import ConfigError


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- the distributions ------------------------------------------------------------------------------------------


def test_categorical_codes_match_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, 4, generator=g)
    q = FactorizedCategorical(logits)
    assert q.batch_shape == (5,) and q.event_shape == (12,) and q.support_size == 4**3
    ref = Independent(Categorical(logits=logits), 1)
    z = q.sample((7,), generator=g)  # (7, 5, 12), one-hot per group
    assert z.shape == (7, 5, 12) and torch.equal(z.reshape(7, 5, 3, 4).sum(-1), torch.ones(7, 5, 3))
    index = z.reshape(7, 5, 3, 4).argmax(-1)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(index))
    torch.testing.assert_close(q.entropy(), ref.entropy())
    p = FactorizedCategorical(torch.randn(3, 4, generator=g))
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(Categorical(logits=logits),
                                                                 Categorical(logits=p.logits)).sum(-1))


def test_bernoulli_codes_match_torch():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(6, 5, generator=g)
    q, p = FactorizedBernoulli(logits), FactorizedBernoulli(torch.randn(5, generator=g))
    ref, ref_p = Independent(Bernoulli(logits=logits), 1), Independent(Bernoulli(logits=p.logits.expand(6, 5)), 1)
    z = q.sample((4,), generator=g)
    torch.testing.assert_close(q.log_prob(z), ref.log_prob(z))
    torch.testing.assert_close(q.entropy(), ref.entropy())
    torch.testing.assert_close(kl_divergence(q, p), kl_divergence(ref, ref_p))


def test_enumerated_support_is_every_code_once_and_sums_to_one():
    g = torch.Generator().manual_seed(2)
    for q in (FactorizedCategorical(torch.randn(2, 3, 4, generator=g)), FactorizedBernoulli(torch.randn(2, 5))):
        codes = q.enumerate_support()  # (S, 2, L)
        assert codes.shape[0] == q.support_size and codes.shape[1] == 2
        assert torch.unique(codes[:, 0], dim=0).shape[0] == q.support_size
        torch.testing.assert_close(torch.logsumexp(q.log_prob(codes), 0), torch.zeros(2), atol=1e-5, rtol=0)
        assert q.enumerate_support(expand=False).shape == (q.support_size, 1, codes.shape[-1])


def test_gumbel_max_draws_have_the_categorical_frequencies():
    # 40,000 draws: each frequency has standard error sqrt(p (1 - p) / n) <= 0.0025; 5 SE is 0.0125
    logits = torch.tensor([[0.0, 1.0, -1.0, 0.5]])
    q = FactorizedCategorical(logits)
    n = 40_000
    freq = q.sample((n,), generator=torch.Generator().manual_seed(3)).mean(0)  # one group: (K,)
    probs = torch.softmax(logits[0], -1)
    se = torch.sqrt(probs * (1 - probs) / n)
    assert torch.all((freq - probs).abs() < 5 * se), (freq, probs)


def test_relaxed_draws_are_soft_and_straight_through_is_hard():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(8, 2, 5, generator=g, requires_grad=True)
    q = FactorizedCategorical(logits)
    soft = q.relaxed_rsample(0.5, (), g).reshape(8, 2, 5)
    torch.testing.assert_close(soft.sum(-1), torch.ones(8, 2))
    assert ((soft > 0) & (soft < 1)).all()
    hard = q.relaxed_rsample(0.5, (), g, hard=True).reshape(8, 2, 5)
    assert torch.equal(hard.detach(), torch.nn.functional.one_hot(hard.detach().argmax(-1), 5).float())
    (hard * torch.arange(5.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0  # the relaxed gradient flows back
    b = FactorizedBernoulli(torch.zeros(3, requires_grad=True)).relaxed_rsample(0.5, (1000,), g).detach()
    assert ((b >= 0) & (b <= 1)).all()  # (float32 rounds the far tails to exactly 0 or 1)
    se = float(b.std()) / math.sqrt(b.numel())
    assert abs(float(b.mean()) - 0.5) < 5 * se  # logits 0: the binary Concrete is symmetric about 1/2


def test_gaussian_mixture_with_weights_matches_torch():
    g = torch.Generator().manual_seed(5)
    loc, logvar, w = torch.randn(3, 2, generator=g), torch.randn(3, 2, generator=g), torch.randn(3, generator=g)
    mix = DiagonalGaussianMixture(loc, logvar, w)
    ref = MixtureSameFamily(Categorical(logits=w), Independent(Normal(loc, torch.exp(0.5 * logvar)), 1))
    z = torch.randn(10, 2, generator=g)
    torch.testing.assert_close(mix.log_prob(z), ref.log_prob(z))
    post = mix.cluster_posterior(z)
    torch.testing.assert_close(post.sum(-1), torch.ones(10))
    torch.testing.assert_close(torch.logsumexp(mix.component_log_prob(z), -1), ref.log_prob(z))


# -- configuration ----------------------------------------------------------------------------------------------


def test_families_fill_in_their_parts_and_refuse_contradictions():
    cfg = from_dict({"posterior": "categorical", "latent": 20, "classes": 10})
    assert cfg.prior == "categorical" and cfg.posterior_settings == {"classes": 10}
    cfg = from_dict({"family": "bernoulli-mixture", "components": 50})
    assert (cfg.posterior, cfg.latent, cfg.posterior_settings, cfg.prior, cfg.prior_settings, cfg.hidden) == (
        "categorical", 1, {"classes": 50}, "categorical", {"learned": True}, [])
    assert from_dict({"family": "gmvae", "clusters": 7}).prior_settings == {"clusters": 7}
    assert from_dict({"model": {"posterior": {"name": "bernoulli"}, "latent": 16}}).prior == "bernoulli"
    for bad, needle in (({"family": "bernoulli-mixture", "latent": 3}, "leave out latent"),
                        ({"fit": "em"}, "bernoulli-mixture"),
                        ({"components": 5}, "clusters"),
                        ({"estimator": "nvil"}, "discrete latents"),
                        ({"estimator": "bogus", "posterior": "bernoulli"}, "estimator must be one of"),
                        ({"family": "gmvae", "prior": "vamp"}, "mixture prior")):
        with pytest.raises(ConfigError, match=needle):
            from_dict(bad)


@pytest.mark.parametrize("args, needle", [
    (["--posterior", "bernoulli", "--latent", "20", "--estimator", "enumerate"], "1,048,576"),
    (["--posterior", "bernoulli", "--latent", "4", "--estimator", "vimco"], "--objective iwae"),
    (["--posterior", "bernoulli", "--latent", "4", "--objective", "iwae", "--k", "3", "--estimator", "nvil"],
     "vimco"),
    (["--posterior", "categorical", "--classes", "1"], "classes"),
    (["--posterior", "bernoulli", "--prior", "categorical"], "categorical prior"),
])
def test_impossible_estimators_are_one_line_errors(tmp_path, capsys, args, needle):
    code, _, err = run_cli(["train", "--dataset", "digits", "--binarize", "threshold", "--epochs", "1",
                            "--out", str(tmp_path / "r"), *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


# -- training ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("posterior, estimator, extra", [
    ("categorical", "enumerate", []),
    ("categorical", "score", []),
    ("categorical", "nvil", []),
    ("categorical", "gumbel", []),
    ("categorical", "straight-through", []),
    ("bernoulli", "nvil", []),
    ("bernoulli", "vimco", ["--objective", "iwae", "--k", "4"]),
])
def test_each_estimator_trains_a_discrete_model(tmp_path, capsys, posterior, estimator, extra):
    run = tmp_path / "r"
    latent = ["--latent", "2", "--classes", "4"] if posterior == "categorical" else ["--latent", "6"]
    code, out, err = run_cli(["train", "--dataset", "digits", "--binarize", "threshold", "--epochs", "4",
                              "--hidden", "32", "--posterior", posterior, *latent, "--estimator", estimator,
                              "--out", str(run), *extra], capsys)
    assert code == 0, err
    rows = _rows(run)
    assert len(rows) == 4 and all(r["estimator"] == estimator for r in rows)
    assert all(math.isfinite(r["valid_elbo"]) for r in rows)
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] - 1.0  # it learns (or at least does not get worse)
    if estimator == "gumbel":  # the relaxed training objective is named for what it is; validation is discrete
        assert all(r["train_bound"] == "relaxed" for r in rows) and "train relaxed ELBO" in out + err
        assert rows[-1]["temperature"] < 1.0
    else:
        assert "train_bound" not in rows[-1]
    model = vaekit.VAE.load(run)
    assert model.posterior_family.name == posterior


def test_training_improves_a_categorical_vae_over_its_initial_elbo(tmp_path):
    from vaekit.data import load_dataset
    from vaekit.train import evaluate_elbo_sums

    ds = load_dataset("digits", binarize="threshold")
    torch.manual_seed(0)
    model = vaekit.VAE(latent=2, shape=ds.shape, posterior={"name": "categorical", "classes": 8}, hidden=(64,))
    before = float(evaluate_elbo_sums(model, ds.valid, 500, 0)[0]) / ds.valid.shape[0]
    result = vaekit.fit(model, ds.train, ds.valid, out=tmp_path / "r", epochs=8, estimator="nvil", progress=False)
    after = result.best_valid_elbo
    assert after > before + 5.0, (before, after)  # nats per example; the untrained model is ~20 nats worse


def test_resume_is_bit_exact_with_the_nvil_baseline(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--binarize", "threshold", "--hidden", "32", "--posterior",
            "bernoulli", "--latent", "5", "--estimator", "nvil"]
    assert run_cli([*base, "--epochs", "4", "--out", str(tmp_path / "full")], capsys)[0] == 0
    assert run_cli([*base, "--epochs", "2", "--out", str(tmp_path / "half")], capsys)[0] == 0
    assert run_cli([*base, "--epochs", "4", "--out", str(tmp_path / "half"), "--resume"], capsys)[0] == 0
    full, half = _rows(tmp_path / "full"), _rows(tmp_path / "half")
    assert [r["valid_elbo"] for r in full] == [r["valid_elbo"] for r in half]
    from vaekit.io.checkpoint import read_safetensors

    tensors, _ = read_safetensors(tmp_path / "half" / "checkpoint.safetensors")
    assert any(k.startswith("estimator.baseline.") for k in tensors)


def test_gaussian_mixture_vae_trains_and_its_cluster_posterior_is_exact(tmp_path, capsys):
    run = tmp_path / "gm"
    code, _, err = run_cli(["train", "--dataset", "digits", "--family", "gmvae", "--clusters", "5", "--latent",
                            "3", "--hidden", "32", "--epochs", "3", "--out", str(run)], capsys)
    assert code == 0, err
    model = vaekit.VAE.load(run)
    assert model.prior.name == "mixture" and model.prior.clusters == 5
    z = torch.randn(7, 3)
    joint = model.prior.distribution().component_log_prob(z)  # log p(c, z)
    torch.testing.assert_close(torch.logsumexp(joint, -1), model.log_prior(z))  # c summed out exactly
    torch.testing.assert_close(model.prior.cluster_posterior(z), torch.softmax(joint, -1))


def test_a_mixture_trained_as_a_vae_starts_from_training_images_with_the_exact_posterior():
    from vaekit.bounds.enumeration import enumerated_bound
    from vaekit.train import model_for

    cfg = from_dict({"family": "bernoulli-mixture", "components": 6})
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((50, 1, 4, 4), 0.3), generator=g)
    model = model_for(cfg, (1, 4, 4), True)
    model.seed_from_data(x, seed=0)  # the model's own hook, as the trainer calls it
    templates = torch.sigmoid(model.decode(torch.eye(6))).reshape(6, -1)  # each component's pixel means
    assert all(any(torch.allclose(t, 0.05 + 0.9 * row) for row in x.reshape(50, -1)) for t in templates)
    bound = enumerated_bound(model, x)
    assert float(bound.gap.abs().max()) < 1e-4  # q(z|x) is the exact posterior of the initial mixture
