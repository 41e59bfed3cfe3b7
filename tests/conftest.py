"""Shared fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/synthetic.py

#: The whole test session runs torch on one thread, as the modules marked ``single_thread`` (below) already did: the
#: tests' models and batches are small, for which a second OpenMP thread costs more than it gives, and this file
#: imports torch before ``import vaekit`` could choose OpenMP's passive wait policy on a busy machine, so the idle
#: thread spins on a core another process needs. Two pages of docs examples (tests/test_docs.py, disentanglement and
#: your own networks) took 73 s of CPU with torch's default of two threads on a loaded 2-core CPU, 22 s with one.
#: Subprocesses are not affected (they set their own threads or OMP_NUM_THREADS); a test may still set other counts.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VAEKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """``make test``'s documentation build starts beside the tests (site_build.py, ``VAEKIT_BUILD_SITE``)."""
    import site_build

    site_build.start()


def pytest_sessionfinish(session, exitstatus):
    """The session waits for that build and fails when it failed, whether or not a test of the site ran (a session
    interrupted or stopped at a first failure, ``-x``, ends it instead)."""
    import site_build

    stopped = exitstatus == pytest.ExitCode.INTERRUPTED or bool(session.shouldfail or session.shouldstop)
    error = site_build.finish(stop=stopped)
    if error is not None and not stopped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("=", "mkdocs build --strict failed", red=True)
            reporter.write_line(error)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (static binarized MNIST, MNIST test set) or skip with the reason."""
    if not (SHARED_DATA / "binarized_mnist").is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (present on dev machines and CI)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of small tensors: faster, and robust on a shared machine.
    Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No user cache, data folder or mirror from the environment leaks into a test.
    Use with ``pytestmark = pytest.mark.usefixtures("isolated_env")``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in list(os.environ):
        if var.startswith("VAEKIT_MIRROR") or var == "VAEKIT_DATA_DIR":
            monkeypatch.delenv(var)
