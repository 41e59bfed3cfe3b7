"""Links, special files, size caps, output paths and OS errors (issue 16).

No symbolic link in a run folder is followed, for writing (the run lock, atomic writes) or for reading
(model.json, config.json, metrics.jsonl, *.safetensors); FIFOs and devices are refused before they are
read (a ``config.json`` that is a FIFO or a link to ``/dev/zero`` cannot hang or exhaust memory); JSON
reads are capped; reports and pictures are written only under the right suffix and never over a run's own
files or a file they did not write; any ``OSError`` is one line with the path and the reason; a closed
stdout ends the command quietly.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time

import pytest
from reliability_helpers import (
    PYTHON,
    TINY,
    Overrun,
    assert_one_line_error,
    bounded,
    copy_run,
    disk_full,
    run_cli,
    subprocess_env,
    train_tiny_run,
    tree_state,
)

from vaekit.errors import CheckpointError
from vaekit.io import checkpoint as ckpt
from vaekit.io.runs import read_metrics, run_lock

EVAL = ["--k", "2", "--limit", "10"]


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory, "links")


@pytest.fixture
def run(tmp_path, good_run):
    return copy_run(good_run, tmp_path)


@pytest.fixture
def victim(tmp_path):
    """A file outside the run that a followed link would destroy."""
    path = tmp_path / "precious.txt"
    path.write_bytes(b"precious bytes, not vaekit's")
    return path


def _unchanged(victim):
    assert victim.read_bytes() == b"precious bytes, not vaekit's", "a link was followed and its target changed"


# -- no link followed for writing --------------------------------------------------------------


def test_a_symlinked_run_lock_is_refused_and_its_target_kept(run, victim):
    (run / ".lock").unlink(missing_ok=True)
    (run / ".lock").symlink_to(victim)
    before = tree_state(run)
    code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--out", str(run), "--resume"])
    assert_one_line_error(code, err, ".lock", "symbolic link")
    _unchanged(victim)
    assert tree_state(run) == before


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_special_file_as_run_lock_is_refused(run, kind):
    (run / ".lock").unlink(missing_ok=True)
    os.mkfifo(run / ".lock") if kind == "fifo" else (run / ".lock").mkdir()
    before = tree_state(run)
    code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--out", str(run), "--resume"])
    assert_one_line_error(code, err, ".lock")
    assert tree_state(run) == before


def test_disk_full_while_taking_the_run_lock_is_one_line(run, monkeypatch):
    before = {k: v for k, v in tree_state(run).items() if k != ".lock"}
    with disk_full(monkeypatch, run, names=(".lock",)):
        code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--out", str(run), "--resume"])
    assert_one_line_error(code, err, ".lock", "No space left on device")
    assert {k: v for k, v in tree_state(run).items() if k != ".lock"} == before


def test_run_lock_opens_with_o_nofollow(tmp_path, monkeypatch):
    flags = []
    real_open = os.open

    def spy(path, fl, *a, **k):
        if str(path).endswith(".lock"):
            flags.append(fl)
        return real_open(path, fl, *a, **k)

    monkeypatch.setattr(os, "open", spy)
    with run_lock(tmp_path / "r"):
        pass
    assert flags and all(f & os.O_NOFOLLOW for f in flags)


@pytest.mark.parametrize("kind", ["link", "fifo", "directory"])
def test_an_atomic_write_never_replaces_a_link_or_a_special_file(tmp_path, victim, kind):
    dest = tmp_path / "out.bin"
    if kind == "link":
        dest.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(dest)
    else:
        dest.mkdir()
    before = tree_state(tmp_path)
    with pytest.raises(OSError) as info:
        ckpt.atomic_write_bytes(dest, b"new")
    assert info.value.errno in (errno.ELOOP, errno.EEXIST)
    assert tree_state(tmp_path) == before  # the link is still the link, no temp file left
    _unchanged(victim)


def test_atomic_write_temp_files_are_exclusive_and_never_follow_links(tmp_path, monkeypatch):
    """The temporary name is created with O_CREAT|O_EXCL|O_NOFOLLOW: a link planted there is never written."""
    flags = []
    real_open = os.open

    def spy(path, fl, *a, **k):
        if str(path).endswith(".tmp"):
            flags.append(fl)
        return real_open(path, fl, *a, **k)

    monkeypatch.setattr(os, "open", spy)
    ckpt.atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert flags and all(f & os.O_EXCL and f & os.O_NOFOLLOW and f & os.O_CREAT for f in flags)


def test_samples_png_as_a_link_is_refused_not_replaced(run, victim):
    (run / "samples.png").symlink_to(victim)
    before = tree_state(run)
    code, _, err = run_cli(["sample", str(run), "-n", "4"])
    assert_one_line_error(code, err, "samples.png", "symbolic link")
    assert tree_state(run) == before
    _unchanged(victim)


def test_metrics_jsonl_as_a_link_is_not_appended_to(run, victim):
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--out", str(run), "--resume"])
    assert_one_line_error(code, err, "metrics.jsonl", "symbolic link")
    _unchanged(victim)


# -- no link followed for reading ----------------------------------------------------------------


def _link_in_place(run, name, elsewhere):
    """Move RUN/name away (a valid copy) and put a link to it in its place."""
    target = elsewhere / name
    shutil.move(run / name, target)
    (run / name).symlink_to(target)


@pytest.mark.parametrize("name, argv", [
    ("config.json", ["evaluate", "{run}", *EVAL]),
    ("model.safetensors", ["evaluate", "{run}", *EVAL]),
    ("checkpoint.safetensors", ["train", *TINY, "--epochs", "3", "--out", "{run}", "--resume"]),
    ("model.json", ["evaluate", "{run}", *EVAL]),
])
def test_a_symlinked_run_file_is_refused_when_read(run, tmp_path, name, argv):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _link_in_place(run, name, elsewhere)
    before = tree_state(run)
    code, _, err = run_cli([a.replace("{run}", str(run)) for a in argv])
    assert_one_line_error(code, err, name, "symbolic link", status_lines=True)
    assert tree_state(run) == before


def test_read_metrics_refuses_a_symlinked_metrics_file(run, tmp_path):
    _link_in_place(run, "metrics.jsonl", tmp_path)
    with pytest.raises(CheckpointError, match="symbolic link"):
        read_metrics(run)


# -- special files are refused before they are read ------------------------------------------


def _timed(argv, seconds=30):
    """``vaekit argv`` in this process under a time limit and a cap on memory (``bounded``): a read that blocked on a
    FIFO or ran on through /dev/zero fails the test instead of hanging it or eating the machine's memory."""
    start = time.monotonic()
    try:
        with bounded(seconds):
            code, _, err = run_cli(argv)
    except Overrun:
        pytest.fail(f"vaekit {' '.join(argv[:2])} hung for {seconds} s")
    return code, err, time.monotonic() - start


