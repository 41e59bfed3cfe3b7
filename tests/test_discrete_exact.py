"""Exact log p(x) of discrete-latent models by a sum over every code: against brute force, chunking,
the bound ordering ELBO <= E[IWAE_K] <= log p(x), the exact gap = KL(q || p(z|x)), 2^16 codes, and the
fields of 'vaekit bound RUN' and 'vaekit evaluate RUN' on a trained discrete run."""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

import vaekit
from cli_run import run_cli
from vaekit.bounds.enumeration import code_chunk, enumerated_bound, enumerated_log_marginal, is_enumerable
from vaekit.evaluation import evaluate_model
from vaekit.evaluation.exact import compare_bounds, compare_enumerated

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(posterior, latent, shape=(1, 4, 4), seed=0, condition=0, likelihood="bernoulli", learned=True):
    """A tiny random model in float64, with a sharpened decoder (a posterior unlike q) and a non-uniform prior."""
    torch.manual_seed(seed)
    prior = {"name": "categorical" if posterior != "bernoulli" else "bernoulli", "learned": learned}
    model = vaekit.VAE(latent=latent, shape=shape, posterior=posterior, prior=prior, hidden=[8],
                       condition=condition, likelihood=likelihood).double().eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
        if learned:
            model.prior.logits.normal_(0.0, 1.0)
    return model


