r"""Static binarized MNIST (Larochelle & Murray, 2011) in the canonical ``.amat`` text format.

Format, checked strictly: one image per line, ``width`` = 784 values (28 x 28, row-major),
each the byte ``0`` or ``1``, separated by single spaces, the line ended by ``\n``; a row is
therefore exactly 2 * 784 = 1568 bytes. Tolerated (documented, lossless): a missing final
newline, and ``\r\n`` line ends when EVERY line has them (rows of 1569 bytes). Anything else
(another number of values, a double space, a tab, a trailing space, a ``2``, a short last
line) is a :class:`~vaekit.errors.DataError` naming the file, the line and the column.

Decoding never goes through text: ``np.frombuffer`` over the whole file, reshape to
(N, row bytes), check the separator columns are spaces, the terminators newlines and the
value bytes in {'0', '1'} (``byte | 1 == ord('1')``), then x = byte - ord('0'). The 78 MB
training file parses in a fraction of a second (``benchmarks/bench_parse_amat.py``).

Cache: the decoded bits, packed 8 per byte (98 bytes per image, 4.9 MB for the training
split), go to the user cache only, ``$XDG_CACHE_HOME/vaekit/parsed/<key>-<file>.npz`` (default
``~/.cache/vaekit``; :func:`~vaekit.data.download.cache_root`), ``<key>`` a hash of the source's
resolved path; never beside the source, so nothing is written into a data folder, writable or not.
If the user cache is not writable nothing is cached. A cache entry is used only if the SHA-256 of the
source's bytes (of the ``.gz`` when gzipped) is the one it was parsed from and the bits' CRC-32
matches, so a replaced or edited source is always parsed afresh (even one whose size and mtime were
restored).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from vaekit.data.base import (
    SPLITS,
    Dataset,
    check_native_size,
    check_seed,
    check_splits,
    empty_like_split,
    keep_splits,
)
from vaekit.data.download import (
    RemoteFile,
    atomic_write,
    cache_root,
    dataset_dir,
    dir_writable,
    ensure_files,
    file_digest,
    make_dirs,
    mirrors,
    read_bytes,
)
from vaekit.errors import ConfigError, DataError

#: Values per line of the MNIST ``.amat`` files (28 x 28).
WIDTH = 784

NAME = "binarized-mnist"
FOLDER = "binarized_mnist"
#: Canonical location (Hugo Larochelle's datasets page, University of Toronto), uncompressed.
URLS: tuple[str, ...] = ("http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/",)
#: Rows of the canonical files; no byte checksum is known, so the structure is the check.
EXPECTED_ROWS: dict[str, int] = {"train": 50_000, "valid": 10_000, "test": 10_000}
FILES: dict[str, RemoteFile] = {
    s: RemoteFile(f"binarized_mnist_{s}.amat", f"binarized_mnist_{s}.amat") for s in SPLITS
}

_CACHE_VERSION = 2
_SPACE, _NL, _CR, _ZERO, _ONE = 32, 10, 13, 48, 49


# --------------------------------------------------------------------------- parsing


def parse_amat(
    data: bytes, label: str, *, width: int = WIDTH, expected_rows: int | None = None
) -> np.ndarray:
    """Decode ``.amat`` text into a uint8 array (N, width) of 0/1; ``label`` names the source
    in error messages."""
    if not data:
        raise DataError(f"{label}: the file is empty")
    content = 2 * width - 1  # the values and the single spaces between them
    crlf = len(data) > content and data[content] == _CR
    term = b"\r\n" if crlf else b"\n"
    row = content + len(term)
    if not data.endswith(b"\n"):
        data = data + term  # a missing final newline is tolerated
    buf = np.frombuffer(data, dtype=np.uint8)
    if buf.size % row:
        _raise_bad_line(buf, row, width, crlf, label)
    rows = buf.reshape(-1, row)
    if crlf:
        ends_ok = bool((rows[:, content] == _CR).all() and (rows[:, content + 1] == _NL).all())
    else:
        ends_ok = bool((rows[:, content] == _NL).all())
    if not ends_ok:
        _raise_bad_line(buf, row, width, crlf, label)
    seps = rows[:, 1:content:2]
    if not (seps == _SPACE).all():
        r, c = np.argwhere(seps != _SPACE)[0]
        got = bytes([seps[r, c]])
        raise DataError(
            f"{label}: line {r + 1}, byte {2 * c + 2}: expected a single space between values, "
            f"got {got!r}"
        )
    vals = rows[:, 0:content:2]
    if not ((vals | 1) == _ONE).all():
        r, c = np.argwhere((vals | 1) != _ONE)[0]
        got = bytes([vals[r, c]])
        raise DataError(
            f"{label}: line {r + 1}, value {c + 1}: expected '0' or '1' (a binary data set), "
            f"got {got!r}"
        )
    if expected_rows is not None and rows.shape[0] != expected_rows:
        raise DataError(
            f"{label}: has {rows.shape[0]} images, expected {expected_rows} "
            f"(truncated, or not the right file)"
        )
    return np.subtract(vals, _ZERO, dtype=np.uint8)


def _raise_bad_line(buf: np.ndarray, row: int, width: int, crlf: bool, label: str) -> None:
    """Find the first line whose length is not ``row`` bytes and say what is wrong with it."""
    ends = np.flatnonzero(buf == _NL)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    bad = np.flatnonzero(lengths != row)
    expected = f"{width} values '0'/'1' separated by single spaces"
    if crlf:
        expected += ", every line ending in \\r\\n (as the first line does)"
    if bad.size == 0:  # pragma: no cover - the reshape checks make this unreachable
        raise DataError(f"{label}: malformed .amat file: expected lines of {expected}")
    i = int(bad[0])
    line = buf[starts[i] : ends[i] + 1].tobytes()
    values = len(line.split())
    last = " (the last line: the file looks truncated)" if i == len(ends) - 1 else ""
    raise DataError(
        f"{label}: line {i + 1} is {len(line)} bytes with {values} values, expected "
        f"{row} bytes: {expected}{last}"
    )


def amat_size(rows: int | None, width: int = WIDTH) -> int | None:
    """The largest ``.amat`` text of ``rows`` images: ``width`` values, ``width - 1`` spaces and ``\\r\\n`` a
    row (None: no expected number of rows, no limit of its own)."""
    return None if rows is None else rows * (2 * width + 1)


def write_amat(path: str | os.PathLike[str], x: np.ndarray) -> None:
    """Write a 0/1 array (N, D) as ``.amat`` text (gzip-compressed when the name ends in .gz)."""
    x = np.asarray(x)
    if x.ndim != 2 or not np.isin(x, (0, 1)).all():
        raise ValueError("write_amat expects a 2-D array of 0/1 values")
    chars = (x.astype(np.uint8) + _ZERO).astype(np.uint8)
    out = np.full((x.shape[0], 2 * x.shape[1]), _SPACE, dtype=np.uint8)
    out[:, 0::2] = chars
    out[:, -1] = _NL
    data = out.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


# --------------------------------------------------------------------------- cache


def _cache_candidates(path: Path) -> list[Path]:
    """Where the parse cache of ``path`` lives: in the user cache, keyed by the source's resolved path (its content
    is checked by SHA-256 on reading); never beside the source."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return [cache_root() / "parsed" / f"{key}-{path.name}.npz"]


