"""Semi-supervised M2 (vaekit.models.m2, vaekit.objectives.m2, vaekit.evaluation.m2): the sum over the classes
against a loop over y, the evaluation's bound against log p(x) by quadrature (a 1-D z), the label carving,
training, bit-exact resume and evaluation through the CLI, one-line refusals, and vaekit.fit."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vaekit
from cli_run import run_cli
from vaekit.evaluation.m2 import class_summed_bound
from vaekit.io.checkpoint import read_safetensors
from vaekit.models import M2
from vaekit.objectives import build_objective
from vaekit.objectives.m2 import M2Objective

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--dataset", "digits", "--binarize", "dynamic", "--family", "m2", "--labels", "40", "--latent", "3",
        "--hidden", "16", "--threads", "1", "--quiet"]


def _model(latent: int = 2, classes: int = 3, labels: int = 6) -> M2:
    torch.manual_seed(0)
    return M2((1, 3, 3), classes, latent, labels=labels, hidden=[8], activation="tanh")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 3, 3), 0.4), generator=torch.Generator().manual_seed(seed))


def _loop_over_y(model: M2, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(-L(x, y) for every class, (C, N), log q(y|x) (N, C)), one class at a time, z = mu_y + sigma_y eps[y]."""
    bounds = []
    for c in range(model.classes):
        onehot = torch.nn.functional.one_hot(torch.full((x.shape[0],), c), model.classes).float()
        q = model.z_posterior(x, onehot)
        z = q.loc + q.scale * eps[c]
        rec = model.likelihood.log_prob(x, model.decoder(z, onehot))
        kl = torch.distributions.kl_divergence(torch.distributions.Normal(q.loc, q.scale),
                                               torch.distributions.Normal(0.0, 1.0)).sum(-1)
        bounds.append(rec - kl - math.log(model.classes))
    return torch.stack(bounds), torch.log_softmax(model.classifier(x), -1)


