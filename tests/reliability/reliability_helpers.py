"""Shared pieces of the reliability suite: a tiny training config, running the CLI in-process and in a
subprocess, reading run directories, and simulated disk faults (ENOSPC, EROFS) for one directory tree."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load as st_load

from vaekit.cli import main

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "kill_runner.py"
PYTHON = sys.executable

#: A training run that takes about 0.05 s an epoch on one core: 1257 digits / 64 = 20 steps an epoch.
TINY = ["--dataset", "digits", "--hidden", "16", "--latent", "2", "--batch-size", "64", "--device", "cpu",
        "--threads", "1", "--seed", "3", "--quiet"]
STEPS_PER_EPOCH = 20


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``vaekit.cli.main(argv)`` in this process: (exit status, stdout, stderr); SystemExit is a status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *needles: str, status_lines: bool = False) -> None:
    """Exit status 2 and exactly one line on stderr, naming the problem; never a traceback.

    ``status_lines``: the command may have printed progress lines on stderr before the error (``vaekit
    report`` says what it evaluates); the error is then the last line and the only one saying 'error'."""
    assert code == 2, f"exit status {code}, stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if status_lines:
        assert "error:" in lines[-1] and sum("error" in line for line in lines) == 1, err
        err = lines[-1]
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    env.pop("VAEKIT_KILL_WRITE", None)
    env.pop("VAEKIT_KILL_STEP", None)
    env.update(extra)
    return env


def spawn(argv: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run ``vaekit argv`` through kill_runner.py (fault hooks from ``env``) in a subprocess."""
    return subprocess.run([PYTHON, str(RUNNER), *argv], env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def popen(argv: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, str(RUNNER), *argv], env=subprocess_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# -- reading run directories --------------------------------------------------------------


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return st_load(Path(path).read_bytes())


def metadata(path: Path) -> dict[str, str]:
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]).get("__metadata__") or {}


def epochs_done(run: Path) -> int:
    """The epoch a run's checkpoint was written after (0 when there is none yet)."""
    path = run / "checkpoint.safetensors"
    return json.loads(metadata(path)["progress"])["epoch"] if path.exists() else 0


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str = "") -> None:
    """Bit for bit: the same names, dtypes, shapes and bytes."""
    assert a.keys() == b.keys(), what
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{what} {k}"
        assert a[k].contiguous().numpy().tobytes() == b[k].contiguous().numpy().tobytes(), f"{what}: {k} differs"


def metrics_without_time(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def temp_files(run: Path) -> list[Path]:
    return sorted(run.glob(".*.tmp"))


# -- simulated disk faults --------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _under(path, root: Path) -> bool:
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:  # a file descriptor
        return False
    return p == str(root) or p.startswith(str(root) + os.sep)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class _FullFile:
    """A writable file on a full disk: the first write puts half of its bytes down, then fails."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@contextlib.contextmanager
def disk_full(monkeypatch, root: Path, names: tuple[str, ...] | None = None) -> Iterator[None]:
    """ENOSPC for writes into files under ``root`` whose name contains one of ``names`` (all if None):
    half of the data reaches the file, then the write raises, as on a disk that fills up mid-write."""
    root = Path(os.path.abspath(root))
    real_open, real_fdopen = builtins.open, os.fdopen

    def hit(path: str) -> bool:
        return _under(path, root) and (names is None or any(n in os.path.basename(path) for n in names))

    def writing(mode: str) -> bool:
        return any(c in mode for c in "wax+")

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return _FullFile(fh) if writing(mode) and not isinstance(file, int) and hit(file) else fh

    def fake_fdopen(fd, mode="r", *args, **kwargs):
        fh = real_fdopen(fd, mode, *args, **kwargs)
        return _FullFile(fh) if writing(mode) and hit(_fd_path(fd)) else fh

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "fdopen", fake_fdopen)
    try:
        yield
    finally:
        monkeypatch.setattr(builtins, "open", real_open)
        monkeypatch.setattr(io, "open", real_open)
        monkeypatch.setattr(os, "fdopen", real_fdopen)


@contextlib.contextmanager
def read_only(monkeypatch, root: Path, code: int = errno.EROFS) -> Iterator[None]:
    """Everything under ``root`` is read-only (EROFS, or EACCES as for a directory we may not write):
    creating, opening for writing, renaming, deleting and making folders fail; reading works.
    (The suite runs as root, for whom chmod does not make anything read-only, so this is simulated.)"""
    root = Path(os.path.abspath(root))
    saved = {name: getattr(os, name) for name in ("open", "mkdir", "replace", "rename", "unlink", "remove", "rmdir")}
    real_open = builtins.open

    def fail(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and _under(path, root):
            fail(path)
        return saved["open"](path, flags, *args, **kwargs)

    def fake_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not isinstance(file, int) and _under(file, root):
            fail(file)
        return real_open(file, mode, *args, **kwargs)

    def guard(name):
        def fake(path, *args, **kwargs):
            if name == "mkdir" and _under(path, root) and os.path.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
            if _under(path, root) or any(_under(a, root) for a in args if isinstance(a, (str, os.PathLike))):
                fail(path)
            return saved[name](path, *args, **kwargs)
        return fake

    monkeypatch.setattr(os, "open", fake_os_open)
    for name in ("mkdir", "replace", "rename", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, guard(name))
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    try:
        yield
    finally:
        for name, f in saved.items():
            monkeypatch.setattr(os, name, f)
        monkeypatch.setattr(builtins, "open", real_open)
        monkeypatch.setattr(io, "open", real_open)
