"""The run-folder contract and the trainer's own faults (issue 16).

- ``train --out`` takes only a new or empty folder or a vaekit run (marked by ``RUN/.vaekit-run``, written
  first and atomically); a foreign folder, a finished or inconsistent run and the current folder by accident
  are refused in one line with nothing written; ``--overwrite`` removes the run's own files and nothing else;
  runs written before the marker still resume.
- ``--resume`` keeps the run's precision and eval batch size unless they are given again on purpose.
- A run with no validation split that diverges never keeps weights that are not finite and bounded.
- ``--compile`` with a partial last batch; a compiler that fails is one line.
- ``--k`` too large for memory is refused before any work.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import (
    TINY,
    assert_one_line_error,
    assert_same_tensors,
    copy_run,
    metrics_without_time,
    run_cli,
    tensors,
    tree_bytes,
)

import vaekit
from vaekit import train as train_module
from vaekit.errors import CheckpointError, ConfigError
from vaekit.io import checkpoint as ckpt
from vaekit.io import contract

MARKER = ".vaekit-run"


def train(out, *extra: str) -> tuple[int, str, str]:
    return run_cli(["train", *TINY, "--epochs", "1", *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def finished_once(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    assert train(run)[0] == 0
    return run


@pytest.fixture
def finished(tmp_path, finished_once) -> Path:
    """A finished one-epoch run: a private copy for each test (trained once for the module)."""
    return copy_run(finished_once, tmp_path)


# -- the marker --------------------------------------------------------------------------------


def test_a_new_run_carries_the_marker_written_before_any_other_file(tmp_path, monkeypatch):
    run = tmp_path / "run"
    seen = []
    real = ckpt.atomic_write_bytes

    def spy(path, data):
        seen.append((Path(path).name, (Path(path).parent / MARKER).is_file()))
        return real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", spy)
    assert train(run)[0] == 0
    assert seen and all(marked for _, marked in seen), seen  # config.json, model, checkpoint: all after it
    marker = json.loads((run / MARKER).read_text())
    assert marker["format"] == contract.MARKER_FORMAT and "created" in marker
    assert not list(run.glob(f".{MARKER}.*"))  # no temporary file left


def test_the_marker_write_follows_no_link(tmp_path):
    """A link planted as the marker (or as its temporary name) is replaced, never written through."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER).symlink_to(victim)
    (run / f".{MARKER}.{os.getpid()}.tmp").symlink_to(victim)
    contract.write_marker(run)
    assert victim.read_text() == "precious"
    assert not (run / MARKER).is_symlink()
    assert contract.read_marker(run) is not None
    (run / MARKER).unlink()
    (run / MARKER).symlink_to(victim)
    assert contract.read_marker(run) is None  # a link is never read as a marker


# -- folders that are not vaekit's ----------------------------------------------------------


def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("mine")
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "mine": true}\n')  # a name vaekit uses, not its file
    before = tree_bytes(folder)
    code, _, err = train(folder)
    assert_one_line_error(code, err, "not a vaekit run", "holiday.png", "--out")
    assert tree_bytes(folder) == before  # not even a lock or a marker


def test_fit_refuses_a_folder_of_other_files(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "data.csv").write_text("1,2,3\n")
    before = tree_bytes(folder)
    model = vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=[8])
    with pytest.raises(CheckpointError, match="not a vaekit run"):
        vaekit.fit(model, torch.rand(20, 1, 4, 4).round(), out=folder, epochs=1, batch_size=10, progress=False)
    assert tree_bytes(folder) == before


def test_out_empty_is_refused_and_the_current_folder_is_never_written_by_accident(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "thesis.tex").write_text("chapter 1")
    monkeypatch.chdir(cwd)
    before = tree_bytes(cwd)
    for out in ("", ".", "./"):
        code, _, err = train(out)
        assert_one_line_error(code, err, "--out")
        assert tree_bytes(cwd) == before, out
    assert "current folder" in train(".")[2]


def test_an_empty_current_folder_may_be_the_run(tmp_path, monkeypatch):
    cwd = tmp_path / "empty"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert train(".")[0] == 0
    assert (cwd / MARKER).is_file() and (cwd / ckpt.STATE_FILE).is_file()


# -- finished and inconsistent runs -------------------------------------------------------------


