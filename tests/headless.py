"""Rendering a self-contained HTML page in headless Chromium, for the tests of the report and the comparison."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def needs_chromium(what: str):
    """Skip a test when no headless Chromium is installed, saying what is then not rendered."""
    return pytest.mark.skipif(CHROMIUM is None,
                              reason=f"chromium is not installed (apt-get install chromium) - {what} is not rendered")


def screenshot(page: Path, shot: Path, size: tuple[int, int] = (1200, 3000)) -> Image.Image:
    """The page rendered at ``size`` (width, height) into ``shot``, as an image."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--screenshot={shot}", f"--window-size={size[0]},{size[1]}",
                        page.resolve().as_uri()], check=False, capture_output=True, timeout=120)
    assert shot.exists(), "chromium wrote no screenshot"
    return Image.open(shot)


def blank(img: Image.Image) -> bool:
    """Nearly one colour, or almost no dark pixels: nothing was drawn."""
    grey = np.asarray(img.convert("L"), dtype=np.float64)
    return grey.std() < 5 or (grey < 200).mean() < 0.01
