"""``vaekit gradients RUN``: the discrete estimators' gradient variance and bias on a tiny trained run.

The run: a categorical VAE (2 groups of 3 classes, 9 codes) on the embedded digits, one epoch. The checks that
depend on chance compare quantities many standard errors apart (the score function's variance is orders of
magnitude above nvil's and enumerate's 0); enumerate's zero variance and bias hold exactly (to rounding).
"""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image
from tests.cli_run import run_cli

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = ["--n", "20", "--trials", "8", "--samples", "1,4", "--baseline-steps", "100"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, single_thread: None):
    from vaekit.cli import main

    run = tmp_path_factory.mktemp("gradients") / "cat"
    assert main(["train", "--dataset", "digits", "--binarize", "threshold", "--epochs", "1", "--hidden", "16",
                 "--posterior", "categorical", "--latent", "2", "--classes", "3", "--out", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory: pytest.TempPathFactory, single_thread: None):
    from vaekit.cli import main

    run = tmp_path_factory.mktemp("gradients") / "gauss"
    assert main(["train", "--dataset", "digits", "--binarize", "threshold", "--epochs", "1", "--hidden", "8",
                 "--latent", "2", "--out", str(run)]) == 0
    return run


def test_json_fields_and_the_expected_orderings(run_dir, tmp_path, capsys) -> None:
    plot = tmp_path / "variance.png"
    code, out, err = run_cli(["gradients", str(run_dir), *FAST, "--plot", str(plot), "--json"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["n"] == 20 and data["trials"] == 8 and data["split"] == "test" and data["support_size"] == 9
    assert data["plot"] == str(plot) and data["parameters"] > 0 and math.isfinite(data["exact_elbo"])
    assert data["nvil_baseline"]["steps"] == 100
    assert data["nvil_baseline"]["squared_error_last"] < data["nvil_baseline"]["squared_error_first"]
    rows = {(r["estimator"], r["samples"]): r for r in data["rows"]}
    assert set(rows) == {("enumerate", None), ("score", 1), ("score", 4), ("nvil", 1), ("nvil", 4), ("vimco", 4),
                         ("gumbel", 1), ("gumbel", 4), ("straight-through", 1), ("straight-through", 4)}
    assert any("vimco needs S >= 2" in note for note in data["notes"])
    for r in data["rows"]:
        for key in ("variance", "variance_stderr", "bias2", "bias2_stderr", "exact_norm2", "seconds"):
            assert isinstance(r[key], float) and math.isfinite(r[key]), (r, key)
        assert r["variance"] >= 0 and r["objective"] == ("iwae" if r["estimator"] == "vimco" else "elbo")
    assert rows[("vimco", 4)]["target"] == "iwae"  # 9^4 tuples of codes x 20 examples: enumerable
    assert all(r["target"] == "elbo" for r in data["rows"] if r["estimator"] != "vimco")
    enum = rows[("enumerate", None)]
    assert enum["variance"] == 0.0 and enum["variance_stderr"] == 0.0
    assert abs(enum["bias2"]) <= 1e-8 * enum["exact_norm2"]  # the exact gradient, to float rounding
    for s in (1, 4):
        score, nvil = rows[("score", s)], rows[("nvil", s)]
        assert score["variance"] > enum["variance"]
        assert score["variance"] - nvil["variance"] > 4 * math.hypot(score["variance_stderr"],
                                                                     nvil["variance_stderr"])
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size == (800, 500)
        im.verify()


def test_table(run_dir, capsys) -> None:
    code, out, err = run_cli(["gradients", str(run_dir), "--estimators", "enumerate,score,nvil", "--n", "10",
                              "--trials", "5", "--samples", "2", "--baseline-steps", "50"], capsys)
    assert code == 0, err
    assert "9 codes" in out and "inference parameters" in out and "jackknife" in out
    assert "exact ELBO of the batch" in out and "baseline fitted first" in out and "50 Adam steps" in out
    table = [ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in ("enumerate", "score", "nvil")]
    assert [(t[0], t[1]) for t in table] == [("enumerate", "-"), ("score", "2"), ("nvil", "2")]
    assert table[0][4] == "0.000e+00"  # enumerate's variance


def test_seed_reproducible(run_dir, capsys) -> None:
    argv = ["gradients", str(run_dir), "--estimators", "score,gumbel", "--n", "5", "--trials", "4", "--samples",
            "3", "--json", "--seed", "3"]
    first, second = (json.loads(run_cli(argv, capsys)[1]) for _ in range(2))
    for a, b in zip(first["rows"], second["rows"]):
        assert a["variance"] == b["variance"] and a["bias2"] == b["bias2"]


@pytest.mark.parametrize("argv, message", [
    (["--estimators", "score,bogus"], "unknown estimator 'bogus'"),
    (["--estimators", ""], "comma-separated"),
    (["--estimators", "vimco", "--samples", "1,5"], "vimco needs S >= 2"),
    (["--trials", "2"], "at least 3"),
    (["--theta", "2"], "--theta"),
    (["--temperature", "0"], "--temperature must be > 0"),
    (["--plot", "v.txt"], ".png"),
    (["--split", "nope"], "invalid choice"),
])
def test_bad_arguments_are_one_line(run_dir, argv, message, capsys) -> None:
    code, out, err = run_cli(["gradients", str(run_dir), *argv], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--estimators", "score"], "reparameterized"),
    (["--samples", "1,2"], "--samples is for a run with a discrete q(z|x)"),
    (["--temperature", "0.5"], "--temperature is for a run with a discrete q(z|x)"),
])
def test_discrete_options_on_a_gaussian_run_are_one_line(gaussian_run, argv, message, capsys) -> None:
    code, out, err = run_cli(["gradients", str(gaussian_run), "--trials", "3", *argv], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["--k", "4"], "--k is the K of IWAE_K"),
    (["--estimators", "stl"], "reparameterized q(z|x); this run's is discrete"),
])
def test_reparameterized_options_on_a_discrete_run_are_one_line(run_dir, argv, message, capsys) -> None:
    code, out, err = run_cli(["gradients", str(run_dir), "--trials", "3", *argv], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_run_options_without_a_run_are_refused(capsys) -> None:
    code, _, err = run_cli(["gradients", "--estimators", "score"], capsys)
    assert code == 2 and "give a RUN directory" in err and len(err.strip().splitlines()) == 1


def test_a_missing_run_is_one_line(tmp_path, capsys) -> None:
    code, _, err = run_cli(["gradients", str(tmp_path / "nothing")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not found" in err
