"""3D Shapes (Burgess & Kim, 2018): every combination of six generative factors, one rendered 3-D scene per
64 x 64 RGB image, from DeepMind's file ``3dshapes.h5``.

The file is not downloaded: put ``3dshapes.h5`` (from the Google Cloud Storage bucket ``3d-shapes``, see
https://github.com/deepmind/3d-shapes) in the data folder (``data_dir`` or its ``shapes3d/``, else
``$VAEKIT_DATA_DIR/shapes3d``, else ``~/.cache/vaekit/shapes3d``). It is read with h5py, an optional dependency
(``pip install 'vaekit[shapes3d]'``), imported only when the file is read.

Layout, checked before any image is read: the dataset ``images`` is (480000, 64, 64, 3) uint8 (height, width,
RGB) and ``labels`` (480000, 6) floats, the factor values of each image in the order floor_hue (10 values),
wall_hue (10), object_hue (10), scale (8, in [0.75, 1.25]), shape (4: 0 cube, 1 cylinder, 2 sphere, 3 capsule)
and orientation (15, degrees in [-30, 30]). Image i has the factor classes of the mixed-radix number i,
floor_hue most significant and orientation least (:class:`Shapes3DGrid`). The values of each factor are read from
``labels`` (its distinct values, sorted: class c is the c-th smallest), not assumed; every row of ``labels`` must
be the values of its grid classes, or a :class:`~vaekit.errors.DataError` names the first row that is not.

Values: x = k / 255 for the 8-bit value k of each channel, as CIFAR-10 (``levels`` 256, ``binary`` False, no
binarization), laid out (N, 3, 64, 64). Splits as dSprites: the test split (10,000 images) is carved with the fixed
:data:`~vaekit.data.base.TEST_SEED`, the validation split (10,000) from the rest with ``seed``, the rest is
training; with ``limit`` (a fixed uniformly random subset of the grid, seed TEST_SEED) the defaults are 10 % each.
``Dataset.factors`` holds the factor classes of every split; :class:`Shapes3DSampler` reads the images of chosen
factor classes from the file for the intervention scores of :mod:`vaekit.analysis.disentanglement`.

Memory: float32 takes 3 x 64 x 64 x 4 = 49,152 bytes an image, 23.6 GB (22.0 GiB) for all 480,000; a load
over 3/4 of the physical memory is refused before any image is read (pass ``limit``, or load fewer splits).
Images are read :data:`CHUNK` at a time in increasing index order (as h5py's fancy indexing requires): a
contiguous slice where the wanted rows are dense, the rows themselves where they are sparse.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.data.base import (
    SPLITS,
    TEST_SEED,
    Dataset,
    Factors,
    carve_test_then_valid,
    check_binarize,
    check_images_memory,
    check_native_size,
    check_seed,
    check_splits,
    describe_subset,
    empty_like_split,
    keep_splits,
    resolve_size,
    subset_indices,
    to_float,
)
from vaekit.data.download import dataset_dir
from vaekit.errors import ConfigError, DataError

NAME = "shapes3d"
FOLDER = "shapes3d"
#: DeepMind's file, looked for in the data folder.
FILE = "3dshapes.h5"
#: Where the file comes from (its README names the Google Cloud Storage bucket ``3d-shapes``).
SOURCE_URL = "https://github.com/deepmind/3d-shapes"
SIZE = 64
SHAPE = (3, SIZE, SIZE)
FACTOR_NAMES: tuple[str, ...] = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
#: Images read and converted at a time (bounds the memory of every step: at most 2 x CHUNK rows of uint8).
CHUNK = 4096
#: Default size of the validation and the test split (10 % each of a smaller ``limit``).
DEFAULT_SPLIT = 10_000
#: Bytes of one image as float32.
IMAGE_BYTES = 4 * math.prod(SHAPE)
#: Relative gap below which two label values count as one factor value (float noise).
VALUE_TOLERANCE = 1e-9
_READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError)


# --------------------------------------------------------------------------- the factor grid


@dataclass(frozen=True)
class Shapes3DGrid:
    """The factor grid: ``sizes`` classes of floor_hue, wall_hue, object_hue, scale, shape, orientation.

    The default :data:`GRID` is 3D Shapes' (10 x 10 x 10 x 8 x 4 x 15 = 480,000 images); a smaller grid (same image
    size and layout) is for tests.
    """

    sizes: tuple[int, ...] = (10, 10, 10, 8, 4, 15)

    def __post_init__(self) -> None:
        sizes = tuple(self.sizes) if isinstance(self.sizes, (tuple, list)) else ()
        if len(sizes) != len(FACTOR_NAMES) or not all(
                isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ConfigError(f"Shapes3DGrid: sizes must be {len(FACTOR_NAMES)} integers >= 1 "
                              f"({', '.join(FACTOR_NAMES)}), got {self.sizes!r}")
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))

    @property
    def count(self) -> int:
        return math.prod(self.sizes)

    def classes(self, index: Any) -> np.ndarray:
        """The (n, 6) int64 factor classes of image indices ``index`` (mixed radix, orientation fastest)."""
        idx = np.asarray(index)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise DataError(f"{NAME}: image indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.count):
            raise DataError(f"{NAME}: image indices must be in [0, {self.count}), got {idx.min()}..{idx.max()}")
        return np.stack(np.unravel_index(idx, self.sizes), axis=1).astype(np.int64).reshape(-1, len(self.sizes))

    def check(self, classes: Any) -> np.ndarray:
        """``classes`` as (n, 6) int64, each column a class of its factor; a DataError says what is wrong."""
        c = np.asarray(classes)
        if c.ndim == 1 and c.shape == (len(FACTOR_NAMES),):
            c = c[None]
        if c.ndim != 2 or c.shape[1] != len(FACTOR_NAMES) or (c.size and c.dtype.kind not in "iu"):
            raise DataError(f"{NAME}: factor classes must be an (n, 6) integer array ({', '.join(FACTOR_NAMES)}), "
                            f"got {c.dtype} {c.shape}")
        c = c.astype(np.int64).reshape(-1, len(FACTOR_NAMES))
        bad = (c < 0) | (c >= np.asarray(self.sizes))
        if bad.any():
            row, k = np.argwhere(bad)[0]
            raise DataError(f"{NAME}: row {row} has {FACTOR_NAMES[k]} class {c[row, k]}, outside "
                            f"0..{self.sizes[k] - 1}")
        return c

    def index(self, classes: Any) -> np.ndarray:
        """The image indices of (n, 6) factor classes (the inverse of :meth:`classes`)."""
        c = self.check(classes)
        return np.ravel_multi_index(tuple(c.T), self.sizes).astype(np.int64)

    def describe(self) -> str:
        return "x".join(str(s) for s in self.sizes)


#: 3D Shapes' grid: 10 x 10 x 10 x 8 x 4 x 15 = 480,000 images. Loaders without ``grid=`` read it at call time.
GRID = Shapes3DGrid()


# --------------------------------------------------------------------------- the file


def file_path(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``3dshapes.h5`` is looked for (module docstring)."""
    return dataset_dir(FOLDER, data_dir) / FILE


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise DataError(f"{NAME}: reading {FILE} needs h5py: pip install 'vaekit[shapes3d]'") from None
    return h5py


