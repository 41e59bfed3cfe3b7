"""The run-folder contract: which folders are vaekit's, and what ``train --out`` may do with them.

A folder is a vaekit run only if it carries the marker ``RUN/.vaekit-run`` (JSON ``{"format": ...,
"created": ...}``), written before any other file of the run, atomically (a temporary file made with
``O_CREAT | O_EXCL | O_NOFOLLOW`` in the folder, fsync, rename). Folders written before the marker existed are
recognised by their layout (``config.json`` with ``checkpoint.safetensors`` and/or ``model.json``) and get the
marker when they are taken up again.

:func:`check_out` says, without writing anything, whether a new run, a resume or an overwrite may use a folder:
a non-empty folder that is not a vaekit run is never used; a run that holds files is continued only with
``resume`` (from its checkpoint) or started afresh only with ``overwrite``, which removes vaekit's own run files
(:data:`RUN_FILES`, and the loggers' :data:`LOG_FILES` and :data:`RUN_FOLDERS` with what they hold) and nothing
else.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from vaekit.errors import CheckpointError, option, switch

MARKER = ".vaekit-run"
MARKER_FORMAT = "vaekit-run-1"
LOCK = ".lock"
#: The files a training run writes (removed, and only these, by ``--overwrite``).
RUN_FILES = ("config.json", "metrics.jsonl", "model.json", "model.safetensors", "checkpoint.safetensors")
#: The files and folders a run's loggers write (``vaekit.loggers``: the CSV, TensorBoard's event files, W&B's
#: local files): the run's own too, removed with the run files by ``--overwrite``.
LOG_FILES = ("metrics.csv",)
RUN_FOLDERS = ("tensorboard", "wandb")
#: What a run may hold that is still an empty run: its marker and its lock.
_HOUSEKEEPING = (MARKER, LOCK)
_MARKER_MAX_BYTES = 4096


@dataclass(frozen=True)
class RunState:
    """What a folder holds: ``exists``, ``marked`` (a valid marker), ``legacy`` (a pre-marker vaekit run),
    ``run_files`` (vaekit's own files present), ``foreign`` (every other entry, sorted) and ``temps`` (temporary
    files of writes of run files, left by a killed process)."""

    exists: bool
    marked: bool
    legacy: bool
    run_files: tuple[str, ...]
    foreign: tuple[str, ...]
    temps: tuple[str, ...] = ()

    @property
    def is_run(self) -> bool:
        return self.marked or self.legacy

    @property
    def has_checkpoint(self) -> bool:
        return "checkpoint.safetensors" in self.run_files

    @property
    def first_checkpoint_killed(self) -> bool:
        """No checkpoint, but the temporary file of one: the process died while writing its first checkpoint
        (after the kept model of that epoch was written), so nothing of the run can be continued."""
        return not self.has_checkpoint and any(t.startswith(".checkpoint.safetensors.") for t in self.temps)


def _temp_of_run_file(name: str) -> bool:
    return name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in (*RUN_FILES, *LOG_FILES, MARKER))


def read_marker(run: Path) -> dict | None:
    """The marker's JSON object, or None when there is none or it is not a vaekit marker (never follows a link,
    never reads a FIFO or device)."""
    path = Path(run) / MARKER
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MARKER_MAX_BYTES:
            return None
        raw = os.read(fd, _MARKER_MAX_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        return None
    return data


def inspect(run: Path) -> RunState:
    """The state of ``run`` (reads names and the marker only)."""
    run = Path(run)
    try:
        names = sorted(os.listdir(run))
    except FileNotFoundError:
        return RunState(False, False, False, (), ())
    except NotADirectoryError:
        raise CheckpointError(f"{_named(option('out'), run)} is a file, not a folder; choose a folder for the "
                              "run") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read the run folder {run}: {exc.strerror or exc}") from None
    run_files = tuple(n for n in (*RUN_FILES, *LOG_FILES, *RUN_FOLDERS) if n in names)
    foreign = tuple(n for n in names if n not in run_files and n not in _HOUSEKEEPING and not _temp_of_run_file(n))
    marked = MARKER in names and read_marker(run) is not None
    legacy = "config.json" in names and ("checkpoint.safetensors" in names or "model.json" in names)
    return RunState(True, marked, legacy, run_files, foreign, tuple(n for n in names if _temp_of_run_file(n)))


def _listing(names: tuple[str, ...] | list[str], most: int = 3) -> str:
    shown = ", ".join(repr(n[:60]) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _named(flag: str, run: Path | str) -> str:
    """The folder ``run`` as the user gave it: ``--out RUN`` on the command line, ``out='RUN'`` in Python."""
    return f"{flag}{str(run)!r}" if flag.endswith("=") else f"{flag} {run}"


def check_out(run: Path, *, resume: bool, overwrite: bool, flag: str | None = None, locked: bool = True) -> RunState:
    """Refuse (``CheckpointError``, one line, nothing written) a folder this training may not use.

    ``locked=False`` (before taking the run lock, which creates ``RUN/.lock``) refuses only what is not a
    vaekit run; the state of a run is judged under its lock (so that a running run is reported as such).

    Never a symbolic link (its target would be written). Allowed: a missing or empty folder; a vaekit run with no
    run files yet; with ``resume``, a run with a checkpoint, or one that never finished an epoch (config.json /
    metrics.jsonl only) or was killed while writing its first checkpoint (both started again); with ``overwrite``,
    any vaekit run (its own files are removed later, see :func:`clear_run`). ``flag``: how the folder was given
    (default ``--out``, or ``out=`` in a Python call: :func:`vaekit.errors.option`)."""
    flag = flag or option("out")
    if resume and overwrite:
        raise CheckpointError(f"give {switch('resume')} (continue the run) or {switch('overwrite')} "
                              "(start it afresh), not both")
    if os.path.islink(run):  # its target's files would be written: never through a link, as for every run file
        raise CheckpointError(f"{_named(flag, run)} is a symbolic link; vaekit does not write a run through a link "
                              f"(give the folder itself, or choose another {flag})")
    state = inspect(run)
    if not state.exists:
        return state
    try:
        return _check_state(run, state, resume, overwrite, flag)
    except CheckpointError:
        if not locked and state.is_run and lock_held(run):
            return state  # a run in progress: the run lock says so (naming its pid)
        raise


def lock_held(run: Path) -> bool:
    """Whether another process holds ``RUN/.lock`` (opened read-only, never created, no link followed)."""
    import fcntl

    try:
        fd = os.open(Path(run) / LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a shared lock taken here


def _check_slots(run: Path, state: RunState) -> None:
    """Every run file present is a regular file: a link, folder or special file there is refused before work."""
    for name in state.run_files:
        mode = os.lstat(Path(run) / name).st_mode
        if name in RUN_FOLDERS:
            if not stat.S_ISDIR(mode):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
                raise CheckpointError(f"{Path(run) / name} is {kind}; it is where vaekit's loggers write, a folder "
                                      f"of the run itself (remove it, or choose another {option('out')})")
            continue
        if not stat.S_ISREG(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else \
                "not a regular file"
            raise CheckpointError(f"{Path(run) / name} is {kind}; vaekit reads and writes only regular files in a "
                                  f"run folder (replace it with the file itself, or choose another {option('out')})")


def _check_state(run: Path, state: RunState, resume: bool, overwrite: bool, flag: str) -> RunState:
    if not state.is_run:
        inside = [*state.run_files, *state.foreign]
        if not inside:
            return state  # empty (perhaps a lock left by a start that failed)
        where = _named(flag, run)
        if Path(run).resolve() == Path.cwd().resolve():
            where = f"{where} (the current folder)" if flag.endswith("=") else f"{flag} the current folder"
        raise CheckpointError(
            f"{where} is not empty and not a vaekit run (it holds {_listing(inside)}); "
            "vaekit writes only into an empty or new folder, or into its own runs: choose another " + flag)
    if state.is_run and not overwrite:
        _check_slots(run, state)
    if not state.run_files or overwrite:
        return state
    if resume:
        if state.has_checkpoint or state.first_checkpoint_killed:  # the latter is started again (RunFolder.open)
            return state
        if {"model.json", "model.safetensors"} & set(state.run_files):
            raise CheckpointError(
                f"{run} holds a trained model but no checkpoint.safetensors to resume from (an inconsistent run); "
                f"pass {switch('overwrite')} to start afresh (it replaces the run's own files) or choose "
                f"another {flag}")
        return state  # no epoch was finished: nothing to continue, the run starts again
    if state.has_checkpoint:
        raise CheckpointError(f"{run} already holds a training run; pass {switch('resume')} to continue it, "
                              f"{switch('overwrite')} to start afresh, or choose another {flag}")
    raise CheckpointError(
        f"{run} holds an unfinished or inconsistent vaekit run ({_listing(state.run_files)}, no checkpoint); "
        f"pass {switch('overwrite')} to start afresh (it replaces the run's own files) or choose another {flag}")


def write_marker(run: Path) -> None:
    """Write ``RUN/.vaekit-run`` atomically: a new temporary file (``O_EXCL | O_NOFOLLOW``), fsync, rename."""
    run = Path(run)
    body = json.dumps({"format": MARKER_FORMAT,
                       "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    tmp = run / f".{MARKER}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        with contextlib.suppress(FileNotFoundError):  # a leftover of a killed write by this pid number
            if os.path.islink(tmp) or os.path.isfile(tmp):
                os.unlink(tmp)
        fd = os.open(tmp, flags, 0o644)
        try:
            os.write(fd, (body + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, run / MARKER)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        reason = exc.strerror or str(exc)
        raise CheckpointError(f"could not write {run / MARKER}: {reason} (free some space or choose another "
                              f"{option('out')})") from None
    with contextlib.suppress(OSError):
        dfd = os.open(run, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def clear_run(run: Path) -> list[str]:
    """Remove vaekit's own run files (:data:`RUN_FILES`, :data:`LOG_FILES`) and folders (:data:`RUN_FOLDERS`, with
    what they hold; a link is removed, never followed) and nothing else."""
    removed = []
    for name in (*RUN_FILES, *LOG_FILES, *RUN_FOLDERS):
        path = Path(run) / name
        try:
            if name in RUN_FOLDERS and stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CheckpointError(f"cannot remove {path} to start the run afresh: {exc.strerror or exc}") from None
        removed.append(name)
    return removed
