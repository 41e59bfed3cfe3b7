"""Data sets with train / validation / test splits, loaded fast and checked strictly.

>>> ds = load_dataset("binarized-mnist", data_dir="data/binarized_mnist")
>>> ds.shape, ds.binary, ds.info()["splits"]
((1, 28, 28), True, {'train': 50000, 'valid': 10000, 'test': 10000})

``spec`` is a name in :data:`DATASETS` (``binarized-mnist``, ``mnist``, ``mnist-grey``,
``fashion-mnist``, ``kmnist``, the ``-t10k`` variants ``mnist-t10k``, ``fashion-mnist-t10k``,
``kmnist-t10k``, ``cifar10``, ``digits``, ``dsprites``, ``shapes3d``, the tables ``wine``, ``breast-cancer``) or the
user's own data: ``images:DIR``, ``npy:FILE``, ``npz:FILE``, ``csv:FILE``.

Tables (:mod:`vaekit.data.tabular`): ``csv:FILE``, 2-D arrays that are not flattened square images, and
scikit-learn's bundled ``wine`` and ``breast-cancer`` hold real-valued features, shape (1, 1, D), ``tabular``
True. They are standardised by default (``standardise=None`` or True; False keeps the raw values): every split
becomes (x - m) / s with the training split's mean m and SD s, recorded in ``Dataset.standardisation`` (whose
``log_jacobian`` = -sum_d log s_d turns log-densities of the standardised values into the original units).

MNIST grey levels and the test files alone: ``mnist`` keeps the 8-bit grey levels unless a
binarization is asked for, and ``mnist-grey`` is the same data with binarization refused.
When only the ``t10k-`` files are at hand, ``load_dataset("mnist", splits=("test",))`` reads
the test split (``vaekit evaluate`` asks only for the split it evaluates), and
``mnist-t10k`` carves a train / valid / test split of its own out of the 10,000 test images
(7,000 / 1,000 / 2,000 by default: the test part fixed, the validation part chosen by
``seed``), explicitly: ``mnist`` never falls back to it (see :mod:`vaekit.data.idx`).

Grey levels: ``Dataset.levels`` is the number L of values x = k / (L - 1) the data takes (2
binary, 256 for 8-bit images and CIFAR-10, 17 for ``digits``, ``None`` for real-valued
arrays), see :mod:`vaekit.data.base`.
Every loader returns a :class:`Dataset` (float32 (N, C, H, W) in [0, 1]; see
:mod:`vaekit.data.base` for the binarization protocols and the split rules), and every
problem with the data is a :class:`~vaekit.errors.DataError` naming the file and what is
wrong; bad option values are a :class:`~vaekit.errors.ConfigError`.

Files of named data sets are found and fetched as :mod:`vaekit.data.download` describes
(``data_dir`` / ``$VAEKIT_DATA_DIR`` / ``~/.cache/vaekit``); ``download=False`` never touches
the network. Two keywords go beyond the common interface: ``splits`` loads a subset of the
splits (the others are empty), for example ``splits=("test",)`` reads the MNIST test files
when the training files are absent; ``cache=False`` neither reads nor writes the parse cache
of ``.amat`` files.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from vaekit.data.amat import load_binarized_mnist, parse_amat, read_amat, write_amat
from vaekit.data.base import (
    BINARIZE_MODES,
    SPLITS,
    Dataset,
    Factors,
    check_splits,
    class_interleaved_order,
    keep_splits,
    subset_indices,
)
from vaekit.data.cifar import load_cifar10, read_cifar_archive, write_cifar_archive
from vaekit.data.digits import load_digits
from vaekit.data.download import MissingFilesError, cache_root, dataset_dir
from vaekit.data.dsprites import DSpritesSampler, load_dsprites, render_dsprites
from vaekit.data.files import load_file_dataset, read_images_dir
from vaekit.data.idx import (
    IDX_SETS,
    load_idx_dataset,
    load_idx_grey,
    load_idx_split,
    load_idx_t10k,
    read_idx,
    read_idx_images,
    read_idx_labels,
    write_idx,
)
from vaekit.data.shapes3d import Shapes3DSampler, load_shapes3d
from vaekit.data.tabular import SKLEARN_TABLES, Standardisation, load_table, read_csv, standardised
from vaekit.errors import ConfigError, DataError, keywords_checked

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "register_dataset",
    "FILE_KINDS",
    "SPLITS",
    "Dataset",
    "Standardisation",
    "read_csv",
    "DatasetEntry",
    "DSpritesSampler",
    "Factors",
    "MissingFilesError",
    "cache_root",
    "class_interleaved_order",
    "dataset_dir",
    "load_dataset",
    "load_dsprites",
    "load_idx_split",
    "parse_amat",
    "read_amat",
    "read_cifar_archive",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
    "read_images_dir",
    "render_dsprites",
    "Shapes3DSampler",
    "load_shapes3d",
    "subset_indices",
    "write_amat",
    "write_cifar_archive",
    "write_idx",
]

#: Prefixes of the user's own data: ``images:DIR``, ``npy:FILE``, ``npz:FILE``, ``csv:FILE``.
FILE_KINDS: tuple[str, ...] = ("images", "npy", "npz", "csv")


@dataclass(frozen=True)
class DatasetEntry:
    """A named data set: what it is, its image shape, whether it has labels, its loader."""

    name: str
    description: str
    shape: tuple[int, int, int]
    labels: bool
    loader: Callable[..., Dataset]


DATASETS: dict[str, DatasetEntry] = {
    "binarized-mnist": DatasetEntry(
        "binarized-mnist",
        "static binarized MNIST (Larochelle & Murray 2011), fixed 50k/10k/10k splits, binary",
        (1, 28, 28),
        False,
        load_binarized_mnist,
    ),
    **{
        name: DatasetEntry(
            name, spec.description, (1, 28, 28), True, partial(load_idx_dataset, name)
        )
        for name, spec in IDX_SETS.items()
    },
    "mnist-grey": DatasetEntry(
        "mnist-grey",
        "MNIST at its 8-bit grey levels (256 levels, never binarized); the same data as mnist with binarize none",
        (1, 28, 28),
        True,
        partial(load_idx_grey, "mnist"),
    ),
    **{
        f"{name}-t10k": DatasetEntry(
            f"{name}-t10k",
            f"{name}'s 10,000 t10k- test images alone, split 7,000 / 1,000 / 2,000 (train / valid / test; "
            "test fixed, valid by seed), for when the train- files are absent; grey levels unless binarized",
            (1, 28, 28),
            True,
            partial(load_idx_t10k, name),
        )
        for name in IDX_SETS
    },
    "cifar10": DatasetEntry(
        "cifar10",
        "CIFAR-10 (Krizhevsky 2009) from its binary archive, 3x32x32 colour at 8-bit values, 10 classes, "
        "50k train (5k of them carved for validation) / 10k test",
        (3, 32, 32),
        True,
        load_cifar10,
    ),
    "digits": DatasetEntry(
        "digits",
        "scikit-learn's bundled 8x8 digits (1,797 images, grey 0..16 -> [0, 1]), no download",
        (1, 8, 8),
        True,
        load_digits,
    ),
    "dsprites": DatasetEntry(
        "dsprites",
        "dSprites factor grid rendered by vaekit: 737,280 binary 64x64 images, 5 factors (shape 3, scale 6, "
        "orientation 40, x 32, y 32); not pixel-identical to the published file",
        (1, 64, 64),
        False,
        load_dsprites,
    ),
    "shapes3d": DatasetEntry(
        "shapes3d",
        "DeepMind's 3D Shapes from 3dshapes.h5 in the data folder (not downloaded; needs h5py): 480,000 RGB 64x64 "
        "images at 8-bit values, 6 factors (floor_hue 10, wall_hue 10, object_hue 10, scale 8, shape 4, "
        "orientation 15)",
        (3, 64, 64),
        False,
        load_shapes3d,
    ),
    **{
        name: DatasetEntry(name, description, (1, 1, 13 if name == "wine" else 30), True, partial(load_table, name))
        for name, (_, description) in SKLEARN_TABLES.items()
    },
}



def register_dataset(name: str, description: str, shape: tuple[int, int, int], labels: bool = False):
    """Decorator: ``loader(data_dir=..., binarize=..., seed=..., **options) -> Dataset`` becomes the data set
    ``name`` (``--dataset NAME``, ``load_dataset(NAME)``); registering a name again replaces it."""

    def decorate(loader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS[name] = DatasetEntry(name, description, tuple(shape), bool(labels), loader)
        return loader

    return decorate


_ALIASES = {
    "binary-mnist": "binarized-mnist",
    "static-mnist": "binarized-mnist",
    "fmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "mnist-gray": "mnist-grey",
}


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    return "fashion-mnist" if key == "fashionmnist" else key


@keywords_checked
def load_dataset(
    spec: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    valid_size: int | float | None = None,
    test_size: int | float | None = None,
    binarize: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    download: bool = True,
    splits: Iterable[str] | None = None,
    cache: bool = True,
    limit: int | None = None,
    standardise: bool | None = None,
    label_column: str | None = None,
    standardisation: Standardisation | dict | None = None,
) -> Dataset:
    """Load ``spec`` (a name in :data:`DATASETS`, or ``images:DIR`` / ``npy:FILE`` /
    ``npz:FILE`` / ``csv:FILE``) as a :class:`Dataset`.

    ``data_dir``: folder of a named data set's files (default ``$VAEKIT_DATA_DIR`` or the
    per-user cache). ``valid_size`` / ``test_size``: counts or fractions in (0, 1) where the
    data set has no fixed split. ``binarize``: ``None``, ``"dynamic"`` or ``"threshold"``.
    ``image_size``: resize ``images:DIR`` (an int or (H, W)). ``seed``: chooses the
    validation split (the test split never depends on it). ``download``: fetch missing files.
    ``splits``: load only these splits (the others are empty). ``cache``: use the parse cache.
    ``limit``: for a data set drawn from a factor grid (its loader takes ``limit``: dsprites, shapes3d), a fixed
    random subset of that many images, from which the splits are carved. ``standardise``: a table's splits
    standardised by the training split's mean and SD (None: yes for tables; True for images is an error);
    ``standardisation``: apply this one (a run's stored mean and SD) instead. ``label_column``: the column of
    class labels in a ``csv:FILE`` with a header row.
    """
    if standardise is not None and not isinstance(standardise, bool):
        raise ConfigError(f"standardise must be True, False or None, got {standardise!r}")
    wanted = check_splits(splits)
    args = (spec, data_dir, valid_size, test_size, binarize, image_size, seed, download)
    ds = _load_raw(*args, wanted, cache, limit, label_column)
    if ds.tabular and standardisation is None and standardise is not False and "train" not in wanted:
        ds = _load_raw(*args, None, cache, limit, label_column)  # the training split's mean and SD are needed
    return keep_splits(standardised(ds, standardise, standardisation), wanted)


def _load_raw(spec: str, data_dir: str | os.PathLike[str] | None, valid_size: int | float | None,
              test_size: int | float | None, binarize: str | None, image_size: int | tuple[int, int] | None,
              seed: int, download: bool, splits: Iterable[str] | None, cache: bool, limit: int | None,
              label_column: str | None) -> Dataset:
    """:func:`load_dataset` before a table's standardisation."""
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data set spec must be a non-empty string, got {spec!r}")
    wanted = check_splits(splits)
    kind, sep, _ = spec.partition(":")
    if sep and kind in FILE_KINDS:
        _check_limit(spec, limit, None)
        ds = load_file_dataset(
            spec,
            valid_size=valid_size,
            test_size=test_size,
            binarize=binarize,
            image_size=image_size,
            seed=seed,
            splits=wanted,
            label_column=label_column,
        )
        return keep_splits(ds, wanted)
    if label_column is not None:
        raise ConfigError(f"label_column names a column of a CSV file (csv:FILE); {spec} has its own labels: "
                          "leave it out")
    name = _canonical(spec)
    if name not in DATASETS:
        raise DataError(_unknown_message(spec))
    options = _check_limit(name, limit, DATASETS[name].loader)
    ds = DATASETS[name].loader(
        data_dir=data_dir,
        valid_size=valid_size,
        test_size=test_size,
        binarize=binarize,
        image_size=image_size,
        seed=seed,
        download=download,
        splits=wanted,
        cache=cache,
        **options,
    )
    return keep_splits(ds, wanted)


def _check_limit(name: str, limit: int | None, loader: Callable[..., Dataset] | None) -> dict[str, int]:
    """``{"limit": limit}`` for a loader that subsets its data set, ``{}`` without a limit; else a ConfigError."""
    if limit is None:
        return {}
    if loader is None or "limit" not in inspect.signature(loader).parameters:
        takers = ", ".join(n for n, e in DATASETS.items() if "limit" in inspect.signature(e.loader).parameters)
        raise ConfigError(f"limit applies to the data sets drawn from a factor grid ({takers}); {name} has its own "
                          "splits: leave limit out")
    return {"limit": limit}


def _unknown_message(spec: str) -> str:
    names = ", ".join(DATASETS)
    msg = f"unknown data set {spec!r}: choose one of {names}, or images:DIR, npy:FILE, npz:FILE, csv:FILE"
    close = difflib.get_close_matches(_canonical(spec), list(DATASETS), n=1)
    if close:
        msg += f" (did you mean {close[0]!r}?)"
    path = Path(spec).expanduser()
    if path.is_dir():
        msg += f" (for a folder of images write images:{spec})"
    elif path.suffix in (".npy", ".npz", ".csv") and path.exists():
        msg += f" (for this file write {path.suffix[1:]}:{spec})"
    return msg
