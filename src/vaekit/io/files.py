"""Reading the files of a run folder safely, and checking where outputs may be written.

Every read of a run's JSON, JSONL, YAML or safetensors file goes through :func:`read_capped`: it opens
the file with ``O_NOFOLLOW | O_NONBLOCK`` (a symbolic link is refused, a FIFO cannot block the open),
checks with ``fstat`` that it is a regular file (not a FIFO, device or directory) and reads at most a
cap of bytes, so that a ``config.json`` linked to ``/dev/zero`` or made a FIFO ends in one clear line
instead of a hang or an exhausted memory.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from vaekit.errors import CheckpointError

#: Size caps (bytes) of what vaekit reads back: JSON and YAML settings, the metrics of a run, weights.
JSON_CAP = 16 * 2**20
METRICS_CAP = 256 * 2**20
SAFETENSORS_CAP = 16 * 2**30

#: A run folder's own files: outputs (reports, pictures) are never written over them.
RUN_FILES = frozenset({"model.json", "model.safetensors", "checkpoint.safetensors", "config.json", "metrics.jsonl",
                       "metrics.csv", ".lock"})

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n} bytes"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, flags: int = os.O_RDONLY, mode: int = 0o666, *, follow_links: bool = False) -> int:
    """A file descriptor of ``path``, which must be a regular file and (unless ``follow_links``) not a symbolic link.

    A link or a special file (FIFO, device, socket, directory) raises :class:`CheckpointError`; other
    failures (absent, no permission, name too long) raise the ``OSError``.
    """
    path = Path(path)
    try:
        fd = os.open(path, flags | (0 if follow_links else _NOFOLLOW) | _NONBLOCK | _CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) and path.is_symlink():
            raise CheckpointError(f"{path} is a symbolic link; vaekit does not follow links in run folders "
                                  "(replace it with the file itself)") from None
        if exc.errno == errno.ENXIO and not path.is_symlink():  # e.g. a FIFO opened for writing
            raise CheckpointError(f"{path} is {_kind(os.lstat(path).st_mode)}, not a regular file; "
                                  "vaekit reads and writes only regular files") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path} is {_kind(st.st_mode)}, not a regular file; "
                                  "vaekit reads and writes only regular files")
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_capped(path: str | Path, cap: int, what: str = "file", *, follow_links: bool = False,
                hint: str = "it is not a file vaekit wrote") -> bytes:
    """The bytes of the regular file ``path`` (no special file; no link unless ``follow_links``), at most ``cap``.

    A larger file raises :class:`CheckpointError` (ending in ``hint``) before anything is read; ``OSError`` as
    :func:`open_regular`.
    """
    path = Path(path)
    fd = open_regular(path, follow_links=follow_links)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise CheckpointError(f"{path} is {_size(size)}, more than a {what} can be ({_size(cap)}); {hint}")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:
                raise CheckpointError(f"{path} grew past {_size(cap)} while it was read; "
                                      f"it is not a {what} vaekit wrote")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text_capped(path: str | Path, cap: int = JSON_CAP, what: str = "JSON file", errors: str = "strict") -> str:
    """:func:`read_capped` decoded as UTF-8 (``UnicodeDecodeError`` when it is not, with ``errors='strict'``)."""
    return read_capped(path, cap, what).decode("utf-8", errors=errors)


def exists_or_link(path: str | Path) -> bool:
    """``path`` exists, or is a link (even a dangling one): something is there."""
    path = Path(path)
    return path.is_symlink() or path.exists()


def check_output(path: str | Path, suffix: str, looks_like: Callable[[bytes], bool] | None, what: str,
                 flag: str = "--out") -> Path:
    """``path`` may be written with an output of kind ``what`` (an HTML report, a PNG picture).

    Its name must end in ``suffix``; it must not be one of a run folder's own files; and a file already
    there must be a regular file (not a link) whose first bytes ``looks_like`` such an output, so that
    nothing but an earlier output is ever replaced (``looks_like=None``: the default output of a run, e.g.
    ``RUN/report.html``, which is the run's own slot for it, is replaced whatever it holds).
    Raises :class:`CheckpointError` otherwise.
    """
    path = Path(path)
    if path.name in ("", ".", "..") or path.suffix.lower() != suffix:
        raise CheckpointError(f"{flag} must name a {suffix} file, got {str(path)!r}")
    if path.name in RUN_FILES or path.name.endswith(".safetensors"):
        raise CheckpointError(f"{flag} {path} would replace a run's own file; choose another name")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise CheckpointError(f"cannot use {flag} {path}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode):
        raise CheckpointError(f"{flag} {path} is a symbolic link; vaekit does not write through links "
                              "(remove it or choose another name)")
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{flag} {path} is {_kind(st.st_mode)}, not a file vaekit may replace")
    head = b""
    if st.st_size and looks_like is not None:
        fd = open_regular(path)
        try:
            head = os.read(fd, 4096)
        finally:
            os.close(fd)
    if looks_like is not None and st.st_size and not looks_like(head):
        raise CheckpointError(f"{flag} {path} already exists and is not {what} written by vaekit; "
                              "vaekit does not replace it (remove it or choose another name)")
    return path
