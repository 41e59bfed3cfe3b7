"""Fixtures of the reliability suite (faults, bad input, untrusted files)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # reliability_helpers, kill_runner


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """In-process runs pass --threads 1 (bitwise equal to the subprocess runs); give the rest of the
    test session its thread count back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_network_no_shared_cache(tmp_path, monkeypatch):
    """Data sets and caches under tmp_path, and downloads that fail at once (no network in tests)."""
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "data-root"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("VAEKIT_MIRROR", "file:///nonexistent/vaekit-mirror")
