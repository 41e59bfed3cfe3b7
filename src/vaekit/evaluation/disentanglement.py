"""Disentanglement scores of a trained model on a data set with known factors (``Dataset.factors``): the codes are
the posterior means (``model.code``) of a seeded subset of the training split (where the scores fit a classifier)
and of the evaluated split, and the scores those of :mod:`vaekit.analysis.disentanglement` (MIG, SAP, DCI,
modularity and explicitness; with a factor sampler also the beta-VAE and FactorVAE scores), each with its standard
error. A run whose data set has no factors gets one clear line.

:func:`unit_factor_information` gives the matrix I(z_j; v_k) of every latent unit against every factor (nats), which
the report draws as a heat map; ``vaekit evaluate RUN --disentanglement`` keeps its result, the scores and that
matrix in ``RUN/disentanglement.json`` (:data:`SCORES_FILE`: :func:`save_scores`, :func:`read_scores`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.analysis import disentanglement as dm
from vaekit.analysis.posthoc import training_codes
from vaekit.errors import CheckpointError, DataError
from vaekit.evaluation.evaluator import json_safe
from vaekit.io.checkpoint import atomic_write_text
from vaekit.io.files import check_output, exists_or_link, read_text_capped

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The names of the scores (each with a ``_stderr`` twin) in ``vaekit evaluate --disentanglement --json``.
SCORES = ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement", "dci_completeness",
          "dci_informativeness", "modularity", "explicitness")


def _codes(model: LatentVariableModel, images: Any) -> np.ndarray:
    """The posterior means (N, L) of images (N, C, H, W), float64 (:func:`vaekit.analysis.posthoc.training_codes`)."""
    return training_codes(model, torch.as_tensor(images)).numpy()


def _subset(n: int, most: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:most])


def _factors(ds: Any) -> Any:
    """``ds.factors`` (:class:`vaekit.data.base.Factors`); DataError when the data set has none."""
    factors = getattr(ds, "factors", None)
    if factors is None:
        raise DataError(f"{getattr(ds, 'name', 'the data set')} has no known factors, so there is nothing to score "
                        "disentanglement against; train on a data set with factors (e.g. --dataset dsprites)")
    return factors


def _pairs(ds: Any, split: str, train_points: int, test_points: int, seed: int) -> tuple[np.ndarray, ...]:
    factors = _factors(ds)
    train_x, test_x = ds.train, getattr(ds, split)
    train_f, test_f = factors.split("train"), factors.split(split)
    if len(train_f) < 2 or len(test_f) < 2:
        raise DataError(f"{ds.name}: the train and {split} splits need factors of at least 2 images each")
    tr, te = _subset(len(train_f), train_points, seed), _subset(len(test_f), test_points, seed + 1)
    return train_x[torch.as_tensor(tr)], train_f[tr], test_x[torch.as_tensor(te)], test_f[te]


def disentanglement_scores(model: LatentVariableModel, ds: Any, split: str = "test", seed: int = 0,
                           train_points: int = 10000, test_points: int = 5000,
                           resamples: int = dm.DEFAULT_RESAMPLES, dci_estimators: int = 100,
                           intervention_points: tuple[int, int] | None = None) -> dict[str, Any]:
    """Every score of :data:`SCORES` the data allow, with ``NAME_stderr``; the intervention scores (beta-VAE,
    FactorVAE) need ``ds.sampler()`` (a :class:`~vaekit.analysis.disentanglement.FactorSampler`), else None.
    ``dci_estimators``: boosting stages of DCI's classifiers (disentanglement_lib's 100; the cost of DCI grows
    with it and with the classes of a factor: dSprites' orientation has 40). ``intervention_points``: the
    (training, evaluation) points of the intervention scores, each a batch of 64 images or pairs (default
    (min(train_points, 10000), test_points))."""
    train_x, train_f, test_x, test_f = _pairs(ds, split, train_points, test_points, seed)
    z_train, z_test = _codes(model, train_x), _codes(model, test_x)
    out: dict[str, Any] = {}

    def put(name: str, score: dm.Score) -> None:
        out[name], out[f"{name}_stderr"] = score.value, score.stderr

    put("mig", dm.mig(z_test, test_f, resamples=resamples, seed=seed))
    put("sap", dm.sap(z_train, train_f, z_test, test_f, resamples=resamples, seed=seed))
    d = dm.dci(z_train, train_f, z_test, test_f, n_estimators=dci_estimators, resamples=resamples, seed=seed)
    put("dci_disentanglement", d.disentanglement)
    put("dci_completeness", d.completeness)
    put("dci_informativeness", d.informativeness)
    m = dm.modularity_explicitness(z_train, train_f, z_test, test_f, resamples=resamples, seed=seed)
    put("modularity", m.modularity)
    put("explicitness", m.explicitness)
    sampler = getattr(ds, "sampler", None)
    if callable(sampler):
        fit, check = intervention_points or (min(train_points, 10000), test_points)
        put("beta_vae_score", dm.beta_vae_score(sampler(), lambda x: _codes(model, x), seed=seed,
                                                 train_points=fit, eval_points=check))
        put("factor_vae_score", dm.factor_vae_score(sampler(), lambda x: _codes(model, x), seed=seed,
                                                     train_points=fit, eval_points=check))
    for name in SCORES:
        out.setdefault(name, None)
        out.setdefault(f"{name}_stderr", None)
    return {name: out[name] for key in SCORES for name in (key, f"{key}_stderr")}


#: Images whose posterior means give the matrix I(z_j; v_k) (the report's heat map, ``disentanglement.json``): at most
#: this many, a seeded uniform subset of a split (of the training split, the same subset as the scores' training codes).
INFORMATION_POINTS = 10000


@dataclass(frozen=True)
class UnitFactorInformation:
    """I(z_j; v_k), nats: the plug-in mutual information between latent unit j's posterior mean E_q[z_j | x],
    discretised into ``bins`` equal-width bins (:func:`vaekit.analysis.disentanglement.histogram_discretize`), and
    the class of factor k, over ``points`` images of ``split`` (a uniform subset drawn with ``seed``); not
    normalised (column k is at most H(v_k) = ``factor_entropy[k]``, the plug-in entropy of the factor over the same
    images)."""

    matrix: np.ndarray  # (L, K), nats
    factor_names: tuple[str, ...]  # K names, in the data set's order
    factor_entropy: np.ndarray  # (K,), nats
    points: int
    bins: int
    split: str
    seed: int

    def summary(self) -> dict[str, Any]:
        """The fields as JSON values, under the names ``disentanglement.json`` gives them."""
        return {"unit_factor_information": self.matrix.tolist(), "factor_names": list(self.factor_names),
                "factor_entropy": self.factor_entropy.tolist(), "unit_factor_information_points": self.points,
                "unit_factor_information_bins": self.bins, "unit_factor_information_split": self.split,
                "unit_factor_information_seed": self.seed}

    @classmethod
    def from_summary(cls, saved: dict[str, Any]) -> UnitFactorInformation | None:
        """The inverse of :meth:`summary` (e.g. of ``disentanglement.json``'s object); None when a field is missing
        or is not what :meth:`summary` writes (a matrix (L, K) of finite numbers, K names and entropies)."""
        try:
            matrix = np.asarray(saved["unit_factor_information"], dtype=np.float64)
            names = saved["factor_names"]
            entropy = np.asarray(saved["factor_entropy"], dtype=np.float64)
            counts = [saved[f"unit_factor_information_{key}"] for key in ("points", "bins", "seed")]
            split = saved["unit_factor_information_split"]
        except (KeyError, TypeError, ValueError):
            return None
        whole = all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)
        if not (whole and isinstance(names, list) and all(isinstance(n, str) for n in names) and names
                and isinstance(split, str) and matrix.ndim == 2 and matrix.shape[1] == len(names)
                and entropy.shape == (len(names),) and np.isfinite(matrix).all() and np.isfinite(entropy).all()):
            return None
        return cls(matrix, tuple(names), entropy, counts[0], counts[1], split, counts[2])


def unit_factor_information(model: LatentVariableModel, ds: Any, split: str = "train", points: int = INFORMATION_POINTS,
                            seed: int = 0, bins: int = dm.DEFAULT_BINS) -> UnitFactorInformation:
    """I(z_j; v_k) = sum_{b,c} p(b, c) log[p(b, c) / (p(b) p(c))] (nats) over a seeded uniform subset of at most
    ``points`` images of ``ds``'s ``split``, b the bin of E_q[z_j | x] and c the class of factor k
    (:class:`UnitFactorInformation`). DataError when ``ds`` has no factors or that split fewer than 2 images."""
    factors = _factors(ds)
    classes = factors.split(split)
    if len(classes) < 2:
        raise DataError(f"{getattr(ds, 'name', 'the data set')}: the {split} split needs factors of at least 2 images")
    idx = _subset(len(classes), points, seed)
    codes, classes = _codes(model, getattr(ds, split)[torch.as_tensor(idx)]), classes[idx]
    matrix = dm.mutual_information_matrix(dm.histogram_discretize(codes, bins), classes)
    return UnitFactorInformation(matrix, tuple(factors.names), dm.factor_entropies(classes), len(idx), int(bins),
                                 split, int(seed))


#: The file of a run folder where ``vaekit evaluate RUN --disentanglement`` keeps its result: one JSON object with
#: the evaluation's summary, every score of :data:`SCORES` with its ``_stderr`` twin at top level, and
#: :meth:`UnitFactorInformation.summary`'s fields.
SCORES_FILE = "disentanglement.json"


def scores_path(run: str | Path) -> Path:
    """``RUN/disentanglement.json``, checked to be writable before any work: not a link, not a special file
    (:func:`vaekit.io.files.check_output`; CheckpointError otherwise)."""
    return check_output(Path(run) / SCORES_FILE, ".json", None, "disentanglement scores",
                        flag="the scores file")


def save_scores(run: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` to ``RUN/disentanglement.json`` atomically (a new temporary file, fsync, rename; never
    through a link), non-finite numbers as null; returns the path."""
    path = scores_path(run)
    text = json.dumps(json_safe(result), allow_nan=False) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; an earlier file there is "
                              "unchanged") from None
    return path


def read_scores(run: str | Path) -> dict[str, Any] | None:
    """The object of ``RUN/disentanglement.json``, or None when there is none; read through
    :func:`vaekit.io.files.read_text_capped` (no link, no special file, a size cap). CheckpointError when it is
    there but is not such an object."""
    path = Path(run) / SCORES_FILE
    if not exists_or_link(path):
        return None
    try:
        value = json.loads(read_text_capped(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path} could not be read: {exc}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not a JSON object; write it again with vaekit evaluate RUN "
                              "--disentanglement")
    return value
