"""CIFAR-10 (Krizhevsky 2009) from its official *binary* archive, read without extracting it.

The archive ``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/data_batch_1.bin`` ...
``data_batch_5.bin`` (the 50,000 training images), ``test_batch.bin`` (10,000 test images) and
``batches.meta.txt`` (the 10 class names, one a line). Each ``.bin`` is a run of 3,073-byte
records: one label byte (0-9), then 1,024 red, 1,024 green and 1,024 blue bytes, each plane a
32 x 32 image in row-major order; so a record reshapes straight to (C, H, W) = (3, 32, 32).
The pickled "python version" of CIFAR-10 is never read (nothing here loads pickle).

Values are the 8-bit intensities scaled as x = k / 255 (``levels`` 256, three channels); no
binarization is offered. Splits: the test split is ``test_batch.bin``; the validation split is
carved from the 50,000 training images with ``seed`` (default 5,000, one tenth), the rest is
the training split.

Reading: the members are streamed out of the tar (plain or gzipped) one by one with
:mod:`tarfile`, nothing is written to disk. Refused: links, devices and other special
members, absolute or ``..`` member names, a member named twice, more than
:data:`MAX_MEMBERS` members, and any required member whose size is not a whole number of
records (or, for ``batches.meta.txt``, more than :data:`META_CAP` bytes). Other regular
members (the archive's ``readme.html``) are skipped when they declare at most :data:`OTHER_CAP`
bytes. Every size is checked as the member's header declares it, before any of its bytes is read
or skipped. Labels must be below the number of class names, and there must be 10 of those.

Checks: a downloaded archive must have the MD5 its publisher documents
(:data:`ARCHIVE_MD5`) and the exact published structure, 10,000 records in every batch. An
archive already on disk gets the structure checks without the MD5 (as for the IDX files, a
re-compressed copy is as good as the original), and batches of fewer records (at least one,
at most 10,000, such as a small archive written by :func:`write_cifar_archive` for a test) are
accepted and reported in ``Dataset.source``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from vaekit.data.base import (
    SPLITS,
    Dataset,
    carve,
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
from vaekit.data.download import RemoteFile, dataset_dir, ensure_files, mirrors
from vaekit.errors import ConfigError, DataError

NAME = "cifar10"
FOLDER = "cifar10"
#: The publisher's page (Alex Krizhevsky's CIFAR page, University of Toronto).
URLS: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)
#: MD5 of ``cifar-10-binary.tar.gz`` as documented on the publisher's page.
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
#: Bytes of ``cifar-10-binary.tar.gz`` as published: a download is stopped a little past it.
ARCHIVE_BYTES = 170_052_171
ARCHIVE = RemoteFile("cifar-10-binary.tar", "cifar-10-binary.tar.gz", ARCHIVE_MD5, ARCHIVE_BYTES)

MEMBER_DIR = "cifar-10-batches-bin"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
META = "batches.meta.txt"
SHAPE = (3, 32, 32)
#: Bytes of one record: the label byte, then 3 x 32 x 32 pixel bytes (R plane, G plane, B plane).
RECORD_BYTES = 1 + 3 * 32 * 32
#: Records in every batch of the published archive (and the most a batch may hold here).
RECORDS_PER_BATCH = 10_000
N_CLASSES = 10
META_CAP = 4096
#: The most bytes a member the loader skips may declare (the published ``readme.html`` has under 100): skipping a
#: member reads past it, so a header declaring 2^40 bytes is refused before that.
OTHER_CAP = 2**20
MAX_MEMBERS = 64
DEFAULT_VALID_FRACTION = 10  # one tenth of the training images

#: The published class names (``batches.meta.txt``), for reference and for :func:`write_cifar_archive`.
CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


# --------------------------------------------------------------------------- the format


def parse_batch(data: bytes, label: str, n_classes: int = N_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """A batch's bytes -> (images uint8 (N, 3, 32, 32), labels int64 (N,)); the size must be a whole
    number of 3,073-byte records and every label below ``n_classes``."""
    if not data or len(data) % RECORD_BYTES:
        raise DataError(f"{label}: {len(data)} bytes is not a whole number of {RECORD_BYTES}-byte records "
                        "(1 label byte + 3072 pixel bytes each); truncated or not a CIFAR-10 binary batch")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= n_classes:
        i = int(np.argmax(labels >= n_classes))
        raise DataError(f"{label}: record {i} has label {int(labels[i])}, not a class 0..{n_classes - 1}")
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, *SHAPE)
    return images, labels


def parse_meta(data: bytes, label: str) -> tuple[str, ...]:
    """``batches.meta.txt``: one class name a line (blank lines ignored); exactly 10 names."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{label}: not a text file of class names") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != N_CLASSES:
        raise DataError(f"{label}: {len(names)} class names, expected {N_CLASSES} (one a line)")
    return names


