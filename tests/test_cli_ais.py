"""``vaekit evaluate --ais T --gaps`` and ``vaekit bound --bdmc T`` on a tiny digits run with a 2-D latent space,
where log p(x) is also known by grid integration."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cli_run import run_cli
from vaekit.bounds.ais import AISSettings, ais
from vaekit.cli import main
from vaekit.evaluation import limit_split, load_model, load_run_data, split_images
from vaekit.evaluation.exact import grid_log_marginal

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("ais") / "digits"
    code = main(["train", "--dataset", "digits", "--binarize", "dynamic", "--latent", "2", "--hidden", "8",
                 "--epochs", "1", "--threads", "1", "--out", str(path), "--json"])
    assert code == 0
    return path


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_evaluate_reports_ais_the_gaps_and_the_pareto_fraction(run, capsys):
    code, out, err = run_cli(["evaluate", str(run), "--k", "100", "--limit", "16", "--ais", "20", "--ais-chains",
                              "4", "--ais-leapfrog", "3", "--gaps", "--gaps-steps", "40", "--json", "--quiet"], capsys)
    assert code == 0, err
    r = _last_json(out)
    for key in ("ais_log_px", "ais_log_px_stderr", "ais_acceptance", "approximation_gap", "approximation_gap_stderr",
                "amortization_gap", "amortization_gap_stderr", "pareto_k_fraction"):
        assert isinstance(r[key], float) and math.isfinite(r[key]), key
    assert (r["ais_steps"], r["ais_chains"], r["ais_leapfrog"], r["gaps_log_px"]) == (20, 4, 3, "ais")
    assert 0 < r["ais_acceptance"] < 1 and 0 <= r["pareto_k_fraction"] <= 1 and r["ais_log_px_stderr"] > 0
    assert any("stochastic lower bound" in note for note in r["notes"])
    code, out, err = run_cli(["evaluate", str(run), "--k", "100", "--limit", "8", "--ais", "5", "--ais-chains",
                              "2", "--quiet"], capsys)
    assert code == 0, err
    assert "AIS" in out and "T = 5, C = 2, L = 10" in out and "Pareto k-hat > 0.7" in out
    code, out, err = run_cli(["evaluate", str(run), "--k", "30", "--limit", "4", "--json", "--quiet"], capsys)
    plain = _last_json(out)
    assert plain["ais_log_px"] is None and plain["approximation_gap"] is None and "pareto_k_fraction" in plain


def test_bound_bdmc_prints_the_sandwich(run, capsys):
    code, out, err = run_cli(["bound", str(run), "--bdmc", "3,12", "--n", "6", "--bdmc-chains", "4",
                              "--bdmc-leapfrog", "3", "--json"], capsys)
    assert code == 0, err
    r = _last_json(out)
    assert r["n"] == 6 and r["bdmc_steps"] == 12 and [row["steps"] for row in r["bdmc"]] == [3, 12]
    assert r["bdmc_width"] == pytest.approx(r["bdmc_upper"] - r["bdmc_lower"], abs=1e-9)
    assert all(math.isfinite(r[k]) for k in ("bdmc_lower", "bdmc_upper", "bdmc_width", "bdmc_width_stderr"))
    code, out, err = run_cli(["bound", "--bdmc", "4", "--n", "4", "--bdmc-chains", "2", "--bdmc-leapfrog", "2"],
                             capsys)
    assert code == 0, err
    assert "exact log p(x), closed form" in out and "lower" in out and "upper" in out


def test_bad_annealing_settings_are_one_line_errors(run, capsys):
    for argv, words in ((["--ais", "0"], "positive integer"), (["--ais", "5", "--ais-chains", "100001"], "at most"),
                        (["--ais", "5", "--ais-chains", "90000"], "memory budget")):
        code, out, err = run_cli(["evaluate", str(run), "--k", "10", "--limit", "2", "--quiet", *argv], capsys)
        assert code == 2 and words in err and len(err.strip().splitlines()) <= 2, (argv, err)
    code, out, err = run_cli(["bound", "--bdmc", "0,5"], capsys)
    assert code == 2 and "positive integer" in err


def test_ais_agrees_with_the_grid_integral_of_a_2d_latent_space(run):
    """Per example, |AIS - grid| within 3 of its standard errors (AIS's across chains, the grid's error estimate) for
    all but a few, and on average within 3 standard errors over the examples."""
    model = load_model(run)
    x, y = split_images(load_run_data(run, split="test"), "test", 0)
    x, _, _ = limit_split(x, y, 20, 0)
    x = x.reshape(20, -1)
    grid = grid_log_marginal(model, x)
    r = ais(model, x, AISSettings(steps=100, chains=16, leapfrog=5, seed=0))
    d = r.log_px - grid.log_px.double()
    z = d / torch.sqrt(r.stderr**2 + grid.error.double() ** 2)
    assert int((z.abs() <= 3).sum()) >= 18, z
    assert abs(float(d.mean())) <= 3 * float(d.std()) / math.sqrt(20)
