"""The :class:`Dataset` container and the split / binarization rules every loader shares.

Values are float32 in [0, 1], laid out (N, C, H, W). A data set is *binary* when the values
the model sees are in {0, 1}, so that a Bernoulli likelihood
log p(x|z) = sum_d [x_d log mu_d + (1 - x_d) log(1 - mu_d)] (nats) is a proper log-mass.

Binarization protocols (``binarize``):

- ``None``: values as stored (grey levels in [0, 1], or {0, 1} when the source is binary,
  e.g. the static binarization of ``binarized-mnist``, reported as ``"static"``).
- ``"dynamic"``: the training split keeps grey levels p in [0, 1] and every batch is drawn
  afresh, x ~ Bernoulli(p) (:meth:`Dataset.binarize_batch`); the validation and test splits
  are sampled ONCE with fixed seeds so that evaluation is deterministic.
- ``"threshold"``: x = 1[p > 0.5] on every split.

Grey levels (``levels``): the number L of equally spaced values x in {0, 1/(L-1), ..., 1} that
the data the model sees takes, so that x * (L - 1) is the integer pixel value: 2 for binary data
(static, threshold or dynamic binarization, or a user's 0/1 data), 256 for 8-bit images (MNIST
IDX files, PNG/JPEG folders, CIFAR-10, uint8 arrays), 17 for scikit-learn's digits (0..16), and
``None`` for real-valued data (float arrays that are not all 0/1). Discrete likelihoods need
an integer ``levels``; bits per dimension of a density on such data needs the correction of
log2 L per dimension.

Split rule: the test split never depends on ``seed`` (it is a fixed file, or carved with the
fixed seed :data:`TEST_SEED`), so test numbers from runs with different seeds are
comparable; ``seed`` chooses which training images form the validation split.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vaekit.errors import ConfigError, DataError
from vaekit.resources import gib, physical_memory

#: The three splits, in order.
SPLITS: tuple[str, str, str] = ("train", "valid", "test")

#: Binarization protocols for grey-level data (``None`` keeps the values).
BINARIZE_MODES: tuple[str, ...] = ("dynamic", "threshold")

#: Fixed seed of test-split carve-outs and of the one-off binarization of the test split.
TEST_SEED = 1_000_003

#: Offset added to ``seed`` for the one-off binarization of the validation split.
_VALID_BINARIZE_OFFSET = 7_919


@dataclass(frozen=True, eq=False, repr=False)
class Factors:
    """The known generative factors of a data set's images (e.g. dSprites' shape, scale, orientation, x, y).

    Factor k has ``sizes[k]`` classes 0..sizes[k]-1 whose values are ``values[k]`` (1-D float64 of that length);
    ``train`` / ``valid`` / ``test`` are (N, K) int64 class indices, row i the factors of image i of that split
    (read-only copies; a split that was not loaded has none). ``Dataset.factors`` is ``None`` for data sets
    without known factors.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    values: tuple[np.ndarray, ...]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        sizes = tuple(int(s) for s in self.sizes)
        if not names or len(sizes) != len(names) or len(self.values) != len(names) or min(sizes) < 1:
            raise DataError(f"factors: names {names}, sizes {sizes} and {len(self.values)} value arrays must "
                            "match, one per factor, each factor with at least one class")
        values = []
        for name, size, v in zip(names, sizes, self.values):
            arr = np.array(v, dtype=np.float64)
            if arr.shape != (size,):
                raise DataError(f"factors: the values of {name!r} must be 1-D of length {size}, got {arr.shape}")
            arr.setflags(write=False)
            values.append(arr)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "sizes", sizes)
        object.__setattr__(self, "values", tuple(values))
        for s in SPLITS:
            object.__setattr__(self, s, _factor_classes(getattr(self, s), sizes, s))

    def split(self, name: str) -> np.ndarray:
        """The (N, K) int64 factor classes of split ``name``."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        return getattr(self, name)

    def split_values(self, name: str) -> np.ndarray:
        """The (N, K) float64 factor values of split ``name`` (``values[k][class]``)."""
        classes = self.split(name)
        if not len(classes):
            return np.zeros((0, len(self.names)))
        return np.stack([v[classes[:, k]] for k, v in enumerate(self.values)], axis=1)

    def __repr__(self) -> str:
        grid = ", ".join(f"{n} {s}" for n, s in zip(self.names, self.sizes))
        sizes = "/".join(str(len(self.split(s))) for s in SPLITS)
        return f"Factors({grid}; train/valid/test={sizes})"


def _factor_classes(classes: Any, sizes: tuple[int, ...], split: str) -> np.ndarray:
    """``classes`` as a read-only (N, K) int64 copy, every entry a class of its factor."""
    arr = np.asarray(classes)
    if arr.size == 0:
        arr = arr.reshape(0, len(sizes))
    if arr.ndim != 2 or arr.shape[1] != len(sizes) or (arr.size and arr.dtype.kind not in "iu"):
        raise DataError(f"factors: the {split} classes must be an (N, {len(sizes)}) integer array, got "
                        f"{arr.dtype} {arr.shape}")
    arr = np.array(arr, dtype=np.int64)
    bad = (arr < 0) | (arr >= np.asarray(sizes, dtype=np.int64))
    if bad.any():
        row, k = np.argwhere(bad)[0]
        raise DataError(f"factors: {split} row {row} has class {arr[row, k]} for a factor of {sizes[k]} classes")
    arr.setflags(write=False)
    return arr


@dataclass(eq=False, repr=False)
class Dataset:
    """Train / validation / test splits of images, values float32 in [0, 1], shape (N, C, H, W); or of a table
    (``tabular``: real values, shape (N, 1, 1, D), standardised as ``standardisation`` says).

    ``binary``: the values the model sees are in {0, 1}. ``dynamic``: the train split holds
    grey levels p that :meth:`binarize_batch` turns into x ~ Bernoulli(p) on every batch
    (the valid and test splits are already binarized once). Labels are int64 or ``None``.
    ``not_loaded`` names the splits left empty because the caller asked for a subset.
    ``levels``: the number L of grey levels x in {0, 1/(L-1), ..., 1} (2 when binary, 256 for
    8-bit images, ``None`` for real values); left ``None`` on binary data it becomes 2.
    """

    name: str
    shape: tuple[int, int, int]
    binary: bool
    dynamic: bool
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    binarize: str | None = None
    source: str = ""
    classes: tuple[str, ...] | None = None
    not_loaded: tuple[str, ...] = ()
    levels: int | None = None
    factors: Factors | None = None
    #: For a data set with factors that can render (or look up) images of chosen factors: () -> a factor sampler
    #: (:class:`vaekit.analysis.disentanglement.FactorSampler`), which the intervention scores need; else None.
    sampler: Callable[[], Any] | None = None
    #: A table of real-valued features (shape (1, 1, D)), not images (:mod:`vaekit.data.tabular`).
    tabular: bool = False
    #: The standardisation applied to every split (:class:`vaekit.data.tabular.Standardisation`), or None.
    standardisation: Any = None
    #: The names of a table's features (a CSV header's, scikit-learn's), or None.
    features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.levels is None and self.binary:
            self.levels = 2
        if self.levels is not None:
            if isinstance(self.levels, bool) or not isinstance(self.levels, numbers.Integral) or self.levels < 2:
                raise DataError(f"{self.name}: levels must be an integer >= 2 or None, got {self.levels!r}")
            self.levels = int(self.levels)
            if self.binary and self.levels != 2:
                raise DataError(f"{self.name}: binary data has 2 levels, got levels={self.levels}")
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        if len(self.shape) != 3 or min(self.shape) <= 0:
            raise DataError(
                f"{self.name}: shape must be (C, H, W) of positive sizes, got {self.shape}"
            )
        if self.dynamic and not self.binary:
            raise DataError(f"{self.name}: dynamic binarization implies binary=True")
        have_labels = [self.labels(s) is not None for s in SPLITS]
        if any(have_labels) and not all(have_labels):
            raise DataError(f"{self.name}: either every split has labels or none has")
        for s in SPLITS:
            x = self.split(s)
            if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 4:
                raise DataError(f"{self.name}: the {s} split must be a float32 tensor (N, C, H, W)")
            if tuple(x.shape[1:]) != self.shape:
                raise DataError(
                    f"{self.name}: the {s} split has images of shape {tuple(x.shape[1:])}, "
                    f"expected {self.shape}"
                )
            y = self.labels(s)
            if y is not None and (y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x)):
                raise DataError(f"{self.name}: {s} labels must be int64 of length {len(x)}")

    def split(self, name: str) -> torch.Tensor:
        """The images of split ``name`` (``"train"``, ``"valid"`` or ``"test"``)."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        return getattr(self, name)

    def labels(self, name: str) -> torch.Tensor | None:
        """The int64 labels of split ``name``, or ``None`` when the data set has none."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        return getattr(self, f"{name}_labels")

    def binarize_batch(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x ~ Bernoulli(p = x) elementwise when ``dynamic``; the batch unchanged otherwise."""
        if self.dynamic:
            return torch.bernoulli(x, generator=generator)
        return x

    @property
    def has_labels(self) -> bool:
        return self.train_labels is not None

    def info(self) -> dict[str, Any]:
        """Shape, value type, split sizes, labels and provenance as a JSON-ready dict."""
        return {
            "dataset": self.name,
            "shape": list(self.shape),
            "binary": bool(self.binary),
            "dynamic": bool(self.dynamic),
            "splits": {s: int(len(self.split(s))) for s in SPLITS},
            "labels": self.has_labels,
            "classes": list(self.classes) if self.classes is not None else None,
            "binarize": self.binarize,
            "levels": self.levels,
            "source": self.source,
            "not_loaded": list(self.not_loaded),
            **({"tabular": True, "features": list(self.features) if self.features else None,
                "standardisation": self.standardisation.to_dict() if self.standardisation is not None else None}
               if self.tabular else {}),
        }

    def __repr__(self) -> str:
        sizes = "/".join(str(len(self.split(s))) for s in SPLITS)
        kind = "dynamic" if self.dynamic else ("binary" if self.binary else
                                               f"{self.levels} levels" if self.levels else "continuous")
        if self.tabular:
            kind = f"table of {self.shape[-1]} features" + (", standardised" if self.standardisation else "")
        return f"Dataset({self.name!r}, shape={self.shape}, {kind}, train/valid/test={sizes})"


