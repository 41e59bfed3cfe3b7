"""The data a run trains on: a named data set, or tensors and arrays given in memory (:func:`in_memory_dataset`),
with their labels."""

from __future__ import annotations

import types
from typing import Any

import torch

from vaekit.config import TrainConfig
from vaekit.errors import DataError

#: ``dataset`` in the config.json of a run trained by :func:`fit` on data given in memory.
IN_MEMORY = "in-memory"


def load_data(cfg: TrainConfig, standardisation: Any = None):
    """The data set ``cfg`` names; a table standardised as ``cfg.standardise`` says, by ``standardisation`` (a
    resumed run's stored mean and SD) when given."""
    from vaekit.data import load_dataset

    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, binarize=cfg.binarize, seed=cfg.seed,
                        image_size=cfg.image_size, limit=cfg.limit, standardise=cfg.standardise,
                        label_column=cfg.label_column, standardisation=standardisation)


def in_memory_dataset(train: Any, valid: Any = None) -> Any:
    """A data set (the attributes :func:`fit` reads) from what :func:`vaekit.data.given.examples` takes: tensors,
    arrays, ``(x, y)`` pairs (labels), a torch ``Dataset`` or ``DataLoader``; each checked as that module says, in
    an error naming the argument (``train``, ``valid``).

    A vaekit :class:`~vaekit.data.Dataset` is returned as it is. Without ``valid`` nothing is held out: the
    kept weights are then those of the last epoch.
    """
    from vaekit.data.given import examples

    if hasattr(train, "train") and hasattr(train, "shape") and valid is None:
        return train
    x, y = examples(train, "train")
    x = x.float()
    if valid is not None:
        vx, vy = examples(valid, "valid")
        vx = vx.float()
        if tuple(vx.shape[1:]) != tuple(x.shape[1:]):
            raise DataError(f"valid has examples of shape {tuple(vx.shape[1:])}, train {tuple(x.shape[1:])}")
        if (vy is None) != (y is None):
            raise DataError("give labels for both train and valid, or for neither")
    else:
        vx, vy = x[:0], (y[:0] if y is not None else None)
    binary = bool(((x == 0) | (x == 1)).all()) and bool(((vx == 0) | (vx == 1)).all())
    labels = {"train": y, "valid": vy, "test": None if y is None else y[:0]}
    classes = int(max(int(y.max()), int(vy.max()) if vy is not None and vy.numel() else 0)) + 1 \
        if y is not None else None
    return types.SimpleNamespace(name=IN_MEMORY, train=x, valid=vx, test=x[:0], shape=tuple(x.shape[1:]),
                                 binary=binary, dynamic=False, labels=labels.get,
                                 classes=tuple(str(c) for c in range(classes)) if classes else None)


def _labels(ds: Any, split: str) -> torch.Tensor | None:
    getter = getattr(ds, "labels", None)
    return getter(split) if callable(getter) else None


def _classes(ds: Any, family: str | None = None) -> int:
    """The number of classes of the data's labels; ``family``: the family that needs them (None: conditional)."""
    y = _labels(ds, "train")
    if y is None or y.numel() == 0:
        name = getattr(ds, "name", "the data set")
        if family is not None:
            raise DataError(f"family {family} needs labels and {name} has none; use a data set with labels (digits, "
                            "mnist, ...), or (images, labels) pairs in Python")
        raise DataError(f"{name} has no labels to condition on; "
                        "leave conditional off, or use a data set with labels (digits, mnist, ...)")
    classes = getattr(ds, "classes", None)
    if classes:
        return len(classes)
    return int(y.max()) + 1


def _semi_supervised_labels(model: Any, ds: Any, seed: int, device: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(every training label, the validation labels or None) for a semi-supervised model (M2), on ``device``,
    after the model has chosen the labels it keeps (``model.carve_labels``, with the run's ``seed``; a resumed
    run's checkpoint then brings back its own). The trainer masks the rest (``model.masked_labels``)."""
    y, valid = _labels(ds, "train"), _labels(ds, "valid")
    if y is None or y.numel() == 0:
        raise DataError(f"{getattr(ds, 'name', 'the data set')} has no labels; a semi-supervised model (family m2) "
                        "needs a data set with labels (digits, mnist, ...), or (images, labels) pairs in Python")
    model.carve_labels(y, seed)
    return y.to(device), (valid.to(device) if valid is not None else None)