def test_a_finished_run_is_not_taken_over(finished):
    before = tree_bytes(finished)
    code, _, err = train(finished, "--hidden", "32")
    assert_one_line_error(code, err, "--resume", "--overwrite")
    assert tree_bytes(finished) == before


@pytest.mark.parametrize("flags", [[], ["--resume"]])
def test_a_run_whose_checkpoint_was_deleted_is_refused_without_overwrite(finished, flags):
    """The probe's case: the best model and metrics were replaced by another architecture, exit 0."""
    (finished / ckpt.STATE_FILE).unlink()
    before = tree_bytes(finished)
    code, _, err = train(finished, "--hidden", "32", *flags)
    assert_one_line_error(code, err, "--overwrite")
    assert tree_bytes(finished) == before


def test_overwrite_starts_afresh_and_removes_only_the_runs_own_files(finished, tmp_path):
    (finished / ckpt.STATE_FILE).unlink()
    (finished / "report.html").write_text("<html>kept</html>")
    (finished / "my-notes.txt").write_text("kept")
    code, _, err = train(finished, "--hidden", "32", "--overwrite")
    assert code == 0, err
    assert (finished / "report.html").read_text() == "<html>kept</html>"
    assert (finished / "my-notes.txt").read_text() == "kept"
    assert json.loads((finished / "config.json").read_text())["model"]["hidden"] == [32]
    reference = tmp_path / "reference"
    assert train(reference, "--hidden", "32")[0] == 0
    assert_same_tensors(tensors(finished / ckpt.STATE_FILE), tensors(reference / ckpt.STATE_FILE), "afresh")
    assert metrics_without_time(finished) == metrics_without_time(reference)


def test_resume_and_overwrite_together_are_refused(finished):
    before = tree_bytes(finished)
    code, _, err = train(finished, "--resume", "--overwrite")
    assert_one_line_error(code, err, "not both")
    assert tree_bytes(finished) == before


def test_a_run_written_before_the_marker_still_resumes_and_gets_the_marker(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "old"
    assert run_cli(["train", *TINY, "--epochs", "2", "--out", str(reference)])[0] == 0
    assert train(run)[0] == 0
    (run / MARKER).unlink()  # as vaekit wrote runs before the marker
    (run / ".lock").unlink()
    before = tree_bytes(run)
    code, _, err = train(run)  # without --resume: still a run, still refused
    assert_one_line_error(code, err, "--resume")
    assert tree_bytes(run) == before
    assert run_cli(["train", *TINY, "--epochs", "2", "--resume", "--out", str(run)])[0] == 0
    assert contract.read_marker(run) is not None
    assert_same_tensors(tensors(run / ckpt.STATE_FILE), tensors(reference / ckpt.STATE_FILE), "resumed old run")


_NAMES = st.sampled_from([*contract.RUN_FILES, MARKER, ".lock", "notes.txt", "a.png", ".hidden", "sub/x.txt"])


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(names=st.sets(_NAMES, max_size=5), marker_ok=st.booleans(), flag=st.sampled_from(["", "--resume",
                                                                                         "--overwrite"]))
def test_random_folders_either_refused_untouched_or_others_files_kept(tmp_path_factory, names, marker_ok, flag):
    """Any mix of vaekit's names, other files and a marker: exit 2 with one line and not a byte changed, or
    exit 0 with every file that is not the run's own unchanged and a vaekit run left behind."""
    folder = tmp_path_factory.mktemp("f") / "out"
    folder.mkdir()
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if name == MARKER and marker_ok:
            contract.write_marker(folder)
        else:
            (folder / name).write_bytes(b"not vaekit's " + name.encode())
    before = tree_bytes(folder)
    code, _, err = train(folder, *([flag] if flag else []))
    if code != 0:
        assert_one_line_error(code, err)
        assert tree_bytes(folder) == before
        return
    after = tree_bytes(folder)
    own = {*contract.RUN_FILES, MARKER, ".lock"}
    assert {k: v for k, v in before.items() if k not in own} == {k: v for k, v in after.items() if k not in own}
    assert contract.read_marker(folder) is not None
    foreign = [n for n in names if n not in own]
    assert not foreign or marker_ok and MARKER in names  # other files only ever in a vaekit run


# -- resume restores the run's arithmetic -------------------------------------------------------


def test_resume_keeps_the_runs_precision_and_eval_batch_size(tmp_path):
    arith = ["--precision", "bf16", "--eval-batch-size", "7"]
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert run_cli(["train", *TINY, *arith, "--epochs", "2", "--out", str(reference)])[0] == 0
    assert run_cli(["train", *TINY, *arith, "--epochs", "1", "--out", str(run)])[0] == 0
    code, _, err = run_cli(["train", *TINY, "--epochs", "2", "--resume", "--out", str(run)])  # flags not repeated
    assert code == 0, err
    assert err == ""  # nothing changed, nothing to say
    assert_same_tensors(tensors(run / ckpt.STATE_FILE), tensors(reference / ckpt.STATE_FILE), "resumed bf16 run")
    assert metrics_without_time(run) == metrics_without_time(reference)
    saved = json.loads((run / "config.json").read_text())
    assert saved["precision"] == "bf16" and saved["eval_batch_size"] == 7


def test_resume_with_another_precision_on_purpose_says_so_in_one_line(tmp_path):
    run = tmp_path / "run"
    assert run_cli(["train", *TINY, "--precision", "bf16", "--epochs", "1", "--out", str(run)])[0] == 0
    code, _, err = run_cli(["train", *TINY, "--precision", "fp32", "--epochs", "2", "--resume", "--out", str(run)])
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--precision fp32 instead of the run's bf16" in lines[0], err


# -- divergence with no validation split ----------------------------------------------------------


def _no_valid_data() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(64, 1, 4, 4, generator=gen) > 0.5).float()


