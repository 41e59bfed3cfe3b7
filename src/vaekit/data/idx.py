"""The IDX family: MNIST, Fashion-MNIST and Kuzushiji-MNIST (grey levels, labels 0-9).

IDX format: two zero bytes, a type byte (0x08 = unsigned byte, ...), the number of dimensions
d, then d big-endian uint32 sizes and the values, row-major. An images file has magic number
0x00000803 (uint8, N x 28 x 28), a labels file 0x00000801 (uint8, N). Checked strictly: the
magic number, the dimensions against the file size (a truncated file or trailing bytes is an
error), 28 x 28 images, as many labels as images, labels below the number of classes.
Files are read plain or gzipped. Pixel values are scaled to [0, 1] as x / 255 (``levels`` 256,
or 2 when binarized).

Splits: the test split is the ``t10k-`` files; the validation split is carved from the
``train-`` files with ``seed`` (default size: one sixth of them, 10,000 for the 60,000-image
sets); the rest is the training split. MD5s of the downloaded ``.gz`` files are those of
torchvision's lists and are checked on download; local files get the structure checks only
(a re-compressed copy is as good as the original).

Only some files present (a folder holding just the ``t10k-`` files): the
loader reads only the files of the requested ``splits``; asking for all three with the
``train-`` files absent and not downloadable raises :class:`MissingFilesError` naming them,
their URLs and the folder to put them in, and telling which splits are available
(``splits=("test",)`` reads the test split alone).

Two variants of each set (``mnist`` stands for any of the three):

- ``mnist-grey``: ``mnist`` at its 8-bit grey levels, refusing any binarization (the same data
  as ``mnist`` with ``binarize=None``; the name says so in the run's settings).
- ``mnist-t10k``: for when only the ``t10k-`` files are at hand, all three splits are carved
  out of the 10,000 test images: ``test_size`` (default 2,000) with the fixed
  :data:`~vaekit.data.base.TEST_SEED`, then ``valid_size`` (default 1,000) with ``seed``, the
  rest (7,000) for training. The ``train-`` files are never read, even when present. Its
  test figures are on 2,000 of the 10,000 standard test images, so they are comparable with
  other ``mnist-t10k`` runs only, not with figures on the standard MNIST test set.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaekit.data.base import (
    BINARIZE_MODES,
    SPLITS,
    Dataset,
    apply_binarize,
    carve,
    carve_test_then_valid,
    check_binarize,
    check_native_size,
    check_seed,
    check_splits,
    empty_like_split,
    keep_splits,
    resolve_size,
    to_float,
    to_labels,
)
from vaekit.data.download import MissingFilesError, RemoteFile, dataset_dir, ensure_files, mirrors, read_bytes
from vaekit.errors import ConfigError, DataError

#: IDX type byte -> numpy dtype (big-endian for the multi-byte types).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


@dataclass(frozen=True)
class IdxSet:
    """A named IDX data set: where it lives, its known MD5s and class names."""

    name: str
    folder: str
    description: str
    urls: tuple[str, ...]
    md5: dict[str, str]
    classes: tuple[str, ...]

    def files(self) -> dict[str, list[RemoteFile]]:
        """Split -> the files it needs (the validation split is carved from ``train-``)."""

        def pair(prefix: str) -> list[RemoteFile]:
            stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
            return [RemoteFile(s, s + ".gz", self.md5.get(s + ".gz")) for s in stems]

        return {"train": pair("train"), "valid": pair("train"), "test": pair("t10k")}


IDX_SETS: dict[str, IdxSet] = {
    "mnist": IdxSet(
        name="mnist",
        folder="mnist",
        description="MNIST handwritten digits (LeCun et al.), 28x28 grey levels, labels 0-9",
        urls=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        classes=tuple("0123456789"),
    ),
    "fashion-mnist": IdxSet(
        name="fashion-mnist",
        folder="fashion_mnist",
        description="Fashion-MNIST (Zalando), 28x28 grey levels, 10 clothing classes",
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "kmnist": IdxSet(
        name="kmnist",
        folder="kmnist",
        description="Kuzushiji-MNIST (CODH), 28x28 grey levels, 10 cursive Japanese characters",
        urls=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5={
            "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
            "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
            "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
            "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}


# --------------------------------------------------------------------------- the format


def parse_idx(data: bytes, label: str) -> np.ndarray:
    """Decode IDX bytes into a (writable, native-endian) numpy array; strict size checks."""
    if len(data) < 4:
        raise DataError(f"{label}: {len(data)} bytes is too short for an IDX header (truncated?)")
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if data[0] or data[1] or code not in IDX_TYPES or ndim == 0:
        raise DataError(
            f"{label}: not an IDX file: magic number 0x{magic:08X} (expected 0x0000 then a type "
            f"byte 0x08-0x0E and the number of dimensions, e.g. 0x00000803 for images)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{label}: truncated IDX header ({len(data)} bytes, expected {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_TYPES[code]
    count = math.prod(dims)
    expected = count * dtype.itemsize
    got = len(data) - header
    shape = "x".join(map(str, dims))
    if got < expected:
        raise DataError(
            f"{label}: truncated: the header declares {shape} values ({expected} bytes) but the "
            f"file holds {got} bytes after the header; delete it and download it again"
        )
    if got > expected:
        raise DataError(
            f"{label}: {got - expected} unexpected bytes after the {shape} values the header "
            f"declares (wrong dimensions in the header, or a corrupt file)"
        )
    try:
        arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    except ValueError as exc:  # e.g. more dimensions than numpy supports
        raise DataError(f"{label}: the header declares an array numpy cannot hold ({shape[:60]}: {exc})") from None
    return arr.astype(dtype.newbyteorder("="), copy=True)


#: Bytes past the size an IDX header declares that are still read (so that the error says how many there are).
SLACK = 4096


def declared_size(head: bytes) -> int:
    """The size in bytes (plus :data:`SLACK`) of the IDX file whose first bytes are ``head``, from its header;
    for a header that is not IDX, ``len(head)`` (the parse then says what is wrong)."""
    if len(head) < 4 or head[0] or head[1] or head[2] not in IDX_TYPES or head[3] == 0:
        return len(head) + SLACK
    header = 4 + 4 * head[3]
    if len(head) < header:
        return len(head) + SLACK
    dims = struct.unpack(f">{head[3]}I", head[4:header])
    return header + math.prod(dims) * IDX_TYPES[head[2]].itemsize + SLACK


def read_idx(path: str | os.PathLike[str], *, magic: int | None = None) -> np.ndarray:
    """An IDX file (plain or gzipped) as a numpy array; ``magic`` if given must match. Gzipped data is
    expanded no further than the size its header declares (a decompression bomb is refused)."""
    path = Path(path)
    data = read_bytes(path, limit=declared_size)
    return _parse_expect(data, str(path), magic)


def _parse_expect(data: bytes, label: str, magic: int | None) -> np.ndarray:
    if magic is not None and len(data) >= 4:
        found = int.from_bytes(data[:4], "big")
        if found != magic:
            kinds = {IMAGES_MAGIC: "an images file", LABELS_MAGIC: "a labels file"}
            hint = f" (that is {kinds[found]})" if found in kinds else ""
            raise DataError(
                f"{label}: wrong IDX magic number 0x{found:08X}{hint}, expected 0x{magic:08X} "
                f"({kinds.get(magic, 'IDX')} of unsigned bytes)"
            )
    return parse_idx(data, label)


def read_idx_images(
    path: str | os.PathLike[str], *, size: tuple[int, int] | None = (28, 28)
) -> np.ndarray:
    """An IDX images file as uint8 (N, H, W); with ``size`` the images must be H x W."""
    x = read_idx(path, magic=IMAGES_MAGIC)
    if size is not None and x.shape[1:] != size:
        raise DataError(
            f"{path}: images are {x.shape[1]}x{x.shape[2]}, expected {size[0]}x{size[1]}"
        )
    return x


def read_idx_labels(path: str | os.PathLike[str], *, n_classes: int | None = 10) -> np.ndarray:
    """An IDX labels file as int64 (N,); with ``n_classes`` every label is in 0..n_classes-1."""
    y = read_idx(path, magic=LABELS_MAGIC).astype(np.int64)
    if n_classes is not None and y.size and y.max() >= n_classes:
        i = int(np.argmax(y >= n_classes))
        raise DataError(f"{path}: label {int(y[i])} at index {i} is not a class 0..{n_classes - 1}")
    return y


def load_idx_split(
    directory: str | os.PathLike[str], prefix: str, *, n_classes: int | None = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of ``<prefix>-images-idx3-ubyte[.gz]``
    and ``<prefix>-labels-idx1-ubyte[.gz]`` in ``directory`` (``prefix``: "train" or "t10k")."""
    from vaekit.data.download import find_file

    directory = Path(directory)
    paths = []
    for stem in (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"):
        p = find_file(directory, stem)
        if p is None:
            raise DataError(f"{directory / stem}[.gz]: file not found")
        paths.append(p)
    return _read_pair(paths[0], paths[1], n_classes)


def _read_pair(images: Path, labels: Path, n_classes: int | None) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx_images(images)
    y = read_idx_labels(labels, n_classes=n_classes)
    if len(x) != len(y):
        raise DataError(
            f"{images} has {len(x)} images but {labels} has {len(y)} labels; they must match"
        )
    return x, y


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None or array.ndim == 0:
        raise ValueError(f"write_idx: unsupported dtype {array.dtype} or a 0-d array")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


# --------------------------------------------------------------------------- the data sets


def _check_download(rf: RemoteFile, path: Path, label: str) -> None:
    magic = IMAGES_MAGIC if "-images-" in rf.stem else LABELS_MAGIC
    _parse_expect(read_bytes(path, label, limit=declared_size), label, magic)


def _idx_files(name: str, directory: Path, wanted: tuple[str, ...], download: bool) -> tuple[dict, dict]:
    spec = IDX_SETS[name]
    files = spec.files()
    try:
        paths = ensure_files(
            name,
            directory,
            files,
            wanted,
            urls=mirrors(name, spec.folder, spec.urls),
            download_missing=download,
            check=_check_download,
        )
    except MissingFilesError as exc:
        if exc.available != ("test",):
            raise
        hint = (f"; to train on the t10k- files alone, use the data set {name}-t10k (train / valid / test "
                f"carved out of its 10,000 test images)")
        raise MissingFilesError(str(exc) + hint, exc.missing, exc.available) from None
    return files, paths


def load_idx_dataset(
    name: str,
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
    """MNIST / Fashion-MNIST / KMNIST: 1 x 28 x 28 grey levels in [0, 1] with labels."""
    spec = IDX_SETS[name]
    binarize = check_binarize(binarize, allowed=(None, *BINARIZE_MODES))
    if test_size is not None:
        raise ConfigError(f"{name} has a fixed test split (the t10k- files); drop test_size")
    check_native_size(name, image_size, (28, 28))
    seed = check_seed(seed)
    wanted = check_splits(splits)
    directory = dataset_dir(spec.folder, data_dir, aliases=(name,))
    files, paths = _idx_files(name, directory, wanted, download)
    n_classes = len(spec.classes)
    shape = (1, 28, 28)
    x = {s: empty_like_split(shape) for s in SPLITS}
    y = {s: to_labels(np.zeros(0, dtype=np.int64)) for s in SPLITS}
    if "train" in wanted or "valid" in wanted:
        xs, ys = _read_pair(paths[files["train"][0].stem], paths[files["train"][1].stem], n_classes)
        n = len(xs)
        v = resolve_size(valid_size, n, n // 6, "valid_size", f"the {name} training file")
        rest, carved = carve(n, v, seed)
        x["train"], y["train"] = to_float(xs[rest, None]), to_labels(ys[rest])
        x["valid"], y["valid"] = to_float(xs[carved, None]), to_labels(ys[carved])
    elif valid_size is not None:
        resolve_size(valid_size, 2**62, 0, "valid_size", name)  # check the value alone
    if "test" in wanted:
        xs, ys = _read_pair(paths[files["test"][0].stem], paths[files["test"][1].stem], n_classes)
        x["test"], y["test"] = to_float(xs[:, None]), to_labels(ys)
    x, dynamic = apply_binarize(x, binarize, seed)
    ds = Dataset(
        name=name,
        shape=shape,
        binary=binarize is not None,
        dynamic=dynamic,
        train=x["train"],
        valid=x["valid"],
        test=x["test"],
        train_labels=y["train"],
        valid_labels=y["valid"],
        test_labels=y["test"],
        binarize=binarize,
        source=str(directory),
        classes=spec.classes,
        levels=2 if binarize is not None else 256,
    )
    return keep_splits(ds, wanted)


def load_idx_grey(name: str, *, binarize: str | None = None, **kwargs) -> Dataset:
    """``<name>-grey``: the IDX set at its 8-bit grey levels (``levels`` 256); a binarization is refused."""
    if check_binarize(binarize, allowed=(None, *BINARIZE_MODES, "static")) is not None:
        raise ConfigError(
            f"{name}-grey keeps the 8-bit grey levels; drop binarize={binarize!r}, or use the data set "
            f"{name} with binarize dynamic or threshold"
        )
    ds = load_idx_dataset(name, **kwargs)
    ds.name = f"{name}-grey"
    return ds


#: Default sizes of the splits carved out of the t10k- files by ``<name>-t10k``.
T10K_VALID = 1_000
T10K_TEST = 2_000


def load_idx_t10k(
    name: str,
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
    """``<name>-t10k``: train / valid / test carved out of the 10,000 ``t10k-`` images alone.

    Test: ``test_size`` images (default 2,000) chosen with the fixed :data:`TEST_SEED`; valid:
    ``valid_size`` (default 1,000) of the rest chosen with ``seed``; train: the remaining 7,000.
    Each split keeps the file's order. The ``train-`` files are never read.
    """
    spec = IDX_SETS[name]
    label = f"{name}-t10k"
    binarize = check_binarize(binarize, allowed=(None, *BINARIZE_MODES))
    check_native_size(label, image_size, (28, 28))
    seed = check_seed(seed)
    wanted = check_splits(splits)
    directory = dataset_dir(spec.folder, data_dir, aliases=(name,))
    files, paths = _idx_files(name, directory, ("test",), download)
    xs, ys = _read_pair(paths[files["test"][0].stem], paths[files["test"][1].stem], len(spec.classes))
    n = len(xs)
    t = resolve_size(test_size, n, min(T10K_TEST, n // 5), "test_size", f"the {name} t10k- file ({n} images)")
    idx = carve_test_then_valid(n, t, lambda m: resolve_size(
        valid_size, m, min(T10K_VALID, m // 8), "valid_size", f"the {name} t10k- file after the test split ({m} images)"
    ), seed)
    x = {s: to_float(xs[i][:, None]) for s, i in idx.items()}
    x, dynamic = apply_binarize(x, binarize, seed)
    ds = Dataset(
        name=label,
        shape=(1, 28, 28),
        binary=binarize is not None,
        dynamic=dynamic,
        train=x["train"],
        valid=x["valid"],
        test=x["test"],
        train_labels=to_labels(ys[idx["train"]]),
        valid_labels=to_labels(ys[idx["valid"]]),
        test_labels=to_labels(ys[idx["test"]]),
        binarize=binarize,
        source=f"{directory} (the t10k- files alone: {len(idx['train'])} / {len(idx['valid'])} / "
        f"{len(idx['test'])} of their {n} images)",
        classes=spec.classes,
        levels=2 if binarize is not None else 256,
    )
    return keep_splits(ds, wanted)
