"""A full disk or a read-only output directory: one clear line, exit status 2, no traceback, and the
previous checkpoint intact (so that ``--resume`` later continues as if nothing had happened).

The faults are simulated in-process (reliability_helpers.disk_full / read_only): the suite runs as
root, for whom a chmod-read-only directory is still writable. ``disk_full`` lets half of a write reach
the file and then raises ENOSPC, as a disk that fills up mid-write does.
"""

from __future__ import annotations

import errno
import os
import shutil

import pytest
from reliability_helpers import (
    TINY,
    assert_one_line_error,
    assert_same_tensors,
    disk_full,
    metrics_without_time,
    read_only,
    run_cli,
    temp_files,
    tensors,
)

from vaekit.io import checkpoint as ckpt

FILES = (ckpt.STATE_FILE, ckpt.MODEL_FILE, ckpt.MODEL_CONFIG, "config.json", "metrics.jsonl")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished 2-epoch run (to extend) and an uninterrupted 3-epoch run (what extending must give)."""
    root = tmp_path_factory.mktemp("disk")
    for epochs in (2, 3):
        code, _, err = run_cli(["train", *TINY, "--epochs", str(epochs), "--out", str(root / f"e{epochs}")])
        assert code == 0, err
    return root


def snapshot(run):
    return {name: (run / name).read_bytes() for name in FILES if (run / name).exists()}


def extend(run):
    return run_cli(["train", *TINY, "--epochs", "3", "--out", str(run), "--resume"])


def assert_extends_like_the_uninterrupted_run(run, runs):
    code, _, err = extend(run)
    assert code == 0, err
    assert_same_tensors(tensors(run / ckpt.STATE_FILE), tensors(runs / "e3" / ckpt.STATE_FILE), "checkpoint")
    assert_same_tensors(tensors(run / ckpt.MODEL_FILE), tensors(runs / "e3" / ckpt.MODEL_FILE), "model")
    assert metrics_without_time(run) == metrics_without_time(runs / "e3")
    assert temp_files(run) == []


@pytest.mark.parametrize("target", [ckpt.STATE_FILE, ckpt.MODEL_FILE, ckpt.MODEL_CONFIG, "metrics.jsonl"])
def test_disk_full_while_writing_keeps_the_previous_checkpoint(tmp_path, runs, monkeypatch, target):
    run = tmp_path / "run"
    shutil.copytree(runs / "e2", run)
    before = snapshot(run)
    with disk_full(monkeypatch, run, names=(target,)):
        code, _, err = extend(run)
    assert_one_line_error(code, err, "No space left on device", target)
    after = snapshot(run)
    assert after[ckpt.STATE_FILE] == before[ckpt.STATE_FILE], "the last checkpoint was changed"
    if target in (ckpt.MODEL_FILE, "metrics.jsonl"):  # written before the best weights (the others after)
        assert after[ckpt.MODEL_FILE] == before[ckpt.MODEL_FILE]
    assert temp_files(run) == [], "a failed atomic write left its temporary file"
    # space is back: --resume continues as if nothing had happened (a cut metrics line is dropped)
    assert_extends_like_the_uninterrupted_run(run, runs)


@pytest.mark.parametrize("code_", [errno.EROFS, errno.EACCES])
def test_read_only_run_directory(tmp_path, runs, monkeypatch, code_):
    run = tmp_path / "run"
    shutil.copytree(runs / "e2", run)
    (run / f".{ckpt.STATE_FILE}.x.tmp").write_bytes(b"half")  # left by a killed write
    before = snapshot(run)
    with read_only(monkeypatch, tmp_path, code_):
        code, _, err = extend(run)
        assert_one_line_error(code, err, "could not write", os.strerror(code_))
        code, _, err = run_cli(["train", *TINY, "--epochs", "1", "--out", str(tmp_path / "new")])
        assert_one_line_error(code, err, "cannot create the run directory", os.strerror(code_))
    assert snapshot(run) == before
    assert not (tmp_path / "new").exists()
    assert_extends_like_the_uninterrupted_run(run, runs)


def test_read_only_existing_empty_out_directory(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    with read_only(monkeypatch, out):
        code, _, err = run_cli(["train", *TINY, "--epochs", "1", "--out", str(out)])
    assert_one_line_error(code, err, "Read-only file system", str(out))
    assert list(out.iterdir()) == []


def test_disk_full_while_writing_the_report_or_the_samples_keeps_the_previous_file(tmp_path, runs, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(runs / "e2", run)
    for name, argv in (("report.html", ["report", str(run), "--k", "2", "--limit", "10"]),
                       ("samples.png", ["sample", str(run), "-n", "4"])):
        (run / name).write_bytes(b"the previous " + name.encode())
        with disk_full(monkeypatch, run, names=(name,)):
            code, _, err = run_cli(argv)
        assert_one_line_error(code, err, "No space left on device", name, status_lines=True)
        assert (run / name).read_bytes() == b"the previous " + name.encode(), f"{name} was destroyed"
        assert temp_files(run) == []
        code, _, err = run_cli(argv)  # space is back
        assert code == 0, err
        assert (run / name).read_bytes() != b"the previous " + name.encode()
