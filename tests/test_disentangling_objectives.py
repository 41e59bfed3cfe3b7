"""The objectives that target disentanglement (beta-TCVAE, DIP-VAE-I and -II, annealed capacity): their maths on
cases with a known answer, and training through the command line, a config file and vaekit.fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import vaekit
from cli_run import run_cli
from vaekit.objectives.beta_tcvae import _log_importance, tc_terms
from vaekit.objectives.capacity import AnnealedCapacity
from vaekit.objectives.dip_vae import dip_penalty
from vaekit.train import read_metrics


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("stratified", [False, True])
def test_the_three_kl_parts_add_up_to_the_monte_carlo_kl(stratified):
    torch.manual_seed(0)
    model = vaekit.VAE(shape=(1, 4, 4), latent=3, hidden=[8])
    t = tc_terms(model, _images(40), data_size=400, stratified=stratified)
    torch.testing.assert_close(t["mi"] + t["tc"] + t["dwkl"], t["kl"])  # log q(z|x) - log p(z), term by term


def test_stratified_weights_sum_to_one_per_example():
    w = _log_importance(8, 100, True, torch.device("cpu")).exp()
    torch.testing.assert_close(w.sum(1), torch.ones(8, dtype=w.dtype))
    assert torch.allclose(torch.diagonal(w), torch.full((8,), 1 / 100))
    mws = _log_importance(8, 100, False, torch.device("cpu")).exp()
    assert torch.allclose(mws, torch.full((8, 8), 1 / 800))  # Chen et al.'s log(N M)


def test_the_total_correlation_of_independent_units_is_small_and_of_copies_large():
    """Posterior means z ~ N(0, I) with sd 0.3 around them: with independent units q(z) is nearly a product (TC near
    0: 0.16 +- 0.03 measured, the estimator's bias at M = N = 400); with the units copies of one another q(z) is
    nearly Gaussian with correlations 1 / 1.09, TC = -0.5 log det Corr = 1.97 nats (measured 2.00 +- 0.08)."""

    class Fixed(torch.nn.Module):
        def __init__(self, loc: torch.Tensor):
            super().__init__()
            self.loc = loc

        def forward(self, x):
            loc = self.loc[: x.shape[0]]
            return torch.cat([loc, torch.full_like(loc, 2 * math.log(0.3))], -1)  # [mu, log sigma^2]

    g = torch.Generator().manual_seed(1)
    independent = torch.randn(400, 3, generator=g)
    copies = independent[:, :1].repeat(1, 3)
    tcs = []
    for loc in (independent, copies):
        decoder = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Unflatten(1, (1, 4, 4)))
        model = vaekit.VAE(Fixed(loc), decoder, latent=3, shape=(1, 4, 4))
        torch.manual_seed(0)
        tcs.append(float(tc_terms(model, _images(400), data_size=400, stratified=True)["tc"].mean()))
    assert tcs[0] < 0.5 and abs(tcs[1] - 1.97) < 0.4  # 5 standard errors of the copies' estimate


def test_the_dip_penalty_is_zero_at_identity_covariance_and_counts_the_variance_for_dip_vae_ii():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(64, 4, generator=g, dtype=torch.float64))
    mean = (q - q.mean(0)) * math.sqrt(64)  # centred, with Cov = I up to the centring
    mean = mean / mean.std(0, unbiased=False)
    q2, _ = torch.linalg.qr(mean)
    mean = q2 * math.sqrt(64)
    assert float(dip_penalty(mean, None, 10.0, 100.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(dip_penalty(2 * mean, None, 10.0, 100.0)) == pytest.approx(100.0 * 4 * 9, rel=1e-6)  # C = 4 I
    variance = torch.full_like(mean, 0.5)
    assert float(dip_penalty(mean, variance, 10.0, 10.0)) == pytest.approx(10.0 * 4 * 0.25, rel=1e-6)


def test_the_capacity_rises_linearly_then_holds():
    objective = AnnealedCapacity(max=20.0, gamma=100.0, epochs=4)
    assert [objective.capacity_at(e) for e in range(6)] == [0.0, 5.0, 10.0, 15.0, 20.0, 20.0]
    # C moves at every iteration: step 30 of 10 per epoch is 3 epochs in, step 45 past the schedule's end
    objective.set_step(30, 10)
    assert objective.capacity == 15.0
    objective.set_step(3, 10)
    assert objective.capacity == pytest.approx(1.5)
    objective.set_step(45, 10)
    assert objective.capacity == 20.0


@pytest.mark.parametrize("name, flags", [
    ("beta-tcvae", ["--tc-weight", "4", "--tc-sampling", "mss"]),
    ("dip-vae-i", ["--dip-offdiagonal", "5"]),
    ("dip-vae-ii", []),
    ("annealed-capacity", ["--capacity-max", "5", "--capacity-epochs", "2", "--capacity-gamma", "50"]),
])
def test_each_trains_through_the_command_line(tmp_path, capsys, name, flags):
    run = tmp_path / name
    code, out, err = run_cli(["train", "--dataset", "digits", "--binarize", "dynamic", "--latent", "3", "--hidden",
                              "16", "--epochs", "2", "--objective", name, *flags, "--out", str(run), "--json",
                              "--threads", "1"], capsys)
    assert code == 0, err
    rows = read_metrics(run)
    assert len(rows) == 2 and all(math.isfinite(r["valid_elbo"]) for r in rows)
    written = json.loads((run / "config.json").read_text())["objective"]
    assert (written if isinstance(written, str) else written["name"]) == name
    if name == "beta-tcvae":
        assert written["weight"] == 4.0 and written["sampling"] == "mss"
        assert all({"valid_tc", "valid_mi", "valid_dwkl", "valid_tc_objective"} <= set(r) for r in rows)
        assert rows[0]["selected_by"] == "valid beta-TCVAE objective"
    if name == "annealed-capacity":
        # the C of each epoch's last step: within the epoch's share of the 0 -> 5 ramp over 2 epochs
        assert 0.0 < rows[0]["capacity"] < 2.5 < rows[1]["capacity"] < 5.0


def test_beta_tcvae_through_fit_and_a_config_file_resumes_bit_exact(tmp_path, capsys):
    x = _images(120)
    model = vaekit.VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    result = vaekit.fit(model, x[:100], x[100:], out=tmp_path / "fit", epochs=2, objective="beta-tcvae",
                        tc_weight=3.0, progress=False)
    assert result.selected_by == "valid beta-TCVAE objective"
    config = tmp_path / "tc.toml"
    config.write_text('dataset = "digits"\nbinarize = "dynamic"\nepochs = 3\nthreads = 1\n[model]\nlatent = 3\n'
                      'hidden = [16]\n[objective]\nname = "beta-tcvae"\nweight = 4\n')
    code, _, err = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "full"), "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--config", str(config), "--epochs", "1", "--out", str(tmp_path / "cut"),
                            "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "cut"), "--resume", "--quiet"],
                           capsys)
    assert code == 0, err
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "full")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "cut")]
    full, cut = vaekit.load(tmp_path / "full"), vaekit.load(tmp_path / "cut")
    assert all(torch.equal(a, b) for a, b in zip(full.parameters(), cut.parameters()))


def test_factorvae_trains_resumes_bit_exact_loads_and_evaluates(tmp_path, capsys):
    from vaekit.io.checkpoint import read_safetensors
    from vaekit.objectives.factorvae import FactorVAE

    base = ["train", "--dataset", "digits", "--binarize", "dynamic", "--family", "factorvae", "--factor-gamma", "6",
            "--discriminator-hidden", "16", "--discriminator-layers", "2", "--latent", "3", "--hidden", "16",
            "--threads", "1", "--quiet"]
    assert run_cli([*base, "--epochs", "3", "--out", str(tmp_path / "full")], capsys)[0] == 0
    assert run_cli([*base, "--epochs", "1", "--out", str(tmp_path / "cut")], capsys)[0] == 0
    code, _, err = run_cli([*base, "--epochs", "3", "--out", str(tmp_path / "cut"), "--resume"], capsys)
    assert code == 0, err
    full, _ = read_safetensors(tmp_path / "full" / "checkpoint.safetensors")
    cut, _ = read_safetensors(tmp_path / "cut" / "checkpoint.safetensors")
    assert any(k.startswith("aux.discriminator.") for k in full)  # D's Adam moments are in the checkpoint
    assert sorted(full) == sorted(cut) and all(torch.equal(full[k], cut[k]) for k in full)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "full")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "cut")]
    model = vaekit.load(tmp_path / "full")  # model.json kind factorvae, discriminator included
    assert isinstance(model, FactorVAE) and model.factor.gamma == 6.0 and model.default_objective == "factorvae"
    code, out, err = run_cli(["evaluate", str(tmp_path / "full"), "--k", "10", "--json"], capsys)
    assert code == 0, err
    assert math.isfinite(json.loads(out.strip().splitlines()[-1])["nll"])


def test_a_user_built_factorvae_trains_its_discriminator_through_fit(tmp_path):
    from vaekit.objectives.factorvae import FactorVAE

    torch.manual_seed(0)
    model = FactorVAE(shape=(1, 4, 4), latent=2, hidden=[8], discriminator_hidden=8, discriminator_layers=1)
    before = [p.detach().clone() for p in model.discriminator.parameters()]
    result = vaekit.fit(model, _images(100), out=tmp_path / "fit", epochs=2, progress=False)
    assert result.epochs == 2 and all(math.isfinite(r["train_elbo"]) for r in read_metrics(tmp_path / "fit"))
    assert not all(torch.equal(a, b) for a, b in zip(before, model.discriminator.parameters()))


def test_evaluate_scores_disentanglement_against_known_factors_and_refuses_data_without(tmp_path, capsys):
    """A model whose code is the two factors themselves (an identity encoder on 'images' that are the factors) scores
    near the top on every metric; a run on digits (no factors) gets one line."""
    import types

    from vaekit.evaluation.disentanglement import SCORES, disentanglement_scores

    class Grid:
        factor_sizes = [4, 5]

        def sample(self, n, fixed=None, rng=None):
            f = np.stack([rng.integers(0, s, n) for s in self.factor_sizes], 1)
            if fixed is not None:
                f[:, fixed[0]] = fixed[1]
            return f, f.astype(np.float32).reshape(n, 1, 1, 2)

    rng = np.random.default_rng(0)
    classes = np.stack([rng.integers(0, 4, 600), rng.integers(0, 5, 600)], 1)
    images = torch.as_tensor(classes, dtype=torch.float32).reshape(-1, 1, 1, 2)
    factors = types.SimpleNamespace(split=lambda name: classes[:400] if name == "train" else classes[400:])
    ds = types.SimpleNamespace(name="grid", train=images[:400], test=images[400:], factors=factors, sampler=Grid)
    identity = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 4))
    with torch.no_grad():
        identity[1].weight.copy_(torch.cat([torch.eye(2), torch.zeros(2, 2)]))
        identity[1].bias.zero_()
        identity[1].bias[2:] = -8.0  # log-variances: the code is the mean
    model = vaekit.VAE(identity, torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Unflatten(1, (1, 1, 2))),
                       latent=2, shape=(1, 1, 2), likelihood="gaussian")
    scores = disentanglement_scores(model, ds, train_points=400, test_points=200, resamples=2)
    assert set(scores) == {n for key in SCORES for n in (key, f"{key}_stderr")}
    assert scores["mig"] > 0.9 and scores["dci_disentanglement"] > 0.9 and scores["factor_vae_score"] > 0.95
    assert scores["beta_vae_score"] > 0.95 and scores["modularity"] > 0.9 and scores["explicitness"] > 0.95
    run = tmp_path / "digits"
    assert run_cli(["train", "--dataset", "digits", "--binarize", "dynamic", "--latent", "2", "--hidden", "8",
                    "--epochs", "1", "--out", str(run), "--quiet", "--threads", "1"], capsys)[0] == 0
    code, _, err = run_cli(["evaluate", str(run), "--disentanglement", "--k", "5"], capsys)
    assert code == 2 and "no known factors" in err and len(err.strip().splitlines()) == 1
