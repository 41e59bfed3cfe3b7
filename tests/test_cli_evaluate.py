"""'vaekit evaluate', 'sample', 'report' and 'bound': JSON, tables, files, one-line errors (status 2)."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vaekit.evaluation.evaluator as ev  # the module that loads the data
from synthetic import prototype_dataset
from vaekit.cli import main
from vaekit.config import TrainConfig
from vaekit.train import train

COMMANDS = ("evaluate", "sample", "report", "bound")


pytestmark = pytest.mark.usefixtures("single_thread")


DS = prototype_dataset(160, 40, 40, classes=None)


@pytest.fixture(autouse=True)
def synthetic_data(monkeypatch):
    """The runs' config.json names the data set 'synthetic': serve it without files."""
    def load(spec, data_dir, binarize, seed, splits=None):
        if spec != "synthetic":
            from vaekit.errors import DataError

            raise DataError(f"unknown data set {spec!r}")
        return DS

    monkeypatch.setattr(ev, "_load_dataset", load)


def _train(path, latent):
    train(TrainConfig(dataset="synthetic", latent=latent, hidden=[32], epochs=4, batch_size=40, device="cpu"), path,
          dataset=DS, progress=False)
    return path


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("cli") / "run2", 2)


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("cli") / "run4", 4)


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_evaluate_json(run4, capsys):
    assert main(["evaluate", str(run4), "--k", "200", "--json"]) == 0
    d = _last_json(capsys.readouterr().out)
    assert {"split", "k", "elbo", "reconstruction", "kl", "nll", "nll_stderr", "bits_per_dim", "gap",
            "active_units"} <= set(d)
    assert d["split"] == "test" and d["k"] == 200 and d["n"] == 40
    assert d["elbo"] < 0 < d["nll"] and d["kl"] >= 0  # nats: the ELBO negative, the NLL positive
    assert d["elbo"] <= -d["nll"]  # ELBO <= log p(x)
    assert d["gap"] == pytest.approx(-d["nll"] - d["elbo"])
    assert d["bits_per_dim"] == pytest.approx(d["nll"] / (64 * math.log(2)))
    assert d["nll"] < 64 * math.log(2)  # better than coin flips after a few epochs
    assert 0 <= d["active_units"] <= 4 and len(d["kl_per_dim"]) == 4


def test_evaluate_json_is_deterministic_and_takes_options(run4, capsys):
    argv = ["evaluate", str(run4), "--k", "20", "--seed", "3", "--split", "valid", "--batch-size", "7", "--json"]
    assert main(argv) == 0
    a = _last_json(capsys.readouterr().out)
    assert main(argv) == 0
    b = _last_json(capsys.readouterr().out)
    assert a["split"] == "valid" and a["nll"] == b["nll"] and a["elbo"] == b["elbo"]
    assert main(["evaluate", str(run4), "--k", "5", "--limit", "3", "--json"]) == 0
    assert _last_json(capsys.readouterr().out)["n"] == 3


def test_evaluate_table(run4, capsys):
    assert main(["evaluate", str(run4), "--k", "50"]) == 0
    out = capsys.readouterr().out
    for needle in ("ELBO", "NLL", "bits/dim", "gap", "active units", "K = 50"):
        assert needle in out


def test_sample_writes_a_png(run2, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["sample", str(run2), "-n", "16", "--out", str(out), "--seed", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main(["sample", str(run2), "-n", "4"]) == 0
    assert (run2 / "samples.png").exists()


def test_report_prints_its_path(run2, capsys):
    assert main(["report", str(run2), "--k", "10"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == str(run2 / "report.html")
    assert "K = 10" in (run2 / "report.html").read_text()


def test_bound_on_a_2d_run(run2, capsys):
    assert main(["bound", str(run2), "--n", "5", "--k", "500", "--json"]) == 0
    d = _last_json(capsys.readouterr().out)
    assert d["grid"] is True and d["latent"] == 2 and len(d["examples"]) == 5
    assert d["checks"]["elbo_le_iwae"] and d["checks"]["elbo_le_reference"]
    ex = d["examples"][0]
    assert ex["elbo"] <= ex["iwae"] and ex["elbo"] <= ex["grid"]
    assert main(["bound", str(run2), "--n", "3", "--k", "100"]) == 0
    assert "grid log p(x)" in capsys.readouterr().out


def test_bound_on_a_larger_latent_space_says_why_there_is_no_grid(run4, capsys):
    assert main(["bound", str(run4), "--n", "3", "--k", "100"]) == 0
    out = capsys.readouterr().out
    assert "needs a 2-D latent space" in out and "IWAE_K" in out
    assert main(["bound", str(run4), "--n", "3", "--k", "100", "--json"]) == 0
    assert _last_json(capsys.readouterr().out)["grid"] is False


def test_bound_linear_gaussian_demo(capsys):
    assert main(["bound", "--n", "4", "--k", "300", "--json"]) == 0
    d = _last_json(capsys.readouterr().out)
    exact_q, wrong_q = d["exact_q"], d["wrong_q"]
    # the exact posterior: ELBO = IWAE = exact log p(x)
    assert exact_q["means"]["elbo"] == pytest.approx(exact_q["means"]["exact"], abs=1e-8)
    assert exact_q["means"]["iwae"] == pytest.approx(exact_q["means"]["exact"], abs=1e-8)
    assert wrong_q["checks"]["elbo_le_reference"] and wrong_q["means"]["kl_to_posterior"] > 0.1
    assert main(["bound", "--n", "2", "--k", "50"]) == 0
    assert "exact posterior" in capsys.readouterr().out


# -- missing and corrupt runs: one line on stderr, exit status 2 ------------------------------------


def _broken_runs(tmp_path, good):
    import shutil

    runs = {"no-dir": tmp_path / "does-not-exist"}
    empty = tmp_path / "empty"
    empty.mkdir()
    runs["no-model-json"] = empty
    garbage = tmp_path / "garbage"
    shutil.copytree(good, garbage)
    (garbage / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file at all" * 10)
    runs["garbage"] = garbage
    pickled = tmp_path / "pickled"
    shutil.copytree(good, pickled)
    torch.save({"encoder.0.weight": torch.zeros(3)}, pickled / "model.safetensors")  # a pickle, renamed
    runs["pickle"] = pickled
    bad_json = tmp_path / "bad-json"
    shutil.copytree(good, bad_json)
    (bad_json / "model.json").write_text("{not json")
    runs["bad-model-json"] = bad_json
    return runs


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_or_corrupt_runs_fail_with_one_line(command, run2, tmp_path, capsys):
    for name, path in _broken_runs(tmp_path, run2).items():
        argv = [command, str(path)] + (["--k", "5"] if command in ("evaluate", "report", "bound") else [])
        assert main(argv) == 2, (command, name)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1, (command, name, err)
        assert lines[0].startswith(f"vaekit {command}: error:") and "Traceback" not in err


def test_unknown_data_set_is_one_line(run2, capsys):
    assert main(["evaluate", str(run2), "--k", "5", "--dataset", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


@pytest.mark.parametrize("argv", [["evaluate", "RUN", "--k", "0"], ["evaluate", "RUN", "--split", "dev"],
                                  ["sample", "RUN", "-n", "-3"], ["bound", "--n", "x"]])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
