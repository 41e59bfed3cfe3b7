"""The documentation site for the tests: the one ``make test`` has just built, or one built here, once per run.

``make test`` builds the site (``mkdocs build --strict``, which executes the tutorials) and passes its folder as
``VAEKIT_BUILT_SITE``, so the tests read it rather than build it a second time. Without that variable (a test
file run on its own) the site is built into a temporary folder the first time a test asks for it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT = 900  # seconds; the whole build takes one to two minutes on two CPU cores


@cache
def _build() -> Path:
    out = Path(tempfile.mkdtemp(prefix="vaekit-site-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return out


def built_site() -> Path:
    """The built site's folder (skips when the docs tools are not installed)."""
    given = os.environ.get("VAEKIT_BUILT_SITE")
    if given:
        site = Path(given) if Path(given).is_absolute() else ROOT / given
        assert (site / "index.html").is_file(), f"VAEKIT_BUILT_SITE={given} holds no built site"
        return site
    pytest.importorskip("mkdocs", reason="the docs tools are not installed (pip install -e '.[docs]')")
    pytest.importorskip("nbclient", reason="the docs tools are not installed (pip install -e '.[docs]')")
    return _build()