def _x(n, d=16, seed=1):
    return torch.bernoulli(torch.full((n, d), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(seed))


def _brute_force(model, x, y=None):
    """Every code by an explicit loop: (log p(x) (N,), ELBO (N,), log p(x, z) (S, N), log q(z|x) (S, N))."""
    prior = model.prior_distribution()
    if isinstance(prior, vaekit.distributions.FactorizedCategorical):
        codes = []
        for digits in itertools.product(range(prior.classes), repeat=prior.groups):
            z = torch.zeros(prior.groups, prior.classes, dtype=torch.float64)
            for g, k in enumerate(digits):
                z[g, k] = 1.0
            codes.append(z.flatten())
    else:
        codes = [torch.tensor(bits, dtype=torch.float64) for bits in itertools.product((0.0, 1.0), repeat=prior.units)]
    q = model.posterior(x, y)
    joint, log_q = [], []
    with torch.no_grad():
        for z in codes:
            zz = z.expand(x.shape[0], -1)
            joint.append(model.log_likelihood(x, zz, y) + model.log_prior(zz))
            log_q.append(q.log_prob(zz))
    joint, log_q = torch.stack(joint), torch.stack(log_q)
    log_px = torch.logsumexp(joint, 0)
    elbo = (log_q.exp() * (joint - log_q)).sum(0)
    return log_px, elbo, joint, log_q


CASES = [({"name": "categorical", "classes": 3}, 2), ("bernoulli", 4)]


@pytest.mark.parametrize(("posterior", "latent"), CASES, ids=["categorical-2x3", "bernoulli-4"])
def test_enumeration_matches_brute_force(posterior, latent):
    model, x = _model(posterior, latent), _x(6)
    log_px, elbo, _, _ = _brute_force(model, x)
    for fast in (True, False):  # the matrix-product Bernoulli kernel and likelihood.log_prob
        eb = enumerated_bound(model, x, fast=fast)
        assert eb.codes == (9 if latent == 2 else 16)
        # float64 throughout: agreement to rounding
        torch.testing.assert_close(eb.log_px, log_px.detach(), rtol=0, atol=1e-10)
        torch.testing.assert_close(eb.elbo, elbo.detach(), rtol=0, atol=1e-10)
    # the KL term of the exact ELBO is the closed-form KL(q || p(z))
    q = model.posterior(x)
    torch.testing.assert_close(eb.kl, kl_divergence(q, model.prior_distribution()).detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(enumerated_log_marginal(model, x), log_px.detach(), rtol=0, atol=1e-10)


def test_enumeration_with_a_gaussian_likelihood_and_labels():
    """A generic likelihood (broadcast log_prob) and a conditional model (decoded once per label)."""
    model = _model({"name": "categorical", "classes": 3}, 2, condition=3, likelihood="gaussian")
    x = torch.rand(7, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 2, 1, 2, 0, 0, 1])
    log_px, elbo, _, _ = _brute_force(model, x, y)
    eb = enumerated_bound(model, x, y, chunk=4, batch_size=2)
    torch.testing.assert_close(eb.log_px, log_px.detach(), rtol=0, atol=1e-10)
    torch.testing.assert_close(eb.elbo, elbo.detach(), rtol=0, atol=1e-10)


@pytest.mark.parametrize(("posterior", "latent"), CASES, ids=["categorical-2x3", "bernoulli-4"])
def test_chunking_does_not_change_the_result(posterior, latent):
    model, x = _model(posterior, latent, seed=3), _x(5, seed=4)
    ref = enumerated_bound(model, x, chunk=10**6)
    for chunk, batch in ((1, None), (7, 2), (None, 1), (3, 5)):
        eb = enumerated_bound(model, x, chunk=chunk, batch_size=batch)
        torch.testing.assert_close(eb.log_px, ref.log_px, rtol=0, atol=1e-12)
        torch.testing.assert_close(eb.elbo, ref.elbo, rtol=0, atol=1e-12)
    # a memory budget that allows one code per decoder call gives the same too
    tiny = enumerated_bound(model, x, memory_budget=1)
    torch.testing.assert_close(tiny.log_px, ref.log_px, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("posterior", "latent"), CASES, ids=["categorical-2x3", "bernoulli-4"])
def test_code_chunks_follow_enumerate_support(posterior, latent):
    prior = _model(posterior, latent).prior_distribution()
    full = prior.enumerate_support(expand=False).reshape(prior.support_size, -1)
    torch.testing.assert_close(torch.cat([code_chunk(prior, s, min(s + 4, len(full))) for s in range(0, len(full), 4)]),
                               full)


@pytest.mark.parametrize(("posterior", "latent"), CASES, ids=["categorical-2x3", "bernoulli-4"])
def test_the_exact_gap_is_the_kl_to_the_enumerated_posterior(posterior, latent):
    model, x = _model(posterior, latent, seed=5), _x(6, seed=6)
    eb = enumerated_bound(model, x)
    _, _, joint, log_q = _brute_force(model, x)
    log_post = joint - torch.logsumexp(joint, 0)  # log p(z|x), (S, N)
    kl = (log_q.exp() * (log_q - log_post)).sum(0).detach()
    torch.testing.assert_close(eb.gap, kl, rtol=0, atol=1e-10)
    assert (eb.gap > 1e-3).all()  # the sharpened decoder makes q(z|x) far from p(z|x): not a vacuous check


def test_iwae_lies_between_the_elbo_and_the_exact_value_and_converges():
    """E[IWAE_K] increases with K from the ELBO (K = 1) to log p(x); over seeds and examples, with SE."""
    model, x = _model({"name": "categorical", "classes": 3}, 2, seed=7), _x(8, seed=8)
    eb = enumerated_bound(model, x)
    exact, elbo = eb.log_px.numpy(), eb.elbo.numpy()
    seeds = range(24)
    means, ses = {}, {}
    for k in (1, 10, 100, 1000):
        # per seed, the mean over the 8 examples of log p(x) - IWAE_K; SE over the 24 independent seeds
        short = np.array([(exact - evaluate_model(model, x, k=k, seed=s, exact_limit=0).per_example["log_px"]).mean()
                          for s in seeds])
        means[k], ses[k] = short.mean(), short.std(ddof=1) / math.sqrt(len(short))
        assert means[k] > -3 * ses[k] - 1e-9, (k, means[k], ses[k])  # IWAE_K <= log p(x) in expectation
        gap = (exact - elbo).mean()
        assert means[k] < gap + 3 * ses[k] + 1e-9, (k, means[k], gap)  # IWAE_K >= ELBO in expectation
    # IWAE_1 is an unbiased estimate of the ELBO: its shortfall is the gap, within 4 SE
    assert abs(means[1] - (exact - elbo).mean()) < 4 * ses[1]
    # the error shrinks as K grows (each step by more than 3 SE of the two) and is within 3 SE of 0 at K = 1000
    for a, b in ((1, 10), (10, 100)):
        assert means[a] - means[b] > 3 * math.hypot(ses[a], ses[b]), (a, b, means, ses)
    assert abs(means[1000]) < 3 * ses[1000] + 1e-6 and abs(means[1000]) < abs(means[1]) / 20


def test_compare_enumerated_reports_each_k():
    model, x = _model("bernoulli", 4, seed=9), _x(5, seed=10)
    c = compare_enumerated(model, x, ks=(100, 1, 10, 10), seed=0)
    assert c["ks"] == [1, 10, 100] and c["codes"] == 16 and c["n"] == 5
    torch.testing.assert_close(torch.from_numpy(c["exact"]), enumerated_log_marginal(model, x))
    assert set(c["iwae"]) == {1, 10, 100} and all(v.shape == (5,) for v in c["iwae"].values())
    assert (c["gap"] >= 0).all() and c["means"]["elbo"] <= c["means"]["exact"]


def test_compare_bounds_uses_the_exact_sum_not_the_grid():
    """Two binary units are a 2-D code, but a discrete one: no grid integration, the exact sum instead."""
    model, x = _model("bernoulli", 2, seed=16), _x(4, seed=17)
    c = compare_bounds(model, x, k=30)
    assert "grid" not in c and c["latent"] == 2
    np.testing.assert_allclose(c["exact"], enumerated_log_marginal(model, x).numpy(), rtol=0, atol=1e-10)


def test_sixteen_binary_units_enumerate_quickly():
    """2^16 = 65,536 codes: the chunked fast kernel against one big broadcast log_prob over every code."""
    torch.manual_seed(11)
    model = vaekit.VAE(latent=16, shape=(1, 4, 4), posterior="bernoulli", prior={"name": "bernoulli"},
                       hidden=[16]).eval()
    x = _x(4, seed=12).float()
    assert is_enumerable(model) and not is_enumerable(model, limit=2**16 - 1)
    t0 = time.perf_counter()
    eb = enumerated_bound(model, x)
    seconds = time.perf_counter() - t0
    assert eb.codes == 65536 and seconds < 5.0, seconds
    with torch.no_grad():
        prior = model.prior_distribution()
        codes = prior.enumerate_support()  # (65536, 16)
        ll = model.log_likelihood(x, codes[:, None, :].expand(-1, 4, -1))  # (65536, 4)
        ref = torch.logsumexp(ll.double() + prior.log_prob(codes).double()[:, None], 0)
    # float32 logits: the matrix-product and the per-pixel sums differ by rounding (~1e-6 relative of ~11 nats)
    torch.testing.assert_close(eb.log_px, ref, rtol=0, atol=1e-4)
    assert (eb.gap > -1e-4).all()


def test_gaussian_models_are_not_enumerable():
    model = vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=[8])
    assert not is_enumerable(model)
    with pytest.raises(vaekit.errors.VaekitError, match="cannot be enumerated"):
        enumerated_bound(model, torch.zeros(2, 16))
    r = vaekit.evaluate(model, torch.zeros(3, 16), k=5)
    assert r.nll_exact is None and r.exact_codes == 0 and r.unit == "unit"


