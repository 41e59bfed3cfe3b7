"""The user's own data: ``images:DIR`` (PNG/JPEG files), ``npy:FILE`` / ``npz:FILE`` arrays and ``csv:FILE`` tables.

Tables (:mod:`vaekit.data.tabular`): ``csv:FILE``, and a 2-D ``npy`` / ``npz`` array (N, D) that does not read as
flattened images (below: uint8 or bool, or floats in [0, 1] with D a perfect square > 1) are N examples of D
real features, any finite values, shape (1, 1, D), split as a pool is (below). They are standardised with the
training split's mean and SD unless ``standardise=False`` (see :func:`vaekit.data.load_dataset`).

``images:DIR``: ``DIR/*.png|jpg|jpeg`` (no labels) or ``DIR/<class>/*.png|jpg|jpeg`` (labels
are the indices of the sorted class-folder names); not both, and no deeper nesting. Hidden
files and files with other extensions are ignored (their number is reported in ``source``).
Grey images (modes 1, L, LA, and P with a grey palette) give C = 1; if any image is colour
(RGB, RGBA, P with colours) all give C = 3 (grey replicated). Other modes (16-bit, CMYK, ...)
are errors. Alpha must be fully opaque (nothing is composited silently). Without
``image_size`` every image must have the same size (else the error names the sizes and
files); with it, images are resized (bilinear) to ``image_size`` (an int or (H, W)).

Arrays: (N, H, W) -> C = 1; (N, C, H, W) if C = shape[1] is 1 or 3, else (N, H, W, C) if
shape[3] is 1 or 3 (channels-first wins when both could be); (N, D) with D a perfect square
-> 1 x sqrt(D) x sqrt(D). Values: uint8 0..255 (scaled by 1/255), bool, or float in [0, 1]
with no NaN or infinity; other dtypes, and floats outside [0, 1], are errors - nothing is
clipped. Labels: 1-D integer arrays >= 0, one per image. An ``npz`` holds either
``train`` [+ ``valid``] [+ ``test``] (+ the matching ``*_labels``), or a single pool
``images`` (or ``arr_0``) [+ ``labels``]; any other key is an error.

Splits of a pool (and the splits an npz lacks, carved from ``train``): ``test_size`` images
(default 10 %) with the fixed test seed, then ``valid_size`` (default 10 % of the images)
from the rest with ``seed``. Sizes are counts or fractions in (0, 1). When the values are
all 0/1 the data set is reported ``binary`` (the user's own binarization).

Grey levels (``Dataset.levels``): image folders and uint8 arrays hold 8-bit values, x = k / 255
(256 levels; RGB kept as 3 channels at their stored values); 0/1 data (bool, or binarized) has 2;
float arrays are taken as real-valued (``None``) even when they happen to be multiples of 1/255:
to declare 8-bit data, store it as uint8.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.data.base import (
    BINARIZE_MODES,
    SPLITS,
    TEST_SEED,
    Dataset,
    apply_binarize,
    carve,
    check_binarize,
    check_image_size,
    check_native_size,
    check_seed,
    check_splits,
    is_binary,
    keep_splits,
    resolve_size,
    to_float,
    to_labels,
)
from vaekit.data.tabular import as_table, is_image_array, read_csv
from vaekit.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_FRACTION = 0.1
_NPZ_SPLIT_KEYS = {*SPLITS, *(f"{s}_labels" for s in SPLITS)}
_NPZ_POOL_KEYS = {"images", "labels", "arr_0"}


# --------------------------------------------------------------------------- arrays


def as_images(arr: np.ndarray, label: str) -> np.ndarray:
    """Check an image array and lay it out (N, C, H, W); uint8 stays uint8, the rest float32.
    Value errors give indices in the array as stored."""
    if arr.dtype.kind not in "buf" or (arr.dtype.kind == "u" and arr.dtype != np.uint8):
        raise DataError(
            f"{label}: dtype {arr.dtype} is not supported: use uint8 (0..255), float in [0, 1] "
            f"or bool (cast 0/1 integer data to uint8 * 255 or to float32)"
        )
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            bad = ~finite
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DataError(
                f"{label}: {int(bad.sum())} NaN or infinite values (first at index {first}); "
                f"values must be finite and in [0, 1]"
            )
        outside = (arr < 0) | (arr > 1)
        if outside.any():
            first = tuple(int(i) for i in np.argwhere(outside)[0])
            raise DataError(
                f"{label}: {int(outside.sum())} values outside [0, 1] (min {float(arr.min()):g}, "
                f"max {float(arr.max()):g}, first at index {first}); scale the data to [0, 1] "
                f"(e.g. divide 0..255 data by 255) - nothing is clipped"
            )
    if arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side * side != arr.shape[1] or side == 0:
            raise DataError(
                f"{label}: a 2-D array (N, D) needs D = side * side (flattened square images); "
                f"got shape {arr.shape}"
            )
        arr = arr.reshape(arr.shape[0], 1, side, side)
    elif arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4:
        if arr.shape[3] in (1, 3) and arr.shape[1] not in (1, 3):
            arr = arr.transpose(0, 3, 1, 2)
        elif arr.shape[1] not in (1, 3):
            raise DataError(
                f"{label}: shape {arr.shape}: expected (N, C, H, W) or (N, H, W, C) with C = 1 "
                f"(grey) or 3 (RGB)"
            )
    else:
        raise DataError(
            f"{label}: shape {arr.shape}: expected (N, H, W), (N, C, H, W), (N, H, W, C) or "
            f"(N, side*side)"
        )
    if min(arr.shape[1:]) == 0:
        raise DataError(f"{label}: shape {arr.shape} has an empty image dimension")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_labels(arr: np.ndarray, n: int, label: str) -> np.ndarray:
    """Labels: 1-D integers >= 0, ``n`` of them -> int64."""
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise DataError(f"{label}: labels must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    if len(arr) != n:
        raise DataError(f"{label}: {len(arr)} labels for {n} images; they must match")
    if arr.size and arr.min() < 0:
        raise DataError(f"{label}: labels must be >= 0 (found {int(arr.min())})")
    return arr.astype(np.int64)


def _load_np(path: Path, kind: str) -> np.ndarray | dict[str, np.ndarray]:
    """An ``.npy`` array, or the arrays of an ``.npz`` archive (read in full, file closed)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found ({kind}:FILE expects a .{kind} file)")
    try:
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    arrays = {}
                    for k in loaded.files:
                        value = loaded[k]
                        if not isinstance(value, np.ndarray):  # numpy hands members that are not .npy as bytes
                            raise DataError(f"{path}: member {k[:80]!r} of the archive is not a .npy array "
                                            "(an .npz holds only arrays written by numpy.savez)")
                        arrays[k] = value
                    return arrays
            return loaded
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(
            f"{path}: cannot read as .{kind} ({str(exc)[:200]}); object arrays are refused"
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a valid .{kind} file (truncated or corrupt: {exc})") from None
    except MemoryError:
        raise DataError(f"{path}: declares an array larger than this machine's memory (a corrupt header?)") from None
    except Exception as exc:  # numpy's other errors on a damaged header (tokenize.TokenError, ...)
        raise DataError(f"{path}: not a valid .{kind} file (corrupt header: {type(exc).__name__})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    arrays = _load_np(path, "npz")
    if not isinstance(arrays, dict):
        raise DataError(f"{path}: is a .npy array, not an .npz archive; use npy:{path}")
    return arrays


# --------------------------------------------------------------------------- images:DIR


def _image_files(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...] | None, int]:
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (images:DIR expects a folder of PNG/JPEG files)")

    def is_image(p: Path) -> bool:
        return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS

    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    top = [p for p in entries if is_image(p)]
    ignored = sum(1 for p in entries if p.is_file() and not is_image(p))
    class_dirs = []
    for d in (p for p in entries if p.is_dir()):
        inner = sorted(p for p in d.iterdir() if not p.name.startswith("."))
        if any(p.is_dir() for p in inner):
            raise DataError(f"{d}: nested folders are not read; use DIR/*.png or DIR/<class>/*.png")
        images = [p for p in inner if is_image(p)]
        ignored += len(inner) - len(images)
        if images:
            class_dirs.append((d, images))
    if top and class_dirs:
        raise DataError(
            f"{root}: has images both at the top level ({top[0].name}, ...) and in class "
            f"sub-folders ({class_dirs[0][0].name}/, ...); use one layout"
        )
    if class_dirs:
        files = [p for _, images in class_dirs for p in images]
        labels = [i for i, (_, images) in enumerate(class_dirs) for _ in images]
        return files, labels, tuple(d.name for d, _ in class_dirs), ignored
    if not top:
        raise DataError(
            f"{root}: no PNG/JPEG images found (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return top, None, None, ignored


def _read_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (H, W) (grey) or (H, W, 3) (colour)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            palette = im.mode == "P"
            if palette:
                im = im.convert("RGBA")
            if im.mode in ("LA", "RGBA"):
                if np.asarray(im.getchannel("A")).min() < 255:
                    raise DataError(
                        f"{path}: has transparent pixels; flatten it onto a background first"
                    )
                im = im.convert("L" if im.mode == "LA" else "RGB")
            if im.mode == "RGB" and palette:
                rgb = np.asarray(im)
                if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
                    im = im.convert("L")  # a palette of grey levels
            elif im.mode == "1":
                im = im.convert("L")
            elif im.mode not in ("L", "RGB"):
                raise DataError(
                    f"{path}: image mode {im.mode} is not supported (use 8-bit grey or RGB)"
                )
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.array(im, dtype=np.uint8)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read the image ({exc}); truncated or corrupt?") from None


def read_images_dir(
    directory: str | os.PathLike[str], image_size: int | tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None, int]:
    """(images uint8 (N, C, H, W), labels int64 or None, class names or None, ignored files)."""
    root = Path(directory)
    size = check_image_size(image_size)
    files, labels, classes, ignored = _image_files(root)
    arrays = [_read_image(p, size) for p in files]
    by_size: dict[tuple[int, int], list[str]] = defaultdict(list)
    for p, a in zip(files, arrays):
        by_size[a.shape[:2]].append(str(p.relative_to(root)))
    if len(by_size) > 1:
        parts = [
            f"{h}x{w} ({len(names)} files, e.g. {', '.join(names[:2])})"
            for (h, w), names in sorted(by_size.items(), key=lambda kv: -len(kv[1]))
        ]
        raise DataError(
            f"{root}: images of mixed sizes: {'; '.join(parts)}; pass image_size "
            f"(--image-size) to resize them all"
        )
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
        x = np.stack(arrays).transpose(0, 3, 1, 2)
    else:
        x = np.stack(arrays)[:, None]
    y = np.asarray(labels, dtype=np.int64) if labels is not None else None
    return np.ascontiguousarray(x), y, classes, ignored


# --------------------------------------------------------------------------- the data sets


def _split_pool(
    x: np.ndarray,
    y: np.ndarray | None,
    valid_size: int | float | None,
    test_size: int | float | None,
    seed: int,
    label: str,
    *,
    have_valid: bool = False,
    have_test: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Carve the test split (fixed seed) and the valid split (``seed``) from a pool of ``n``
    images, unless given; sizes are counts or fractions of ``n`` (default 10 % each)."""
    n = len(x)
    default = int(round(DEFAULT_FRACTION * n))
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    pool = np.arange(n)
    for split, size, have, split_seed in (
        ("test", test_size, have_test, TEST_SEED),
        ("valid", valid_size, have_valid, seed),
    ):
        if have:
            continue
        count = resolve_size(size, n, default, f"{split}_size", label)
        if count >= len(pool):
            raise ConfigError(
                f"{split}_size={count} leaves no training images: {label} has {len(pool)} "
                f"images left to split; choose smaller sizes"
            )
        rest, carved = carve(len(pool), count, split_seed)
        idx = pool[carved]
        out[split] = (x[idx], None if y is None else y[idx])
        pool = pool[rest]
    out["train"] = (x[pool], None if y is None else y[pool])
    return out


def load_file_dataset(
    spec: str,
    *,
    valid_size: int | float | None = None,
    test_size: int | float | None = None,
    binarize: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    seed: int = 0,
    splits: tuple[str, ...] | None = None,
    label_column: str | None = None,
) -> Dataset:
    """``images:DIR``, ``npy:FILE``, ``npz:FILE`` or ``csv:FILE`` as a :class:`Dataset` (a table: not standardised
    here, :func:`vaekit.data.load_dataset` does it). ``label_column``: the CSV header's column of class labels."""
    kind, _, where = spec.partition(":")
    if not where:
        raise ConfigError(f"{spec!r}: give a path after '{kind}:' (e.g. {kind}:path/to/data)")
    path = Path(where).expanduser()
    binarize = check_binarize(binarize, allowed=(None, *BINARIZE_MODES))
    seed = check_seed(seed)
    wanted = check_splits(splits)
    if label_column is not None and kind != "csv":
        raise ConfigError(f"label_column names a column of a CSV file (csv:FILE); {kind}:FILE carries its labels "
                          "as arrays: leave label_column out")
    table, loaded = _table(kind, path, label_column)
    if table is not None:
        return keep_splits(_table_dataset(kind, path, table, valid_size, test_size, binarize, image_size, seed),
                           wanted)
    parts, classes, source = _image_parts(spec, kind, path, loaded, valid_size, test_size, image_size, seed)
    shape = tuple(parts["train"][0].shape[1:])
    eight_bit = all(parts[s][0].dtype == np.uint8 for s in SPLITS)
    tensors = {s: to_float(parts[s][0]) for s in SPLITS}
    binary = binarize is not None or all(is_binary(t) for t in tensors.values())
    tensors, dynamic = apply_binarize(tensors, binarize, seed)
    labels = {s: to_labels(parts[s][1]) for s in SPLITS}
    ds = Dataset(
        name=f"{kind}:{path}",
        shape=shape,  # type: ignore[arg-type]
        binary=binary,
        dynamic=dynamic,
        train=tensors["train"],
        valid=tensors["valid"],
        test=tensors["test"],
        train_labels=labels["train"],
        valid_labels=labels["valid"],
        test_labels=labels["test"],
        binarize=binarize,
        source=source,
        classes=classes,
        levels=2 if binary else (256 if eight_bit else None),
    )
    return keep_splits(ds, wanted)


def _image_parts(spec: str, kind: str, path: Path, loaded: Any, valid_size: int | float | None,
                 test_size: int | float | None, image_size: int | tuple[int, int] | None,
                 seed: int) -> tuple[dict[str, tuple[np.ndarray, np.ndarray | None]], Any, str]:
    """(the splits, the class names or None, the source) of images: a folder of image files, an npy array or the
    arrays of an npz archive (``loaded``: what :func:`_table` read)."""
    classes, source = None, str(path)
    if kind == "images":
        x, y, classes, ignored = read_images_dir(path, image_size)
        if ignored:
            source += f" ({ignored} non-image files ignored)"
        return _split_pool(x, y, valid_size, test_size, seed, str(path)), classes, source
    if kind == "npy":
        x = _nonempty(as_images(loaded, str(path)), str(path))
        check_native_size(spec, image_size, x.shape[2:])
        return _split_pool(x, None, valid_size, test_size, seed, str(path)), classes, source
    if kind == "npz":
        parts = _npz_parts(path, valid_size, test_size, seed, arrays=loaded)
        check_native_size(spec, image_size, parts["train"][0].shape[2:])
        return parts, classes, source
    raise ConfigError(f"unknown data spec kind {kind!r}")  # pragma: no cover - load_dataset dispatches only these


def _table(kind: str, path: Path, label_column: str | None) -> tuple[Any, Any]:
    """(a table, None) - its (features, labels, classes, feature names), or for npz the archive's arrays - or
    (None, what was read) when the file holds images (an npy array or npz arrays that read as images)."""
    if kind == "csv":
        return read_csv(path, label_column), None
    if kind == "npy":
        arr = _load_np(path, "npy")
        if isinstance(arr, dict):
            raise DataError(f"{path}: is an .npz archive, not a .npy array; use npz:{path}")
        return (None, arr) if is_image_array(arr) else ((arr, None, None, None), None)
    if kind == "npz":
        arrays = _read_npz(path)
        first = next((arrays[k] for k in ("train", "images", "arr_0") if k in arrays), None)
        return (None, arrays) if first is None or is_image_array(first) else (arrays, None)
    return None, None


def _table_dataset(kind: str, path: Path, table: Any, valid_size: int | float | None,
                   test_size: int | float | None, binarize: str | None, image_size: Any, seed: int) -> Dataset:
    """The splits of a table (raw values, shape (1, 1, D)); binarization and image sizes do not apply."""
    if binarize is not None:
        raise ConfigError(f"{kind}:{path} is a table of real values; binarize applies to images: leave it out")
    if image_size is not None:
        raise ConfigError(f"{kind}:{path} is a table of real values; image_size applies to images:DIR")
    if isinstance(table, dict):
        parts = _npz_parts(path, valid_size, test_size, seed, arrays=table, convert=as_table)
        classes, features = None, None
    else:
        values, y, classes, features = table
        x = as_table(np.asarray(values), str(path))
        parts = _split_pool(x, y, valid_size, test_size, seed, str(path))
    tensors = {s: to_float(parts[s][0]) for s in SPLITS}
    labels = {s: to_labels(parts[s][1]) for s in SPLITS}
    return Dataset(name=f"{kind}:{path}", shape=tuple(parts["train"][0].shape[1:]),  # type: ignore[arg-type]
                   binary=False, dynamic=False, train=tensors["train"], valid=tensors["valid"],
                   test=tensors["test"], train_labels=labels["train"], valid_labels=labels["valid"],
                   test_labels=labels["test"], source=str(path), classes=classes, levels=None, tabular=True,
                   features=features)


def _nonempty(x: np.ndarray, label: str) -> np.ndarray:
    if len(x) == 0:
        raise DataError(f"{label}: holds 0 images")
    return x


def _npz_parts(
    path: Path, valid_size: int | float | None, test_size: int | float | None, seed: int,
    arrays: dict[str, np.ndarray] | None = None, convert: Callable[[np.ndarray, str], np.ndarray] = as_images,
) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The splits of an archive's ``arrays`` (read from ``path`` when None), each checked by ``convert``."""
    arrays = _read_npz(path) if arrays is None else arrays
    keys = set(arrays)
    if keys <= _NPZ_POOL_KEYS and keys & {"images", "arr_0"} and not {"images", "arr_0"} <= keys:
        key = "images" if "images" in keys else "arr_0"
        label = f"{path}[{key}]"
        x = _nonempty(convert(arrays[key], label), label)
        y = check_labels(arrays["labels"], len(x), f"{path}[labels]") if "labels" in keys else None
        return _split_pool(x, y, valid_size, test_size, seed, str(path))
    if "train" not in keys or not keys <= _NPZ_SPLIT_KEYS:
        raise DataError(
            f"{path}: keys {sorted(keys)}: expected 'train' [+ 'valid'] [+ 'test'] with optional "
            f"'<split>_labels', or one pool 'images' [+ 'labels']"
        )
    given = {s: s in keys for s in SPLITS}
    with_labels = {s: f"{s}_labels" in keys for s in SPLITS if given[s]}
    if any(with_labels.values()) and not all(with_labels.values()):
        lacking = [f"{s}_labels" for s, h in with_labels.items() if not h]
        raise DataError(f"{path}: has labels for some splits only; missing {', '.join(lacking)}")
    for s in SPLITS:
        if f"{s}_labels" in keys and not given[s]:
            raise DataError(f"{path}: has '{s}_labels' but no '{s}' images")
    if given["valid"] and valid_size is not None:
        raise ConfigError(f"{path} has a 'valid' array; drop valid_size")
    if given["test"] and test_size is not None:
        raise ConfigError(f"{path} has a 'test' array; drop test_size")
    loaded: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for s in SPLITS:
        if given[s]:
            label = f"{path}[{s}]"
            x = convert(arrays[s], label)
            if s == "train":
                _nonempty(x, label)
            y = arrays.get(f"{s}_labels")
            y = check_labels(y, len(x), f"{path}[{s}_labels]") if y is not None else None
            loaded[s] = (x, y)
    shapes = {s: v[0].shape[1:] for s, v in loaded.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: the splits have different image shapes {shapes}")
    dtypes = {v[0].dtype for v in loaded.values()}
    if len(dtypes) > 1:  # uint8 and float splits: bring all to float32 in [0, 1]
        loaded = {
            s: (x.astype(np.float32) / 255 if x.dtype == np.uint8 else x, y)
            for s, (x, y) in loaded.items()
        }
    x, y = loaded["train"]
    carved = _split_pool(x, y, valid_size, test_size, seed, f"{path}[train]", have_valid=given["valid"],
                         have_test=given["test"])
    return {s: loaded[s] if given[s] and s != "train" else carved[s] for s in SPLITS}
