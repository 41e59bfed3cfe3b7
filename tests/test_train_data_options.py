"""``vaekit train --image-size`` (a folder of images at another size) and ``--limit`` (a subset of a data set
drawn from a factor grid): what the run trains on, what evaluate reloads, and the refusals before anything is
written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cli_run import run_cli
from vaekit.evaluation.evaluator import load_run_data

TINY = ["--latent", "2", "--hidden", "8", "--epochs", "1", "--threads", "1", "--quiet"]


def _folder(path, n=24, size=12):
    rng = np.random.default_rng(0)
    path.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path / f"{i}.png")
    return path


def test_a_folder_of_images_trains_resized_and_evaluate_reloads_it_resized(tmp_path, capsys):
    images = _folder(tmp_path / "imgs")
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--dataset", f"images:{images}", "--image-size", "6", *TINY, "--out", str(run)],
                           capsys)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["image_size"] == 6
    model = json.loads((run / "model.json").read_text())
    assert tuple(model["shape"]) == (1, 6, 6)
    assert load_run_data(run, split="test").shape == (1, 6, 6)
    code, out, err = run_cli(["evaluate", str(run), "--k", "2", "--json"], capsys)
    assert code == 0, err


def test_limit_trains_on_a_subset_of_dsprites_and_evaluate_reloads_the_same_subset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--dataset", "dsprites", "--limit", "300", *TINY, "--batch-size", "64",
                            "--out", str(run)], capsys)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["limit"] == 300
    ds = load_run_data(run)
    assert len(ds.train) + len(ds.valid) + len(ds.test) == 300
    assert ds.factors.train.shape == (len(ds.train), 5)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.bits"))  # no cache of a subset


@pytest.mark.parametrize("flags, says", [
    (["--dataset", "digits", "--limit", "5"], "limit applies to the data sets drawn from a factor grid"),
    (["--dataset", "digits", "--image-size", "5"], "image_size resizes a folder of images"),
    (["--dataset", "dsprites", "--limit", "0"], "--limit"),
])
def test_the_options_where_they_do_not_apply_are_refused_before_a_run_folder_is_made(tmp_path, capsys, flags,
                                                                                     says):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", *flags, *TINY, "--out", str(run)], capsys)
    assert code == 2 and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not run.exists()