def test_evaluate_reports_the_exact_nll_and_per_group_units():
    model, x = _model({"name": "categorical", "classes": 3}, 2, seed=13), _x(12, seed=14)
    r = vaekit.evaluate(model, x, k=50, per_example=True)
    exact = enumerated_bound(model, x)
    assert r.exact_codes == 9 and r.unit == "group"
    np.testing.assert_allclose(r.per_example["exact_log_px"], exact.log_px.numpy(), rtol=0, atol=1e-10)
    assert r.nll_exact == pytest.approx(-float(exact.log_px.mean()), abs=1e-10)
    assert r.nll_exact_stderr == pytest.approx(float(exact.log_px.std() / math.sqrt(12)), rel=1e-9)
    assert r.gap_exact == pytest.approx(float(exact.gap.mean()), abs=1e-10)
    # one KL and one variance per group (G = 2), not per one-hot coordinate (G * K = 6)
    assert len(r.kl_per_dim) == 2 and len(r.latent_variance) == 2 and 0 <= r.active_units <= 2
    kl_groups = torch.distributions.kl_divergence(model.posterior(x).factors(), model.prior_distribution().factors())
    np.testing.assert_allclose(r.kl_per_dim, kl_groups.mean(0).detach().numpy(), rtol=0, atol=1e-10)
    assert sum(r.kl_per_dim) == pytest.approx(float(exact.kl.mean()), abs=1e-10)
    table = vaekit.evaluation.format_table(r)
    assert "NLL (exact, sum over 9 codes" in table and "NLL (IWAE K=50)" in table and "active groups" in table
    d = r.to_dict()
    assert d["nll_exact"] == r.nll_exact and d["exact_codes"] == 9
    off = vaekit.evaluate(model, x, k=5, exact_limit=8)  # 9 codes > 8: no sum
    assert off.nll_exact is None
    b = vaekit.evaluate(_model("bernoulli", 4, seed=15), x, k=5)
    assert len(b.kl_per_dim) == 4 and len(b.latent_variance) == 4 and b.unit == "unit" and b.exact_codes == 16