def _load_cache(path: Path, digest: bytes, width: int) -> np.ndarray | None:
    for candidate in _cache_candidates(path):
        if not candidate.is_file():
            continue
        try:
            with np.load(candidate, allow_pickle=False) as z:
                meta, bits, source = z["meta"], z["bits"], z["source_sha256"]
        except Exception:  # an unreadable cache (whatever numpy raises on it) is ignored and rewritten
            continue
        if meta.shape != (4,) or meta[:2].tolist() != [_CACHE_VERSION, width]:
            continue
        if source.dtype != np.uint8 or source.tobytes() != digest:  # the content it was parsed from, not size/mtime
            continue
        if bits.shape != (int(meta[2]), (width + 7) // 8) or zlib.crc32(bits) != int(meta[3]):
            continue
        return np.unpackbits(bits, axis=1, count=width)
    return None


def _save_cache(path: Path, digest: bytes, x: np.ndarray) -> Path | None:
    bits = np.packbits(x, axis=1)
    meta = np.array([_CACHE_VERSION, x.shape[1], x.shape[0], zlib.crc32(bits)], dtype=np.int64)
    source = np.frombuffer(digest, dtype=np.uint8)
    for candidate in _cache_candidates(path):
        if not make_dirs(candidate.parent) or not dir_writable(candidate.parent):
            continue
        try:
            atomic_write(candidate, lambda f: np.savez(f, bits=bits, meta=meta, source_sha256=source))
        except OSError:
            continue
        return candidate
    return None


def read_amat(
    path: str | os.PathLike[str],
    *,
    expected_rows: int | None = None,
    width: int = WIDTH,
    cache: bool = True,
) -> np.ndarray:
    """The 0/1 images of an ``.amat`` file (plain or gzipped) as uint8 (N, width).

    With ``cache`` the packed-bit cache is read when valid and written after a parse."""
    path = Path(path)
    digest = b""
    if cache:
        try:
            digest = file_digest(path).digest()  # of the .gz for a gzipped source: 2 MB for MNIST
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    elif not path.exists():
        raise DataError(f"{path}: file not found")
    x = _load_cache(path, digest, width) if cache else None
    if x is None:
        x = parse_amat(read_bytes(path, limit=amat_size(expected_rows, width)), str(path), width=width,
                       expected_rows=expected_rows)
        if cache:
            _save_cache(path, digest, x)
    elif expected_rows is not None and len(x) != expected_rows:
        raise DataError(f"{path}: has {len(x)} images, expected {expected_rows}")
    return x


# --------------------------------------------------------------------------- the data set


def _check_download(rf: RemoteFile, path: Path, label: str) -> None:
    split = next(s for s, f in FILES.items() if f.stem == rf.stem)
    rows = EXPECTED_ROWS[split]
    parse_amat(read_bytes(path, label, limit=amat_size(rows)), label, expected_rows=rows)


def load_binarized_mnist(
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
    """The fixed 50,000 / 10,000 / 10,000 splits of static binarized MNIST, 1 x 28 x 28, binary."""
    if binarize not in (None, "none", "static"):
        raise ConfigError(
            f"{NAME} is already binarized (a fixed, static binarization); binarize={binarize!r} "
            f"does not apply: leave binarize unset (or use mnist with binarize='dynamic')"
        )
    if valid_size is not None or test_size is not None:
        raise ConfigError(
            f"{NAME} has fixed splits (50,000 / 10,000 / 10,000); drop valid_size / test_size"
        )
    check_native_size(NAME, image_size, (28, 28))
    check_seed(seed)
    wanted = check_splits(splits)
    directory = dataset_dir(FOLDER, data_dir, aliases=(NAME,))
    paths = ensure_files(
        NAME,
        directory,
        {s: [FILES[s]] for s in SPLITS},
        wanted,
        urls=mirrors(NAME, FOLDER, URLS),
        download_missing=download,
        check=_check_download,
    )
    tensors = {}
    for s in SPLITS:
        if s in wanted:
            x = read_amat(paths[FILES[s].stem], expected_rows=EXPECTED_ROWS[s], cache=cache)
            tensors[s] = torch.from_numpy(x.astype(np.float32).reshape(-1, 1, 28, 28))
        else:
            tensors[s] = empty_like_split((1, 28, 28))
    ds = Dataset(
        name=NAME,
        shape=(1, 28, 28),
        binary=True,
        dynamic=False,
        **tensors,
        binarize="static",
        source=str(directory),
    )
    return keep_splits(ds, wanted)
