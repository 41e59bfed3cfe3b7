"""scikit-learn's bundled 8 x 8 handwritten digits: 1,797 images, no download needed.

Grey values 0..16 are scaled to [0, 1] as x / 16 (``levels`` 17, or 2 when binarized); labels
0-9. Default splits 1,257 / 270 / 270 (train / valid / test, about 70 / 15 / 15 %): the test
split is carved with the fixed :data:`~vaekit.data.base.TEST_SEED` (the same for every
``seed``), the validation split from the rest with ``seed``. ``binarize``: ``None`` (grey
levels, the default), ``"dynamic"`` or ``"threshold"``.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from vaekit.data.base import (
    BINARIZE_MODES,
    Dataset,
    apply_binarize,
    bundled_splits,
    check_binarize,
    check_native_size,
    check_seed,
    check_splits,
    keep_splits,
)

NAME = "digits"
DEFAULT_VALID = 270
DEFAULT_TEST = 270


@functools.cache
def _bundled() -> tuple[np.ndarray, np.ndarray]:
    """The bundled images as x / 16, (1797, 1, 8, 8) float32, and their labels, read once a process (each read
    parses scikit-learn's gzipped CSV: 22 ms on a 2-core CPU); read-only: every split indexes a copy out of them."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0)[:, None]
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def load_digits(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    valid_size: int | float | None = None,
    test_size: int | float | None = None,
    binarize: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    download: bool = True,
    splits: tuple[str, ...] | None = None,
    cache: bool = True,
) -> Dataset:
    """The digits as a :class:`Dataset` of shape 1 x 8 x 8 (``data_dir``/``download`` unused)."""
    binarize = check_binarize(binarize, allowed=(None, *BINARIZE_MODES))
    check_native_size(NAME, image_size, (8, 8))
    seed = check_seed(seed)
    wanted = check_splits(splits)
    x, y = bundled_splits(NAME, *_bundled(), test_size=test_size, valid_size=valid_size, default_test=DEFAULT_TEST,
                          default_valid=DEFAULT_VALID, seed=seed)
    x, dynamic = apply_binarize(x, binarize, seed)
    ds = Dataset(
        name=NAME,
        shape=(1, 8, 8),
        binary=binarize is not None,
        dynamic=dynamic,
        train=x["train"],
        valid=x["valid"],
        test=x["test"],
        train_labels=y["train"],
        valid_labels=y["valid"],
        test_labels=y["test"],
        binarize=binarize,
        source="sklearn.datasets.load_digits (bundled with scikit-learn)",
        classes=tuple("0123456789"),
        levels=2 if binarize is not None else 17,
    )
    return keep_splits(ds, wanted)
