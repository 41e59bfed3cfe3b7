"""Tabular, real-valued data: ``csv:FILE``, 2-D ``npy:FILE`` / ``npz:FILE`` arrays, scikit-learn's bundled tables.

A table is N examples of D real features, held as a :class:`~vaekit.data.base.Dataset` of shape (1, 1, D) with
``tabular = True`` and ``levels = None`` (a density, never a probability of pixel values).

``csv:FILE``: comma-separated numbers, one example a row. The first row is a header when none of its cells is a
number (then ``label_column`` may name the column of class labels, any strings, numbered in sorted order - by
value when they are all integers; the other columns are the features). Every row must have as many cells as the
first; every feature cell must be a finite number. Empty cells, ``nan``, ``inf`` and words are errors that name
the file, the line and the column.

Standardisation (on by default for tables; ``standardise=False`` keeps the raw values): with m_d and s_d the
mean and standard deviation (ddof 0) of feature d over the TRAINING split only, every split becomes
u = (x - m) / s. A density q of u is the density p(x) = q((x - m) / s) prod_d 1 / s_d of x, so

    log p(x) = log q(u) + log|det du/dx| = log q(u) - sum_d log s_d        (nats per example)

and vaekit reports every log-likelihood of standardised data in the original units by adding this
log-Jacobian (:attr:`Standardisation.log_jacobian`). The mean and SD are stored with a run (its config.json) and
applied as stored when the run's data are loaded again; samples are mapped back by x = m + s u.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.errors import ConfigError, DataError

#: The largest CSV file read (bytes); a table larger than this belongs in an .npy file.
CSV_MAX_BYTES = 1 << 30

#: scikit-learn's bundled tables (no download): name -> (loader in sklearn.datasets, description).
SKLEARN_TABLES: dict[str, tuple[str, str]] = {
    "wine": ("load_wine", "scikit-learn's bundled wine recognition table: 178 wines x 13 chemical measurements, "
             "3 cultivars; real-valued, standardised by default"),
    "breast-cancer": ("load_breast_cancer", "scikit-learn's bundled Wisconsin breast cancer table: 569 x 30 "
                      "real features of cell nuclei, 2 classes; real-valued, standardised by default"),
}

#: Default split fractions of the bundled tables (their test split carved with the fixed test seed).
TABLE_VALID, TABLE_TEST = 0.2, 0.2


@dataclass(frozen=True)
class Standardisation:
    """u = (x - mean) / sd per feature, from the training split; ``log_jacobian`` = -sum_d log sd_d (nats), the
    term that turns a log-density of u into one of x."""

    mean: tuple[float, ...]
    sd: tuple[float, ...]

    def __post_init__(self) -> None:
        mean = tuple(float(v) for v in self.mean)
        sd = tuple(float(v) for v in self.sd)
        if not mean or len(mean) != len(sd):
            raise DataError(f"standardisation: mean ({len(mean)}) and sd ({len(sd)}) need one value per feature")
        if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0 for v in sd):
            raise DataError("standardisation: the means must be finite and the standard deviations finite and > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "sd", sd)

    @classmethod
    def fit(cls, train: np.ndarray | torch.Tensor, source: str = "the training split") -> Standardisation:
        """Mean and SD (ddof 0) of each feature of ``train`` (N, D); a constant feature is refused."""
        x = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
        if len(x) < 2:
            raise DataError(f"{source}: standardisation needs at least 2 training examples, got {len(x)}")
        sd = x.std(axis=0)
        flat = np.flatnonzero(~(sd > 0))
        if len(flat):
            raise DataError(f"{source}: feature {int(flat[0])} is constant in the training split (sd 0), so it "
                            "cannot be standardised; drop it, or pass standardise=False (--no-standardise)")
        return cls(tuple(x.mean(axis=0)), tuple(sd))

    @classmethod
    def from_dict(cls, values: Any, source: str = "the stored standardisation") -> Standardisation:
        if not isinstance(values, dict) or not isinstance(values.get("mean"), list) or \
                not isinstance(values.get("sd"), list):
            raise DataError(f"{source}: expected {{'mean': [...], 'sd': [...]}}")
        try:
            return cls(tuple(values["mean"]), tuple(values["sd"]))
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "sd": list(self.sd), "log_jacobian": self.log_jacobian}

    @property
    def log_jacobian(self) -> float:
        """-sum_d log sd_d: log p(x) = log q((x - mean) / sd) + this (nats per example)."""
        return -math.fsum(math.log(s) for s in self.sd)

    def _arrays(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = torch.tensor(self.mean, dtype=torch.float64, device=like.device)
        s = torch.tensor(self.sd, dtype=torch.float64, device=like.device)
        return m, s

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / sd, x (N, ..., D features flattened); float32 out."""
        self._check(x)
        m, s = self._arrays(x)
        flat = x.reshape(x.shape[0], -1).double()
        return ((flat - m) / s).to(torch.float32).reshape(x.shape)

    def invert(self, u: torch.Tensor) -> torch.Tensor:
        """mean + sd * u: standardised values (samples, reconstructions) back in the original units."""
        self._check(u)
        m, s = self._arrays(u)
        flat = u.reshape(u.shape[0], -1).double()
        return (m + s * flat).to(torch.float32).reshape(u.shape)

    def _check(self, x: torch.Tensor) -> None:
        d = math.prod(x.shape[1:]) if x.dim() > 1 else 0
        if d != len(self.mean):
            raise DataError(f"standardisation of {len(self.mean)} features applied to examples of shape "
                            f"{tuple(x.shape[1:])}")