@pytest.mark.parametrize("name, how", [("config.json", "fifo"), ("config.json", "dev-zero-link"),
                                       ("model.safetensors", "dev-zero-link"), ("model.safetensors", "fifo"),
                                       ("config.json", "char-device")])
def test_a_fifo_or_device_as_run_file_is_refused_at_once(run, name, how):
    (run / name).unlink()
    if how == "fifo":
        os.mkfifo(run / name)
    elif how == "dev-zero-link":
        (run / name).symlink_to("/dev/zero")
    else:
        try:
            os.mknod(run / name, 0o600 | 0o020000, os.makedev(1, 5))  # a character device: /dev/zero's numbers
        except PermissionError:
            pytest.skip("making a device node needs root")
    code, err, seconds = _timed(["evaluate", str(run), *EVAL])
    assert_one_line_error(code, err, name)
    assert seconds < 30


def test_read_capped_refuses_a_fifo_without_blocking(tmp_path):
    from vaekit.io.files import read_capped

    os.mkfifo(tmp_path / "f.json")
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="FIFO"):
        read_capped(tmp_path / "f.json", 100)
    assert time.monotonic() - start < 1


def test_an_oversized_config_json_is_refused(run):
    from vaekit.io.files import JSON_CAP

    (run / "config.json").write_bytes(b"{}" + b" " * (JSON_CAP + 1))
    code, _, err = run_cli(["evaluate", str(run), *EVAL])
    assert_one_line_error(code, err, "config.json", "MB")


