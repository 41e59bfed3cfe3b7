"""Checkpoint metadata, weights and metrics rows read back are validated (issue 16).

The crafted checkpoints here carry a valid checksum (``rewrite_checkpoint``), so only the schema checks
can refuse them: optimizer state of wrong types, a scheduler state with T_max 0, an impossible RNG state,
float8 weights. Metrics rows with nested objects, strings, 1e308 or NaN never crash ``read_metrics``,
the report or the training curves; class names with matplotlib mathtext never crash the latent scatter.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import (
    TINY,
    assert_one_line_error,
    copy_run,
    rewrite_checkpoint,
    run_cli,
    train_tiny_run,
    tree_state,
)

from vaekit.io import checkpoint as ckpt
from vaekit.io.runs import read_metrics

EVAL = ["--k", "2", "--limit", "10"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory, "schemas", "--lr-schedule", "cosine")


@pytest.fixture
def run(tmp_path, good_run):
    return copy_run(good_run, tmp_path)


def resume(run):
    return run_cli(["train", *TINY, "--epochs", "3", "--lr-schedule", "cosine", "--out", str(run), "--resume"])


def _optimizer(edit):
    def change(ts, meta):
        m = json.loads(meta["optimizer"])
        edit(m)
        meta["optimizer"] = json.dumps(m)
    return change


def _scheduler(edit):
    def change(ts, meta):
        p = json.loads(meta["progress"])
        edit(p["scheduler"])
        meta["progress"] = json.dumps(p)
    return change


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _group(key, value):
    return lambda m: m["param_groups"][0].__setitem__(key, value)


def _rng(make):
    def change(ts, meta):
        ts["rng.torch"] = make(ts["rng.torch"])
    return change


BAD_CHECKPOINTS = {
    "param_groups a string": _optimizer(_set("param_groups", "abc")),
    "param_groups a list of numbers": _optimizer(_set("param_groups", [1, 2])),
    "lr a string": _optimizer(_group("lr", "0.001")),
    "lr negative": _optimizer(_group("lr", -1.0)),
    "lr a list": _optimizer(_group("lr", [0.1])),
    "betas a string": _optimizer(_group("betas", "ab")),
    "eps an object": _optimizer(_group("eps", {"a": 1})),
    "params not numbers": _optimizer(_group("params", ["a"])),
    "scalars not numbers": _optimizer(_set("scalars", {"0": {"step": "x"}})),
    "scheduler T_max 0": _scheduler(_set("T_max", 0)),
    "scheduler T_max a string": _scheduler(_set("T_max", "5")),
    "scheduler last_epoch a float": _scheduler(_set("last_epoch", 1.5)),
    "scheduler base_lrs a string": _scheduler(_set("base_lrs", "x")),
    "scheduler eta_min an object": _scheduler(_set("eta_min", {"a": 1})),
    "rng zeros": _rng(torch.zeros_like),
    "rng too short": _rng(lambda t: t[:100].clone()),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_a_checkpoint_with_bad_metadata_is_refused_in_one_line(run, case):
    rewrite_checkpoint(run / ckpt.STATE_FILE, BAD_CHECKPOINTS[case])
    before = tree_state(run)
    code, _, err = resume(run)
    assert_one_line_error(code, err, "checkpoint.safetensors")
    assert tree_state(run) == before, "a refused resume changed the run"


def test_the_untouched_checkpoint_still_resumes(run):
    rewrite_checkpoint(run / ckpt.STATE_FILE, lambda ts, meta: None)
    code, _, err = resume(run)
    assert code == 0, err


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2, torch.complex64])
@pytest.mark.parametrize("name", [ckpt.MODEL_FILE, ckpt.STATE_FILE])
def test_weights_of_an_unexpected_dtype_are_refused(run, dtype, name):
    def to_dtype(ts, meta):
        key = next(k for k in sorted(ts) if ts[k].is_floating_point() and not k.startswith("rng."))
        ts[key] = ts[key].to(dtype)

    rewrite_checkpoint(run / name, to_dtype)
    before = tree_state(run)
    code, _, err = resume(run) if name == ckpt.STATE_FILE else run_cli(["evaluate", str(run), *EVAL])
    assert_one_line_error(code, err, name, "dtype")
    assert tree_state(run) == before


# -- metrics rows -------------------------------------------------------------------------------------

BAD_ROWS = ['{"epoch": 3, "train_elbo": {"nested": 1}}', '{"epoch": 3, "train_elbo": "high"}',
            '{"epoch": 3, "train_elbo": 1e308, "valid_elbo": -1e308}', '{"epoch": "3", "train_elbo": 1.0}',
            '{"epoch": 3, "train_elbo": 1' + "0" * 400 + "}", '{"epoch": {"a": 1}}', '{"epoch": [1]}',
            '{"epoch": true}', '[1, 2]', '"text"', '{"epoch": 1e308}', "[" * 5000, '{"epoch": 3, "kl": [1, 2]}']


def test_read_metrics_skips_malformed_rows(run):
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write("\n".join(BAD_ROWS) + "\n")
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]


def test_nan_metrics_of_a_diverged_epoch_are_kept(run):
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "train_elbo": NaN, "valid_elbo": -Infinity, "best": false}\n')
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3]


def test_the_report_survives_bad_metrics_rows(run, tmp_path):
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write("\n".join(BAD_ROWS) + "\n")
    code, _, err = run_cli(["report", str(run), "--k", "2", "--limit", "4", "--out", str(tmp_path / "r.html")])
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "training curves" in page and f"{len(BAD_ROWS)} unreadable lines" in page


_value = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                   st.text(max_size=5), st.lists(st.integers(), max_size=2),
                   st.dictionaries(st.text(max_size=2), st.integers(), max_size=2), st.just(10**400))


@settings(max_examples=12, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.dictionaries(st.sampled_from(["epoch", "train_elbo", "valid_elbo", "train_kl",
                                                  "valid_reconstruction"]), _value, max_size=5), max_size=6))
def test_training_curves_never_crash_on_any_rows(rows):
    """Rows as any JSON could give them (also what read_metrics would skip): never an exception."""
    from vaekit.pages import viz

    png = viz.figure_png(viz.training_curves_figure(rows), dpi=10)
    assert png.startswith(b"\x89PNG")


# -- class names with mathtext ------------------------------------------------------------------------


@pytest.mark.parametrize("names", [["$^$", "$\\frac{$", "a$b"], ["$x$", "$$", "\\$"], ["$" * 3, "_^", "{}"]])
def test_latent_scatter_legend_survives_mathtext_class_names(names):
    from vaekit.models import VAE
    from vaekit.pages import viz

    torch.manual_seed(0)
    model = VAE(shape=(1, 4, 4), latent=2, hidden=(8,))
    x = torch.rand(12, 1, 4, 4)
    labels = torch.arange(12) % 3
    png = viz.figure_png(viz.latent_scatter_figure(model, x, labels, class_names=names))
    assert png.startswith(b"\x89PNG")
