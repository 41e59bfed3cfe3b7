"""``--device`` / ``--precision`` for evaluation: bf16 autocast runs and is labelled as such."""

from __future__ import annotations

import json

import pytest

from vaekit.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("p") / "run"
    assert main(["train", "--dataset", "digits", "--binarize", "dynamic", "--out", str(out), "--epochs", "2",
                 "--hidden", "32", "--latent", "2", "--quiet"]) == 0
    return out


def evaluate(run_dir, capsys, *extra):
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--k", "50", "--device", "cpu", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_bf16_evaluation_is_close_to_fp32_and_labelled(run_dir, capsys):
    fp32 = evaluate(run_dir, capsys)
    bf16 = evaluate(run_dir, capsys, "--precision", "bf16")
    assert "computed with --precision bf16" in bf16["notes"] and not any("precision" in n for n in fp32["notes"])
    # same draws, rounding only: bf16 keeps ~3 significant digits of each logit
    assert bf16["nll"] == pytest.approx(fp32["nll"], abs=0.5)


def test_bad_precision_is_one_line(run_dir, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", str(run_dir), "--precision", "fp8"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
