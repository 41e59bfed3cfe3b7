"""A NaN loss stops ``vaekit train`` with one line naming the epoch and the step, exit status 2, and the
last good checkpoint kept (from which --resume continues exactly as an uninterrupted run)."""

from __future__ import annotations

import dataclasses
import math

import torch
from reliability_helpers import (
    STEPS_PER_EPOCH,
    TINY,
    assert_one_line_error,
    assert_same_tensors,
    epochs_done,
    metrics_without_time,
    run_cli,
    temp_files,
    tensors,
)

from vaekit.io import checkpoint as ckpt
from vaekit.objectives import base as train_module  # the objectives' ELBO, which the trainer's loss calls


def test_absurd_learning_rate_stops_at_the_first_nan_with_one_line(tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--lr", "1e30", "--out", str(run)])
    assert_one_line_error(code, err, "epoch 1, step", "--lr")
    assert not (run / ckpt.STATE_FILE).exists()  # nothing good to keep yet, and nothing bad written
    assert temp_files(run) == []


def test_nan_in_epoch_3_keeps_the_epoch_2_checkpoint_and_resume_recovers(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    assert run_cli(["train", *TINY, "--epochs", "4", "--out", str(reference)])[0] == 0
    after_2 = tmp_path / "after2"
    assert run_cli(["train", *TINY, "--epochs", "2", "--out", str(after_2)])[0] == 0

    # the loss of the 2nd training step of epoch 3 is NaN (validation runs without gradients: not counted)
    real_elbo, calls = train_module.elbo, {"n": 0}

    def elbo(*args, **kwargs):
        terms = real_elbo(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 2 * STEPS_PER_EPOCH + 2:
                terms = dataclasses.replace(terms, reconstruction=terms.reconstruction * math.nan)
        return terms

    monkeypatch.setattr(train_module, "elbo", elbo)
    run = tmp_path / "run"
    code, _, err = run_cli(["train", *TINY, "--epochs", "4", "--out", str(run)])
    assert_one_line_error(code, err, "epoch 3, step 2", "after epoch 2", "nan")
    monkeypatch.setattr(train_module, "elbo", real_elbo)

    assert epochs_done(run) == 2
    assert_same_tensors(tensors(run / ckpt.STATE_FILE), tensors(after_2 / ckpt.STATE_FILE), "kept checkpoint")
    assert_same_tensors(tensors(run / ckpt.MODEL_FILE), tensors(after_2 / ckpt.MODEL_FILE), "kept best model")
    assert all(torch.isfinite(t).all() for t in tensors(run / ckpt.MODEL_FILE).values())

    code, _, err = run_cli(["train", *TINY, "--epochs", "4", "--out", str(run), "--resume"])
    assert code == 0, err
    assert_same_tensors(tensors(run / ckpt.STATE_FILE), tensors(reference / ckpt.STATE_FILE), "resumed")
    assert metrics_without_time(run) == metrics_without_time(reference)
