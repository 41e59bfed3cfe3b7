"""``vaekit gradients RUN`` on a run with a reparameterized q(z|x): the SNR of IWAE_K's gradients against K for the
pathwise, STL and DReG estimators, as a table, as JSON and as a figure.

The run: a Gaussian VAE (2 latent units, hidden 8) on the embedded digits, one epoch. The checks that depend on chance
compare quantities many standard errors apart (STL's and DReG's encoder SNR against the pathwise one's); the decoder's
figures are the same for the three estimators by construction (the same draws), which holds exactly.
"""

from __future__ import annotations

import json
import math
import os

import pytest
from PIL import Image
from tests.cli_run import run_cli

pytestmark = pytest.mark.usefixtures("single_thread")

FAST = ["--n", "20", "--trials", "30"]


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory: pytest.TempPathFactory, single_thread: None):
    from vaekit.cli import main

    run = tmp_path_factory.mktemp("gradients") / "gauss"
    assert main(["train", "--dataset", "digits", "--binarize", "threshold", "--epochs", "1", "--hidden", "8",
                 "--latent", "2", "--out", str(run)]) == 0
    return run


def test_json_rows_for_each_estimator_and_k(gaussian_run, tmp_path, capsys) -> None:
    plot = tmp_path / "snr.png"
    code, out, err = run_cli(["gradients", str(gaussian_run), "--estimators", "pathwise,stl,dreg", "--k", "1,4,16",
                              *FAST, "--json", "--plot", str(plot)], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["n"] == 20 and data["trials"] == 30 and data["objective"] == "iwae" and data["plot"] == str(plot)
    assert data["encoder_parameters"] > 0 and data["decoder_parameters"] > 0
    assert data["decoder_rows"] == 3 * (1 + 4 + 16) * 20 * 30 and "jackknife" in data["standard_errors"]
    assert 0 < data["snr_floor"] < 1
    rows = {(r["estimator"], r["k"]): r for r in data["rows"]}
    assert list(rows) == [(e, k) for e in ("pathwise", "stl", "dreg") for k in (1, 4, 16)]
    for r in data["rows"]:
        for key in ("encoder_snr", "encoder_snr_stderr", "decoder_snr", "decoder_snr_stderr", "encoder_variance",
                    "encoder_variance_stderr", "decoder_variance", "bound", "seconds"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] >= 0 or key == "bound", (r, key)
        assert r["unbiased"] == (r["estimator"] != "stl" or r["k"] == 1)
    for k in (1, 4, 16):  # the three estimators give the decoder the same gradient, at the same draws
        assert rows[("stl", k)]["decoder_snr"] == pytest.approx(rows[("pathwise", k)]["decoder_snr"], rel=1e-5)
        assert rows[("dreg", k)]["bound"] == pytest.approx(rows[("pathwise", k)]["bound"], rel=1e-6)
        for name in ("stl", "dreg"):  # dropping the score term: far above the pathwise encoder SNR here
            better, base = rows[(name, k)], rows[("pathwise", k)]
            assert better["encoder_snr"] - base["encoder_snr"] > 3 * math.hypot(better["encoder_snr_stderr"],
                                                                                base["encoder_snr_stderr"])
    assert rows[("dreg", 1)]["encoder_snr"] == pytest.approx(rows[("stl", 1)]["encoder_snr"], rel=1e-5)  # K = 1
    assert any("biased" in note for note in data["notes"])
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size == (800, 500)
        im.verify()


def test_table_and_defaults(gaussian_run, capsys) -> None:
    code, out, err = run_cli(["gradients", str(gaussian_run), "--k", "2", "--n", "5", "--trials", "4"], capsys)
    assert code == 0, err
    assert "Gradients of IWAE_K" in out and "jackknife" in out and "is noise" in out
    table = [ln.split()[:2] for ln in out.splitlines() if ln.split() and ln.split()[0] in ("pathwise", "stl", "dreg")]
    assert table == [["pathwise", "2"], ["stl", "2"], ["dreg", "2"]]


def test_seed_reproducible(gaussian_run, capsys) -> None:
    argv = ["gradients", str(gaussian_run), "--estimators", "dreg", "--k", "3", "--n", "4", "--trials", "5", "--json",
            "--seed", "3"]
    first, second = (json.loads(run_cli(argv, capsys)[1]) for _ in range(2))
    assert first["rows"] == [{**r, "seconds": first["rows"][0]["seconds"]} for r in second["rows"]]


def test_the_plot_replaces_only_a_png_and_never_a_link(gaussian_run, tmp_path, capsys) -> None:
    argv = ["gradients", str(gaussian_run), "--estimators", "pathwise", "--k", "1,2", "--n", "3", "--trials", "3"]
    text = tmp_path / "notes.png"
    text.write_text("my notes")
    link = tmp_path / "link.png"
    os.symlink(tmp_path / "elsewhere.png", link)
    for target, message in ((text, "not a PNG picture written by vaekit"), (link, "symbolic link")):
        code, out, err = run_cli([*argv, "--plot", str(target)], capsys)
        assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
    assert text.read_text() == "my notes" and not (tmp_path / "elsewhere.png").exists()
    good = tmp_path / "snr.png"
    for _ in range(2):  # a PNG there (an earlier plot) is replaced
        assert run_cli([*argv, "--plot", str(good)], capsys)[0] == 0
    assert good.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("argv, message", [
    (["--estimators", "pathwise,bogus"], "unknown estimator 'bogus'"),
    (["--estimators", "nvil"], "reparameterized"),
    (["--estimators", ""], "comma-separated"),
    (["--k", "0"], "positive"),
    (["--k", "200000"], "--k values must be at most"),
    (["--trials", "2"], "at least 3"),
    (["--samples", "1,2"], "--samples is for a run with a discrete q(z|x)"),
    (["--baseline-steps", "5"], "--baseline-steps is for a run with a discrete q(z|x)"),
    (["--theta", "2"], "--theta"),
    (["--n", "100", "--k", "50000"], "decoder rows per estimate"),
    (["--plot", "snr.txt"], ".png"),
])
def test_bad_arguments_are_one_line(gaussian_run, argv, message, capsys) -> None:
    code, out, err = run_cli(["gradients", str(gaussian_run), *argv], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err


def test_a_two_level_run_measures_pathwise_and_refuses_stl_in_one_line(tmp_path, capsys) -> None:
    run = tmp_path / "hvae"
    assert run_cli(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "8", "--latent", "2", "--levels", "2",
                    "--out", str(run)], capsys)[0] == 0
    code, out, err = run_cli(["gradients", str(run), "--estimators", "pathwise,stl", *FAST], capsys)
    assert code == 2 and "has_stopped_log_prob" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(["gradients", str(run), "--estimators", "pathwise", "--k", "1,2", "--n", "4",
                              "--trials", "3", "--json"], capsys)
    assert code == 0, err
    assert [r["k"] for r in json.loads(out)["rows"]] == [1, 2]
