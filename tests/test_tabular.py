"""Tables of real values: csv/npy/npz tables, the standardisation and its log-Jacobian, the Student-t likelihood,
the likelihood checks, and a tiny run through the command line and vaekit.fit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import vaekit
from vaekit.cli import main
from vaekit.components import LIKELIHOODS
from vaekit.data import Standardisation, load_dataset
from vaekit.errors import ConfigError, DataError

TINY = ["--epochs", "2", "--hidden", "8", "--latent", "2", "--batch-size", "32", "--threads", "1", "--quiet"]


def _write(path, text):
    path.write_text(text)
    return path


def test_csv_with_header_and_label_column(tmp_path):
    rows = "\n".join(f"{i * 1.5},{-i},{'ab'[i % 2]}" for i in range(20))
    p = _write(tmp_path / "t.csv", "x,y,kind\n" + rows + "\n")
    ds = load_dataset(f"csv:{p}", label_column="kind", standardise=False)
    assert ds.tabular and ds.shape == (1, 1, 2) and ds.features == ("x", "y") and ds.classes == ("a", "b")
    assert ds.levels is None and ds.standardisation is None
    x = torch.cat([ds.train, ds.valid, ds.test]).reshape(-1, 2)
    y = torch.cat([ds.train_labels, ds.valid_labels, ds.test_labels])
    assert torch.equal(y, (x[:, 0] / 1.5).round().long() % 2)  # each row keeps its own label
    with pytest.raises(ConfigError, match="'z' is not a column"):
        load_dataset(f"csv:{p}", label_column="z")


@pytest.mark.parametrize(("text", "match"), [
    ("a,b\n1,2\n3,nan\n", r"line 3, column b: 'nan', not a finite number"),
    ("a,b\n1,2\n3,inf\n", r"line 3, column b: 'inf'"),
    ("a,b\n1,2\n3\n", r"line 3: 1 cells where the first row has 2 \(ragged rows\)"),
    ("a,b\n1,2\n\n4,x7\n", r"line 4, column b: 'x7'"),
    ("a,b\n1,\n", r"line 2, column b: an empty cell"),
    ("1,2\nq,3\n", r"line 2, column 0: 'q'"),
])
def test_csv_errors_name_the_file_line_and_column(tmp_path, text, match):
    p = _write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"csv:{p}")
    assert str(p) in str(info.value) and "\n" not in str(info.value)


def test_npy_tables_and_images(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "t.npy", rng.normal(50.0, 7.0, size=(60, 4)))  # any real values: a table
    ds = load_dataset(f"npy:{tmp_path / 't.npy'}")
    assert ds.tabular and ds.shape == (1, 1, 4) and ds.standardisation is not None
    np.save(tmp_path / "i.npy", rng.uniform(size=(60, 4)).astype(np.float32))  # [0, 1] and D = 2 x 2: images
    assert load_dataset(f"npy:{tmp_path / 'i.npy'}").shape == (1, 2, 2)
    bad = rng.normal(size=(30, 3))
    bad[11, 2] = np.nan
    np.save(tmp_path / "n.npy", bad)
    with pytest.raises(DataError, match=r"first in row 11, column 2"):
        load_dataset(f"npy:{tmp_path / 'n.npy'}")
    np.savez(tmp_path / "z.npz", train=rng.normal(size=(40, 3)), test=rng.normal(size=(9, 3)))
    z = load_dataset(f"npz:{tmp_path / 'z.npz'}")
    assert z.tabular and len(z.test) == 9


def test_standardisation_uses_the_training_split_only_and_is_stored(tmp_path):
    raw = load_dataset("wine", standardise=False)
    ds = load_dataset("wine")
    train = raw.train.reshape(len(raw.train), -1).double()
    rule = ds.standardisation
    assert np.allclose(rule.mean, train.mean(0).numpy()) and np.allclose(rule.sd, train.std(0, unbiased=False))
    assert not np.allclose(rule.mean, torch.cat([raw.train, raw.test]).reshape(-1, 13).double().mean(0).numpy())
    for s in ("train", "valid", "test"):
        assert torch.allclose(rule.invert(ds.split(s)), raw.split(s), rtol=1e-5, atol=1e-4)
    again = load_dataset("wine", splits=("test",), standardisation=rule.to_dict())  # applied as stored
    assert torch.equal(again.test, ds.test) and len(again.train) == 0
    alone = load_dataset("wine", splits=("test",))  # the test split alone: still the training split's statistics
    assert alone.standardisation == rule
    with pytest.raises(ConfigError, match="standardise applies to tables"):
        load_dataset("digits", standardise=True)


def test_log_jacobian_against_a_gaussian_density_before_and_after_the_affine_map():
    """log N(x; m, diag s^2) = log N(u; 0, I) - sum_d log s_d with u = (x - m) / s: the change of variables that
    every reported figure of a standardised table adds."""
    rng = np.random.default_rng(3)
    x = rng.normal([5.0, -300.0, 0.01], [2.0, 80.0, 0.003], size=(500, 3))
    rule = Standardisation.fit(x)
    u = rule.apply(torch.from_numpy(x)).double().numpy()
    direct = stats.multivariate_normal(np.asarray(rule.mean), np.diag(np.square(rule.sd))).logpdf(x)
    after = stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(u) + rule.log_jacobian
    assert rule.log_jacobian == pytest.approx(-np.log(np.asarray(rule.sd)).sum(), abs=1e-12)
    assert np.allclose(direct, after, rtol=0, atol=1e-4)


def test_evaluation_adds_the_log_jacobian():
    ds = load_dataset("wine")
    torch.manual_seed(0)
    model = vaekit.VAE(latent=2, shape=ds.shape, hidden=(8,), likelihood={"name": "gaussian", "mean": "identity"})
    in_units = vaekit.evaluate(model, ds, k=4, seed=1)
    standardised = vaekit.evaluate(model, ds.test, k=4, seed=1)
    jac = ds.standardisation.log_jacobian
    assert in_units.log_jacobian == jac and standardised.log_jacobian == 0.0
    assert in_units.nll == pytest.approx(standardised.nll - jac, abs=1e-6)
    assert in_units.elbo == pytest.approx(standardised.elbo + jac, abs=1e-6)


def test_student_t_likelihood_matches_scipy_and_learns_its_degrees():
    torch.manual_seed(0)
    for degrees, shape in (("fixed", ()), ("learned", ()), ("per-feature", (1, 1, 3))):
        lik = LIKELIHOODS.build({"name": "student-t", "degrees": degrees, "df": 3.0}, shape=(1, 1, 3))
        assert tuple(lik.log_df.shape) == shape and lik.log_df.requires_grad == (degrees != "fixed")
    params, x = torch.randn(5, 2, 1, 3, dtype=torch.float64), torch.randn(5, 1, 1, 3, dtype=torch.float64)
    lik = lik.double()
    loc, scale = params[:, :1].numpy(), np.exp(params[:, 1:].numpy())
    want = stats.t(3.0, loc, scale).logpdf(x.numpy()).sum((1, 2, 3))
    got = lik.log_prob(x, params)
    assert np.allclose(got.detach().numpy(), want, atol=1e-10)
    got.sum().backward()
    assert lik.log_df.grad is not None and torch.isfinite(lik.log_df.grad).all()
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert torch.equal(lik.sample(params, g1), lik.sample(params, g2))
    with pytest.raises(ValueError, match="df must be"):
        LIKELIHOODS.build({"name": "student-t", "df": 0.0}, shape=(1, 1, 3))


@pytest.mark.parametrize(("flags", "match"), [
    (["--likelihood", "bernoulli"], "likelihood bernoulli models binary pixels but wine is a table of real values"),
    (["--likelihood", "continuous-bernoulli"], "models values in \\[0, 1\\]"),
    (["--likelihood", "gaussian", "--gaussian-mean", "sigmoid"], "mean sigmoid keeps it in \\(0, 1\\)"),
    (["--binarize", "dynamic"], "binarize applies to images"),
])
def test_likelihoods_that_do_not_fit_a_table_are_refused_in_one_line(tmp_path, capsys, flags, match):
    assert main(["train", "--dataset", "wine", *TINY, "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and __import__("re").search(match, err), err


def test_cli_train_evaluate_sample_report_resume_in_original_units(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "wine", *TINY, "--likelihood", "student-t", "--out", str(run)]) == 0
    stored = json.loads((run / "config.json").read_text())["standardisation"]
    rule = load_dataset("wine").standardisation
    assert stored["sd"] == pytest.approx(list(rule.sd)) and stored["log_jacobian"] == pytest.approx(rule.log_jacobian)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["log_jacobian"] == pytest.approx(rule.log_jacobian)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["log_jacobian"] == pytest.approx(rule.log_jacobian) and result["nll"] > 0
    assert main(["sample", str(run), "-n", "400", "--out", str(tmp_path / "s.csv")]) == 0
    drawn = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    proline = drawn[:, 12]  # in milligrams per litre again (hundreds), not standardised units
    assert drawn.shape == (400, 13) and 200 < np.median(proline) < 1700
    assert main(["report", str(run), "--k", "4"]) == 0
    assert main(["train", "--dataset", "wine", *TINY[:1], "3", *TINY[2:], "--likelihood", "student-t",
                 "--out", str(run), "--resume"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_fit_on_a_table(tmp_path):
    ds = load_dataset("wine")
    torch.manual_seed(0)
    model = vaekit.VAE(latent=2, shape=ds.shape, hidden=(8,), likelihood={"name": "student-t", "degrees": "fixed"})
    vaekit.fit(model, ds, out=tmp_path / "fit", epochs=2, batch_size=32, progress=False)
    stored = json.loads((tmp_path / "fit" / "config.json").read_text())["standardisation"]
    assert stored["log_jacobian"] == pytest.approx(ds.standardisation.log_jacobian)
    result = vaekit.evaluate(model, ds, k=4)
    assert math.isfinite(result.nll) and result.log_jacobian == ds.standardisation.log_jacobian


def test_bound_reports_a_table_in_its_original_units(tmp_path, capsys):
    """vaekit bound on a 2-D latent table run: the grid log p(x), IWAE_K and the ELBO each include the log-Jacobian
    (the grid against a direct grid integration of the standardised values plus -sum_d log sd_d)."""
    from vaekit.evaluation import limit_split, load_model, load_run_data, split_images
    from vaekit.evaluation.exact import grid_log_marginal

    run = tmp_path / "run"
    assert main(["train", "--dataset", "wine", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["bound", str(run), "--n", "4", "--k", "20", "--grid", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rule = load_dataset("wine").standardisation
    assert out["log_jacobian"] == pytest.approx(rule.log_jacobian)
    model = load_model(run)
    ds = load_run_data(run, split="test")
    x, y = split_images(ds, "test", 0)
    x, _, _ = limit_split(x, y, 4, 0)
    with torch.no_grad():
        grid = grid_log_marginal(model, x.reshape(4, -1), n=40).log_px.double()
    assert out["means"]["grid"] == pytest.approx(float(grid.mean()) + rule.log_jacobian, abs=1e-6)
    assert out["means"]["elbo"] <= out["means"]["grid"] + 1e-6


def test_evaluate_with_a_sampler_reports_a_table_in_its_original_units(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "wine", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "8", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(run), "--sampler", "gmm", "--k", "8", "--json"]) == 0
    with_gmm = json.loads(capsys.readouterr().out)
    rule = load_dataset("wine").standardisation
    assert with_gmm["log_jacobian"] == pytest.approx(rule.log_jacobian)
    # the run's prior beside the sampler: the same figure as evaluate's own, in the same (original) units
    assert with_gmm["prior_nll"] == pytest.approx(plain["nll"], abs=1e-6)