# --------------------------------------------------------------------------- arrays


def as_table(arr: np.ndarray, label: str) -> np.ndarray:
    """A 2-D numeric array (N, D) of finite values as float32 (N, 1, 1, D); errors name the first bad row."""
    if arr.dtype.kind not in "iuf" or arr.ndim != 2:
        raise DataError(f"{label}: a table must be a 2-D numeric array (N, D), got {arr.dtype} {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{label}: the table {arr.shape} is empty")
    x = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise DataError(f"{label}: {int((~finite).sum())} NaN or infinite values (first in row {row}, column "
                        f"{col}, counting from 0); every value must be a finite number")
    big = np.abs(x) > np.finfo(np.float32).max
    if big.any():
        row, col = (int(i) for i in np.argwhere(big)[0])
        raise DataError(f"{label}: value {x[row, col]:g} in row {row}, column {col} overflows float32")
    return np.ascontiguousarray(x.astype(np.float32)[:, None, None, :])


def is_image_array(arr: np.ndarray) -> bool:
    """Whether a 2-D array reads as flattened square images (uint8 or bool pixels, or floats all in [0, 1] with
    D = side * side > 1): the reading vaekit gave (N, D) arrays before tables; any other 2-D array is a table."""
    if arr.ndim != 2 or arr.dtype == np.uint8 or arr.dtype.kind == "b":
        return True  # any other shape, and 8-bit or boolean pixels, are read (or refused) as images
    side = int(math.isqrt(arr.shape[1])) if arr.shape[1] else 0
    if side * side != arr.shape[1] or side <= 1:
        return False
    if arr.dtype.kind != "f":
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.isfinite(arr).all() and (arr >= 0).all() and (arr <= 1).all())


# --------------------------------------------------------------------------- CSV


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _csv_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found (csv:FILE expects a comma-separated text file)")
    if path.stat().st_size > CSV_MAX_BYTES:
        raise DataError(f"{path}: over {CSV_MAX_BYTES >> 20} MiB of CSV; store a table this large as .npy")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); csv:FILE reads comma-separated numbers") \
            from None
    try:
        rows = [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))]
    except csv.Error as exc:
        raise DataError(f"{path}: not readable as CSV ({exc})") from None
    rows = [r for r in rows if r and any(r)]  # blank lines are skipped
    if not rows:
        raise DataError(f"{path}: holds no rows")
    return rows


def _label_index(header: list[str] | None, label_column: str | None, path: Path) -> int | None:
    if label_column is None:
        return None
    if header is None:
        raise ConfigError(f"label_column {label_column!r}: {path} has no header row to name its columns")
    if label_column not in header:
        raise ConfigError(f"label_column {label_column!r} is not a column of {path}; its columns are "
                          f"{', '.join(header[:12])}{' ...' if len(header) > 12 else ''}")
    return header.index(label_column)


def _class_indices(values: list[str], path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    names = sorted(set(values))
    if all(_number(v) is not None and float(v).is_integer() for v in names):
        names = sorted(names, key=float)
    index = {n: i for i, n in enumerate(names)}
    return np.asarray([index[v] for v in values], dtype=np.int64), tuple(names)


def read_csv(path: str | Path, label_column: str | None = None
             ) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None, tuple[str, ...] | None]:
    """(features float64 (N, D), labels int64 or None, class names or None, feature names or None) of a CSV
    file; see the module docstring for the rules. Errors name the file, its line (from 1) and the column."""
    path = Path(path)
    rows = _csv_rows(path)
    first = rows[0]
    header = first if all(_number(c) is None for c in first) else None
    body_start = 1 if header is not None else 0
    label_at = _label_index(header, label_column, path)
    width = len(first)
    body = rows[body_start:]
    if not body:
        raise DataError(f"{path}: has a header but no rows of numbers")
    values = np.empty((len(body), width - (label_at is not None)), dtype=np.float64)
    labels: list[str] = []
    lines = _line_numbers(path, len(rows))
    for i, row in enumerate(body):
        line = lines[i + body_start]
        if len(row) != width:
            raise DataError(f"{path}, line {line}: {len(row)} cells where the first row has {width} (ragged rows)")
        cells = row if label_at is None else row[:label_at] + row[label_at + 1:]
        if label_at is not None:
            labels.append(row[label_at])
        for j, cell in enumerate(cells):
            v = _number(cell)
            column = header[j + (label_at is not None and j >= label_at)] if header is not None else str(j)
            if v is None or not math.isfinite(v):
                what = "an empty cell" if not cell else f"{cell[:30]!r}, not a finite number"
                raise DataError(f"{path}, line {line}, column {column}: {what}")
            values[i, j] = v
    features = None if header is None else tuple(c for k, c in enumerate(header) if k != label_at)
    if label_at is None:
        return values, None, None, features
    y, classes = _class_indices(labels, path)
    return values, y, classes, features


