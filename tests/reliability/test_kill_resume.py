"""SIGKILL at any moment loses nothing: the last checkpoint always loads, ``--resume`` continues from it,
and with a fixed seed the resumed run ends with exactly (bit for bit) the weights of an uninterrupted run.

Each killed run is a real ``python -m vaekit``-like subprocess (tests/reliability/kill_runner.py), killed
by SIGKILL at deterministic points (half-way through writing the temporary file of a checkpoint, just
before its rename, in the middle of an epoch) and at a random moment chosen by the parent. The
uninterrupted reference runs in this process with the same flags (--threads 1, same seed).
"""

from __future__ import annotations

import random
import signal
import time

import pytest
from reliability_helpers import (
    STEPS_PER_EPOCH,
    TINY,
    assert_one_line_error,
    assert_same_tensors,
    epochs_done,
    metadata,
    metrics_without_time,
    popen,
    run_cli,
    spawn,
    temp_files,
    tensors,
)

from vaekit.io import checkpoint as ckpt

EPOCHS = 6


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of EPOCHS epochs: its checkpoint and best-model tensors and metrics."""
    run = tmp_path_factory.mktemp("reference") / "run"
    code, _, err = run_cli(["train", *TINY, "--epochs", str(EPOCHS), "--out", str(run)])
    assert code == 0, err
    return {"state": tensors(run / ckpt.STATE_FILE), "model": tensors(run / ckpt.MODEL_FILE),
            "metrics": metrics_without_time(run)}


def assert_killed(proc, what: str) -> None:
    assert proc.returncode == -signal.SIGKILL, f"{what}: expected death by SIGKILL, got {proc.returncode}: " \
                                               f"{proc.stderr[-2000:]}"


def assert_loadable(run) -> int:
    """The checkpoint left behind parses, is a vaekit training state, and holds whole epochs."""
    meta = metadata(run / ckpt.STATE_FILE)
    assert meta["kind"] == "training-state"
    tensors(run / ckpt.STATE_FILE)
    tensors(run / ckpt.MODEL_FILE)
    return epochs_done(run)


def test_sigkill_at_many_points_then_resume_matches_an_uninterrupted_run(tmp_path, reference):
    run = tmp_path / "run"
    argv = ["train", *TINY, "--epochs", str(EPOCHS), "--out", str(run)]

    # 1. killed half-way through writing the temporary file of the 3rd checkpoint
    proc = spawn(argv, VAEKIT_KILL_WRITE=f"{ckpt.STATE_FILE}:3:half")
    assert_killed(proc, "kill during the checkpoint write")
    assert assert_loadable(run) == 2
    stale = temp_files(run)
    assert [p.name.startswith(f".{ckpt.STATE_FILE}.") for p in stale] == [True]  # the half-written temp file

    # 2. resumed, killed half-way through writing model.safetensors (best weights after epoch 3)
    proc = spawn([*argv, "--resume"], VAEKIT_KILL_WRITE=f"{ckpt.MODEL_FILE}:1:half")
    assert_killed(proc, "kill during the model write")
    assert assert_loadable(run) == 2
    assert not any(p in temp_files(run) for p in stale), "the stale temp file of the killed write was not removed"

    # 3. resumed, killed with the 2nd checkpoint's temporary file complete but not yet renamed
    proc = spawn([*argv, "--resume"], VAEKIT_KILL_WRITE=f"{ckpt.STATE_FILE}:2:rename")
    assert_killed(proc, "kill before the rename")
    assert assert_loadable(run) == 3

    # 4. resumed, killed in the middle of the second epoch it trains
    proc = spawn([*argv, "--resume"], VAEKIT_KILL_STEP=str(STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2))
    assert_killed(proc, "kill mid-epoch")
    assert assert_loadable(run) == 4

    # 5. resumed to the end: exactly the uninterrupted run, nothing duplicated or lost in the metrics
    code, _, err = run_cli([*argv, "--resume"])
    assert code == 0, err
    assert_same_tensors(tensors(run / ckpt.STATE_FILE), reference["state"], "checkpoint")
    assert_same_tensors(tensors(run / ckpt.MODEL_FILE), reference["model"], "best model")
    assert metrics_without_time(run) == reference["metrics"]
    assert temp_files(run) == []


def test_a_second_run_is_refused_while_the_first_runs_and_a_random_sigkill_loses_nothing(tmp_path):
    """A real first process trains; a second one (this process) on the same --out is refused with one
    line and changes nothing; then the first is killed at a random moment and resumed."""
    run = tmp_path / "run"
    argv = ["train", *TINY, "--epochs", "100000", "--out", str(run)]
    first = popen(argv)
    try:
        deadline = time.monotonic() + 120
        while not (run / ckpt.STATE_FILE).exists():
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the first run wrote no checkpoint in 120 s"
            time.sleep(0.05)
        config_before = (run / "config.json").read_bytes()
        for extra in ([], ["--resume"]):
            code, _, err = run_cli([*argv, *extra])
            assert_one_line_error(code, err, "in use by another vaekit run", f"pid {first.pid}")
        assert (run / "config.json").read_bytes() == config_before
        assert first.poll() is None, "the refused second run disturbed the first"

        # kill the first at a random moment within ~one to ten epochs after a checkpoint write
        mtime = (run / ckpt.STATE_FILE).stat().st_mtime_ns
        while (run / ckpt.STATE_FILE).stat().st_mtime_ns == mtime:
            assert first.poll() is None and time.monotonic() < deadline, "the first run stopped writing checkpoints"
            time.sleep(0.005)
        time.sleep(random.Random(20261125).uniform(0.0, 0.5))
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == -signal.SIGKILL
    done = assert_loadable(run)
    assert done >= 2

    # the lock died with the process: resume one more epoch, and compare with an uninterrupted run
    code, _, err = run_cli(["train", *TINY, "--epochs", str(done + 1), "--out", str(run), "--resume"])
    assert code == 0, err
    fresh = tmp_path / "fresh"
    code, _, err = run_cli(["train", *TINY, "--epochs", str(done + 1), "--out", str(fresh)])
    assert code == 0, err
    assert_same_tensors(tensors(run / ckpt.STATE_FILE), tensors(fresh / ckpt.STATE_FILE), "checkpoint")
    assert metrics_without_time(run) == metrics_without_time(fresh)
