"""The mixture of Bernoullis and its exact EM: E and M steps against loops, monotone EM, recovery of a synthetic
mixture, the exact posterior against Bayes' rule, and the run folder through load_model and the CLI."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from cli_run import run_cli
from vaekit.config import from_dict
from vaekit.errors import CheckpointError, DataError, VaekitError
from vaekit.evaluation import load_model
from vaekit.io.runs import read_metrics
from vaekit.models import BernoulliMixture
from vaekit.models.persistence import load_model as load_model_dir
from vaekit.objectives.discrete import is_discrete
from vaekit.training.em import e_step, fit_em, initial_responsibilities, log_prior, m_step, train_em

pytestmark = pytest.mark.usefixtures("single_thread")


def _cfg(**over):
    return from_dict({"family": "bernoulli-mixture", "fit": "em", "dataset": "digits", "binarize": "threshold",
                      "components": 5, "em_iterations": 8, **over})


def _synthetic(n: int, weights: torch.Tensor, probs: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws from the mixture (pi, mu): (x (n, D) in {0, 1}, z (n,))."""
    g = torch.Generator().manual_seed(seed)
    z = torch.multinomial(weights, n, replacement=True, generator=g)
    return torch.bernoulli(probs[z], generator=g), z


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("em") / "run"
    result = train_em(_cfg(), run, log=None, progress=False)
    return run, result


# -- E and M steps -------------------------------------------------------------------------------


def test_e_and_m_steps_match_loops():
    g = torch.Generator().manual_seed(0)
    n, d, k = 7, 5, 3
    x = (torch.rand(n, d, generator=g, dtype=torch.float64) < 0.4).double()
    weights = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)
    probs = 0.05 + 0.9 * torch.rand(k, d, generator=g, dtype=torch.float64)
    e = e_step(x, weights, probs)
    for i in range(n):
        joint = [math.log(weights[j]) + sum(math.log(probs[j, c]) if x[i, c] else math.log(1 - probs[j, c])
                                           for c in range(d)) for j in range(k)]
        top = max(joint)
        log_px = top + math.log(sum(math.exp(v - top) for v in joint))
        assert e.log_px[i].item() == pytest.approx(log_px, abs=1e-12)
        for j in range(k):
            assert e.log_resp[i, j].item() == pytest.approx(joint[j] - log_px, abs=1e-12)
    torch.testing.assert_close(e.reconstruction - e.kl, e.log_px, rtol=0, atol=1e-12)  # ELBO = log p(x)
    resp = e.log_resp.exp()
    a, b = 1e-3, 2e-3
    new_w, new_p = m_step(x, resp, a, b)
    for j in range(k):
        total = sum(resp[i, j].item() for i in range(n))
        assert new_w[j].item() == pytest.approx(total / n, abs=1e-14)
        for c in range(d):
            ones = sum(resp[i, j].item() * x[i, c].item() for i in range(n))
            assert new_p[j, c].item() == pytest.approx((ones + a) / (total + a + b), abs=1e-14)


