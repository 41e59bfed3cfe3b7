"""Samples of a model trained on a table, in the table's original units.

A run trained on a standardised table (:mod:`vaekit.data.tabular`) stores the training split's mean m and SD s in
its config.json; its model draws standardised values u ~ p(u|z), z ~ p(z), which :func:`table_samples` maps back
by x = m + s u. ``vaekit sample RUN --out FILE.csv`` (or ``.npy``) writes them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.data.tabular import Standardisation
from vaekit.errors import VaekitError

#: The first bytes of a CSV file of samples written by vaekit (an existing file is replaced only then).
CSV_HEADER = "feature_0"


def run_standardisation(run: str | Path) -> Standardisation | None:
    """The standardisation stored with a run (its config.json's ``standardisation``), or None."""
    from vaekit.evaluation.evaluator import read_run_config

    stored = read_run_config(run).get("standardisation")
    if stored is None:
        return None
    return Standardisation.from_dict(stored, f"{Path(run) / 'config.json'}: standardisation")


@torch.no_grad()
def table_samples(run: str | Path, model: Any, n: int, seed: int = 0, label: int | None = None,
                  means: bool = False) -> np.ndarray:
    """(n, D) float64 draws x ~ p(x|z), z ~ p(z) (``means``: E[x|z] instead), in the original units of the run's
    table (standardisation undone). A conditional model's samples take its classes in turn, or all ``label``."""
    classes = int(getattr(model, "condition", 0) or 0)
    y = None
    if classes:
        y = torch.full((n,), int(label)) if label is not None else torch.arange(n) % classes
    gen = torch.Generator().manual_seed(int(seed))
    model.eval()
    s = model.sample(n, y=y, generator=gen)
    u = (s.means if means else s.draws).reshape(n, -1).cpu().float()
    rule = run_standardisation(run)
    x = rule.invert(u) if rule is not None else u
    return x.double().numpy()


def table_bytes(x: np.ndarray, suffix: str) -> bytes:
    """The samples as a CSV file (a header ``feature_0,...``) or an .npy array."""
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, x, allow_pickle=False)
        return buffer.getvalue()
    if suffix != ".csv":
        raise VaekitError(f"table samples are written as .csv or .npy, got {suffix}")
    header = ",".join(f"feature_{j}" for j in range(x.shape[1]))
    np.savetxt(buffer, x, delimiter=",", header=header, comments="", fmt="%.9g")
    return buffer.getvalue()