# -- the command line on a trained run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def discrete_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("discrete") / "run"
    argv = ["train", "--out", str(run), "--dataset", "digits", "--posterior", "categorical", "--latent", "2",
            "--classes", "3", "--estimator", "enumerate", "--hidden", "16", "--epochs", "1", "--device", "cpu",
            "--likelihood", "discretized-logistic", "--pixel-levels", "17"]  # a probability: evaluate adds nothing
    from vaekit.cli import main

    assert main(argv) == 0
    return run


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_cli_bound_and_evaluate_on_a_discrete_run(discrete_run, capsys):
    code, out, err = run_cli(["bound", str(discrete_run), "--n", "4", "--k", "100", "--json"], capsys)
    assert code == 0, err
    b = _last_json(out)
    assert b["n"] == 4 and b["codes"] == 9 and b["exact"] is True
    assert set(b["iwae"]) == {"1", "10", "100", "1000"} and len(b["examples"]) == 4
    assert b["elbo"] <= b["exact_log_px"] and b["gap"] == pytest.approx(b["exact_log_px"] - b["elbo"], abs=1e-9)
    assert b["checks"]["elbo_le_exact"] is True
    rows = b["examples"]
    assert b["exact_log_px"] == pytest.approx(np.mean([r["exact_log_px"] for r in rows]), abs=1e-9)
    code, out, err = run_cli(["evaluate", str(discrete_run), "--k", "100", "--limit", "4", "--json"], capsys)
    assert code == 0, err
    e = _last_json(out)
    # the same four test examples and the same model: the same exact log p(x)
    assert e["exact_codes"] == 9 and e["nll_exact"] == pytest.approx(-b["exact_log_px"], abs=1e-6)
    assert e["unit"] == "group" and len(e["kl_per_dim"]) == 2 and "nll" in e
    code, out, _ = run_cli(["bound", str(discrete_run), "--n", "3", "--k", "20"], capsys)
    assert code == 0 and "exact log p(x)" in out and "IWAE_1000" in out and "9 codes" in out
    code, out, _ = run_cli(["evaluate", str(discrete_run), "--k", "20", "--limit", "3", "--exact-limit", "0",
                            "--json"], capsys)
    assert code == 0 and _last_json(out)["nll_exact"] is None
    code, _, err = run_cli(["evaluate", str(discrete_run), "--exact-limit", "-1"], capsys)
    assert code == 2 and "exact-limit" in err


def test_evaluate_spends_no_minutes_on_importance_sampling_where_the_sum_is_exact(discrete_run, capsys):
    """Without --k, a run whose codes are summed exactly gets K = 100 draws (a check), said in a note; --k, or an
    exact sum switched off, gets what was asked (K = 5000 by default)."""
    code, out, err = run_cli(["evaluate", str(discrete_run), "--limit", "3", "--json"], capsys)
    assert code == 0, err
    e = _last_json(out)
    assert e["k"] == 100 and e["nll_exact"] is not None
    assert any("the exact log p(x) is reported" in note for note in e["notes"])
    code, out, err = run_cli(["evaluate", str(discrete_run), "--limit", "2", "--k", "300", "--json"], capsys)
    assert code == 0 and _last_json(out)["k"] == 300
    code, out, err = run_cli(["evaluate", str(discrete_run), "--limit", "1", "--exact-limit", "0", "--json"], capsys)
    e = _last_json(out)
    assert code == 0 and e["k"] == 5000 and e["nll_exact"] is None
