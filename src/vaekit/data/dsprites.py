"""dSprites (Matthey et al., 2017): every combination of five generative factors, one white sprite per 64 x 64
binary image, the standard benchmark of disentanglement metrics.

The factor grid is DeepMind's: shape (square, ellipse, heart: 3) x scale (6 values, linspace(0.5, 1, 6)) x
orientation (40) x x position (32, linspace(0, 1, 32)) x y position (32) = 737,280 images. Image i has the factor
classes (shape, scale, orientation, x, y) of the mixed-radix number i, shape most significant and y least, as
the rows of the published file's ``latents_classes`` (which adds a constant colour factor in front).

The images are **the same factor grid as DeepMind's dSprites, rendered by vaekit, not pixel-identical to the
published file** (:func:`render_dsprites`; it needs no download). Conventions, all in pixels of the 64 x 64 frame
(pixel (r, c) covers [c, c + 1) x [r, r + 1); it is on when its centre (c + 0.5, r + 0.5) lies in the shape):

- position: the sprite's centre is at column 8.75 + 46.5 x and row 8.75 + 46.5 y, so x, y in [0, 1] move it over
  [0.137, 0.863] of the frame in steps of 1.5 px; x moves it right, y moves it **down** (image rows);
- scale s: every shape lies in a disk of radius 8 s px around its centre (so never touches the border): a square
  of side 8 sqrt(2) s = 11.3 s px, an ellipse of semi-axes 8 s and 4 s px (long axis horizontal at orientation 0),
  and the heart (x^2 + y^2 - 1)^3 <= x^2 y^3 scaled into that disk (lobes up at orientation 0);
- orientation: 40 values linspace(0, 2 pi, 40, endpoint=False) (steps of 9 degrees), turning the shape
  anticlockwise on screen about its centre. The published file has linspace(0, 2 pi, 40) *with* the end point, so
  its classes 0 and 39 are the same angle; here all 40 differ. The square repeats every 90 degrees and the
  ellipse every 180 degrees (up to the pixel grid), the heart never.

When DeepMind's file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` is in the data folder it is loaded
instead (checked: keys ``imgs`` (737280, 64, 64) 0/1 uint8, ``latents_classes`` and ``latents_values``
(737280, 6) in the grid order, a constant colour column, which is dropped); ``Dataset.source`` says which.

Cache: the rendered grid is stored once as packed bits (``np.packbits``, 512 bytes an image, 377 MB) in the user
cache, ``$XDG_CACHE_HOME/vaekit/dsprites/dsprites-vaekit-3x6x40x32x32.bits`` (default ``~/.cache/vaekit``;
:func:`cache_dir`), never in a data folder (``data_dir``, ``$VAEKIT_DATA_DIR``, which are only read, for DeepMind's
file): a 4096-byte header (a magic line and JSON: format version, grid, rendering constants, CRC-32 of the bits)
then the bits, written atomically in chunks.
A cache of another version or rendering is re-rendered; a damaged one is a :class:`~vaekit.errors.DataError`.

Splits: the test split (10,000 images) is carved with the fixed :data:`~vaekit.data.base.TEST_SEED`, the
validation split (10,000) from the rest with ``seed``, the rest is training; with ``limit`` (a fixed random
subset of the grid) the defaults are 10 % each. ``Dataset.factors`` holds the factor classes of every split.
The in-memory :class:`Dataset` is float32 like every vaekit data set: 16 KiB an image, 11.3 GiB for the whole grid;
``limit`` keeps less. :class:`DSpritesSampler` renders images of chosen factors on demand for the intervention
scores of :mod:`vaekit.analysis.disentanglement`.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vaekit.data.base import (
    TEST_SEED,
    Dataset,
    Factors,
    carve_test_then_valid,
    check_images_memory,
    check_native_size,
    check_seed,
    check_splits,
    describe_subset,
    empty_like_split,
    keep_splits,
    resolve_size,
    subset_indices,
)
from vaekit.data.download import atomic_write, cache_root, dataset_dir, dir_writable, make_dirs
from vaekit.errors import ConfigError, DataError

NAME = "dsprites"
FOLDER = "dsprites"
#: DeepMind's published file, loaded instead of rendering when it is in the data folder.
PUBLISHED_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
#: Images are SIZE x SIZE.
SIZE = 64
SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "x", "y")
#: Radius (px) of the disk holding a shape of scale 1.
RADIUS = 8.0
#: Sprite centre (px) = CENTRE_LOW + CENTRE_SPAN * position, position in [0, 1].
CENTRE_LOW, CENTRE_SPAN = 8.75, 46.5
#: Semi-minor axis of the ellipse, as a fraction of its semi-major axis.
ELLIPSE_MINOR = 0.5
#: The heart curve's enclosing circle: centre (0, HEART_SHIFT) and radius HEART_RADIUS in the curve's units.
HEART_SHIFT, HEART_RADIUS = 0.25, 1.25
#: Version of the rendering and of the cache layout; a change re-renders every cache.
RENDER_VERSION = 1
#: Images rendered, converted or checked at a time (bounds the memory of every step).
CHUNK = 8192
#: Default size of the validation and the test split (10 % each of a smaller ``limit``).
DEFAULT_SPLIT = 10_000
ROW_BYTES = SIZE * SIZE // 8
HEADER_BYTES = 4096
_MAGIC = b"VAEKIT-DSPRITES-BITS\n"
_HALF = math.ceil(RADIUS)
#: Side of the square patch around the centre that holds every pixel a sprite may light.
_PATCH = 2 * _HALF + 2


# --------------------------------------------------------------------------- the factor grid


@dataclass(frozen=True)
class DSpritesGrid:
    """The factor grid: 3 shapes x ``scales`` x ``orientations`` x ``positions`` (x) x ``positions`` (y).

    The default :data:`GRID` is dSprites'; a coarser grid (same image size and conventions) is for tests and
    quick experiments.
    """

    scales: int = 6
    orientations: int = 40
    positions: int = 32

    def __post_init__(self) -> None:
        for name, least in (("scales", 1), ("orientations", 1), ("positions", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
                raise ConfigError(f"DSpritesGrid: {name} must be an integer >= {least}, got {v!r}")

    @property
    def sizes(self) -> tuple[int, int, int, int, int]:
        return (len(SHAPES), self.scales, self.orientations, self.positions, self.positions)

    @property
    def count(self) -> int:
        return math.prod(self.sizes)

    @property
    def values(self) -> tuple[np.ndarray, ...]:
        """Factor values per class: shape 1, 2, 3 (as in the published file), scale, orientation (rad), x, y."""
        position = np.arange(self.positions) / (self.positions - 1)
        return (
            np.arange(1.0, len(SHAPES) + 1),
            np.linspace(0.5, 1.0, self.scales),
            np.linspace(0.0, 2 * np.pi, self.orientations, endpoint=False),
            position,
            position.copy(),
        )

    def classes(self, index: Any) -> np.ndarray:
        """The (n, 5) int64 factor classes of image indices ``index`` (mixed radix, y fastest)."""
        idx = np.asarray(index)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise DataError(f"{NAME}: image indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.count):
            raise DataError(f"{NAME}: image indices must be in [0, {self.count}), got {idx.min()}..{idx.max()}")
        return np.stack(np.unravel_index(idx, self.sizes), axis=1).astype(np.int64)

    def index(self, classes: Any) -> np.ndarray:
        """The image indices of (n, 5) factor classes (the inverse of :meth:`classes`)."""
        c = check_classes(classes, self)
        return np.ravel_multi_index(tuple(c.T), self.sizes).astype(np.int64)

    def describe(self) -> str:
        return "x".join(str(s) for s in self.sizes)


#: dSprites' grid: 3 x 6 x 40 x 32 x 32 = 737,280 images.
GRID = DSpritesGrid()


def check_classes(classes: Any, grid: DSpritesGrid = GRID) -> np.ndarray:
    """``classes`` as (n, 5) int64, each column a class of its factor; a DataError says what is wrong."""
    c = np.asarray(classes)
    if c.ndim == 1 and c.shape == (len(FACTOR_NAMES),):
        c = c[None]
    if c.ndim != 2 or c.shape[1] != len(FACTOR_NAMES) or (c.size and c.dtype.kind not in "iu"):
        raise DataError(f"{NAME}: factor classes must be an (n, 5) integer array (shape, scale, orientation, x, "
                        f"y), got {c.dtype} {c.shape}")
    c = c.astype(np.int64).reshape(-1, len(FACTOR_NAMES))
    bad = (c < 0) | (c >= np.asarray(grid.sizes))
    if bad.any():
        row, k = np.argwhere(bad)[0]
        raise DataError(f"{NAME}: row {row} has {FACTOR_NAMES[k]} class {c[row, k]}, outside 0..{grid.sizes[k] - 1}")
    return c


# --------------------------------------------------------------------------- rendering


def _inside(shape: np.ndarray, lu: np.ndarray, lv: np.ndarray) -> np.ndarray:
    """Whether local points (lu right, lv up; the shape's disk has radius 1) are in shapes ``shape`` (m,)."""
    out = np.zeros(lu.shape, dtype=bool)
    for sid in range(len(SHAPES)):
        sel = shape == sid
        if not sel.any():
            continue
        u, v = lu[sel], lv[sel]
        if sid == 0:  # square, half-diagonal 1
            out[sel] = np.maximum(np.abs(u), np.abs(v)) <= 1 / math.sqrt(2)
        elif sid == 1:  # ellipse, semi-axes 1 and ELLIPSE_MINOR
            out[sel] = u * u + (v / ELLIPSE_MINOR) ** 2 <= 1.0
        else:  # heart (x^2 + y^2 - 1)^3 <= x^2 y^3, its enclosing circle mapped onto the unit disk
            x, y = HEART_RADIUS * u, HEART_RADIUS * v + HEART_SHIFT
            out[sel] = (x * x + y * y - 1.0) ** 3 <= x * x * y ** 3
    return out


def _sprites(shape: np.ndarray, scale: np.ndarray, angle: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """(m, P, P) uint8 patches of the sprites (shape ids, scales, angles in rad) whose centres sit ``fx``, ``fy``
    px (in [0, 1)) right of and below a pixel corner: patch column j has its centre j - _HALF - 0.5 - fx px right
    of the sprite's centre (rows likewise, downwards)."""
    d = np.arange(_PATCH, dtype=np.float64) - _HALF - 0.5
    u = d[None, None, :] - fx[:, None, None]  # right
    v = -(d[None, :, None] - fy[:, None, None])  # up (rows go down)
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    r = RADIUS * scale[:, None, None]
    lu, lv = (cos * u + sin * v) / r, (cos * v - sin * u) / r  # rotate back by -angle
    return _inside(shape, lu, lv).astype(np.uint8)


def _render_chunk(c: np.ndarray, grid: DSpritesGrid) -> np.ndarray:
    """(n, 64, 64) uint8 0/1 images of checked classes ``c``: each distinct sprite (shape, scale, orientation and
    sub-pixel offset) is rasterised once, then placed at its integer offset."""
    n = len(c)
    cx = CENTRE_LOW + CENTRE_SPAN * c[:, 3] / (grid.positions - 1)
    cy = CENTRE_LOW + CENTRE_SPAN * c[:, 4] / (grid.positions - 1)
    ix, iy = np.floor(cx), np.floor(cy)
    key = np.stack([c[:, 0], c[:, 1], c[:, 2], cx - ix, cy - iy], axis=1)
    uniq, inverse = np.unique(key, axis=0, return_inverse=True)
    scales, angles = grid.values[1], grid.values[2]
    sprites = _sprites(uniq[:, 0].astype(np.int64), scales[uniq[:, 1].astype(np.int64)],
                       angles[uniq[:, 2].astype(np.int64)], uniq[:, 3], uniq[:, 4])
    pad = _PATCH  # a margin wider than a patch: placements never fall outside the canvas
    canvas = np.zeros((n, SIZE + 2 * pad, SIZE + 2 * pad), dtype=np.uint8)
    steps = np.arange(_PATCH)
    rows = (iy.astype(np.int64) - _HALF - 1 + pad)[:, None] + steps
    cols = (ix.astype(np.int64) - _HALF - 1 + pad)[:, None] + steps
    canvas[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]] = sprites[inverse.reshape(-1)]
    return np.ascontiguousarray(canvas[:, pad:pad + SIZE, pad:pad + SIZE])


def render_dsprites(classes: Any, *, grid: DSpritesGrid = GRID) -> np.ndarray:
    """The (n, 64, 64) uint8 0/1 images of factor classes ``classes`` (n, 5): (shape, scale, orientation, x, y).

    Deterministic (the same image for the same classes, whatever the batch); vectorised, :data:`CHUNK` images at
    a time. ``render_dsprites(GRID.classes(i))`` renders images ``i`` of the grid."""
    c = check_classes(classes, grid)
    out = np.empty((len(c), SIZE, SIZE), dtype=np.uint8)
    for a in range(0, len(c), CHUNK):
        out[a:a + CHUNK] = _render_chunk(c[a:a + CHUNK], grid)
    return out


def _render_params() -> dict[str, Any]:
    """The constants that determine the pixels (stored in the cache header)."""
    return {"size": SIZE, "radius": RADIUS, "centre": [CENTRE_LOW, CENTRE_SPAN], "ellipse_minor": ELLIPSE_MINOR,
            "heart": [HEART_SHIFT, HEART_RADIUS], "orientation_endpoint": False}


# --------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """Where the rendered grid is cached: ``<user cache>/dsprites`` (:func:`vaekit.data.download.cache_root`)."""
    return cache_root() / FOLDER


def cache_path(directory: str | os.PathLike[str], grid: DSpritesGrid = GRID) -> Path:
    """Where the packed rendered grid lives in ``directory``."""
    return Path(directory) / f"dsprites-vaekit-{grid.describe()}.bits"


def _header(grid: DSpritesGrid, crc: int) -> bytes:
    meta = {"format": "vaekit-dsprites-bits", "version": RENDER_VERSION, "sizes": list(grid.sizes),
            "count": grid.count, "row_bytes": ROW_BYTES, "render": _render_params(), "crc32": crc}
    head = _MAGIC + json.dumps(meta, sort_keys=True).encode("ascii") + b"\n"
    if len(head) > HEADER_BYTES:  # pragma: no cover - a fixed, small dict
        raise AssertionError("dSprites cache header too long")
    return head.ljust(HEADER_BYTES, b" ")


def write_cache(path: str | os.PathLike[str], grid: DSpritesGrid = GRID) -> Path:
    """Render the whole ``grid`` into ``path`` as packed bits, :data:`CHUNK` images at a time, atomically (a
    temporary file renamed into place, so an interrupted write leaves nothing behind)."""
    path = Path(path)

    def write(f: BinaryIO) -> None:
        f.write(_header(grid, 0))
        crc = 0
        for a in range(0, grid.count, CHUNK):
            images = _render_chunk(grid.classes(np.arange(a, min(a + CHUNK, grid.count))), grid)
            bits = np.packbits(images.reshape(len(images), -1), axis=1)
            crc = zlib.crc32(bits, crc)
            f.write(bits.tobytes())
        f.seek(0)
        f.write(_header(grid, crc))

    atomic_write(path, write)  # type: ignore[arg-type]
    return path


def _corrupt(path: Path, what: str) -> DataError:
    return DataError(f"{path}: corrupt dSprites cache ({what}); delete it to render the images afresh, or load "
                     "with cache=False")


def read_cache(path: str | os.PathLike[str], grid: DSpritesGrid = GRID) -> np.ndarray | None:
    """The (count, 512) packed bits of a valid cache (memory-mapped, CRC checked), ``None`` when the file is
    absent or stale (another version, grid or rendering); a DataError when it is damaged."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the dSprites cache ({exc.strerror or exc})") from None
    if not head.startswith(_MAGIC) or len(head) < HEADER_BYTES:
        raise _corrupt(path, "not a vaekit dSprites cache header")
    try:
        meta = json.loads(head[len(_MAGIC):].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "unreadable header") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("crc32"), int):
        raise _corrupt(path, "header without a checksum")
    if (meta.get("version"), meta.get("sizes"), meta.get("render")) != (
            RENDER_VERSION, list(grid.sizes), _render_params()):
        return None
    expected = HEADER_BYTES + grid.count * ROW_BYTES
    if size != expected:
        raise _corrupt(path, f"{size} bytes, expected {expected}")
    bits = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER_BYTES, shape=(grid.count, ROW_BYTES))
    crc = 0
    for a in range(0, grid.count, 16 * CHUNK):
        crc = zlib.crc32(bits[a:a + 16 * CHUNK], crc)
    if crc != meta["crc32"]:
        raise _corrupt(path, "the images do not match their checksum")
    return bits


def unpack(bits: np.ndarray) -> np.ndarray:
    """(n, 512) packed rows -> (n, 64, 64) uint8 0/1 images."""
    return np.unpackbits(np.asarray(bits), axis=1, count=SIZE * SIZE).reshape(-1, SIZE, SIZE)


# --------------------------------------------------------------------------- DeepMind's file


def read_published(path: str | os.PathLike[str],
                   grid: DSpritesGrid = GRID) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The (count, 64, 64) uint8 0/1 images and the per-class factor values of DeepMind's npz (read with
    ``allow_pickle=False``), checked against ``grid``: its rows in the grid order, the colour column constant."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"imgs", "latents_classes", "latents_values"} - set(z.files)
            if missing:
                raise DataError(f"{path}: not DeepMind's dSprites file: no {', '.join(sorted(missing))} array")
            imgs, classes, values = z["imgs"], z["latents_classes"], z["latents_values"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the dSprites npz ({exc})") from None
    n, k = grid.count, len(FACTOR_NAMES) + 1
    for name, arr, shape, kinds in (("imgs", imgs, (n, SIZE, SIZE), "u"), ("latents_classes", classes, (n, k), "iu"),
                                    ("latents_values", values, (n, k), "f")):
        if arr.shape != shape or arr.dtype.kind not in kinds or (name == "imgs" and arr.dtype != np.uint8):
            raise DataError(f"{path}: {name} is {arr.dtype} {arr.shape}, expected {shape} "
                            f"({'uint8' if name == 'imgs' else 'integers' if kinds == 'iu' else 'floats'}) for the "
                            f"{grid.describe()} grid")
    if np.any(classes[:, 0] != 0) or np.any(values[:, 0] != values[0, 0]):
        raise DataError(f"{path}: the colour factor (column 0 of latents_classes / latents_values) is not constant")
    if not np.array_equal(classes[:, 1:], grid.classes(np.arange(n))):
        raise DataError(f"{path}: latents_classes are not in the grid order (shape, scale, orientation, x, y)")
    for a in range(0, n, 16 * CHUNK):
        if imgs[a:a + 16 * CHUNK].max(initial=0) > 1:
            raise DataError(f"{path}: imgs holds values other than 0 and 1")
    return imgs, _class_values(path, classes[:, 1:], values[:, 1:], grid)


def _class_values(path: Path, classes: np.ndarray, values: np.ndarray, grid: DSpritesGrid) -> tuple[np.ndarray, ...]:
    """The value of every class of every factor, checked: one value per class, increasing with it."""
    out = []
    for k, size in enumerate(grid.sizes):
        v = np.zeros(size)
        v[classes[:, k]] = values[:, k]
        if not np.all(np.isfinite(values[:, k])) or not np.array_equal(v[classes[:, k]], values[:, k]):
            raise DataError(f"{path}: latents_values of {FACTOR_NAMES[k]} are not one finite value per class")
        if np.any(np.diff(v) <= 0):
            raise DataError(f"{path}: latents_values of {FACTOR_NAMES[k]} do not increase with the class")
        out.append(v)
    return tuple(out)


# --------------------------------------------------------------------------- the data set


@dataclass(frozen=True)
class _Source:
    """Where the images come from: a description, the factor values, and sorted grid indices -> uint8 images."""

    description: str
    values: tuple[np.ndarray, ...]
    images: Callable[[np.ndarray], np.ndarray]


def _rendered(grid: DSpritesGrid, cache: bool, whole: bool) -> _Source:
    """The rendered grid: from the cache in the user cache (:func:`cache_dir`) when valid; the whole grid rendered
    into it first when ``whole`` (and the user cache is writable); else rendered on demand."""
    directory = cache_dir()  # the user cache, never the data folder
    path = cache_path(directory, grid)
    what = f"the {grid.describe()} dSprites factor grid rendered by vaekit (render v{RENDER_VERSION}; not " \
           "pixel-identical to DeepMind's file)"
    bits = read_cache(path, grid) if cache else None
    if bits is None and cache and whole and make_dirs(directory) and dir_writable(directory):
        try:
            write_cache(path, grid)
        except OSError:  # disk full, a race on the folder: render without a cache
            pass
        else:
            bits = read_cache(path, grid)
    if bits is not None:
        cached = bits
        return _Source(f"{what}, cached in {path}", grid.values, lambda i: unpack(cached[i]))
    return _Source(f"{what}, not cached", grid.values, lambda i: render_dsprites(grid.classes(i), grid=grid))


def _pool(grid: DSpritesGrid, limit: int | None) -> np.ndarray:
    """The grid indices to split: all, or a fixed uniformly random subset of ``limit`` (seed TEST_SEED)."""
    if limit is None:
        return np.arange(grid.count)
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise ConfigError(f"{NAME}: limit must be an integer >= 1 (images of the grid to use), got {limit!r}")
    return subset_indices(None, int(limit), seed=TEST_SEED, size=grid.count)


def _split(pool: np.ndarray, valid_size: Any, test_size: Any, seed: int) -> dict[str, np.ndarray]:
    """Grid indices of the three splits of ``pool`` (test carved with TEST_SEED, valid with ``seed``)."""
    n = len(pool)
    default = min(DEFAULT_SPLIT, n // 10)
    t = resolve_size(test_size, n, default, "test_size", f"{NAME} ({n} images)")
    idx = carve_test_then_valid(
        n, t, lambda m: resolve_size(valid_size, m, default, "valid_size", f"{NAME} after the test split"), seed)
    return {s: pool[i] for s, i in idx.items()}


def _to_tensor(images: Callable[[np.ndarray], np.ndarray], indices: np.ndarray) -> torch.Tensor:
    """float32 (n, 1, 64, 64) images of grid ``indices``, filled CHUNK images at a time."""
    out = torch.empty((len(indices), 1, SIZE, SIZE), dtype=torch.float32)
    for a in range(0, len(indices), CHUNK):
        out[a:a + CHUNK, 0] = torch.from_numpy(images(indices[a:a + CHUNK]))
    return out


def _indices(valid_size: Any, test_size: Any, binarize: Any, image_size: Any, seed: int, splits: Any,
             limit: int | None, grid: DSpritesGrid) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The options checked; the grid indices of each split (empty for a split not wanted) and the wanted splits."""
    if binarize not in (None, "none"):
        raise ConfigError(f"{NAME} is binary already; binarize={binarize!r} does not apply: leave it unset")
    check_native_size(NAME, image_size, (SIZE, SIZE))
    seed, wanted = check_seed(seed), check_splits(splits)
    idx = _split(_pool(grid, limit), valid_size, test_size, seed)
    return {s: (i if s in wanted else i[:0]) for s, i in idx.items()}, wanted


def _published(directory: Path, grid: DSpritesGrid) -> _Source | None:
    """DeepMind's file in ``directory`` (read and checked), or None when it is not there."""
    published = directory / PUBLISHED_FILE
    if not published.is_file():
        return None
    imgs, values = read_published(published, grid)
    return _Source(f"DeepMind's dSprites file {published}", values, lambda i: imgs[i])


def _dataset(x: dict[str, torch.Tensor], idx: dict[str, np.ndarray], source: _Source, limit: int | None,
             grid: DSpritesGrid) -> Dataset:
    description = source.description
    if limit is not None:
        description += "; " + describe_subset(None, int(limit), grid.count, TEST_SEED, "grid")
    factors = Factors(FACTOR_NAMES, grid.sizes, source.values, **{s: grid.classes(i) for s, i in idx.items()})
    return Dataset(name=NAME, shape=(1, SIZE, SIZE), binary=True, dynamic=False, **x, source=description,
                   levels=2, factors=factors, sampler=functools.partial(DSpritesSampler, grid))


def load_dsprites(
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
    grid: DSpritesGrid = GRID,
) -> Dataset:
    """dSprites as a binary :class:`Dataset` of shape 1 x 64 x 64 with ``factors`` (module docstring).

    ``limit``: use a fixed uniformly random subset of that many grid images (seed TEST_SEED; rendered on demand
    when no cache is there, and no cache is written). ``grid``: the factor grid (dSprites' by default).
    ``cache=False`` neither reads nor writes the rendered cache. Nothing is downloaded (``download`` is unused)."""
    idx, wanted = _indices(valid_size, test_size, binarize, image_size, seed, splits, limit, grid)
    directory = dataset_dir(FOLDER, data_dir)
    source = _published(directory, grid)
    check_images_memory(NAME, sum(len(i) for i in idx.values()), SIZE * SIZE * 4)
    if source is None:
        source = _rendered(grid, cache, whole=limit is None)
    x = {s: _to_tensor(source.images, i) if s in wanted else empty_like_split((1, SIZE, SIZE)) for s, i in idx.items()}
    return keep_splits(_dataset(x, idx, source, limit, grid), wanted)


def describe_dsprites(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    valid_size: int | float | None = None,
    test_size: int | float | None = None,
    binarize: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    splits: tuple[str, ...] | None = None,
    cache: bool = True,
    limit: int | None = None,
    grid: DSpritesGrid = GRID,
    **_unused: Any,
) -> tuple[dict[str, Any], Factors]:
    """What :func:`load_dsprites` with these options would give, without rendering or holding the images:
    (``Dataset.info()`` with the split sizes, the factors). A valid cache is read (its checksum checked), never
    written; DeepMind's file, when present, is read and checked as the loader does."""
    idx, wanted = _indices(valid_size, test_size, binarize, image_size, seed, splits, limit, grid)
    directory = dataset_dir(FOLDER, data_dir)
    source = _published(directory, grid) or _rendered(grid, cache, whole=False)
    ds = _dataset({s: empty_like_split((1, SIZE, SIZE)) for s in idx}, idx, source, limit, grid)
    info = ds.info()
    info["splits"] = {s: int(len(i)) for s, i in idx.items()}
    info["not_loaded"] = [s for s in idx if s not in wanted]
    return info, ds.factors  # type: ignore[return-value]


# --------------------------------------------------------------------------- sampling for the metrics


class DSpritesSampler:
    """Images of chosen factor classes for the intervention scores (:class:`vaekit.analysis.disentanglement.
    FactorSampler`): rendered on demand, or taken from ``images`` ((count, 64, 64) 0/1 in the grid order, e.g.
    the ``imgs`` of :func:`read_published`). Images are float32 torch tensors (n, 1, 64, 64)."""

    def __init__(self, grid: DSpritesGrid = GRID, images: np.ndarray | None = None) -> None:
        if images is not None and tuple(np.shape(images)) != (grid.count, SIZE, SIZE):
            raise DataError(f"{NAME}: sampler images must be ({grid.count}, {SIZE}, {SIZE}) in the grid order, "
                            f"got {tuple(np.shape(images))}")
        self.grid = grid
        self.images = images
        self.factor_sizes: tuple[int, ...] = grid.sizes

    def sample(self, n: int, fixed: tuple[int, int] | None = None,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, torch.Tensor]:
        """``n`` examples with factors drawn uniformly and independently from ``rng`` only (a fresh unseeded
        generator when ``None``), factor ``fixed[0]`` held at class ``fixed[1]``: (factors (n, 5) int64, images)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ConfigError(f"{NAME}: the number of examples must be an integer >= 0, got {n!r}")
        rng = np.random.default_rng() if rng is None else rng
        factors = np.stack([rng.integers(size, size=int(n)) for size in self.factor_sizes], axis=1).astype(np.int64)
        if fixed is not None:
            try:
                k, value = (int(v) for v in fixed)
            except (TypeError, ValueError):
                k, value = -1, -1
            if not 0 <= k < len(self.factor_sizes) or not 0 <= value < self.factor_sizes[k]:
                raise ConfigError(f"{NAME}: fixed={fixed!r} is not (factor, class), factor in 0..4 and class "
                                  f"below its size in {self.factor_sizes}")
            factors[:, k] = value
        return factors, self.sample_from_factors(factors)

    def sample_from_factors(self, factors: Any, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The images of factor classes ``factors`` (n, 5) (deterministic: ``rng`` is not used)."""
        c = check_classes(factors, self.grid)
        if self.images is not None:
            images = np.asarray(self.images[self.grid.index(c)], dtype=np.uint8)
        else:
            images = render_dsprites(c, grid=self.grid)
        return torch.from_numpy(images.astype(np.float32)).reshape(-1, 1, SIZE, SIZE)
