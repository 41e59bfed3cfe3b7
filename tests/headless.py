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


class DevTools:
    """Headless Chromium driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: commands
    on its fd 3, answers on fd 4, JSON messages ended by a NUL byte), for tests that move the pointer over a page.

    ``with DevTools() as tab: tab.open(page); tab.evaluate("1 + 1"); tab.mouse_move(x, y)``"""

    def __init__(self, size: tuple[int, int] = (1200, 900), timeout: float = 60.0):
        import os

        self.size, self.timeout, self._id, self._buffer, self.session = size, timeout, 0, b"", None
        self._profile = tempfile.TemporaryDirectory()
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()

        def child() -> None:  # the child's fd 3 reads our commands, its fd 4 writes the answers
            os.dup2(to_chrome, 100)
            os.dup2(from_chrome, 101)
            os.dup2(100, 3)
            os.dup2(101, 4)

        self._proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe", f"--user-data-dir={self._profile.name}", f"--window-size={size[0]},{size[1]}",
             "about:blank"], preexec_fn=child, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)

    def __enter__(self) -> DevTools:
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": self.size[0], "height": self.size[1],
                                                         "deviceScaleFactor": 1, "mobile": False})
        return self

    def __exit__(self, *exc: object) -> None:
        import os

        try:
            self.call("Browser.close", session=False)
        except (AssertionError, OSError):
            pass
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._write)
        os.close(self._read)
        self._profile.cleanup()

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Send one command and wait for its answer (events in between are dropped); an error fails the test."""
        import json
        import os
        import select
        import time

        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    assert "error" not in reply, f"{method}: {reply['error']}"
                    return reply.get("result", {})
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"chromium did not answer {method} within {self.timeout:.0f} s"
            chunk = os.read(self._read, 1 << 20)
            assert chunk, "chromium closed the pipe"
            self._buffer += chunk

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-like values come back as Python ones)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def open(self, page: Path) -> None:
        """Load a local page and wait until it has loaded."""
        import time

        self.call("Page.navigate", {"url": page.resolve().as_uri()})
        deadline = time.monotonic() + self.timeout
        while self.evaluate("document.readyState") != "complete":
            assert time.monotonic() < deadline, "the page did not load"
            time.sleep(0.05)

    def mouse_move(self, x: float, y: float) -> None:
        """A real pointer movement to (x, y), CSS pixels from the top left of the viewport."""
        self.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y, "button": "none"})
