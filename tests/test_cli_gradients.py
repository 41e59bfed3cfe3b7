"""Tests for ``vaekit gradients`` (through vaekit.cli.main).

Statistical tolerance: bias within 4 standard errors of the mean over the trials
(SE = sqrt(variance / trials)); fixed seeds.
"""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from vaekit.cli import main
from vaekit.commands.gradients import PLOT_DPI, PLOT_INCHES

FAST = ["--samples", "1,10,100", "--trials", "300"]


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors exit through parser.exit(2, ...)
        return int(exc.code or 0)


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["gradients", "--theta", "1.5", *FAST, "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "true gradient" in out and "= 3" in out
    for word in ("pathwise", "score_function", "score_function_baseline", "analytic",
                 "variance", "bias (SE)"):
        assert word in out
    lines = [ln.split() for ln in out.splitlines()]
    rows = [ln for ln in lines if ln and ln[0] in ("pathwise", "score_function",
                                                   "score_function_baseline")]
    assert len(rows) == 3 + 3 + 2  # no leave-one-out row for m = 1
    assert "needs m >= 2" in out


def test_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["gradients", "--theta", "-0.5", *FAST, "--json"]) == 0
    out = capsys.readouterr().out
    data = json.loads(out.strip().splitlines()[-1])
    assert data["true_gradient"] == pytest.approx(-1.0)
    assert data["trials"] == 300 and data["theta"] == -0.5
    rows = data["rows"]
    got = [(r["estimator"], r["samples"]) for r in rows]
    assert got == [("pathwise", 1), ("pathwise", 10), ("pathwise", 100),
                   ("score_function", 1), ("score_function", 10), ("score_function", 100),
                   ("score_function_baseline", 10), ("score_function_baseline", 100)]
    for r in rows:
        for key in ("mean", "variance", "analytic_variance", "bias_se", "stderr_of_mean"):
            assert isinstance(r[key], float) and math.isfinite(r[key])
        assert r["stderr_of_mean"] == pytest.approx(math.sqrt(r["variance"] / 300))
        assert abs(r["mean"] - data["true_gradient"]) < 4 * r["stderr_of_mean"]
    pw = {r["samples"]: r["analytic_variance"] for r in rows if r["estimator"] == "pathwise"}
    assert pw == {1: 4.0, 10: 0.4, 100: 0.04}
    sf1 = next(r for r in rows if r["estimator"] == "score_function" and r["samples"] == 1)
    assert sf1["analytic_variance"] == pytest.approx(0.5**4 + 14 * 0.5**2 + 15)


def test_samples_sorted_and_deduplicated(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["gradients", "--samples", "10,2,10", "--trials", "50", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["samples"] for r in rows if r["estimator"] == "pathwise"] == [2, 10]


def test_seed_reproducible(capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for _ in range(2):
        assert run_cli(["gradients", "--samples", "5", "--trials", "40", "--seed", "7",
                        "--json"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]


def test_plot_is_a_png_of_the_expected_size(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "variance.png"
    assert run_cli(["gradients", *FAST, "--plot", str(path)]) == 0
    assert str(path) in capsys.readouterr().out
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (int(PLOT_INCHES[0] * PLOT_DPI), int(PLOT_INCHES[1] * PLOT_DPI))
        im.verify()


def test_plot_with_json(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "v.png"
    assert run_cli(["gradients", "--samples", "2,20", "--trials", "50", "--plot", str(path),
                    "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["plot"] == str(path)
    assert path.stat().st_size > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--samples", "0"],
        ["--samples", "a"],
        ["--samples", "1,,10"],
        ["--samples", ""],
        ["--samples", "-3"],
        ["--samples", "20000000"],
        ["--trials", "-1"],
        ["--trials", "0"],
        ["--trials", "1"],
        ["--trials", "x"],
        ["--theta", "nan"],
        ["--theta", "inf"],
        ["--theta", "abc"],
        ["--seed", "-1"],
        ["--plot", "{tmp}/missing/dir/v.png"],
        ["--plot", "{tmp}/v.txt"],
        ["--plot", "{tmp}/adir.png"],
        ["--bogus"],
    ],
)
def test_bad_arguments(argv: list[str], tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "adir.png").mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run_cli(["gradients", *argv]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert len(err) == 1, cap.err
    # unknown options are reported by the top-level parser ("vaekit: error: ...")
    assert err[0].startswith(("vaekit gradients: error:", "vaekit: error:")), err[0]
    assert "Traceback" not in cap.err and cap.out == ""
    assert not [p for p in tmp_path.glob("**/*") if p.is_file()]  # nothing written
