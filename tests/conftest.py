"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VAEKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (static binarized MNIST, MNIST test set) or skip with the reason."""
    if not (SHARED_DATA / "binarized_mnist").is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (present on dev machines and CI)")
    return SHARED_DATA