def _member_name(member: tarfile.TarInfo, label: str) -> str:
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{label}: member {member.name[:80]!r} has an absolute or '..' path; not the CIFAR-10 archive")
    if member.issym() or member.islnk():
        raise DataError(f"{label}: member {member.name[:80]!r} is a link; links are refused (not the CIFAR-10 "
                        "archive as published)")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{label}: member {member.name[:80]!r} is not a regular file or folder; refused")
    return "/".join(p for p in path.parts if p != ".")


@contextlib.contextmanager
def _tar_stream(f: io.BufferedReader) -> Iterator[tuple[Any, tarfile.TarFile]]:
    """(the decompressed byte stream, a tar reading it in one pass); gzip or plain tar by the first bytes."""
    gzipped = f.peek(2)[:2] == b"\x1f\x8b"
    stream: Any = gzip.GzipFile(fileobj=f, mode="rb") if gzipped else f
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            yield stream, tar
    finally:
        if gzipped:
            stream.close()


def _check_member_size(size: int, short: str, where: str, strict: bool) -> None:
    """A required member's size in bytes: at most :data:`META_CAP` for the class names; for a batch a whole number
    of records, 1 to 10,000 of them (exactly 10,000 when ``strict``)."""
    if short == META:
        if size > META_CAP:
            raise DataError(f"{where}: {size} bytes, more than {META_CAP} for the class names")
        return
    records, rest = divmod(size, RECORD_BYTES)
    if rest or not 0 < records <= RECORDS_PER_BATCH or (strict and records != RECORDS_PER_BATCH):
        expected = (f"{RECORDS_PER_BATCH * RECORD_BYTES} bytes ({RECORDS_PER_BATCH} records of "
                    f"{RECORD_BYTES} bytes, as published)") if strict else (
            f"a whole number of {RECORD_BYTES}-byte records, 1 to {RECORDS_PER_BATCH} of them")
        raise DataError(f"{where}: {size} bytes, expected {expected}")


