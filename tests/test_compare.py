"""vaekit compare (runs side by side on one self-contained page) and vaekit sweep (one run per beta)."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from cli_run import run_cli
from headless import blank, needs_chromium, screenshot
from vaekit.config import TrainConfig
from vaekit.models import VAE
from vaekit.pages.compare import curve_limits, differing_settings, flatten
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = {"dataset": "digits", "hidden": [16], "latent": 4, "epochs": 2, "device": "cpu"}
TRAIN_FLAGS = ["--dataset", "digits", "--hidden", "16", "--latent", "4", "--epochs", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny digits runs: beta 1 and beta 0.5."""
    root = tmp_path_factory.mktemp("compare")
    for name, beta in (("beta-one", 1.0), ("beta-half", 0.5)):
        train(TrainConfig(**SIZE, beta=beta), root / name, progress=False)
    return root / "beta-one", root / "beta-half"


def _images(page: str) -> list[Image.Image]:
    out = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(Image.open(io.BytesIO(raw)))
    return out


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}")
    end = page.find("<h2>", start + 4)
    return page[start : end if end >= 0 else len(page)]


def test_compare_writes_one_self_contained_page(runs, tmp_path, capsys):
    out = tmp_path / "pages" / "cmp.html"
    code, stdout, err = run_cli(["compare", *map(str, runs), "--out", str(out), "--k", "20", "--n-samples", "16"],
                                capsys)
    assert code == 0, err
    assert stdout.strip() == str(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["cmp.html"]  # one file, no PNG files beside it
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # every src / href is an embedded image: nothing fetched, no path to a PNG file
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)', page)
    assert refs and all(r.startswith("data:image/png;base64,") for r in refs)
    assert 'src="http' not in page and not re.search(r"\w\.png\b", page)
    assert len(_images(page)) == 4  # curves, R-D plane, prior samples, the decoder on N(0, I)
    # one seed per setting and no disentanglement.json: no groups across seeds, no scores
    assert "Across seeds" not in page and "<h2>Disentanglement" not in page
    for needle in ("beta-one", "beta-half", "The rate-distortion plane", "Samples from each run's own prior",
                   "The decoder on z ~ N(0, I)", "NLL, importance sampled (K = 20)", "Training curves",
                   "valid beta-ELBO (beta = 0.5)"):
        assert needle in page, needle
    # the R-D table: R + D = -ELBO for each run, the numbers of the metrics table
    rd = _section(page, "The rate-distortion plane")
    assert rd.count("<tr>") == 3  # a header and one row per run