# --------------------------------------------------------------------------- options


def check_binarize(binarize: str | None, *, allowed: Iterable[str | None]) -> str | None:
    """Normalize ``binarize`` (``"none"`` -> ``None``) and check it is one of ``allowed``."""
    if isinstance(binarize, str) and binarize.lower() == "none":
        binarize = None
    allowed = tuple(allowed)
    if binarize not in allowed:
        shown = ", ".join("None" if a is None else repr(a) for a in allowed)
        raise ConfigError(f"binarize={binarize!r} is not supported here; choose one of {shown}")
    return binarize


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def check_image_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``28`` -> ``(28, 28)``; ``(H, W)`` kept; positive integers only."""
    if image_size is None:
        return None
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        size: tuple[Any, ...] = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise ConfigError(f"image_size must be an integer or (height, width), got {image_size!r}")
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in size):
        raise ConfigError(f"image_size must be positive integers, got {image_size!r}")
    return int(size[0]), int(size[1])


def check_native_size(name: str, image_size: Any, native: tuple[int, int]) -> None:
    """Named data sets are not resized: ``image_size`` must be ``None`` or the native size."""
    size = check_image_size(image_size)
    if size is not None and size != native:
        raise ConfigError(
            f"{name} images are {native[0]}x{native[1]} and are not resized; drop image_size "
            f"(it applies to images:DIR)"
        )


def check_images_memory(name: str, count: int, image_bytes: int) -> None:
    """Refuse to hold ``count`` images of ``image_bytes`` each (float32 in memory) when they would take over 3/4
    of the physical memory, in one line suggesting ``limit`` (data sets drawn from a factor grid)."""
    need, have = count * image_bytes, physical_memory()
    if have is not None and need > 0.75 * have:
        raise ConfigError(f"{name}: {count} images take {gib(need)} as float32, over 3/4 of the {gib(have)} of "
                          "memory; pass limit=N (a fixed random subset of the grid) or load fewer splits")


def check_splits(splits: Iterable[str] | None) -> tuple[str, ...]:
    """The requested subset of :data:`SPLITS` (all three when ``None``), in canonical order."""
    if splits is None:
        return SPLITS
    if isinstance(splits, str):
        splits = (splits,)
    wanted = set(splits)
    unknown = wanted - set(SPLITS)
    if unknown or not wanted:
        raise ConfigError(f"splits must be a non-empty subset of {SPLITS}, got {tuple(splits)!r}")
    return tuple(s for s in SPLITS if s in wanted)


def resolve_size(size: int | float | None, n: int, default: int, what: str, source: str) -> int:
    """A split size as a count: ``None`` -> ``default``; an int >= 0; or a fraction in (0, 1)
    of the ``n`` images available (rounded). It must leave at least one image."""
    if size is None:
        count = default
    elif isinstance(size, bool):
        raise ConfigError(f"{what} must be a count or a fraction in (0, 1), got {size!r}")
    elif isinstance(size, numbers.Integral):
        count = int(size)
        if count < 0:
            raise ConfigError(f"{what} must be >= 0, got {count}")
    elif isinstance(size, numbers.Real) and 0.0 < float(size) < 1.0:
        count = int(round(float(size) * n))
    else:
        raise ConfigError(f"{what} must be a count >= 0 or a fraction in (0, 1), got {size!r}")
    if count >= n:
        raise ConfigError(
            f"{what}={count} leaves no training images: {source} has {n} images to split; "
            f"choose a smaller {what}"
        )
    return count


def carve(n: int, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices 0..n-1 into (rest, carved) with ``count`` carved at random
    (``numpy.random.default_rng(seed)``); both keep the original order."""
    perm = np.random.default_rng(seed).permutation(n)
    carved = np.sort(perm[:count])
    rest = np.sort(perm[count:])
    return rest, carved