def read_cifar_archive(
    path: str | os.PathLike[str], batches: Iterable[str] | None = None, *, strict: bool = False
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """Read ``batches`` (file names such as ``"test_batch.bin"``; default all six) and the class names
    out of a CIFAR-10 binary archive, streaming it once. ``strict``: every batch must hold exactly
    10,000 records (the published archive). Returns ({batch: (images, labels)}, class names)."""
    path = Path(path)
    label = str(path)
    wanted = set(TRAIN_BATCHES + (TEST_BATCH,) if batches is None else batches)
    unknown = wanted - set(TRAIN_BATCHES + (TEST_BATCH,))
    if unknown:
        raise ValueError(f"unknown CIFAR-10 batches {sorted(unknown)}")
    required = {f"{MEMBER_DIR}/{b}": b for b in (*TRAIN_BATCHES, TEST_BATCH, META)}
    raw: dict[str, bytes] = {}
    seen: set[str] = set()
    if not path.is_file():
        raise DataError(f"{label}: not a file")
    try:
        with open(path, "rb") as f, _tar_stream(f) as (stream, tar):
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise DataError(f"{label}: more than {MAX_MEMBERS} members; not the CIFAR-10 binary archive")
                name = _member_name(member, label)
                if member.isdir():
                    continue
                if name not in required:  # skipped, which reads past its declared size: checked first
                    if member.size > OTHER_CAP:
                        raise DataError(f"{label}: member {name[:80]!r} declares {member.size} bytes, more than "
                                        f"{OTHER_CAP} for a file the CIFAR-10 archive does not need; refused")
                    continue
                if name in seen:
                    raise DataError(f"{label}: member {name} appears twice; refused")
                seen.add(name)
                short = required[name]
                where = f"{label}[{name}]"
                _check_member_size(member.size, short, where, strict)
                if short != META and short not in wanted:
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise DataError(f"{where}: truncated ({len(data)} of {member.size} bytes)")
                raw[short] = data
            while stream.read(1 << 20):  # to the end: a gzip stream's length and CRC are checked there
                pass
    except DataError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{label}: not a readable tar archive, or truncated or corrupt ({exc}); delete it and "
                        "download it again") from None
    absent = [n for n in required if n not in seen]
    if absent:
        raise DataError(f"{label}: lacks {', '.join(absent)}; truncated, or not the CIFAR-10 binary archive "
                        "(cifar-10-binary.tar.gz, not the python or matlab version)")
    classes = parse_meta(raw[META], f"{label}[{MEMBER_DIR}/{META}]")
    out = {b: parse_batch(raw[b], f"{label}[{MEMBER_DIR}/{b}]", len(classes)) for b in sorted(wanted)}
    return out, classes


def write_cifar_archive(
    path: str | os.PathLike[str],
    batches: Mapping[str, tuple[np.ndarray, np.ndarray]],
    classes: Iterable[str] = CLASSES,
) -> None:
    """Write a CIFAR-10 binary archive (gzipped when ``path`` ends in ``.gz``) of ``batches``:
    {file name: (images uint8 (N, 3, 32, 32), labels (N,))}, all six names required; for tests and
    for packing one's own data in the format."""
    missing = set(TRAIN_BATCHES + (TEST_BATCH,)) - set(batches)
    if missing:
        raise ValueError(f"write_cifar_archive: batches missing {sorted(missing)}")
    members = {META: ("\n".join(classes) + "\n").encode("utf-8")}
    for name, (images, labels) in batches.items():
        images = np.asarray(images, dtype=np.uint8).reshape(-1, RECORD_BYTES - 1)
        labels = np.asarray(labels, dtype=np.uint8).reshape(-1, 1)
        members[name] = np.concatenate([labels, images], axis=1).tobytes()
    mode = "w:gz" if str(path).endswith(".gz") else "w"
    with tarfile.open(path, mode) as tar:
        folder = tarfile.TarInfo(MEMBER_DIR)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name in (*TRAIN_BATCHES, TEST_BATCH, META):
            info = tarfile.TarInfo(f"{MEMBER_DIR}/{name}")
            info.size, info.mode = len(members[name]), 0o644
            tar.addfile(info, io.BytesIO(members[name]))


# --------------------------------------------------------------------------- the data set


def _check_download(rf: RemoteFile, path: Path, label: str) -> None:
    """A downloaded archive: the published structure exactly (its MD5 is checked before this)."""
    read_cifar_archive(path, (), strict=True)


