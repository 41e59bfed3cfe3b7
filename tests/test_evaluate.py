"""vaekit.evaluation: the importance-sampled log p(x), the ELBO and the gap, batched and chunked."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest
import torch

from synthetic import prototype_dataset
from vaekit.config import TrainConfig
from vaekit.evaluation import (
    EvaluationResult,
    bytes_per_row,
    evaluate_model,
    evaluate_run,
    format_table,
    log_weight_stats,
    plan_chunks,
    split_images,
)
from vaekit.models import VAE
from vaekit.objectives import iwae_bound
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def ds():
    return prototype_dataset(240, 60, 60)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VAE(shape=(1, 8, 8), latent=4, hidden=[32])
    with torch.no_grad():  # some structure, so that q(z|x) is far from the prior and from p(z|x)
        for p in m.parameters():
            p.mul_(3.0)
    return m.eval()


@pytest.fixture(scope="module")
def x(ds):
    return ds.test.reshape(len(ds.test), -1)


def test_result_fields_and_internal_consistency(model, x):
    r = evaluate_model(model, x, k=200, seed=1)
    assert isinstance(r, EvaluationResult) and r.n == len(x) and r.k == 200 and r.data_dim == 64
    per = r.per_example
    assert per is not None and set(per) >= {"log_px", "elbo", "reconstruction", "kl", "gap", "ess"}
    # means and standard errors over examples: std / sqrt(N)
    assert r.nll == pytest.approx(-per["log_px"].mean())
    assert r.nll_stderr == pytest.approx(per["log_px"].std(ddof=1) / math.sqrt(r.n))
    assert r.elbo == pytest.approx(r.reconstruction - r.kl)
    assert r.gap == pytest.approx(-r.nll - r.elbo)
    assert r.bits_per_dim == pytest.approx(r.nll / (64 * math.log(2)))
    # the same K draws: logsumexp - log K >= mean, per example (Jensen), so the gap is >= 0
    assert (per["gap"] >= -1e-6).all() and r.gap > 0.05
    assert ((per["ess"] >= 1 - 1e-6) & (per["ess"] <= 200 + 1e-6)).all()
    assert len(r.kl_per_dim) == 4 and sum(r.kl_per_dim) == pytest.approx(r.kl_analytic)
    assert r.seconds > 0 and r.log_weights_per_second > 0


@pytest.mark.parametrize("d", [1, 31, 32, 100, 784])
def test_softplus_sum_in_place_matches_float64(d):
    from vaekit.evaluation import softplus_sum_

    gen = torch.Generator().manual_seed(d)
    logits = torch.randn(64, d, generator=gen) * 6
    logits[0, 0], logits[1, -1], logits[2, 0] = 90.0, -90.0, 0.0  # saturated sigmoids and softplus(0) = log 2
    want = torch.logaddexp(logits.double(), torch.zeros(())).sum(-1)  # F.softplus returns l itself above l = 20
    got32 = softplus_sum_(logits.clone())
    got64 = softplus_sum_(logits.double())
    # float32: within the rounding of a float32 sum of d terms of this size
    assert torch.allclose(got32.double(), want, rtol=0, atol=4e-7 * float(want.abs().max()) * max(1, d) ** 0.5 + 1e-6)
    assert torch.allclose(got64, want, rtol=1e-12, atol=1e-10)


def test_the_fast_kernel_reuses_its_buffers_across_uneven_chunks(model, x):
    """Chunks of a few draws (the last one partial) through the in-place kernel give the generic likelihood."""
    from vaekit.evaluation import log_likelihood_kernel

    z = torch.randn(7, x.shape[0], 4, generator=torch.Generator().manual_seed(1))
    kernel = log_likelihood_kernel(model, x, fast=True)
    with torch.no_grad():
        got = torch.cat([kernel(z[:3]), kernel(z[3:6]), kernel(z[6:])])
        want = model.log_likelihood(x, z)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-4)
        again = torch.cat([kernel(z[:3]), kernel(z[3:6]), kernel(z[6:])])
    assert torch.equal(got, again)  # no state leaks from one chunk into the next
    with torch.enable_grad():  # with gradients: the out-of-place path, the same values
        assert torch.allclose(kernel(z), want, rtol=1e-5, atol=1e-4)


def test_the_fast_bernoulli_kernel_equals_the_generic_likelihood(model, x):
    fast = evaluate_model(model, x, k=50, seed=3, fast=True)
    slow = evaluate_model(model, x, k=50, seed=3, fast=False)
    np.testing.assert_allclose(fast.per_example["log_px"], slow.per_example["log_px"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fast.per_example["reconstruction"], slow.per_example["reconstruction"], rtol=1e-5,
                               atol=1e-4)


def test_one_chunk_reproduces_the_iwae_bound_of_objectives(model, x):
    # with k_chunk = k the draws are exactly those of vaekit.objectives (same generator calls)
    xb = x[:16]
    stats = log_weight_stats(model, xb, 64, 64, torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = iwae_bound(model, xb, 64, torch.Generator().manual_seed(9))
    torch.testing.assert_close(stats["log_px"].float(), ref, rtol=1e-5, atol=1e-4)


def test_deterministic_and_chunking_changes_only_the_noise(model, x):
    a = evaluate_model(model, x, k=400, seed=5)
    b = evaluate_model(model, x, k=400, seed=5)
    np.testing.assert_array_equal(a.per_example["log_px"], b.per_example["log_px"])
    # a tiny memory budget: many more, smaller chunks and batches; different draws, same estimate.
    c = evaluate_model(model, x, k=400, seed=5, memory_budget=300_000)
    assert c.k_chunk * c.batch_size < a.k_chunk * a.batch_size
    # the two estimates of each example are independent draws of the same estimator, so their
    # differences have mean 0: the mean difference is within 4 SE (empirical std of the differences / sqrt(N))
    diff = a.per_example["log_px"] - c.per_example["log_px"]
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff))


def test_memory_plan_respects_the_budget(model):
    per_row = bytes_per_row(model, 4)
    assert per_row >= 4 * 64  # at least the decoder's logits
    for budget in (10_000, 1_000_000, 256 * 2**20):
        b, kc = plan_chunks(model, n=10_000, k=5000, latent=4, memory_budget=budget)
        assert b >= 1 and kc >= 1
        assert b * kc * per_row <= max(budget, per_row)
    b, kc = plan_chunks(model, n=10_000, k=5000, latent=4, batch_size=10**6, memory_budget=1_000_000)
    assert b * per_row <= 1_000_000  # an oversized batch is cut to the budget


def test_active_units_and_kl_per_dim():
    torch.manual_seed(1)
    m = VAE(shape=(1, 8, 8), latent=5, hidden=[16]).eval()
    with torch.no_grad():
        last = m.encoder[-1]
        last.weight[:5].mul_(4.0)  # rows of mu: units 0..4
        last.weight[2:5].zero_()  # units 2, 3, 4: mu does not depend on x -> inactive
    xx = torch.bernoulli(torch.rand(200, 64, generator=torch.Generator().manual_seed(2)))
    r = evaluate_model(m, xx, k=20, seed=0)
    assert r.active_units == 2
    assert all(v < 1e-10 for v in r.latent_variance[2:]) and all(v > 0.01 for v in r.latent_variance[:2])
    with torch.no_grad():
        q = m.posterior(xx)
        mu, logvar = q.loc, q.logvar
    closed = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0).double()
    np.testing.assert_allclose(r.kl_per_dim, closed.numpy(), rtol=1e-5, atol=1e-7)


def test_monte_carlo_kl_agrees_with_the_closed_form(model, x):
    r = evaluate_model(model, x, k=2000, seed=0)
    # MC KL per example has SE ~ std(log q - log p) / sqrt(K); a generous bound on the mean over 60
    # examples is 0.05 nats (std of log q - log p is < 3 nats here: 3 / sqrt(2000 * 60) ~ 0.009).
    assert r.kl == pytest.approx(r.kl_analytic, abs=0.05)


def test_more_samples_give_a_tighter_estimate(model, x):
    # E[IWAE_K] increases with K (Burda et al.); the differences are several SE at these K.
    lo = evaluate_model(model, x, k=2, seed=0)
    hi = evaluate_model(model, x, k=500, seed=0)
    assert hi.nll < lo.nll - 0.05
    assert hi.elbo == pytest.approx(lo.elbo, abs=4 * lo.elbo_stderr)  # the ELBO does not depend on K


def test_to_dict_is_json_safe(model, x):
    r = evaluate_model(model, x[:1], k=3, seed=0)  # one example: standard errors are undefined
    d = r.to_dict(per_example=True)
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["nll_stderr"] is None
    assert "per_example" in d and len(d["per_example"]["log_px"]) == 1
    assert "K = 3" in format_table(r)


def test_accepts_images_flat_data_and_datasets(model, ds):
    a = evaluate_model(model, ds.test, k=10, seed=0)
    b = evaluate_model(model, ds.test.reshape(60, -1).numpy(), k=10, seed=0)
    c = evaluate_model(model, ds, k=10, seed=0, split="test")
    assert a.nll == pytest.approx(b.nll) and a.nll == pytest.approx(c.nll)


def test_float64_model():
    torch.manual_seed(0)
    m = VAE(shape=(1, 4, 4), latent=2, hidden=[8]).double().eval()
    xx = torch.bernoulli(torch.rand(10, 16)).double()
    r = evaluate_model(m, xx, k=30, seed=0)
    assert math.isfinite(r.nll) and r.gap >= 0


def test_evaluate_run_on_a_trained_model(tmp_path, ds):
    cfg = TrainConfig(dataset="synthetic", latent=2, hidden=[32], epochs=4, batch_size=40, device="cpu")
    train(cfg, tmp_path / "run", dataset=ds, progress=False)
    r = evaluate_run(tmp_path / "run", k=100, dataset=ds)
    assert r.split == "test" and r.n == 60
    # a trained model: better than the ~44 nats of uniform pixels, and the bound ordering holds
    assert 0 < r.nll < 64 * math.log(2)
    assert r.elbo < -r.nll and 0 < r.gap < 10
    v = evaluate_run(tmp_path / "run", split="valid", k=5, dataset=ds, limit=7)
    assert v.n == 7 and v.split == "valid"


def test_dynamic_training_split_is_binarized_once():
    grey = torch.full((5, 1, 2, 2), 0.5)
    d = types.SimpleNamespace(train=grey, valid=grey, test=grey, dynamic=True, train_labels=None,
                              valid_labels=None, test_labels=None)
    x1, _ = split_images(d, "train", seed=3)
    x2, _ = split_images(d, "train", seed=3)
    assert set(x1.unique().tolist()) <= {0.0, 1.0} and torch.equal(x1, x2)


@pytest.mark.parametrize("kwargs", [
    {"prior": {"name": "vamp", "components": 10}},
    {"arch": "conv", "hidden": [32], "conv_channels": [4, 8], "likelihood": {"name": "gaussian"}},
    {"likelihood": {"name": "continuous-bernoulli"}},
])
def test_other_priors_architectures_and_likelihoods(kwargs):
    torch.manual_seed(0)
    m = VAE(shape=(1, 8, 8), latent=3, **({"hidden": [16]} | kwargs)).eval()
    xx = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    r = evaluate_model(m, xx, k=40, seed=0)
    assert math.isfinite(r.nll) and (r.per_example["gap"] >= -1e-5).all()
    if "prior" in kwargs:  # no closed-form KL for the VampPrior: no per-unit KL
        assert r.kl_per_dim == [] and r.kl_analytic is None
    else:
        assert len(r.kl_per_dim) == 3


def test_notes_flag_unreliable_estimates_and_densities():
    from vaekit.evaluation.exact import LinearGaussian

    lg = LinearGaussian.random(data_dim=8, latent=2, sigma=0.5, seed=0)
    xx = lg.sample_data(10, seed=1)
    lg.set_wrong_posterior(shift=4.0, scale=0.3)  # far off and too narrow: a few weights dominate
    r = evaluate_model(lg, xx, k=200, seed=0)
    assert any("ESS" in note for note in r.notes) and any("density" in note for note in r.notes)
    lg.set_exact_posterior()
    assert not any("ESS" in note for note in evaluate_model(lg, xx, k=200, seed=0).notes)


def test_vampprior_pseudo_inputs_are_encoded_once_per_evaluation():
    """The evaluator freezes the VampPrior's components: the pseudo-inputs are encoded once, not per
    log p(z) call, and the numbers are the same as without the cache."""
    torch.manual_seed(0)
    model = VAE(shape=(1, 4, 4), latent=3, hidden=[16], prior={"name": "vamp", "components": 7})
    x = torch.bernoulli(torch.full((40, 16), 0.4))
    encode, calls = model.prior._encode, []

    def counting(u):  # x -> q(z|x), a Distribution
        if u.shape[0] == 7:
            calls.append(1)
        return encode(u)

    model.prior.attach(counting)
    cached = evaluate_model(model, x, k=50, batch_size=8, seed=3)
    assert len(calls) == 1
    model.prior.frozen = None  # the evaluator then re-encodes on every log p(z) call: once per batch of 8 here
    plain = evaluate_model(model, x, k=50, batch_size=8, seed=3)
    assert len(calls) - 1 >= 40 // 8
    assert cached.nll == plain.nll and cached.elbo == plain.elbo
    assert model.prior._frozen is None  # the cache does not outlive the evaluation