def _line_numbers(path: Path, count: int) -> list[int]:
    """The 1-based file line of each non-blank CSV row (rows without quoted newlines; a close guess otherwise)."""
    text = path.read_bytes().decode("utf-8-sig")
    numbers = [i + 1 for i, line in enumerate(text.splitlines()) if line.strip().strip(",")]
    return numbers[:count] if len(numbers) >= count else list(range(1, count + 1))


# --------------------------------------------------------------------------- scikit-learn's tables


def load_sklearn_table(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """(features float64 (N, D), labels int64, class names, feature names) of a bundled scikit-learn table."""
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, SKLEARN_TABLES[name][0])()
    return (np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64),
            tuple(str(c) for c in bunch.target_names), tuple(str(f) for f in bunch.feature_names))


def load_table(
    name: str,
    *,
    data_dir: Any = None,
    valid_size: int | float | None = None,
    test_size: int | float | None = None,
    binarize: str | None = None,
    image_size: Any = None,
    seed: int = 0,
    download: bool = True,
    splits: tuple[str, ...] | None = None,
    cache: bool = True,
) -> Any:
    """A bundled scikit-learn table (:data:`SKLEARN_TABLES`) as a raw (not yet standardised) Dataset (1, 1, D):
    the test split (20 % by default) carved with the fixed test seed, then the validation split (20 % of all
    examples by default) with ``seed`` (``data_dir``, ``download`` and ``cache`` are unused: nothing is fetched)."""
    from vaekit.data.base import Dataset, bundled_splits, check_seed, check_splits, keep_splits

    if binarize is not None:
        raise ConfigError(f"{name} is a table of real values; binarize applies to images: leave it out")
    if image_size is not None:
        raise ConfigError(f"{name} is a table of real values; image_size applies to images:DIR")
    seed, wanted = check_seed(seed), check_splits(splits)
    values, labels, classes, features = load_sklearn_table(name)
    n = len(values)
    x, y = bundled_splits(name, as_table(values, name), labels, test_size=test_size, valid_size=valid_size,
                          default_test=round(TABLE_TEST * n), default_valid=round(TABLE_VALID * n), seed=seed,
                          unit="examples")
    ds = Dataset(name=name, shape=(1, 1, x["train"].shape[-1]), binary=False, dynamic=False,
                 train=x["train"], valid=x["valid"], test=x["test"],
                 train_labels=y["train"], valid_labels=y["valid"], test_labels=y["test"],
                 source=f"sklearn.datasets.{SKLEARN_TABLES[name][0]} (bundled with scikit-learn)", classes=classes,
                 levels=None, tabular=True, features=features)
    return keep_splits(ds, wanted)


def standardised(ds: Any, standardise: bool | None, stored: Standardisation | dict | None = None) -> Any:
    """``ds`` with every split standardised (a table, unless ``standardise`` is False): by ``stored`` when given
    (a run's), else by the training split's mean and SD. ``standardise=True`` on images is a ConfigError."""
    if not getattr(ds, "tabular", False):
        if standardise or stored is not None:
            raise ConfigError(f"standardise applies to tables of real values (csv:FILE, a 2-D npy/npz array, "
                              f"wine, breast-cancer); {ds.name} holds images: leave it out")
        return ds
    if standardise is False and stored is None:
        return ds
    if standardise is False:
        raise ConfigError(f"{ds.name}: standardise=False contradicts the run's stored standardisation")
    if ds.standardisation is not None:
        return ds
    if isinstance(stored, dict):
        stored = Standardisation.from_dict(stored)
    rule = stored if stored is not None else Standardisation.fit(ds.train, f"{ds.name}")
    if len(rule.mean) != ds.shape[-1]:
        raise DataError(f"{ds.name} has {ds.shape[-1]} features but the stored standardisation {len(rule.mean)}")
    for s in ("train", "valid", "test"):
        x = getattr(ds, s)
        setattr(ds, s, rule.apply(x) if len(x) else x)
    ds.standardisation = rule
    return ds
