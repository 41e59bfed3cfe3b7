"""What the benchmark scripts that train runs through the vaekit command line share (evaluation_sandwich.py,
multisample_bounds.py, dsprites_disentanglement.py): the command, a run trained unless finished (resumed where it
has started), a command's output, and the summary JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def vaekit() -> str:
    """The ``vaekit`` command of this Python's environment."""
    return str(Path(sys.executable).with_name("vaekit"))


def _metric_lines(run: Path) -> list[str]:
    """The lines of ``run/metrics.jsonl``, one per epoch (none for a run not started)."""
    path = run / "metrics.jsonl"
    return path.read_text().splitlines() if path.is_file() else []


def metrics(run: Path) -> list[dict]:
    """The epoch rows of ``run/metrics.jsonl`` (none for a run not started)."""
    return [json.loads(line) for line in _metric_lines(run)]


def finished(run: Path, epochs: int) -> bool:
    """Whether ``run`` has ``epochs`` epochs in its metrics and its kept model."""
    return len(_metric_lines(run)) >= epochs and (run / "model.json").is_file()


def train_unless_finished(run: Path, epochs: int, command: list[str]) -> Path:
    """Run ``command`` (a ``vaekit train ... --out RUN`` command line) unless ``run`` is finished; with ``--resume``
    where it has started (its ``config.json`` is there). Returns ``run``."""
    if finished(run, epochs):
        return run
    if (run / "config.json").is_file():
        command = [*command, "--resume"]
    subprocess.run(command, check=True)
    return run


def output(command: list[str], one_thread: bool = True) -> str:
    """The standard output of ``command`` (which must succeed), with ``OMP_NUM_THREADS=1`` unless told not."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if one_thread else None
    return subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout


def load_average() -> list[str]:
    """The 1, 5 and 15 minute load averages as /proc/loadavg writes them (none where it is absent)."""
    return open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else []


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Write the summary (indented JSON, one space) to ``path``, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
