"""Evaluations kept in the run folder (vaekit.evaluation.store): report and compare after evaluate do not evaluate
again; another K, another model or an unreadable kept file do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import vaekit.evaluation
import vaekit.evaluation.evaluator as evaluator
from cli_run import run_cli
from vaekit.config import TrainConfig
from vaekit.evaluation import store
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture()
def run(tmp_path):
    path = tmp_path / "r"
    train(TrainConfig(dataset="digits", hidden=[16], latent=4, epochs=1, device="cpu"), path, progress=False)
    return path


@pytest.fixture()
def calls(monkeypatch):
    """Counts the evaluations (evaluate_model, through either name the commands use)."""
    count = {"n": 0}
    original = evaluator.evaluate_model

    def counting(*args, **kwargs):
        count["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluator, "evaluate_model", counting)
    monkeypatch.setattr(vaekit.evaluation, "evaluate_model", counting)
    return count


def test_report_and_compare_after_evaluate_do_not_evaluate_again(run, tmp_path, calls, capsys):
    code, out, err = run_cli(["evaluate", str(run), "--k", "20", "--seed", "3", "--json"], capsys)
    assert code == 0, err
    assert calls["n"] == 1 and len(list((run / store.FOLDER).glob("*.json"))) == 1
    evaluated = json.loads(out)
    code, _, err = run_cli(["report", str(run), "--k", "20", "--seed", "3", "--quiet"], capsys)
    assert code == 0, err
    assert calls["n"] == 1  # the kept evaluation, not a second one
    page = (run / "report.html").read_text()
    assert "The evaluation is the one kept in the run folder" in page
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    code, out, err = run_cli(["compare", str(run), str(twin), "--k", "20", "--seed", "3", "--json", "--out",
                              str(tmp_path / "c.html"), "--quiet"], capsys)
    assert code == 0, err
    assert calls["n"] == 1
    for row in json.loads(out)["runs"]:
        assert row["nll"] == evaluated["nll"] and row["elbo"] == evaluated["elbo"]  # the kept figures themselves
    code, _, err = run_cli(["report", str(run), "--k", "30", "--seed", "3", "--quiet"], capsys)
    assert code == 0, err
    assert calls["n"] == 2  # another K: evaluated, then kept as well
    assert len(list((run / store.FOLDER).glob("*.json"))) == 2


def test_another_model_or_an_unreadable_file_is_evaluated_again(run, tmp_path, calls, capsys):
    key = store.evaluation_key(split="test", k=20, seed=0)
    assert run_cli(["evaluate", str(run), "--k", "20", "--json"], capsys)[0] == 0
    assert store.kept(run, key) is not None
    other = tmp_path / "other"  # the same settings, another seed: a model trained anew, written in place
    train(TrainConfig(dataset="digits", hidden=[16], latent=4, epochs=1, device="cpu", seed=1), other, progress=False)
    for name in ("model.safetensors", "model.json"):
        shutil.copyfile(other / name, run / name)
    assert store.kept(run, key) is None
    assert run_cli(["report", str(run), "--k", "20", "--quiet"], capsys)[0] == 0
    assert calls["n"] == 2
    kept = store.kept(run, key)
    assert kept is not None and kept["k"] == 20
    path = next((run / store.FOLDER).glob("*.json"))
    path.write_text("{ not json")
    assert store.kept(run, key) is None
    assert run_cli(["report", str(run), "--k", "20", "--quiet"], capsys)[0] == 0
    assert calls["n"] == 3


def test_the_kept_result_reads_back_as_the_same_result(run):
    result = vaekit.evaluation.evaluate_run(run, k=10, surgery_samples=100)
    back = store.as_result(json.loads(json.dumps(result.to_dict())))
    assert back.to_dict() == result.to_dict()
    assert torch.isnan(torch.tensor(back.bits_per_dim_stderr)) == torch.isnan(torch.tensor(result.bits_per_dim_stderr))


def test_a_read_only_run_folder_only_loses_the_cache(run, capsys):
    (run / store.FOLDER).mkdir()
    (run / store.FOLDER).chmod(0o500)
    try:
        code, _, err = run_cli(["evaluate", str(run), "--k", "10", "--json"], capsys)
    finally:
        (run / store.FOLDER).chmod(0o700)
    assert code == 0, err


def test_report_and_compare_show_ais_and_the_gaps_that_evaluate_kept(run, tmp_path, calls, capsys):
    code, out, err = run_cli(["evaluate", str(run), "--k", "30", "--ais", "3", "--ais-chains", "2", "--gaps",
                              "--gaps-steps", "3", "--limit", "20", "--json"], capsys)
    assert code == 0, err
    evaluated = json.loads(out)
    code, _, err = run_cli(["report", str(run), "--k", "30", "--limit", "20", "--quiet"], capsys)
    assert code == 0 and calls["n"] == 1, err
    page = (run / "report.html").read_text()
    assert "AIS (T = 3, C = 2, L = 10)" in page and "approximation gap" in page and "Pareto k-hat" in page
    assert f"{evaluated['ais_log_px']:.3f}" in page
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    store.keep(twin, store.evaluation_key(split="test", k=30, seed=0), evaluated)  # as if compared at --limit 20
    store.keep(run, store.evaluation_key(split="test", k=30, seed=0), evaluated)
    code, out, err = run_cli(["compare", str(run), str(twin), "--k", "30", "--json", "--out",
                              str(tmp_path / "c.html"), "--quiet"], capsys)
    assert code == 0 and calls["n"] == 1, err
    rows = json.loads(out)["runs"]
    assert all(r["ais_log_px"] == evaluated["ais_log_px"] and r["amortization_gap"] == evaluated["amortization_gap"]
               for r in rows)
    assert "log p(x), AIS" in (tmp_path / "c.html").read_text()
