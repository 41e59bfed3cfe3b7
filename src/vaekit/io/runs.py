"""Run folders: the exclusive run lock and the per-epoch metrics file (``RUN/metrics.jsonl``)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaekit.errors import CheckpointError
from vaekit.io.checkpoint import atomic_write_text, write_failed
from vaekit.io.files import METRICS_CAP, exists_or_link, open_regular, read_text_capped

METRICS_FILE = "metrics.jsonl"


@contextlib.contextmanager
def run_lock(run: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``RUN/.lock``; a second run on the same directory is refused.

    The lock file is opened with ``O_NOFOLLOW`` and must be a regular file: a symbolic link (or a FIFO,
    a device) planted there is refused, never written through.
    """
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(run, exc) from None
    try:
        fd = open_regular(run / ".lock", os.O_RDWR | os.O_CREAT)
    except OSError as exc:
        raise write_failed(run / ".lock", exc) from None
    fh = os.fdopen(fd, "r+", encoding="utf-8", errors="replace")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = " ".join(fh.read(200).split()) or "another process"
            raise CheckpointError(
                f"{run} is in use by another vaekit run ({owner}); wait for it to finish or choose another --out"
            ) from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
        except OSError as exc:  # e.g. ENOSPC while noting the owner: one line, nothing else written yet
            raise write_failed(run / ".lock", exc) from None
        yield
    finally:
        fh.close()


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line to the metrics file and flush it to disk."""
    try:
        fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # no link followed
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise write_failed(path, exc) from None


def trim_metrics(path: Path, epochs_done: int) -> None:
    """Keep only the metrics of epochs a checkpoint covers (a killed run may have written more)."""
    if not exists_or_link(path):
        return
    keep = []
    try:
        text = read_text_capped(path, METRICS_CAP, "metrics file", errors="replace")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CheckpointError(f"cannot read {path}: {reason}; move it away to start the metrics afresh") from None
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut by a crash
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= epochs_done:
            keep.append(line)
    try:
        atomic_write_text(path, "".join(k + "\n" for k in keep))
    except OSError as exc:
        raise write_failed(path, exc) from None


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The per-epoch metrics of a run, in order (rows that are not sound metrics are skipped)."""
    return read_metrics_checked(run)[0]


def _metric_value(v: Any) -> bool:
    """A value a metrics row may hold: a flag, nothing, or a number (NaN/inf allowed, not past float range)."""
    if v is None or isinstance(v, bool):
        return True
    if isinstance(v, int):
        return abs(v) < 2**63
    return isinstance(v, float) and (not math.isfinite(v) or abs(v) < 1e300)


#: The fields of a metrics row that hold a short name, not a number (a discrete model's estimator, the score that
#: chooses the kept epoch).
TEXT_FIELDS = frozenset({"estimator", "train_bound", "selected_by", "objective", "log_px_kind"})
#: The longest text a metrics row's TEXT_FIELDS may hold (a selection rule with its settings fits: "valid CIWAE
#: bound (beta = 0.5, K = 64)"; a longer one would make its row unsound).
TEXT_LIMIT = 200


def metrics_row(row: Any) -> bool:
    """``row`` is a sound metrics row: an object with a whole ``epoch`` >= 0 and flat numeric values (short
    names in :data:`TEXT_FIELDS`)."""
    return (isinstance(row, dict) and isinstance(row.get("epoch"), int) and not isinstance(row["epoch"], bool)
            and 0 <= row["epoch"] < 10**9
            and all(isinstance(k, str) and (_metric_value(v) or (k in TEXT_FIELDS and isinstance(v, str)
                                                                 and len(v) <= TEXT_LIMIT)) for k, v in row.items()))


def read_metrics_checked(run: str | Path) -> tuple[list[dict[str, Any]], int]:
    """(the sound per-epoch metrics rows of a run, how many lines were skipped: cut, nested, strings, 1e308, ...).

    A ``metrics.jsonl`` that is a link, a special file or over the size cap raises :class:`CheckpointError`.
    """
    path = Path(run) / METRICS_FILE
    if not exists_or_link(path):
        return [], 0
    try:
        text = read_text_capped(path, METRICS_CAP, "metrics file", errors="replace")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    rows, skipped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            skipped += 1
            continue
        if metrics_row(row):
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped
