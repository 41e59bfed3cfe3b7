"""Where data files live, and fetching the missing ones: verified, atomic, with progress.

Where a named data set's files are looked for (and downloaded to):

1. ``data_dir`` (CLI ``--data-dir``): the data set's own folder, or a root holding its
   sub-folder (``binarized_mnist/``, ``mnist/``, ``fashion_mnist/``, ``kmnist/``, ``cifar10/``) when that
   sub-folder exists; so both ``data`` and ``data/mnist`` work.
2. Else ``$VAEKIT_DATA_DIR/<folder>``: the variable names a root with one sub-folder per
   data set (the IDX sets share file names, so they never share a folder).
3. Else the per-user cache ``$XDG_CACHE_HOME/vaekit/<folder>`` (default
   ``~/.cache/vaekit/<folder>``).

Missing files are downloaded (``download=True``) into that folder from the data set's
mirrors, overridable with ``VAEKIT_MIRROR_<NAME>`` (e.g. ``VAEKIT_MIRROR_BINARIZED_MNIST``:
comma-separated base URLs, the file name is appended) or ``VAEKIT_MIRROR`` (one base URL;
``<folder>/<file>`` is appended). A download streams into a temporary file in the same
folder, is checked (byte count against Content-Length, MD5 where known, then the format's
structure checks) and only then renamed into place with ``os.replace``: a failed or
interrupted download never leaves a file behind. A download is capped while it streams, at the
file's known size plus a margin (:attr:`RemoteFile.max_bytes`), else at the memory budget
(:func:`vaekit.resources.memory_budget`; no loader holds a larger file): a mirror that announces or
sends more is cut off at once, before the MD5 is checked at the end. A folder whose permission bits deny
writing (such as a read-only shared data folder) is never written, even by root.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import stat
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaekit.errors import DataError

#: Bytes of a file's contents given to a ``limit`` function of :func:`read_bytes` (an IDX header is at most 1024).
HEAD_BYTES = 1024

ENV_DATA_DIR = "VAEKIT_DATA_DIR"
ENV_MIRROR = "VAEKIT_MIRROR"

#: Seconds without data before a download is abandoned.
TIMEOUT_S = 60.0

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16
#: Permissions of files we create (mkstemp makes them owner-only): readable by all.
_FILE_MODE = 0o644


class MissingFilesError(DataError):
    """Files a data set needs are absent (and were not, or could not be, downloaded).

    ``missing``: the absent paths; ``available``: the splits that the files present can
    still provide (pass them as ``splits=`` to load only those).
    """

    def __init__(self, message: str, missing: Sequence[Path], available: Sequence[str]):
        super().__init__(message)
        self.missing = tuple(missing)
        self.available = tuple(available)


@dataclass(frozen=True)
class RemoteFile:
    """A file of a named data set: ``stem`` is looked for plain or gzipped (``stem`` or
    ``stem.gz``); ``remote`` is the name it is downloaded as, verified with ``md5`` if known.
    ``size``: its bytes as published, if known; a download is then stopped past :attr:`max_bytes`."""

    stem: str
    remote: str
    md5: str | None = None
    size: int | None = None

    @property
    def max_bytes(self) -> int | None:
        """The most bytes a download of it may have: its known ``size`` plus 1 % (at least 1 MiB); None if unknown."""
        return None if self.size is None else self.size + max(self.size // 100, 2**20)


# --------------------------------------------------------------------------- locations


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/vaekit`` or ``~/.cache/vaekit``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vaekit"


def dataset_dir(
    folder: str, data_dir: str | os.PathLike[str] | None, aliases: Iterable[str] = ()
) -> Path:
    """The folder holding a data set's files (see the module docstring for the order)."""
    explicit = data_dir is not None
    if explicit:
        root = Path(data_dir).expanduser()  # type: ignore[arg-type]
    else:
        env = os.environ.get(ENV_DATA_DIR)
        root = Path(env).expanduser() if env else cache_root()
    for name in (folder, *aliases):
        if (root / name).is_dir():
            return root / name
    return root if explicit else root / folder


def dir_writable(directory: Path) -> bool:
    """Whether we may create files in ``directory``: it exists, ``os.access`` allows it and its
    permission bits grant write to us (so a ``r-x`` folder counts as read-only even for root)."""
    try:
        st = directory.stat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or not os.access(directory, os.W_OK | os.X_OK):
        return False
    if hasattr(os, "geteuid"):
        if st.st_uid == os.geteuid():
            bit = stat.S_IWUSR
        elif st.st_gid in (os.getegid(), *os.getgroups()):
            bit = stat.S_IWGRP
        else:
            bit = stat.S_IWOTH
        return bool(st.st_mode & bit)
    return True


def make_dirs(directory: Path) -> bool:
    """Create ``directory`` (and parents) unless it exists; False, creating nothing, when the
    nearest existing ancestor is not :func:`dir_writable` or creation fails."""
    if directory.is_dir():
        return True
    ancestor = directory
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            return False
        ancestor = ancestor.parent
    if not dir_writable(ancestor):
        return False
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (plain first)."""
    for name in (stem, stem + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def mirrors(name: str, folder: str, defaults: Sequence[str]) -> list[str]:
    """Base URLs to try, in order: ``VAEKIT_MIRROR_<NAME>``, else ``VAEKIT_MIRROR/<folder>/``,
    else the defaults."""
    env = os.environ.get(f"{ENV_MIRROR}_{name.upper().replace('-', '_')}")
    if env:
        bases = [b.strip() for b in env.split(",") if b.strip()]
    elif os.environ.get(ENV_MIRROR):
        bases = [os.environ[ENV_MIRROR].rstrip("/") + f"/{folder}/"]
    else:
        bases = list(defaults)
    return [b if b.endswith("/") else b + "/" for b in bases]


# --------------------------------------------------------------------------- reading


def read_bytes(path: Path, label: str | None = None, limit: int | Callable[[bytes], int] | None = None) -> bytes:
    """The file's contents, gunzipped when it starts with the gzip magic bytes (whatever its
    name). A truncated or corrupt gzip stream is a :class:`DataError` naming the file.

    ``limit``: the most bytes the contents may have, or a function of their first bytes (a header) giving
    it; the gzip data is expanded as a stream and refused as soon as it passes the limit (a 5 MB gzip can
    hold gigabytes). Without it the limit is the memory budget (:func:`vaekit.resources.memory_budget`)."""
    from vaekit.resources import gib, memory_budget

    label = label or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{label}: cannot read the file ({exc.strerror or exc})") from None
    budget = memory_budget()
    if data[:2] != _GZIP_MAGIC:
        cap = min(budget, limit(data[:HEAD_BYTES]) if callable(limit) else budget if limit is None else limit)
        if len(data) > cap:
            raise DataError(f"{label}: {gib(len(data))} is more than its contents can be ({cap} bytes for the "
                            "shape it declares or is expected to have); not the right file?")
        return data
    out = bytearray()
    cap = None if callable(limit) else budget if limit is None else min(budget, limit)
    rest = data
    step = 1 << 20
    try:
        while True:  # one gzip member after another, as gzip.decompress reads them
            d = zlib.decompressobj(wbits=31)
            buf = rest
            while True:
                piece = d.decompress(buf, step)
                buf = d.unconsumed_tail
                out += piece
                if cap is None and (len(out) >= HEAD_BYTES or d.eof):
                    cap = min(budget, limit(bytes(out[:HEAD_BYTES])))  # type: ignore[operator]
                if cap is not None and len(out) > cap:
                    raise DataError(f"{label}: the gzip data expands past {cap} bytes, more than the shape it "
                                    "declares or is expected to have (a decompression bomb, or not the right "
                                    "file); nothing more was read")
                if d.eof or (not buf and len(piece) < step):
                    break
            if not d.eof:
                raise EOFError("Compressed file ended before the end-of-stream marker was reached")
            rest = d.unused_data.lstrip(b"\0")
            if not rest:
                break
            if rest[:2] != _GZIP_MAGIC:
                raise OSError("Not a gzipped file (trailing data after the compressed stream)")
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{label}: corrupt or truncated gzip data ({exc}); delete the file and download "
            f"it again"
        ) from None
    if cap is None and callable(limit):
        cap = min(budget, limit(bytes(out[:HEAD_BYTES])))
        if len(out) > cap:
            raise DataError(f"{label}: the gzip data expands to {len(out)} bytes, more than the {cap} the shape it "
                            "declares allows")
    return bytes(out)


def file_digest(path: Path, algorithm: str = "sha256") -> Any:
    """The ``hashlib`` hash of the file's bytes as stored, read in 1 MB pieces (``.digest()``, ``.hexdigest()``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h