def test_json_metrics_match_vaekit_evaluate(runs, tmp_path, capsys):
    code, stdout, err = run_cli(["compare", *map(str, runs), "--out", str(tmp_path / "c.html"), "--k", "20",
                                 "--seed", "3", "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["k"] == 20 and result["page"] == str(tmp_path / "c.html")
    assert [r["name"] for r in result["runs"]] == ["beta-one", "beta-half"]
    assert result["groups"] == [] and all(r["mig"] is None for r in result["runs"])
    for run, got in zip(runs, result["runs"]):
        code, stdout, err = run_cli(["evaluate", str(run), "--json", "--k", "20", "--seed", "3"], capsys)
        assert code == 0, err
        want = json.loads(stdout)
        for key in ("elbo", "elbo_stderr", "nll", "nll_stderr", "rate", "rate_stderr", "distortion",
                    "distortion_stderr", "mutual_information", "mutual_information_stderr", "marginal_kl",
                    "marginal_kl_stderr", "active_units", "selected_by", "k", "n"):
            assert got[key] == want[key], key  # the same evaluation, the same seed: the same numbers
        assert got["rate"] + got["distortion"] == pytest.approx(-got["elbo"], abs=1e-9)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert got["epochs"] == 2 and got["train_seconds"] == pytest.approx(sum(r["seconds"] for r in rows))
        assert got["kept_epoch"] == max(r["epoch"] for r in rows if r["best"])


def test_the_settings_table_lists_only_differing_keys(runs, tmp_path, capsys):
    code, _, err = run_cli(["compare", *map(str, runs), "--out", str(tmp_path / "s.html"), "--k", "5"], capsys)
    assert code == 0, err
    section = _section((tmp_path / "s.html").read_text(), "Settings that differ")
    table = section[: section.index("<details>")]
    assert re.findall(r"<tr><td><code>([^<]+)</code>", table) == ["beta"]
    assert "model.hidden" in section[section.index("<details>"):]  # the shared ones, folded away
    # nested tables are flattened; a key one run lacks differs; hardware settings are left out
    a = {"beta": 1.0, "device": "cpu", "model": {"hidden": [16], "prior": {"name": "standard"}}}
    b = {"beta": 1.0, "device": "cuda", "model": {"hidden": [32], "prior": {"name": "standard", "components": 5}}}
    assert flatten(a) == {"beta": 1.0, "device": "cpu", "model.hidden": [16], "model.prior.name": "standard"}
    diff = differing_settings([a, b])
    assert list(diff) == ["model.hidden", "model.prior.components"]
    assert diff["model.hidden"] == [[16], [32]] and diff["model.prior.components"][1] == 5


def test_bad_input_is_one_line(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other-shape"
    VAE(shape=(1, 4, 4), latent=2, hidden=[8]).save(other)
    cases = [([str(runs[0]), str(empty)], "is not a vaekit run"),
             ([str(runs[0])], "at least 2 runs"),
             ([str(runs[0]), str(tmp_path / "missing")], "not found"),
             ([str(runs[0]), str(other)], "different shapes")]
    for argv, message in cases:
        code, stdout, err = run_cli(["compare", *argv, "--out", str(tmp_path / "bad.html"), "--k", "5"], capsys)
        assert code == 2 and stdout == "", argv
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "bad.html").exists()


def test_curves_are_clipped_above_a_bad_first_epoch():
    good = [-60.0, -50.0, -45.0, -44.0, -43.5, -43.0, -42.8, -42.6, -42.5, -42.4]
    lo, hi = curve_limits([[-5000.0, *good], [-4000.0, *(v - 3 for v in good)]])
    assert lo > -200 and hi > -42.4  # the first epochs leave the range, every later value is inside it
    assert lo < min(good) - 3
    assert curve_limits([]) is None


def test_sweep_trains_each_beta_writes_the_page_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--beta", "0.5,1", "--out", str(out), "--k", "5", "--n-samples", "4", "--quiet", "--",
            *TRAIN_FLAGS]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "beta 0.5: " in stdout and stdout.count("(trained, 2 epochs)") == 2
    page = (out / "compare.html").read_text()
    assert "beta-0.5" in page and "beta-1" in page and "The rate-distortion plane" in page
    cfg = json.loads((out / "beta-0.5" / "config.json").read_text())
    assert cfg["beta"] == 0.5 and cfg["model"]["hidden"] == [16] and cfg["epochs"] == 2
    weights = {b: (out / b / "model.safetensors").stat().st_mtime_ns for b in ("beta-0.5", "beta-1")}
    code, stdout, err = run_cli(argv, capsys)  # again: nothing to train
    assert code == 0, err
    assert stdout.count("(skipped, 2 epochs)") == 2 and "trained" not in stdout
    assert {b: (out / b / "model.safetensors").stat().st_mtime_ns for b in weights} == weights
    # more epochs: the runs are continued from their checkpoints, not started again
    more = [*argv[:-len(TRAIN_FLAGS)], *TRAIN_FLAGS[:-4], "--epochs", "3", "--device", "cpu"]
    code, stdout, err = run_cli(more, capsys)
    assert code == 0, err
    assert stdout.count("(resumed, 3 epochs)") == 2
    rows = [json.loads(line) for line in (out / "beta-1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    # other settings in the same folder are refused before any work
    code, stdout, err = run_cli([*argv, "--hidden", "8"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "other settings" in err, err
    code, _, err = run_cli([*argv, "--beta", "2"], capsys)
    assert code == 2 and "the sweep's own flag" in err and len(err.strip().splitlines()) == 1


def test_sweep_refuses_bad_betas(tmp_path, capsys):
    for betas, message in (("1", "at least 2"), ("1,1", "given twice"), ("1,-1", ">= 0")):
        code, _, err = run_cli(["sweep", "--beta", betas, "--out", str(tmp_path / "s"), "--", *TRAIN_FLAGS], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()


def test_an_autoencoder_has_no_density_but_a_distortion(runs, tmp_path, capsys):
    from vaekit.components import POSTERIORS

    if "delta" not in POSTERIORS.names():
        pytest.skip("no deterministic autoencoder (posterior delta) in this version")
    ae = tmp_path / "ae"
    train(TrainConfig(**SIZE, posterior="delta"), ae, progress=False)
    code, stdout, err = run_cli(["compare", str(runs[0]), str(ae), "--out", str(tmp_path / "ae.html"), "--k", "5",
                                 "--json"], capsys)
    assert code == 0, err
    got = {r["name"]: r for r in json.loads(stdout)["runs"]}
    assert got["ae"]["objective"] == "autoencoder"
    assert got["ae"]["elbo"] is None and got["ae"]["nll"] is None and got["ae"]["rate"] is None
    assert np.isfinite(got["ae"]["distortion"]) and got["ae"]["distortion_stderr"] > 0
    page = (tmp_path / "ae.html").read_text()
    assert "n/a, no density" in page and "The decoder on z ~ N(0, I)" in page and len(_images(page)) == 4


@needs_chromium("the page")
def test_the_page_renders_in_headless_chromium(runs, tmp_path, capsys):
    path = tmp_path / "cmp.html"
    code, _, err = run_cli(["compare", *map(str, runs), "--out", str(path), "--k", "5"], capsys)
    assert code == 0, err
    img = screenshot(path, tmp_path / "shot.png")
    assert img.size == (1200, 3000)
    assert not blank(img.crop((0, 0, 1200, 800))) and not blank(img.crop((0, 1200, 1200, 2400)))