def _check_dataset(f: Any, path: Path, name: str, shape: tuple[int, ...], kinds: str, what: str) -> Any:
    """The h5 dataset ``name`` of ``f``, checked: its shape ``shape`` and dtype kind in ``kinds``."""
    h5py = _h5py()
    node = f.get(name)
    if not isinstance(node, h5py.Dataset):
        raise DataError(f"{path}: no '{name}' dataset; not DeepMind's {FILE} (from {SOURCE_URL})")
    if tuple(node.shape) != shape or node.dtype.kind not in kinds or (kinds == "u" and node.dtype != np.uint8):
        raise DataError(f"{path}: '{name}' is {node.dtype} {tuple(node.shape)}, expected {shape} {what}")
    return node


@contextlib.contextmanager
def open_shapes3d(path: str | os.PathLike[str], grid: Shapes3DGrid | None = None) -> Iterator[tuple[Any, Any]]:
    """Open ``3dshapes.h5`` read-only: (the ``images`` dataset, the ``labels`` dataset), their shapes and dtypes
    checked against ``grid``; a missing file, a file h5py cannot open or a wrong layout is a DataError."""
    grid = GRID if grid is None else grid
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{NAME}: {path} not found; put DeepMind's {FILE} there (the file {FILE} of the Google Cloud "
                        f"Storage bucket 3d-shapes, see {SOURCE_URL}); it is not downloaded")
    h5py = _h5py()
    try:
        f = h5py.File(path, "r")
    except _READ_ERRORS as exc:
        raise DataError(f"{path}: cannot open as HDF5 ({' '.join(str(exc).split())[:200]}); not DeepMind's "
                        f"{FILE}") from None
    with f:
        try:
            images = _check_dataset(f, path, "images", (grid.count, SIZE, SIZE, 3), "u",
                                    f"(uint8, height x width x RGB) for the {grid.describe()} grid")
            labels = _check_dataset(f, path, "labels", (grid.count, len(FACTOR_NAMES)), "f",
                                    f"(float64, one column per factor) for the {grid.describe()} grid")
        except DataError:
            raise
        except _READ_ERRORS as exc:
            raise DataError(f"{path}: cannot read the HDF5 structure ({' '.join(str(exc).split())[:200]})") from None
        yield images, labels