def _model() -> vaekit.VAE:
    torch.manual_seed(1)
    return vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=[8])


def _assert_sound_files(run: Path) -> None:
    for name in (ckpt.STATE_FILE, ckpt.MODEL_FILE):
        if (run / name).exists():
            for key, t in tensors(run / name).items():
                if t.is_floating_point() and not key.startswith("optim."):
                    assert bool(torch.isfinite(t).all()) and float(t.abs().max()) < train_module.WEIGHT_LIMIT, key


def test_a_huge_lr_without_validation_keeps_no_absurd_weights_and_says_so(tmp_path):
    """One step an epoch: Adam's first step with lr 1e30 moves every weight by ~1e30, the loss of that step
    was still finite; such weights used to be saved as the kept best model."""
    run = tmp_path / "run"
    with pytest.raises(train_module.TrainingDiverged) as info:
        vaekit.fit(_model(), _no_valid_data(), out=run, epochs=3, batch_size=64, lr=1e30, progress=False)
    message = str(info.value)
    assert "after epoch 1" in message and "no checkpoint had been written" in message, message
    _assert_sound_files(run)
    assert not (run / ckpt.STATE_FILE).exists()


def test_divergence_without_validation_keeps_the_last_finite_checkpoint(tmp_path):
    """Weights blown up after epoch 2 (a bias of 1e20, finite loss): epoch 3 is not saved; the message names
    epoch 2, whose checkpoint and kept model hold finite weights (those of a plain 2-epoch run)."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    vaekit.fit(_model(), _no_valid_data(), out=reference, epochs=2, batch_size=16, lr=1e-2, progress=False)
    model = _model()

    def blow_up(row):
        if row["epoch"] == 2:
            with torch.no_grad():
                next(p for p in reversed(list(model.parameters())) if p.dim() == 1).fill_(1e20)

    with pytest.raises(train_module.TrainingDiverged) as info:
        vaekit.fit(model, _no_valid_data(), out=run, epochs=4, batch_size=16, lr=1e-2, progress=False,
                   on_epoch=blow_up)
    assert "after epoch 3" in str(info.value) and "after epoch 2" in str(info.value), str(info.value)
    _assert_sound_files(run)
    assert_same_tensors(tensors(run / ckpt.STATE_FILE), tensors(reference / ckpt.STATE_FILE), "kept checkpoint")
    assert_same_tensors(tensors(run / ckpt.MODEL_FILE), tensors(reference / ckpt.MODEL_FILE), "kept model")


# -- --compile ----------------------------------------------------------------------------------


def _shape_bound_compile(calls):
    """A stand-in for torch.compile (tens of seconds on the CPU) that, like the real one here, fails for a
    batch of another shape than the one it compiled for."""

    def fake_compile(module, **kwargs):
        shapes = []

        def compiled(x, *args):
            shapes.append(tuple(x.shape))
            calls.append(tuple(x.shape))
            if shapes[0] != tuple(x.shape):
                raise RuntimeError("SymIntArrayRef expected to contain only concrete integers")
            return module(x, *args)

        return compiled

    return fake_compile


def test_compile_with_a_partial_last_batch_trains(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(torch, "compile", _shape_bound_compile(calls))
    run = tmp_path / "run"
    # 1257 digits in batches of 500: the third batch has 257
    code, _, err = run_cli(["train", *TINY, "--batch-size", "500", "--epochs", "2", "--compile", "--out", str(run)])
    assert code == 0, err
    assert calls and all(shape[0] == 500 for shape in calls)


def test_a_compiler_that_fails_is_one_line(tmp_path, monkeypatch):
    class Unsupported(Exception):
        pass

    Unsupported.__module__ = "torch._dynamo.exc"

    def broken(module, **kwargs):
        def compiled(*args):
            raise Unsupported("no C++ compiler found")

        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    code, _, err = run_cli(["train", *TINY, "--compile", "--out", str(tmp_path / "run")])
    assert_one_line_error(code, err, "--compile", "no C++ compiler")


# -- memory of the IWAE draws ---------------------------------------------------------------------


@pytest.mark.parametrize("k", ["10000000", "200000"])
def test_a_k_too_large_for_memory_is_refused_before_work(tmp_path, monkeypatch, k):
    monkeypatch.setenv("VAEKIT_MEMORY_BUDGET", str(2**30))  # 1 GB, so the case is the same on any machine
    run = tmp_path / "run"
    start = time.perf_counter()
    code, _, err = run_cli(["train", *TINY, "--objective", "iwae", "--k", k, "--out", str(run)])
    assert time.perf_counter() - start < 5
    assert_one_line_error(code, err, f"--k {k}", "GB", "lower --k or --batch-size")
    assert not (run / "config.json").exists() and not (run / ckpt.STATE_FILE).exists()


def test_a_k_that_fits_still_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("VAEKIT_MEMORY_BUDGET", str(2**30))
    assert run_cli(["train", *TINY, "--objective", "iwae", "--k", "5", "--out", str(tmp_path / "run")])[0] == 0


def test_fit_refuses_settings_it_does_not_know_before_touching_the_folder(tmp_path):
    with pytest.raises(ConfigError):
        vaekit.fit(_model(), _no_valid_data(), out=tmp_path / "x", overwrite=True, bogus=1)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("damage", ["link", "folder"])
def test_a_run_file_that_is_a_link_or_a_folder_is_refused_before_any_write(finished, tmp_path, damage):
    """--resume used to train an epoch, append to metrics.jsonl and only then fail on the model file."""
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes((finished / ckpt.MODEL_FILE).read_bytes())
    (finished / ckpt.MODEL_FILE).unlink()
    if damage == "link":
        (finished / ckpt.MODEL_FILE).symlink_to(outside)
    else:
        (finished / ckpt.MODEL_FILE).mkdir()
    before, outside_before = tree_bytes(finished), outside.read_bytes()
    code, _, err = run_cli(["train", *TINY, "--epochs", "2", "--resume", "--out", str(finished)])
    assert_one_line_error(code, err, ckpt.MODEL_FILE, "regular file")
    assert tree_bytes(finished) == before and outside.read_bytes() == outside_before


@pytest.mark.parametrize("marked", [False, True])
def test_resuming_a_run_with_a_corrupt_config_is_refused_before_any_write(tmp_path, marked):
    """The settings of the run to resume are read before the lock and the marker are written: a refusal leaves
    the folder exactly as it was (no .lock, no marker added to a run from before the marker)."""
    folder = tmp_path / "out"
    folder.mkdir()
    if marked:
        contract.write_marker(folder)
    (folder / "config.json").write_text("{bad")
    (folder / "checkpoint.safetensors").write_bytes(b"junk")
    before = tree_bytes(folder)
    code, _, err = train(folder, "--resume")
    assert_one_line_error(code, err)
    assert "config.json is missing or corrupt" in err
    assert tree_bytes(folder) == before
