"""A run's disentanglement scores on the comparison page, read from ``RUN/disentanglement.json``.

``vaekit evaluate RUN --disentanglement`` writes that file: one JSON object whose fields are the scores of
:mod:`vaekit.evaluation.disentanglement` (the beta-VAE and FactorVAE scores, MIG, SAP, DCI's disentanglement,
completeness and informativeness, modularity, explicitness), each with its standard error in a ``<name>_stderr``
twin. The file is read by :func:`vaekit.evaluation.disentanglement.read_scores` (no link, no special file, a size
cap) and defensively: a file that is absent, unreadable, not a JSON object or without any score means no scores
for that run (a malformed one is said in a note), never an error; a field that is not a finite number is no value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: The file of a run's disentanglement scores (:data:`vaekit.evaluation.disentanglement.SCORES_FILE`).
FILE = "disentanglement.json"
#: The scores (each with a ``_stderr`` twin), as :data:`vaekit.evaluation.disentanglement.SCORES` names them
#: (repeated here so that the comparison does not import the metrics' estimators), and their names on the page.
LABELS = {
    "beta_vae_score": "beta-VAE score",
    "factor_vae_score": "FactorVAE score",
    "mig": "MIG",
    "sap": "SAP",
    "dci_disentanglement": "DCI disentanglement",
    "dci_completeness": "DCI completeness",
    "dci_informativeness": "DCI informativeness",
    "modularity": "modularity",
    "explicitness": "explicitness",
}
SCORES = tuple(LABELS)
#: Every field read: the scores and their standard errors, in the order of ``vaekit evaluate --json``.
FIELDS = tuple(name for key in SCORES for name in (key, f"{key}_stderr"))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def read_scores(run: str | Path) -> tuple[dict[str, float | None] | None, str | None]:
    """(the run's scores: each of :data:`FIELDS` as a float or None, or None when there are none; a note for the
    reader when ``RUN/disentanglement.json`` exists but cannot be used, else None). The file is read by
    :func:`vaekit.evaluation.disentanglement.read_scores` (imported only when there is a file: it brings the
    estimators), whose refusal becomes the note."""
    from vaekit.errors import VaekitError
    from vaekit.io.files import exists_or_link

    if not exists_or_link(Path(run) / FILE):
        return None, None
    try:
        from vaekit.evaluation.disentanglement import read_scores as read

        data = read(run)
    except (OSError, VaekitError, ValueError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        return None, f"{FILE} could not be used ({reason}), so there are no disentanglement scores"
    if not isinstance(data, dict):
        return None, None
    scores = {name: _finite(data.get(name)) for name in FIELDS}
    if all(scores[key] is None for key in SCORES):
        return None, f"{FILE} holds no disentanglement score"
    return scores, None


def score_rows(scores: list[dict[str, float | None] | None]) -> list[tuple[str, list[str]]]:
    """(score's name, one cell per run: value &plusmn; standard error, or n/a) for each score some run has."""
    rows = []
    for key, label in LABELS.items():
        values = [(s or {}).get(key) for s in scores]
        if all(v is None for v in values):
            continue
        cells = []
        for s, v in zip(scores, values):
            se = (s or {}).get(f"{key}_stderr")
            cells.append("n/a" if v is None else f"{v:.3f}" + (f" &plusmn; {se:.3f}" if se is not None else ""))
        rows.append((label, cells))
    return rows