# -- output paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["checkpoint.safetensors", "model.json", "config.json", "metrics.jsonl",
                                  "model.safetensors", "notes.txt", "report"])
def test_report_out_writes_only_an_html_name_never_a_run_file(run, name):
    before = tree_state(run)
    code, _, err = run_cli(["report", str(run), *EVAL, "--out", str(run / name)])
    assert_one_line_error(code, err, "--out", status_lines=True)
    assert tree_state(run) == before


def test_report_out_never_replaces_a_foreign_file_or_a_link(run, tmp_path, victim):
    foreign = tmp_path / "thesis.html"
    foreign.write_text("<html>my thesis</html>")
    link = tmp_path / "link.html"
    link.symlink_to(victim)
    for out in (foreign, link):
        code, _, err = run_cli(["report", str(run), *EVAL, "--out", str(out)])
        assert_one_line_error(code, err, str(out), status_lines=True)
    assert foreign.read_text() == "<html>my thesis</html>" and link.is_symlink()
    _unchanged(victim)


def test_report_out_replaces_an_earlier_report(run, tmp_path):
    out = tmp_path / "r.html"
    for _ in range(2):
        code, stdout, err = run_cli(["report", str(run), *EVAL, "--out", str(out)])
        assert code == 0, err
    assert "vaekit report" in out.read_text()


def test_sample_out_never_replaces_a_foreign_png_or_a_run_file(run, tmp_path):
    foreign = tmp_path / "photo.png"
    foreign.write_bytes(b"GIF89a not a png")
    before = tree_state(run)
    for out in (foreign, run / "model.safetensors", run / "x.jpg"):
        code, _, err = run_cli(["sample", str(run), "-n", "4", "--out", str(out)])
        assert_one_line_error(code, err, "--out")
    assert foreign.read_bytes() == b"GIF89a not a png" and tree_state(run) == before
    out = tmp_path / "s.png"
    for _ in range(2):  # a PNG vaekit wrote may be replaced
        code, _, err = run_cli(["sample", str(run), "-n", "4", "--out", str(out)])
        assert code == 0, err


# -- OS errors and a closed stdout -------------------------------------------------------------------


LONG = "x" * 300


@pytest.mark.parametrize("argv", [
    ["train", *TINY, "--epochs", "1", "--out", "{tmp}/" + LONG],
    ["evaluate", "{tmp}/" + LONG, *EVAL],
    ["report", "{run}", *EVAL, "--out", "{tmp}/" + LONG + ".html"],
    ["sample", "{run}", "-n", "4", "--out", "{tmp}/" + LONG + ".png"],
    ["sample", "{tmp}/" + LONG],
    ["bound", "{tmp}/" + LONG],
    ["report", "{tmp}/" + LONG],
])
def test_a_path_component_over_255_characters_is_one_line(run, tmp_path, argv):
    before = tree_state(run)
    code, _, err = run_cli([a.replace("{tmp}", str(tmp_path)).replace("{run}", str(run)) for a in argv])
    assert_one_line_error(code, err, status_lines=True)
    assert tree_state(run) == before


def test_any_oserror_escaping_a_command_is_one_line_with_path_and_reason(monkeypatch):
    import vaekit.commands.info as info

    def boom(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/somewhere/file.bin")

    monkeypatch.setattr(info, "run", boom)  # register() binds func=run when main() builds the parser
    code, _, err = run_cli(["info", "--p", "0.5,0.5", "--q", "0.1,0.9"])
    assert_one_line_error(code, err, "/somewhere/file.bin", "No space left on device")


def test_a_closed_stdout_ends_quietly():
    """``vaekit ... | head -1``: the reader goes away; no traceback, no BrokenPipeError at exit."""
    argv = [PYTHON, "-m", "vaekit.cli", "info", "--p", "0.5,0.5", "--q", "0.1,0.9"]
    proc = subprocess.Popen(argv, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before anything is written
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode in (0, 141), (proc.returncode, err)