def carve_test_then_valid(n: int, test: int, valid: Callable[[int], int], seed: int) -> dict[str, np.ndarray]:
    """Indices of the three splits of a pool of ``n`` images with no fixed split: ``test`` carved with the fixed
    :data:`TEST_SEED` (so the test split never depends on ``seed``), then ``valid(m)`` of the m left carved with
    ``seed``; the rest is the training split. Each keeps the original order."""
    pool, test_idx = carve(n, test, TEST_SEED)
    rest, valid_pos = carve(len(pool), valid(len(pool)), seed)
    return {"train": pool[rest], "valid": pool[valid_pos], "test": test_idx}


# --------------------------------------------------------------------------- assembly


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 0..255 -> float32 x / 255; floats in [0, 1] -> float32 (already checked)."""
    if images.dtype == np.uint8:
        return torch.from_numpy(np.divide(images, np.float32(255.0), dtype=np.float32))
    return torch.from_numpy(np.array(images, dtype=np.float32, order="C"))


def to_labels(labels: np.ndarray | None) -> torch.Tensor | None:
    if labels is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))


def bundled_splits(name: str, values: np.ndarray, labels: np.ndarray, *, test_size: int | float | None,
                   valid_size: int | float | None, default_test: int, default_valid: int, seed: int,
                   unit: str = "images") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The train / valid / test splits of an array with no fixed split (scikit-learn's bundled ones): ``test_size``
    (``default_test`` when None) carved from the N ``values`` with :data:`TEST_SEED`, ``valid_size``
    (``default_valid``) from the rest with ``seed`` (:func:`carve_test_then_valid`). Returns the values (float32)
    and the labels (int64) of each split, by name, each in the original order."""
    n = len(values)
    t = resolve_size(test_size, n, default_test, "test_size", f"{name} ({n} {unit})")
    idx = carve_test_then_valid(
        n, t, lambda m: resolve_size(valid_size, m, default_valid, "valid_size", f"{name} after the test split"), seed
    )
    return {s: to_float(values[i]) for s, i in idx.items()}, {s: to_labels(labels[i]) for s, i in idx.items()}


