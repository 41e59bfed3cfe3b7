"""The documentation site for the tests: the one ``make test`` builds beside them, one already built, or one built
here, once per run.

``make test`` runs ``mkdocs build --strict`` (which executes the tutorials) while the tests run: it names the
folder in ``VAEKIT_BUILD_SITE``, the session starts the build in the background at its start (:func:`start`; the
tests run torch on one thread, so the build has the second core), the tests of the site wait for it, and the
session waits for it at its end and fails if the build failed (:func:`finish`). ``VAEKIT_BUILT_SITE`` names a site
built before, which the tests read as it is. Without either variable (a test file run on its own) the site is built
into a temporary folder the first time a test asks for it.
"""

from __future__ import annotations

import atexit
import os
import shutil
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


#: The build started by :func:`start`: its process, its folder and the file holding its output.
_background: dict[str, Any] = {}


def _command(out: Path) -> list[str]:
    return [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)]


def _env() -> dict[str, str]:
    return {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


@cache
def _build() -> Path:
    out = Path(tempfile.mkdtemp(prefix="vaekit-site-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    done = subprocess.run(_command(out), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return out


def start() -> None:
    """Start ``mkdocs build --strict`` into ``$VAEKIT_BUILD_SITE`` in the background (nothing without it)."""
    given = os.environ.get("VAEKIT_BUILD_SITE")
    if not given or _background:
        return
    out = Path(given) if Path(given).is_absolute() else ROOT / given
    log = tempfile.TemporaryFile(mode="w+", prefix="vaekit-site-build-")
    _background.update(out=out, log=log, started=time.monotonic(),
                       proc=subprocess.Popen(_command(out), cwd=ROOT, env=_env(), stdout=log, stderr=log, text=True))


def finish(stop: bool = False) -> str | None:
    """Wait for the build :func:`start` began (end it instead if ``stop``): None when it succeeded or none was
    started, else its output. Once a session."""
    proc = _background.get("proc")
    if proc is None:
        return None
    if "error" not in _background:
        if stop and proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=max(1.0, BUILD_TIMEOUT - (time.monotonic() - _background["started"])))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log = _background["log"]
        log.seek(0)
        text = log.read()
        _background["error"] = None if proc.returncode == 0 else f"exit status {proc.returncode}\n{text[-9000:]}"
    return _background["error"]


def built_site() -> Path:
    """The built site's folder (skips when the docs tools are not installed)."""
    if _background:
        error = finish()
        assert error is None, f"mkdocs build --strict failed: {error}"
        return _background["out"]
    given = os.environ.get("VAEKIT_BUILT_SITE")
    if given:
        site = Path(given) if Path(given).is_absolute() else ROOT / given
        assert (site / "index.html").is_file(), f"VAEKIT_BUILT_SITE={given} holds no built site"
        return site
    pytest.importorskip("mkdocs", reason="the docs tools are not installed (pip install -e '.[docs]')")
    pytest.importorskip("nbclient", reason="the docs tools are not installed (pip install -e '.[docs]')")
    return _build()
