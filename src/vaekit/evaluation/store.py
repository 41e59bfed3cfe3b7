"""Evaluations kept in the run folder, so that ``vaekit report`` and ``vaekit compare`` reuse what ``vaekit evaluate``
computed instead of evaluating again.

``vaekit evaluate RUN`` writes its result to ``RUN/evaluations/<key>.json``, where the key names what makes two
evaluations the same: the split, the subset (``limit``), the data set evaluated on, K, the seed and the arithmetic
(``precision``), plus a SHA-256 digest of ``RUN/model.safetensors``; a model trained further (or replaced) no longer
matches, so a stale figure is never shown. Reading goes through :func:`vaekit.io.files.read_text_capped` (no link,
no special file, a size cap) and anything unreadable or different counts as absent: the caller evaluates. Writing
is atomic and best effort (a read-only run folder only loses the cache).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from vaekit.errors import CheckpointError
from vaekit.io.checkpoint import atomic_write_text
from vaekit.io.files import exists_or_link, read_text_capped

#: The folder of a run that holds its kept evaluations.
FOLDER = "evaluations"


def model_digest(run: str | Path) -> str | None:
    """SHA-256 (hex) of ``RUN/model.safetensors``, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(Path(run) / "model.safetensors", "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def evaluation_key(*, split: str, k: int, seed: int, limit: int | None = None, dataset: str | None = None,
                   precision: str = "fp32") -> dict[str, Any]:
    """What makes two evaluations of one model the same: the examples (split, limit, data set), K, seed, arithmetic."""
    return {"split": split, "k": int(k), "seed": int(seed), "limit": None if limit is None else int(limit),
            "dataset": dataset, "precision": precision}


def _path(run: Path, key: dict[str, Any]) -> Path:
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return run / FOLDER / f"{key['split']}-k{key['k']}-{name}.json"


def keep(run: str | Path, key: dict[str, Any], result: dict[str, Any]) -> Path | None:
    """Write ``result`` (a JSON-ready dict, :meth:`EvaluationResult.to_dict`) under ``key``; the path, or None when
    the run folder cannot take it (read-only, a link in the way): the figure is then simply not kept."""
    run = Path(run)
    digest = model_digest(run)
    if digest is None:
        return None
    path = _path(run, key)
    try:
        if exists_or_link(path.parent) and (path.parent.is_symlink() or not path.parent.is_dir()):
            return None
        path.parent.mkdir(exist_ok=True)
        if path.is_symlink():
            return None
        atomic_write_text(path, json.dumps({"key": key, "model": digest, "result": result}, allow_nan=False) + "\n")
    except (OSError, ValueError):
        return None
    return path


def kept(run: str | Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The result kept under ``key`` for the run's current model, or None (absent, unreadable, another model)."""
    run = Path(run)
    path = _path(run, key)
    if not exists_or_link(path):
        return None
    try:
        value = json.loads(read_text_capped(path))
    except (OSError, UnicodeDecodeError, ValueError, CheckpointError):
        return None
    if not isinstance(value, dict) or value.get("key") != key or not isinstance(value.get("result"), dict):
        return None
    if value.get("model") != model_digest(run):
        return None
    return value["result"]


def as_result(values: dict[str, Any]) -> Any:
    """An :class:`~vaekit.evaluation.evaluator.EvaluationResult` from its :meth:`to_dict` form (null floats back to
    NaN where the field is a float)."""
    from vaekit.evaluation.evaluator import EvaluationResult

    kwargs = {}
    for f in dataclasses.fields(EvaluationResult):
        if f.name not in values:
            continue
        value = values[f.name]
        if value is None and f.type in ("float", float):
            value = math.nan
        kwargs[f.name] = value
    return EvaluationResult(**kwargs)


def reuse_or_evaluate(run: str | Path, key: dict[str, Any], compute: Any) -> tuple[Any, bool]:
    """(the evaluation kept under ``key`` for the run's current model, True), else (``compute()``, False) after
    keeping what it returned; ``compute`` takes no argument and returns an ``EvaluationResult``."""
    values = kept(run, key)
    if values is not None:
        return as_result(values), True
    result = compute()
    keep(run, key, result.to_dict())
    return result, False