def is_binary(x: torch.Tensor) -> bool:
    """Every value is exactly 0 or 1."""
    return bool(((x == 0) | (x == 1)).all())


def apply_binarize(
    splits: dict[str, torch.Tensor], binarize: str | None, seed: int
) -> tuple[dict[str, torch.Tensor], bool]:
    """Apply a binarization protocol to grey-level splits; returns (splits, dynamic).

    ``"threshold"``: x = 1[p > 0.5]. ``"dynamic"``: train unchanged; valid ~ Bernoulli(p) with
    seed ``seed + offset``, test ~ Bernoulli(p) with the fixed :data:`TEST_SEED`.
    """
    if binarize is None:
        return splits, False
    if binarize == "threshold":
        return {k: (v > 0.5).to(torch.float32) for k, v in splits.items()}, False
    if binarize == "dynamic":
        out = dict(splits)
        seeds = {"valid": seed + _VALID_BINARIZE_OFFSET, "test": TEST_SEED}
        for k, s in seeds.items():
            g = torch.Generator().manual_seed(s)
            out[k] = torch.bernoulli(splits[k], generator=g)
        return out, True
    raise ConfigError(f"unknown binarization {binarize!r}; choose from {BINARIZE_MODES}")


def empty_like_split(shape: tuple[int, int, int]) -> torch.Tensor:
    return torch.zeros((0, *shape), dtype=torch.float32)


