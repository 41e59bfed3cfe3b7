"""The report of a run on data with known factors: the heat map of I(z_j; v_k), the traversals labelled by factor,
the scores that ``vaekit evaluate --disentanglement`` keeps in ``RUN/disentanglement.json``; none of it for a run
without factors."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

import vaekit
from cli_run import run_cli
from vaekit.data import load_dataset
from vaekit.data.dsprites import load_dsprites
from vaekit.errors import CheckpointError
from vaekit.evaluation import disentanglement as ed
from vaekit.evaluation import load_model
from vaekit.pages.report import write_report

pytestmark = pytest.mark.usefixtures("single_thread")

FACTORS = ("shape", "scale", "orientation", "x", "y")


@pytest.fixture(scope="module")
def ds():
    return load_dsprites(limit=600, seed=0, cache=False)  # 480 / 60 / 60 images of the grid, with their factors


@pytest.fixture(scope="module")
def run(tmp_path_factory, ds):
    out = tmp_path_factory.mktemp("factors") / "run"
    model = vaekit.VAE(shape=(1, 64, 64), latent=4, hidden=[64])
    vaekit.fit(model, ds, out=out, epochs=2, seed=0, progress=False)
    return out


def _section(page: str) -> str:
    start = page.index("<h2>Disentanglement</h2>")
    return page[start: page.index("<h2>", start + 1)]


def _images(html: str) -> dict[str, Image.Image]:
    found = re.findall(r'alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return {alt: Image.open(io.BytesIO(base64.b64decode(data))) for alt, data in found}


def test_the_unit_factor_information_is_a_mutual_information_in_nats(run, ds):
    model = load_model(run, "cpu")
    info = ed.unit_factor_information(model, ds, points=300, seed=0)
    assert info.matrix.shape == (4, 5) and info.factor_names == FACTORS and info.points == 300 and info.bins == 20
    # 0 <= I(z_j; v_k) <= H(v_k): the plug-in estimates obey the bounds of the true quantities exactly
    assert (info.matrix >= 0).all() and (info.matrix <= info.factor_entropy + 1e-9).all()
    assert info.factor_entropy[0] == pytest.approx(np.log(3), abs=0.05)  # shape: 3 near-equally frequent classes
    again = ed.unit_factor_information(model, ds, points=300, seed=0)
    np.testing.assert_array_equal(info.matrix, again.matrix)  # the subset is fixed by the seed
    kept = ed.UnitFactorInformation.from_summary(json.loads(json.dumps(info.summary())))
    np.testing.assert_array_equal(kept.matrix, info.matrix)  # what disentanglement.json holds reads back
    assert (kept.factor_names, kept.points, kept.split, kept.seed) == (FACTORS, 300, "train", 0)
    assert ed.UnitFactorInformation.from_summary({**info.summary(), "factor_names": ["shape"]}) is None
    test = ed.unit_factor_information(model, ds, split="test", seed=0)
    assert test.points == 60 and test.split == "test" and test.matrix.shape == (4, 5)


def test_the_report_shows_the_heat_map_and_traversals_labelled_by_factor(run, ds):
    (run / ed.SCORES_FILE).unlink(missing_ok=True)  # not scored yet
    page = write_report(run, k=2, dataset=ds).read_text()
    section = _section(page)
    images = _images(section)
    assert set(images) == {"mutual information of units and factors", "traversals by factor"}
    assert "in nats, not normalised" in section and "480 train images" in section
    for name in FACTORS:  # the heat map's columns, with their entropies, are named in its picture's caption
        assert name in section
    labels = re.findall(r"z_(\d): (shape|scale|orientation|x|y) \((\d\.\d\d) nats\)", section)
    assert labels and len({unit for unit, _, _ in labels}) == len(labels)  # one traversal per active unit
    active = int(re.search(r"the (\d) active units of 4", section).group(1))
    assert len(labels) == active
    assert "vaekit evaluate" in section and "--disentanglement" in section  # no scores yet: how to get them
    assert "<table><tr><th>score</th>" not in section


def test_evaluate_keeps_its_result_and_the_report_shows_the_scores(run, ds, monkeypatch, capsys):
    from vaekit.evaluation import evaluator

    # the small data set in place of the full grid; the scorers stand in for the real ones (whose answers
    # test_disentanglement.py checks and which take tens of seconds even on this subset): this is the plumbing
    monkeypatch.setattr(evaluator, "_load_dataset", lambda *args, **kwargs: ds)

    def scores(model, data, split="test", seed=0):
        assert data is ds and split == "test"
        out = {name: 0.1 * (i + 1) for i, name in enumerate(ed.SCORES)}
        out = {**out, **{f"{name}_stderr": 0.01 for name in ed.SCORES}}
        return {**out, "beta_vae_score": None, "beta_vae_score_stderr": None}

    monkeypatch.setattr(ed, "disentanglement_scores", scores)
    code, out, err = run_cli(["evaluate", str(run), "--disentanglement", "--k", "2", "--surgery-samples", "0",
                              "--json", "--quiet"], capsys)
    assert code == 0, err
    printed = json.loads(out.strip().splitlines()[-1])
    saved = json.loads((run / ed.SCORES_FILE).read_text())
    assert saved == printed  # the file holds what --json prints
    for name in ed.SCORES:
        assert name in saved and f"{name}_stderr" in saved
    assert saved["beta_vae_score"] is None and saved["mig"] == pytest.approx(0.3) and saved["mig_stderr"] == 0.01
    assert saved["factor_names"] == list(FACTORS) and np.array(saved["unit_factor_information"]).shape == (4, 5)
    assert saved["unit_factor_information_points"] == 480 and "nll" in saved and saved["split"] == "test"

    section = _section(write_report(run, k=2, dataset=ds).read_text())
    assert "<table><tr><th>score</th>" in section
    assert "<td>mig</td><td class='num'>0.300 &plusmn; 0.010</td>" in section
    assert re.search(r"<td>beta_vae_score</td><td class='num'>n/a</td>", section)
    assert "No scores yet" not in section
    assert "kept it in disentanglement.json" in section  # the heat map is the saved one, not computed again


def test_evaluate_never_writes_its_result_through_a_link(run, tmp_path, capsys):
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    link = run / ed.SCORES_FILE
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    try:
        code, _, err = run_cli(["evaluate", str(run), "--disentanglement", "--k", "2", "--quiet"], capsys)
        assert code == 2 and "symbolic link" in err and len(err.strip().splitlines()) == 1
        assert target.read_text() == "{}"
        with pytest.raises(CheckpointError, match="symbolic link"):
            ed.read_scores(run)
    finally:
        link.unlink()


def test_a_run_without_factors_has_no_disentanglement_section(tmp_path):
    data = load_dataset("digits", binarize="dynamic")
    assert data.factors is None
    run = tmp_path / "digits"
    vaekit.fit(vaekit.VAE(shape=data.shape, latent=2, hidden=[16]), data, out=run, epochs=1, progress=False)
    page = write_report(run, k=2).read_text()  # the data set as the run's config names it
    assert "Latent traversals" in page and "Disentanglement" not in page and "I(z_j; v_k)" not in page