def _train_valid(batches: Mapping[str, tuple[np.ndarray, np.ndarray]], valid_size: int | float | None,
                 seed: int) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """The five training batches split into (train images, labels) and (valid images, labels): ``valid_size``
    images (default one tenth) carved out with ``seed``; images as floats k / 255."""
    xs = np.concatenate([batches[b][0] for b in TRAIN_BATCHES])
    ys = np.concatenate([batches[b][1] for b in TRAIN_BATCHES])
    n = len(xs)
    v = resolve_size(valid_size, n, n // DEFAULT_VALID_FRACTION, "valid_size", f"the {NAME} training batches")
    rest, carved = carve(n, v, seed)
    return (to_float(xs[rest]), to_labels(ys[rest])), (to_float(xs[carved]), to_labels(ys[carved]))


def _source(archive: Path, counts: Mapping[str, int]) -> str:
    """``Dataset.source``: the archive's path, and the records per batch when they are not the published 10,000."""
    source = str(archive)
    odd = {b: c for b, c in counts.items() if c != RECORDS_PER_BATCH}
    if odd:
        held = (f"{next(iter(odd.values()))} records per batch" if len(set(counts.values())) == 1
                else ", ".join(f"{b}: {c} records" for b, c in sorted(counts.items())))
        source += f" (not the published archive: {held}; its batches hold {RECORDS_PER_BATCH})"
    return source


def load_cifar10(
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
    """CIFAR-10: 3 x 32 x 32 colour images at their 8-bit values (x = k / 255) with labels 0-9."""
    if check_binarize(binarize, allowed=(None, "dynamic", "threshold", "static")) is not None:
        raise ConfigError(f"{NAME} is 8-bit colour data and is not binarized; drop binarize={binarize!r}")
    if test_size is not None:
        raise ConfigError(f"{NAME} has a fixed test split ({TEST_BATCH}); drop test_size")
    check_native_size(NAME, image_size, SHAPE[1:])
    seed = check_seed(seed)
    wanted = check_splits(splits)
    directory = dataset_dir(FOLDER, data_dir, aliases=("cifar-10",))
    files = {s: [ARCHIVE] for s in SPLITS}
    paths = ensure_files(NAME, directory, files, wanted, urls=mirrors(NAME, FOLDER, URLS),
                         download_missing=download, check=_check_download)
    archive = paths[ARCHIVE.stem]
    need_train = "train" in wanted or "valid" in wanted
    names = (TRAIN_BATCHES if need_train else ()) + ((TEST_BATCH,) if "test" in wanted else ())
    _check_memory(archive, len(names))
    batches, classes = read_cifar_archive(archive, names)
    x = {s: empty_like_split(SHAPE) for s in SPLITS}
    y = {s: to_labels(np.zeros(0, dtype=np.int64)) for s in SPLITS}
    counts = {b: len(v[1]) for b, v in batches.items()}
    if need_train:
        (x["train"], y["train"]), (x["valid"], y["valid"]) = _train_valid(batches, valid_size, seed)
    elif valid_size is not None:
        resolve_size(valid_size, 2**62, 0, "valid_size", NAME)  # check the value alone
    if "test" in wanted:
        x["test"], y["test"] = to_float(batches[TEST_BATCH][0]), to_labels(batches[TEST_BATCH][1])
    source = _source(archive, counts)
    ds = Dataset(
        name=NAME,
        shape=SHAPE,
        binary=False,
        dynamic=False,
        train=x["train"],
        valid=x["valid"],
        test=x["test"],
        train_labels=y["train"],
        valid_labels=y["valid"],
        test_labels=y["test"],
        binarize=None,
        source=source,
        classes=classes,
        levels=256,
    )
    return keep_splits(ds, wanted)


def _check_memory(archive: Path, batches: int) -> None:
    """At most ``batches`` x 10,000 images, held as bytes and then float32: against the memory budget."""
    from vaekit.resources import gib, memory_budget

    need = batches * RECORDS_PER_BATCH * RECORD_BYTES * (1 + 4)
    if need > memory_budget():
        raise DataError(f"{archive}: loading {batches} CIFAR-10 batches needs up to {gib(need)}, more than the memory "
                        f"budget of {gib(memory_budget())} (set VAEKIT_MEMORY_BUDGET to allow more)")
