"""The documentation site for the tests: the one ``make test`` builds beside them, one already built, or one built
here, once per run.

``make test`` runs ``mkdocs build --strict`` (which executes the tutorials) while the tests run: it names the
folder in ``VAEKIT_BUILD_SITE``, the session starts the build in the background at its start (:func:`start`; the
tests run torch on one thread, so the build has the second core), the tests of the site wait for it, and the
session waits for it at its end and fails if the build failed (:func:`finish`); under pytest-xdist the controlling
process starts it and the workers' tests of the site wait for its exit status. ``VAEKIT_BUILT_SITE`` names a site
built before, which the tests read as it is. Without either variable (a test file run on its own) the site is built
into a temporary folder the first time a test asks for it.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT = 900  # seconds; the whole build takes one to two minutes on two CPU cores


#: The build started by :func:`start`: its process, its folder, the files of its status and output, its start.
_background: dict[str, Any] = {}


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


@cache
def _build() -> Path:
    """A site built here, in this process's time, into a temporary folder (removed at exit)."""
    out = Path(tempfile.mkdtemp(prefix="vaekit-site-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    _main(str(out))
    error = _collect(out)
    assert error is None, f"mkdocs build --strict failed: {error}"
    return out


def _status_files(out: Path) -> tuple[Path, Path]:
    """Where the background build of ``out`` leaves its exit status and its output, for every process of the
    session (pytest-xdist's workers included): beside the temporary files, named by the site's path."""
    key = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    base = Path(tempfile.gettempdir()) / f"vaekit-site-build-{key}"
    return base.with_suffix(".status"), base.with_suffix(".log")


def _site(variable: str) -> Path | None:
    """The folder the environment variable ``variable`` names (relative to the repository), or None."""
    given = os.environ.get(variable)
    return None if not given else Path(given) if Path(given).is_absolute() else ROOT / given


def _is_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def start() -> None:
    """Start ``mkdocs build --strict`` into ``$VAEKIT_BUILD_SITE`` in the background (nothing without it, nothing in
    a pytest-xdist worker: the controlling process starts it once)."""
    out = _site("VAEKIT_BUILD_SITE")
    if out is None or _background or _is_worker():
        return
    _status_files(out)[0].unlink(missing_ok=True)
    _background.update(out=out, started=time.monotonic(),
                       proc=subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(out)], cwd=ROOT,
                                             env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                             start_new_session=True))


def _result(status: Path, log: Path) -> str | None:
    """None for a build that succeeded, else its exit status and the end of its output."""
    code = status.read_text().strip()
    text = log.read_text(errors="replace") if log.is_file() else ""
    return None if code == "0" else f"exit status {code}\n{text[-9000:]}"


def _collect(out: Path, returncode: int | None = None) -> str | None:
    """The result of the finished build of ``out`` (:func:`_result`; ``returncode`` of its wrapper where it left
    no status), its status and output files removed."""
    status, log = _status_files(out)
    error = _result(status, log) if status.is_file() else f"exit status {returncode}"
    status.unlink(missing_ok=True)
    log.unlink(missing_ok=True)
    return error


def finish(stop: bool = False) -> str | None:
    """Wait for the build :func:`start` began (end it instead if ``stop``): None when it succeeded or none was
    started, else its output. Once a session."""
    proc = _background.get("proc")
    if proc is None:
        return None
    if "error" not in _background:
        if stop and proc.poll() is None:
            _kill(proc)
        try:
            proc.wait(timeout=max(1.0, BUILD_TIMEOUT - (time.monotonic() - _background["started"])))
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
        _background["error"] = _collect(_background["out"], proc.returncode)
    return _background["error"]


def _kill(proc: subprocess.Popen) -> None:
    """End the build: its wrapper and mkdocs under it (a process group of their own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_for_controller(out: Path) -> Path:
    """In a pytest-xdist worker: wait for the build the controlling process started, then its folder."""
    status, log = _status_files(out)
    deadline = time.monotonic() + BUILD_TIMEOUT
    while not status.is_file():
        assert time.monotonic() < deadline, f"mkdocs build --strict into {out} did not finish in {BUILD_TIMEOUT} s"
        time.sleep(0.5)
    error = _result(status, log)
    assert error is None, f"mkdocs build --strict failed: {error}"
    return out


def built_site() -> Path:
    """The built site's folder (skips when the docs tools are not installed)."""
    if _background:
        error = finish()
        assert error is None, f"mkdocs build --strict failed: {error}"
        return _background["out"]
    building = _site("VAEKIT_BUILD_SITE")
    if building is not None and _is_worker():
        return _wait_for_controller(building)
    site = _site("VAEKIT_BUILT_SITE")
    if site is not None:
        given = os.environ["VAEKIT_BUILT_SITE"]
        assert (site / "index.html").is_file(), f"VAEKIT_BUILT_SITE={given} holds no built site"
        return site
    pytest.importorskip("mkdocs", reason="the docs tools are not installed (pip install -e '.[docs]')")
    pytest.importorskip("nbclient", reason="the docs tools are not installed (pip install -e '.[docs]')")
    return _build()


def _main(out: str) -> int:
    """Build the site into ``out`` (run as a script by :func:`start`, or called by :func:`_build`), its output into
    the log file, then, last, its exit status (atomically: a process that sees the status file sees the whole log;
    124 for a build past :data:`BUILD_TIMEOUT`)."""
    status, log = _status_files(Path(out))
    with open(log, "w") as f:
        try:
            code = subprocess.run(_command(Path(out)), cwd=ROOT, env=_env(), stdout=f, stderr=f,
                                  timeout=BUILD_TIMEOUT, check=False).returncode
        except subprocess.TimeoutExpired:
            f.write(f"\nmkdocs build did not finish in {BUILD_TIMEOUT} s\n")
            code = 124
    partial = status.with_suffix(".partial")
    partial.write_text(f"{code}\n")
    partial.replace(status)
    return code


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