def _read_error(path: Any, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot read {FILE} ({' '.join(str(exc).split())[:200]}); the file may be damaged")


def factor_values(labels: Any, grid: Shapes3DGrid | None = None) -> tuple[np.ndarray, ...]:
    """The sorted values of each factor, read from the ``labels`` dataset and checked: ``sizes[k]`` distinct
    values in column k, and row i equal to the values of the grid classes of i (the mixed-radix order)."""
    grid = GRID if grid is None else grid
    path = getattr(getattr(labels, "file", None), "filename", FILE)
    try:
        rows = np.asarray(labels[...], dtype=np.float64)
    except _READ_ERRORS as exc:
        raise _read_error(path, exc) from None
    if not np.all(np.isfinite(rows)):
        raise DataError(f"{path}: 'labels' holds NaN or infinite values")
    values, classes = [], np.empty(rows.shape, dtype=np.int64)
    for k, (name, size) in enumerate(zip(FACTOR_NAMES, grid.sizes)):
        u = np.unique(rows[:, k])
        keep = np.concatenate([[True], np.diff(u) > VALUE_TOLERANCE * np.maximum(1.0, np.abs(u[1:]))])
        v = u[keep]
        if len(v) != size:
            raise DataError(f"{path}: labels column {k} ({name}) has {len(v)} distinct values, expected {size}")
        values.append(v)
        classes[:, k] = np.searchsorted(v, rows[:, k], side="right") - 1
    expected = grid.classes(np.arange(grid.count))
    wrong = np.flatnonzero(np.any(classes != expected, axis=1))
    if len(wrong):
        i = int(wrong[0])
        raise DataError(f"{path}: labels are not in the grid order ({' > '.join(FACTOR_NAMES)}, mixed radix): "
                        f"row {i} has classes {classes[i].tolist()}, expected {expected[i].tolist()}")
    return tuple(values)


def read_images(images: Any, index: np.ndarray) -> torch.Tensor:
    """float32 (n, 3, 64, 64) images x = k / 255 of strictly increasing image indices ``index``, read CHUNK at a
    time: a slice of the file where the chunk's rows span at most twice their number, else the rows themselves."""
    index = np.asarray(index, dtype=np.int64)
    if len(index) > 1 and np.any(np.diff(index) <= 0):
        raise ValueError("read_images: indices must be strictly increasing")
    out = torch.empty((len(index), *SHAPE), dtype=torch.float32)
    path = getattr(getattr(images, "file", None), "filename", FILE)
    for a in range(0, len(index), CHUNK):
        i = index[a:a + CHUNK]
        lo, hi = int(i[0]), int(i[-1]) + 1
        try:
            block = images[lo:hi][i - lo] if hi - lo <= 2 * len(i) else images[i]
        except _READ_ERRORS as exc:
            raise _read_error(path, exc) from None
        out[a:a + len(i)] = to_float(np.asarray(block, dtype=np.uint8)).permute(0, 3, 1, 2)
    return out


# --------------------------------------------------------------------------- the data set


def _pool(grid: Shapes3DGrid, limit: int | None) -> np.ndarray:
    """The grid indices to split: all, or a fixed uniformly random subset of ``limit`` (seed TEST_SEED)."""
    if limit is None:
        return np.arange(grid.count)
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise ConfigError(f"{NAME}: limit must be an integer >= 1 (images of the grid to use), got {limit!r}")
    return subset_indices(None, int(limit), seed=TEST_SEED, size=grid.count)


def _split(pool: np.ndarray, valid_size: Any, test_size: Any, seed: int) -> dict[str, np.ndarray]:
    """Grid indices (increasing) of the three splits of ``pool`` (test carved with TEST_SEED, valid with ``seed``)."""
    n = len(pool)
    default = min(DEFAULT_SPLIT, n // 10)
    t = resolve_size(test_size, n, default, "test_size", f"{NAME} ({n} images)")
    idx = carve_test_then_valid(
        n, t, lambda m: resolve_size(valid_size, m, default, "valid_size", f"{NAME} after the test split"), seed)
    return {s: pool[i] for s, i in idx.items()}


@dataclass(frozen=True)
class _Plan:
    """What a load or a description needs: the checked file, the split indices, the factors."""

    path: Path
    grid: Shapes3DGrid
    wanted: tuple[str, ...]
    indices: dict[str, np.ndarray]
    factors: Factors
    source: str


def _plan(data_dir: Any, valid_size: Any, test_size: Any, binarize: Any, image_size: Any, seed: int,
          splits: Any, limit: int | None, grid: Shapes3DGrid | None) -> _Plan:
    """Check the options and the file (layout and labels) and choose the splits; no image is read."""
    if check_binarize(binarize, allowed=(None, "dynamic", "threshold", "static")) is not None:
        raise ConfigError(f"{NAME} is 8-bit colour data and is not binarized; drop binarize={binarize!r}")
    check_native_size(NAME, image_size, (SIZE, SIZE))
    grid = GRID if grid is None else grid
    seed, wanted = check_seed(seed), check_splits(splits)
    idx = _split(_pool(grid, limit), valid_size, test_size, seed)
    idx = {s: (i if s in wanted else i[:0]) for s, i in idx.items()}
    path = file_path(data_dir)
    with open_shapes3d(path, grid) as (_, labels):
        values = factor_values(labels, grid)
    source = f"DeepMind's 3D Shapes file {path} ({grid.describe()} factor grid)"
    if limit is not None:
        source += "; " + describe_subset(None, int(limit), grid.count, TEST_SEED, "grid")
    factors = Factors(FACTOR_NAMES, grid.sizes, values, **{s: grid.classes(i) for s, i in idx.items()})
    return _Plan(path, grid, wanted, idx, factors, source)


def _dataset(plan: _Plan, x: dict[str, torch.Tensor]) -> Dataset:
    return Dataset(name=NAME, shape=SHAPE, binary=False, dynamic=False, **x, source=plan.source, levels=256,
                   factors=plan.factors, sampler=functools.partial(Shapes3DSampler, plan.path, plan.grid))


def load_shapes3d(
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
    limit: int | None = None,
    grid: Shapes3DGrid | None = None,
) -> Dataset:
    """3D Shapes as a :class:`Dataset` of shape 3 x 64 x 64, x = k / 255 (256 levels), with ``factors`` and a
    ``sampler`` (module docstring).

    ``limit``: use a fixed uniformly random subset of that many grid images (seed TEST_SEED). ``grid``: the
    factor grid the file must have (:data:`GRID` when ``None``). Nothing is downloaded (``download`` is unused)
    and nothing is cached (``cache`` is unused)."""
    plan = _plan(data_dir, valid_size, test_size, binarize, image_size, seed, splits, limit, grid)
    check_images_memory(NAME, sum(len(plan.indices[s]) for s in plan.wanted), IMAGE_BYTES)
    with open_shapes3d(plan.path, plan.grid) as (images, _):
        x = {s: read_images(images, i) if s in plan.wanted else empty_like_split(SHAPE)
             for s, i in plan.indices.items()}
    return keep_splits(_dataset(plan, x), plan.wanted)


def describe_shapes3d(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    valid_size: int | float | None = None,
    test_size: int | float | None = None,
    binarize: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    splits: tuple[str, ...] | None = None,
    limit: int | None = None,
    grid: Shapes3DGrid | None = None,
    **_unused: Any,
) -> tuple[dict[str, Any], Factors]:
    """What :func:`load_shapes3d` with these options would give, without reading an image (the file's layout and
    labels are checked all the same): (``Dataset.info()`` with the split sizes, the factors)."""
    plan = _plan(data_dir, valid_size, test_size, binarize, image_size, seed, splits, limit, grid)
    info = _dataset(plan, {s: empty_like_split(SHAPE) for s in SPLITS}).info()
    info["splits"] = {s: int(len(plan.indices[s])) for s in SPLITS}
    info["not_loaded"] = [s for s in SPLITS if s not in plan.wanted]
    return info, plan.factors


# --------------------------------------------------------------------------- sampling for the metrics


def draw_factors(sizes: tuple[int, ...], n: int, fixed: tuple[int, int] | None,
                 rng: np.random.Generator | None) -> np.ndarray:
    """(n, K) int64 factor classes drawn uniformly and independently from ``rng`` (a fresh unseeded generator when
    ``None``), factor ``fixed[0]`` held at class ``fixed[1]``."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ConfigError(f"{NAME}: the number of examples must be an integer >= 0, got {n!r}")
    rng = np.random.default_rng() if rng is None else rng
    factors = np.stack([rng.integers(size, size=int(n)) for size in sizes], axis=1).astype(np.int64)
    if fixed is not None:
        try:
            k, value = (int(v) for v in fixed)
        except (TypeError, ValueError):
            k, value = -1, -1
        if not 0 <= k < len(sizes) or not 0 <= value < sizes[k]:
            raise ConfigError(f"{NAME}: fixed={fixed!r} is not (factor, class), factor in 0..{len(sizes) - 1} and "
                              f"class below its size in {sizes}")
        factors[:, k] = value
    return factors


class Shapes3DSampler:
    """Images of chosen factor classes for the intervention scores (:class:`vaekit.analysis.disentanglement.
    FactorSampler`), read from ``3dshapes.h5`` at ``path`` by index (the file is opened for each call). Images are
    float32 torch tensors (n, 3, 64, 64), x = k / 255."""

    def __init__(self, path: str | os.PathLike[str], grid: Shapes3DGrid | None = None) -> None:
        self.path = Path(path)
        self.grid = GRID if grid is None else grid
        self.factor_sizes: tuple[int, ...] = self.grid.sizes

    def sample(self, n: int, fixed: tuple[int, int] | None = None,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """``n`` examples, factor ``fixed[0]`` held at class ``fixed[1]``: (factors (n, 6) int64, images)."""
        factors = draw_factors(self.factor_sizes, n, fixed, rng)
        return factors, self.sample_from_factors(factors)

    def sample_from_factors(self, factors: Any, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The images of factor classes ``factors`` (n, 6) (deterministic: ``rng`` is not used)."""
        index = self.grid.index(factors)
        unique, inverse = np.unique(index, return_inverse=True)
        with open_shapes3d(self.path, self.grid) as (images, _):
            x = read_images(images, unique)
        return x[torch.from_numpy(inverse.reshape(-1))]