def test_the_class_sum_is_a_loop_over_y():
    model, x = _model(), _images(5)
    n, c, d = 5, model.classes, model.latent
    eps = torch.randn(c * n, d, generator=torch.Generator().manual_seed(3)).reshape(c, n, d)
    labelled, log_pi = _loop_over_y(model, x, eps)
    want_u = (log_pi.exp() * (labelled.t() - log_pi)).sum(-1)  # -U(x) = sum_y q(y|x) (-L(x, y)) + H(q(y|x))
    objective = build_objective("m2", data_size=200).for_model(model)
    terms = objective.validation_terms(model, x, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(terms.elbo, want_u, atol=1e-5)
    assert torch.allclose(terms.reconstruction - terms.kl, terms.elbo, atol=1e-5)
    # the loss: -L(x, y) - (alpha / N_l) log q(y|x) where labelled (0.1 x 200 / 6), U(x) where not
    y = torch.tensor([2, -1, 0, -1, 1])
    torch.manual_seed(3)  # the draws of the loss: z for every class of every example, class-major
    loss = objective.loss(model, x, y).loss
    w = 0.1 * 200 / 6
    per = [-(labelled[y[i], i] + w * log_pi[i, y[i]]) if y[i] >= 0 else -want_u[i] for i in range(n)]
    assert loss.item() == pytest.approx(torch.stack(per).mean().item(), rel=1e-5)
    # the protocol's q(y, z|x) is the same classifier and encoder: its log-density at [one-hot y, z] by hand
    q = model.posterior(x)
    z = torch.cat([torch.nn.functional.one_hot(torch.tensor([1] * n), c).float(), eps[1]], -1)
    onehot = z[:, :c]
    qz = model.z_posterior(x, onehot)
    want = log_pi[:, 1] + torch.distributions.Normal(qz.loc, qz.scale).log_prob(eps[1]).sum(-1)
    assert torch.allclose(q.log_prob(z), want, atol=1e-5)


def test_the_evaluation_bound_sums_y_and_approaches_log_px_by_quadrature():
    model, x = _model(latent=1).eval(), _images(4, seed=1)
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    truth = []
    with torch.no_grad():
        for c in range(model.classes):
            onehot = torch.nn.functional.one_hot(torch.full((grid.shape[0],), c), model.classes).float()
            logits = model.decoder(grid[:, None].float(), onehot)  # (G, 1, 3, 3)
            ll = model.likelihood.log_prob(x[:, None], logits[None]).double()  # (N, G)
            log_prior = -0.5 * (grid.pow(2) + math.log(2 * math.pi))
            truth.append(torch.logsumexp(ll + log_prior, -1) + math.log(step) - math.log(model.classes))
    log_px = torch.logsumexp(torch.stack(truth), 0)  # exact up to the quadrature's error, far below 1e-6
    runs = torch.stack([class_summed_bound(model, x, 2000, 500, torch.Generator().manual_seed(s))["log_px"]
                        for s in range(6)])
    mean, se = runs.mean(0), runs.std(0) / math.sqrt(runs.shape[0])
    assert (mean - log_px).abs().max() < 4 * se.max() + 1e-3, (mean - log_px, se)
    out = class_summed_bound(model, x, 50, 7, torch.Generator().manual_seed(0))
    assert (out["log_px"] >= out["elbo"] - 1e-9).all()  # Jensen, draw set by draw set: the bound >= -U(x)
    assert torch.allclose(out["reconstruction"] - out["kl"], out["elbo"])


def test_the_labels_kept_are_class_balanced_and_seeded():
    model = _model(classes=4, labels=12)
    y = torch.arange(4).repeat_interleave(torch.tensor([30, 20, 25, 5]))
    a = model.carve_labels(y, seed=0).clone()
    assert torch.bincount(y[a], minlength=4).tolist() == [3, 3, 3, 3]
    assert torch.equal(model.carve_labels(y, seed=0), a) and not torch.equal(model.carve_labels(y, seed=1), a)
    model.carve_labels(y, seed=0)
    masked = model.masked_labels(y)
    assert torch.equal((masked >= 0).nonzero().squeeze(1), a) and torch.equal(masked[a], y[a])
    assert int((masked == -1).sum()) == len(y) - 12
    few = _model(classes=4, labels=18)  # a class with too few: it gives all it has, the others share the rest
    counts = torch.bincount(y[few.carve_labels(y, seed=0)], minlength=4).tolist()
    assert sum(counts) == 18 and counts[3] == 5 and max(counts[:3]) - min(counts[:3]) <= 1


def test_train_resume_bit_exact_evaluate_through_the_cli(tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_cli(["train", *TINY, "--epochs", "3", "--out", str(full)], capsys)[0] == 0
    assert run_cli(["train", *TINY, "--epochs", "1", "--out", str(cut)], capsys)[0] == 0
    code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--out", str(cut), "--resume"], capsys)
    assert code == 0, err
    a, _ = read_safetensors(full / "checkpoint.safetensors")
    b, _ = read_safetensors(cut / "checkpoint.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    model = vaekit.load(full)
    kept = model.labelled_indices
    assert isinstance(model, M2) and kept.shape == (40,) and kept.unique().numel() == 40
    ds = vaekit.load_dataset("digits", binarize="dynamic", seed=0)
    assert torch.bincount(ds.labels("train")[kept], minlength=10).tolist() == [4] * 10
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["valid_error"] <= 1 and r["objective"] == "m2" for r in rows)
    assert rows[-1]["m2_alpha"] == pytest.approx(0.1 * ds.train.shape[0])
    code, out, err = run_cli(["evaluate", str(full), "--k", "20", "--json"], capsys)
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    guesses = model.classify(ds.test.reshape(-1, 64))
    assert r["test_error"] == pytest.approx(float((guesses != ds.labels("test")).double().mean()))
    assert r["test_error_stderr"] == pytest.approx(math.sqrt(r["test_error"] * (1 - r["test_error"]) / r["n"]))
    assert r["m2_labels"] == 40 and r["gap"] >= 0 and r["nll"] > 0 and r["kl"] >= 0
    code, out, err = run_cli(["evaluate", str(full), "--k", "5", "--split", "valid"], capsys)
    assert code == 0 and "valid error of argmax q(y|x)" in out and "log p(x) bound, y summed" in out, err
    png = tmp_path / "s.png"
    code, _, err = run_cli(["sample", str(full), "-n", "4", "--out", str(png)], capsys)
    assert code == 0 and png.read_bytes().startswith(b"\x89PNG"), err


@pytest.mark.parametrize("argv", [["--labels", "0"], ["--labels", "5000"], ["--objective", "iwae"], ["--k", "2"],
                                  ["--beta", "2"], ["--m2-alpha", "-1"], ["--posterior", "iaf"]])
def test_bad_settings_are_one_line(tmp_path, capsys, argv):
    code, _, err = run_cli(["train", *TINY, "--epochs", "1", *argv, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_data_without_labels_is_one_line(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((40, 1, 4, 4)) < 0.5).astype("float32"))
    code, _, err = run_cli(["train", "--dataset", f"npy:{tmp_path / 'x.npy'}", "--family", "m2", "--epochs", "1",
                            "--quiet", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "needs labels" in err, err


def test_fit_trains_an_m2_model_on_images_and_labels(tmp_path):
    ds = vaekit.load_dataset("digits", binarize="threshold", seed=0)
    x, y = ds.train[:300], ds.labels("train")[:300]
    model = M2((1, 8, 8), classes=10, latent=3, labels=20, hidden=[16])
    result = vaekit.fit(model, (x, y), (ds.valid, ds.labels("valid")), out=tmp_path / "fit", epochs=2,
                        m2_alpha=5.0, progress=False)
    assert result.selected_by == "valid ELBO" and math.isfinite(result.best_valid_elbo)
    loaded = vaekit.load(tmp_path / "fit")
    assert torch.equal(loaded.labelled_indices, model.labelled_indices)
    assert torch.bincount(y[loaded.labelled_indices], minlength=10).tolist() == [2] * 10
    r = vaekit.evaluate(loaded, ds.test, k=5, class_labels=ds.labels("test"))
    assert 0 <= r.test_error <= 1 and r.m2_classes == 10
    assert isinstance(build_objective({"name": "m2", "alpha": 5.0}), M2Objective)
    with pytest.raises(vaekit.errors.DataError, match="no labels"):
        vaekit.fit(M2((1, 8, 8), classes=10, latent=2, labels=5, hidden=[4]), x, out=tmp_path / "none", epochs=1,
                   progress=False)
