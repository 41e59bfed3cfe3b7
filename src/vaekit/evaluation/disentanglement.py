"""Disentanglement scores of a trained model on a data set with known factors (``Dataset.factors``): the codes are
the posterior means (``model.code``) of a seeded subset of the training split (where the scores fit a classifier)
and of the evaluated split, and the scores those of :mod:`vaekit.analysis.disentanglement` (MIG, SAP, DCI,
modularity and explicitness; with a factor sampler also the beta-VAE and FactorVAE scores), each with its standard
error. A run whose data set has no factors gets one clear line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.analysis import disentanglement as dm
from vaekit.analysis.posthoc import training_codes
from vaekit.errors import DataError

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


def _pairs(ds: Any, split: str, train_points: int, test_points: int, seed: int) -> tuple[np.ndarray, ...]:
    factors = getattr(ds, "factors", None)
    if factors is None:
        raise DataError(f"{getattr(ds, 'name', 'the data set')} has no known factors, so there is nothing to score "
                        "disentanglement against; train on a data set with factors (e.g. --dataset dsprites)")
    train_x, test_x = ds.train, getattr(ds, split)
    train_f, test_f = factors.split("train"), factors.split(split)
    if len(train_f) < 2 or len(test_f) < 2:
        raise DataError(f"{ds.name}: the train and {split} splits need factors of at least 2 images each")
    tr, te = _subset(len(train_f), train_points, seed), _subset(len(test_f), test_points, seed + 1)
    return train_x[torch.as_tensor(tr)], train_f[tr], test_x[torch.as_tensor(te)], test_f[te]


def disentanglement_scores(model: LatentVariableModel, ds: Any, split: str = "test", seed: int = 0,
                           train_points: int = 10000, test_points: int = 5000,
                           resamples: int = dm.DEFAULT_RESAMPLES, dci_estimators: int = 100) -> dict[str, Any]:
    """Every score of :data:`SCORES` the data allow, with ``NAME_stderr``; the intervention scores (beta-VAE,
    FactorVAE) need ``ds.sampler()`` (a :class:`~vaekit.analysis.disentanglement.FactorSampler`), else None.
    ``dci_estimators``: boosting stages of DCI's classifiers (disentanglement_lib's 100; the cost of DCI grows
    with it and with the classes of a factor: dSprites' orientation has 40)."""
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
        put("beta_vae_score", dm.beta_vae_score(sampler(), lambda x: _codes(model, x), seed=seed,
                                                 train_points=min(train_points, 10000), eval_points=test_points))
        put("factor_vae_score", dm.factor_vae_score(sampler(), lambda x: _codes(model, x), seed=seed,
                                                     train_points=min(train_points, 10000), eval_points=test_points))
    for name in SCORES:
        out.setdefault(name, None)
        out.setdefault(f"{name}_stderr", None)
    return {name: out[name] for key in SCORES for name in (key, f"{key}_stderr")}