def atomic_write(path: Path, write: Callable[[object], None]) -> None:
    """Create ``path`` via a temporary file in the same folder and ``os.replace``; on any
    failure the temporary file is removed and ``path`` is untouched."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        _unlink(Path(tmp))
        raise


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- downloading


def download(
    urls: Sequence[str],
    dest: Path,
    *,
    md5: str | None = None,
    check: Callable[[Path, str], None] | None = None,
    progress: bool = True,
    max_bytes: int | None = None,
) -> Path:
    """Fetch ``dest`` from the first of ``urls`` that yields a verified file.

    Each attempt streams into ``.<name>.<random>.part`` beside ``dest``; it is accepted only if
    the byte count equals Content-Length (when sent), the MD5 equals ``md5`` (when known) and
    ``check(path, label)`` raises nothing; then it is renamed to ``dest``. Otherwise the
    partial file is deleted and the next URL tried. All failing -> :class:`DataError`.
    ``max_bytes`` (default: the memory budget): an attempt announcing or sending more is stopped at once.
    """
    from vaekit.resources import memory_budget

    cap = memory_budget() if max_bytes is None else max_bytes
    errors = []
    for url in urls:
        try:
            _fetch(url, dest, md5=md5, check=check, progress=progress, cap=cap)
            return dest
        except DataError as exc:
            errors.append(f"{url}: {exc}")
        except urllib.error.HTTPError as exc:
            errors.append(f"{url}: HTTP error {exc.code} {exc.reason}")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            errors.append(f"{url}: {type(exc).__name__}: {reason}")
    raise DataError(f"could not download {dest.name} into {dest.parent}: " + "; ".join(errors))


def _announced_length(resp: Any, cap: int, name: str) -> int | None:
    """The Content-Length the server announces (None: none); past ``cap`` bytes a DataError before any is read."""
    length = resp.headers.get("Content-Length")
    total = int(length) if length is not None and length.isdigit() else None
    if total is not None and total > cap:
        raise DataError(f"the server announces {total} bytes, more than the {cap} that {name} may have (its known "
                        "size plus a margin, or the memory budget); not downloaded")
    return total


def _fetch(
    url: str,
    dest: Path,
    *,
    md5: str | None,
    check: Callable[[Path, str], None] | None,
    progress: bool,
    cap: int,
) -> None:
    from tqdm.auto import tqdm

    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "vaekit"})
        digest = hashlib.md5(usedforsecurity=False)  # a publisher's checksum against corruption, not a signature
        received = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            total = _announced_length(resp, cap, dest.name)
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=None if progress else True,
                leave=False,
            ) as bar:
                try:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        if received > cap:
                            raise DataError(f"the download passed {received} bytes, more than the {cap} that "
                                            f"{dest.name} may have (its known size plus a margin, or the memory "
                                            "budget); stopped: a wrong file or a broken mirror")
                        bar.update(len(chunk))
                except http.client.IncompleteRead as exc:
                    received += len(exc.partial)
                    raise DataError(
                        f"truncated download: the server closed the connection after {received} "
                        f"of {total if total is not None else '?'} bytes"
                    ) from None
            out.flush()
            os.fsync(out.fileno())
        if total is not None and received != total:
            raise DataError(f"truncated download: received {received} of {total} bytes")
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(
                f"checksum mismatch: MD5 {digest.hexdigest()}, expected {md5} (corrupt download)"
            )
        if check is not None:
            check(tmp, f"{dest.name} (downloaded from {url})")
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, dest)
    finally:
        _unlink(tmp)


def ensure_files(
    dataset: str,
    directory: Path,
    split_files: Mapping[str, Sequence[RemoteFile]],
    splits: Sequence[str],
    *,
    urls: Sequence[str],
    download_missing: bool,
    check: Callable[[RemoteFile, Path, str], None] | None = None,
) -> dict[str, Path]:
    """Paths (stem -> path) of the files the requested ``splits`` need, downloading the missing
    ones when allowed. Missing files that cannot be had -> :class:`MissingFilesError` saying
    which, where to get them and where to put them."""
    needed: dict[str, RemoteFile] = {}
    for s in splits:
        for rf in split_files[s]:
            needed[rf.stem] = rf
    found = {stem: find_file(directory, stem) for stem in needed}
    missing = [needed[stem] for stem, p in found.items() if p is None]

    def available() -> list[str]:
        return [
            s for s, fs in split_files.items() if all(find_file(directory, rf.stem) for rf in fs)
        ]

    if missing and not download_missing:
        why = "downloading is off: pass download=True, or --download on the command line"
        _raise_missing(dataset, directory, missing, urls, available(), why)
    if missing:
        if not make_dirs(directory) or not dir_writable(directory):
            why = f"{directory} is not writable (or cannot be created), so they were not downloaded"
            _raise_missing(dataset, directory, missing, urls, available(), why)
        for rf in missing:
            dest = directory / rf.remote
            try:
                download(
                    [u + rf.remote for u in urls],
                    dest,
                    md5=rf.md5,
                    max_bytes=rf.max_bytes,
                    check=(lambda p, label, rf=rf: check(rf, p, label)) if check else None,
                )
            except DataError as exc:
                still = [r for r in missing if find_file(directory, r.stem) is None]
                _raise_missing(dataset, directory, still, urls, available(), str(exc))
            found[rf.stem] = dest
    return {stem: p for stem, p in found.items() if p is not None}


def _raise_missing(
    dataset: str,
    directory: Path,
    missing: Sequence[RemoteFile],
    urls: Sequence[str],
    available: Sequence[str],
    why: str,
) -> None:
    names = ", ".join(f"{rf.stem}[.gz]" for rf in missing)
    from_ = ", ".join(urls[0] + rf.remote for rf in missing) if urls else "them"
    hint = (
        f"; the files present give the {'/'.join(available)} split(s) (load them alone with "
        f"splits={tuple(available)!r})"
        if available
        else ""
    )
    raise MissingFilesError(
        f"{dataset}: missing {names} in {directory} ({why}). Get {from_} and put them in "
        f"{directory} (plain or .gz), or point data_dir / --data-dir / ${ENV_DATA_DIR} at a "
        f"folder that has them{hint}",
        missing=[directory / rf.stem for rf in missing],
        available=available,
    )
