"""Run folders: the exclusive run lock and the per-epoch metrics file (``RUN/metrics.jsonl``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaekit.errors import CheckpointError
from vaekit.io.checkpoint import atomic_write_text, write_failed

METRICS_FILE = "metrics.jsonl"


@contextlib.contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``RUN/.lock``; a second run on the same directory is refused."""
    run.mkdir(parents=True, exist_ok=True)
    try:
        fh = open(run / ".lock", "a+")  # noqa: SIM115 - held for the whole run
    except OSError as exc:
        raise write_failed(run / ".lock", exc) from None
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            raise CheckpointError(
                f"{run} is in use by another vaekit run ({owner}); wait for it to finish or choose another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        yield
    finally:
        fh.close()


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line to the metrics file and flush it to disk."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise write_failed(path, exc) from None


def trim_metrics(path: Path, epochs_done: int) -> None:
    """Keep only the metrics of epochs a checkpoint covers (a killed run may have written more)."""
    if not path.exists():
        return
    keep = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CheckpointError(f"cannot read {path}: {reason}; move it away to start the metrics afresh") from None
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= epochs_done:
            keep.append(line)
    try:
        atomic_write_text(path, "".join(k + "\n" for k in keep))
    except OSError as exc:
        raise write_failed(path, exc) from None


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The per-epoch metrics of a run, in order."""
    path = Path(run) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
