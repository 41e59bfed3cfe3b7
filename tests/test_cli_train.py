"""``vaekit train`` from the command line: config files, flags, JSON, one-line errors."""

from __future__ import annotations

import json

import pytest

from cli_run import run_cli


def test_train_digits_json(tmp_path, capsys):
    code, out, err = run_cli(["train", "--dataset", "digits", "--out", str(tmp_path / "r"), "--epochs", "2",
                              "--hidden", "32", "--latent", "2", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out.strip().splitlines()[-1])
    assert {"epochs", "train_elbo", "valid_elbo", "seconds"} <= data.keys()
    assert data["epochs"] == 2 and data["valid_elbo"] < 0
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model"]["hidden"] == [32] and cfg["model"]["latent"] == 2


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'dataset = "digits"\nlatent = 3\nhidden = [16, 16]\nepochs = 1\nlr = 2e-3\n'),
    (".yaml", "dataset: digits\nlatent: 3\nhidden: [16, 16]\nepochs: 1\nlr: 2.0e-3\n"),
])
def test_config_file_and_flags_override(tmp_path, capsys, suffix, text):
    conf = tmp_path / f"c{suffix}"
    conf.write_text(text)
    code, out, err = run_cli(["train", "--config", str(conf), "--latent", "4", "--out", str(tmp_path / "r"),
                              "--json"], capsys)
    assert code == 0, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["model"]["latent"] == 4 and cfg["model"]["hidden"] == [16, 16] and cfg["lr"] == 2e-3
    assert cfg["epochs"] == 1


@pytest.mark.parametrize("argv, needle", [
    (["--epochs", "0"], "positive integer"),
    (["--lr", "-1"], "> 0"),
    (["--hidden", "a"], "positive integer"),
    (["--model", "rnn"], "model must be one of"),
    (["--prior", "laplace"], "unknown prior 'laplace'"),
    (["--dataset", "nope"], "nope"),
    (["--device", "tpu"], "device must be one of"),
    (["--config", "/nonexistent.toml"], "not found"),
])
def test_bad_arguments_one_line_status_2(tmp_path, capsys, argv, needle):
    code, out, err = run_cli(["train", "--out", str(tmp_path / "r"), *argv], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("text, needle", [
    ('latnet = 3\n', "did you mean 'latent'"),
    ('latent = "three"\n', "latent must be an integer"),
    ('seed = 1.5\n', "seed"),
    ('epochs = [\n', "not valid TOML"),
    ("model = \"conv\"\nhidden = []\n", "hidden"),
])
def test_bad_config_file(tmp_path, capsys, text, needle):
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    code, _, err = run_cli(["train", "--config", str(conf), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_rerun_without_resume_is_refused_and_resume_extends(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--out", str(tmp_path / "r"), "--hidden", "16", "--latent", "2",
            "--json"]
    assert run_cli([*base, "--epochs", "1"], capsys)[0] == 0
    code, _, err = run_cli([*base, "--epochs", "1"], capsys)
    assert code == 2 and "--resume" in err
    code, out, err = run_cli([*base, "--epochs", "2", "--resume"], capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["epochs"] == 2