def keep_splits(ds: Dataset, splits: tuple[str, ...]) -> Dataset:
    """Empty the splits not in ``splits`` (recorded in ``not_loaded``)."""
    dropped = tuple(s for s in SPLITS if s not in splits)
    if not dropped:
        return ds
    for s in dropped:
        setattr(ds, s, empty_like_split(ds.shape))
        if ds.labels(s) is not None:
            setattr(ds, f"{s}_labels", torch.zeros(0, dtype=torch.int64))
    ds.not_loaded = tuple(sorted(set(ds.not_loaded) | set(dropped), key=SPLITS.index))
    return ds


# --------------------------------------------------------------------------- subsets


def _label_array(labels: Any, size: int | None) -> tuple[np.ndarray | None, int]:
    """Labels as int64 numpy (or None when absent or empty) and the number of items."""
    if labels is not None:
        y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        y = y.reshape(-1)
        if size is not None and len(y) and len(y) != size:  # empty labels: none
            raise DataError(f"{len(y)} labels for {size} items; they must match")
        if len(y):
            if y.dtype.kind not in "iu":
                raise DataError(f"labels must be integers, got {y.dtype}")
            return y.astype(np.int64), len(y)
        labels = None
    if size is None:
        raise ConfigError("subset_indices: give labels or size")
    return None, int(size)


def subset_indices(labels: Any, n: int, seed: int = 0, *, size: int | None = None) -> np.ndarray:
    """Indices (sorted) of a fixed random subset of ``n`` items, never simply the first ``n``.

    With ``labels`` (one per item): class-balanced, each class present gets ``n // C`` items, the
    ``n mod C`` left over go to classes drawn at random, and a class with too few items gives all
    it has while the others share its shortfall (water-filling); the items of each class are drawn
    uniformly without replacement. Without labels (``None`` or empty; then ``size`` is the number of
    items): a uniformly random subset. All draws use ``numpy.random.default_rng(seed)``; ``n`` at
    least the number of items gives them all.
    """
    y, total = _label_array(labels, size)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ConfigError(f"the subset size must be an integer >= 0, got {n!r}")
    seed = check_seed(seed)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    if y is None:
        return np.sort(rng.permutation(total)[:n])
    classes, counts = np.unique(y, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    remaining = int(n)
    while remaining > 0:
        open_ = np.flatnonzero(quota < counts)
        share = remaining // len(open_)
        if share == 0:  # fewer items left than open classes: one more each for a random few
            quota[rng.choice(open_, size=remaining, replace=False)] += 1
            break
        add = np.minimum(share, counts[open_] - quota[open_])
        quota[open_] += add
        remaining -= int(add.sum())
    picked = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def class_interleaved_order(labels: Any, seed: int = 0, *, size: int | None = None) -> np.ndarray:
    """A permutation of the items in which every prefix is as class-balanced as it can be: round
    robin over the classes (in a random order), each class's items in a random order; without labels
    a uniformly random permutation. For pictures of "the first k" images that show every class."""
    y, total = _label_array(labels, size)
    rng = np.random.default_rng(check_seed(seed))
    if y is None:
        return rng.permutation(total)
    classes = rng.permutation(np.unique(y))
    members = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    rank = np.empty(total, dtype=np.int64)  # position of each item within its class, then class order
    key = np.empty(total, dtype=np.int64)
    for j, m in enumerate(members):
        rank[m] = np.arange(len(m))
        key[m] = j
    return np.lexsort((key, rank))


def describe_subset(labels: Any, n: int, total: int, seed: int, split: str = "test") -> str:
    """What :func:`subset_indices` chose, in words: "a class-balanced random subset of 1000 of the
    10000 test images (seed 0)", "a uniformly random subset ...", or "all 10000 test images"."""
    if n >= total:
        return f"all {total} {split} images"
    have_labels = labels is not None and len(labels) > 0
    kind = "a class-balanced random subset" if have_labels else "a uniformly random subset"
    return f"{kind} of {n} of the {total} {split} images (seed {seed})"