def test_kmeans_seeding_gives_every_component_an_image():
    x = (torch.rand(300, 16, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    r = initial_responsibilities(x, 12, torch.Generator().manual_seed(2))
    assert r.shape == (300, 12) and bool((r.sum(1) == 1).all()) and bool((r.sum(0) >= 1).all())
    again = initial_responsibilities(x, 12, torch.Generator().manual_seed(2))
    assert torch.equal(r, again)  # seeded


# -- EM ------------------------------------------------------------------------------------------


def test_map_em_objective_never_decreases_on_digits():
    from vaekit.data import load_dataset

    x = load_dataset("digits", binarize="threshold").train  # some pixels are 0 in every image: MAP keeps them finite
    for init in ("kmeans++", "random"):
        fit = fit_em(x, 8, 40, tol=0.0, init=init, seed=3)
        objective = [row["objective"] for row in fit.history]
        assert len(objective) == 40 and all(math.isfinite(v) for v in objective)
        # EM's guarantee, up to float64 rounding of a sum of 1257 terms (|objective| ~ 20: 1e-12 relative)
        assert all(later >= earlier - 1e-12 * abs(earlier) for earlier, later in zip(objective, objective[1:]))
        assert objective[-1] > objective[0] + 0.1  # and it does climb
        flat = x.reshape(len(x), -1).double()
        map_objective = (e_step(flat, fit.weights, fit.probs).log_px.sum() + log_prior(fit.probs)) / len(x)
        assert float(map_objective) == pytest.approx(objective[-1], abs=1e-12)


def test_maximum_likelihood_em_log_likelihood_never_decreases():
    weights = torch.tensor([0.4, 0.35, 0.25], dtype=torch.float64)
    probs = torch.rand(3, 12, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.8 + 0.1
    x, _ = _synthetic(200, weights, probs, seed=5)
    fit = fit_em(x, 3, 60, tol=0.0, a=0.0, b=0.0, init="random", seed=6)  # a = b = 0: plain ML EM
    ll = [row["train_log_px"] for row in fit.history]
    assert all(later >= earlier - 1e-12 * abs(earlier) for earlier, later in zip(ll, ll[1:]))
    # with a = 0 the objective is the log-likelihood itself
    assert all(row["objective"] == pytest.approx(row["train_log_px"], abs=1e-12) for row in fit.history)


def test_em_recovers_a_well_separated_mixture():
    d = 24
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    probs = torch.full((3, d), 0.1, dtype=torch.float64)
    for j in range(3):  # component j lights block j of 8 pixels with probability 0.9
        probs[j, 8 * j : 8 * (j + 1)] = 0.9
    n = 500
    x, _ = _synthetic(n, weights, probs, seed=7)
    fit = fit_em(x, 3, 200, seed=8)
    assert fit.converged
    # match the components by the permutation closest to the truth
    perm = min(itertools.permutations(range(3)), key=lambda p: float((fit.probs[list(p)] - probs).abs().sum()))
    w_hat, p_hat = fit.weights[list(perm)], fit.probs[list(perm)]
    # tolerances: 4 sampling standard errors of a proportion, sqrt(p (1 - p) / n) for pi_k and
    # sqrt(mu (1 - mu) / (n pi_k)) for mu_kd (the components are separated: responsibilities are nearly 0 or 1)
    se_w = torch.sqrt(weights * (1 - weights) / n)
    assert bool(((w_hat - weights).abs() <= 4 * se_w).all()), (w_hat, weights)
    se_p = torch.sqrt(probs * (1 - probs) / (n * weights[:, None]))
    assert bool(((p_hat - probs).abs() <= 4 * se_p).all()), (p_hat - probs).abs().max()


# -- the model -----------------------------------------------------------------------------------


def test_exact_posterior_is_bayes_rule_by_enumeration():
    torch.manual_seed(0)
    model = BernoulliMixture(4, (1, 3, 2)).double()
    with torch.no_grad():
        model.prior.logits.copy_(torch.randn(1, 4, dtype=torch.float64))
        model.pixel_logits.mul_(20)
    x = (torch.rand(6, 1, 3, 2, generator=torch.Generator().manual_seed(1)) < 0.5).double()
    codes = model.prior_distribution().enumerate_support()  # (4, 4): the one-hot codes
    log_joint = model.log_likelihood(x, codes[:, None, :]) + model.log_prior(codes)[:, None]  # (K, N)
    bayes = torch.softmax(log_joint, 0).T
    q = model.posterior(x)
    assert tuple(q.logits.shape) == (6, 1, 4)
    torch.testing.assert_close(q.probs[:, 0], bayes, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.log_marginal(x), torch.logsumexp(log_joint, 0), rtol=0, atol=1e-12)
    # the same responsibilities as EM's E step on the model's probabilities
    weights, probs = model.probabilities()
    torch.testing.assert_close(e_step(x.reshape(6, -1), weights, probs).log_resp.exp(), bayes, rtol=0, atol=1e-10)
    assert model.inference_parameters() == [] and model.latent_size == 4 and is_discrete(model)
    s = model.sample(5, generator=torch.Generator().manual_seed(2))
    assert s.z.shape == (5, 4) and bool((s.z.sum(-1) == 1).all()) and s.draws.shape == (5, 1, 3, 2)


def test_model_directory_round_trip_and_corrupt_description(tmp_path):
    model = BernoulliMixture(3, (1, 2, 2))
    model.save(tmp_path / "m")
    back = load_model_dir(tmp_path / "m")
    assert isinstance(back, BernoulliMixture)
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    spec = json.loads((tmp_path / "m" / "model.json").read_text())
    spec["components"] = 4  # disagrees with latent and the weights
    (tmp_path / "m" / "model.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model_dir(tmp_path / "m")


# -- the run folder ------------------------------------------------------------------------------


def test_digits_run_folder(digits_run):
    run, result = digits_run
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == list(range(1, result.epochs + 1)) and result.epochs >= 2
    assert all(r["exact"] is True and math.isfinite(r["valid_elbo"]) for r in rows)
    objective = [r["train_objective"] for r in rows]
    assert all(b >= a - 1e-12 * abs(a) for a, b in zip(objective, objective[1:]))
    best = max(rows, key=lambda r: r["valid_elbo"])
    assert result.best_epoch == best["epoch"] and result.best_valid_elbo == best["valid_elbo"]
    assert json.loads((run / "config.json").read_text())["fit"] == "em"
    # the kept model is the best iteration's: its exact valid log p(x) is the metrics' valid_elbo
    from vaekit.data import load_dataset

    model = load_model(run)
    assert isinstance(model, BernoulliMixture) and model.components == 5
    valid = load_dataset("digits", binarize="threshold").valid
    with torch.no_grad():
        assert float(model.log_marginal(valid).mean()) == pytest.approx(best["valid_elbo"], abs=1e-4)


def test_evaluate_gives_the_exact_nll(digits_run, capsys):
    run, _ = digits_run
    code, out, err = run_cli(["evaluate", str(run), "--k", "10", "--json"], capsys)
    assert code == 0, err
    got = json.loads(out)
    from vaekit.data import load_dataset

    test = load_dataset("digits", binarize="threshold").test
    with torch.no_grad():
        exact = -load_model(run).log_marginal(test).double()
    # the exact posterior as proposal: every weight p(x, z) / p(z|x) = p(x), so IWAE_10 = ELBO = log p(x)
    # (up to float32 rounding of ~20-nat sums) and every effective sample size is K
    assert got["nll"] == pytest.approx(float(exact.mean()), abs=1e-4)
    assert got["gap"] == pytest.approx(0.0, abs=1e-4)
    assert got["mean_ess"] == pytest.approx(10.0, abs=1e-3)
    assert got["nll_stderr"] == pytest.approx(float(exact.std() / math.sqrt(len(exact))), rel=1e-3)


def test_sample_and_bound_read_the_run(digits_run, tmp_path, capsys):
    run, _ = digits_run
    code, out, err = run_cli(["sample", str(run), "-n", "8", "--out", str(tmp_path / "s.png")], capsys)
    assert code == 0, err
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    code, out, err = run_cli(["bound", str(run), "--k", "10", "--n", "20", "--json"], capsys)
    assert code == 0, err
    means = json.loads(out)["means"]
    assert means["iwae"] == pytest.approx(means["elbo"], abs=1e-4)


def test_resume_continues_em_exactly(tmp_path):
    straight = train_em(_cfg(em_iterations=6), tmp_path / "a", log=None, progress=False)
    train_em(_cfg(em_iterations=3), tmp_path / "b", log=None, progress=False)
    with pytest.raises(CheckpointError, match="already holds"):
        train_em(_cfg(em_iterations=6), tmp_path / "b", log=None, progress=False)
    resumed = train_em(_cfg(em_iterations=6), tmp_path / "b", log=None, progress=False, resume=True)
    assert resumed.epochs == straight.epochs == 6
    strip = ("seconds",)
    rows_a = [{k: v for k, v in r.items() if k not in strip} for r in read_metrics(tmp_path / "a")]
    rows_b = [{k: v for k, v in r.items() if k not in strip} for r in read_metrics(tmp_path / "b")]
    assert rows_a == rows_b
    for key, value in load_model(tmp_path / "a").state_dict().items():
        assert torch.equal(load_model(tmp_path / "b").state_dict()[key], value)
    again = train_em(_cfg(em_iterations=3), tmp_path / "b", log=None, progress=False, overwrite=True)
    assert again.epochs == 3 and len(read_metrics(tmp_path / "b")) == 3


def test_grey_data_and_wrong_family_are_refused_in_one_line(tmp_path):
    with pytest.raises(DataError, match="binarize"):
        train_em(_cfg(binarize=None), tmp_path / "grey", log=None, progress=False)
    with pytest.raises(VaekitError, match="bernoulli-mixture"):
        train_em(from_dict({"dataset": "digits"}), tmp_path / "vae", log=None, progress=False)
