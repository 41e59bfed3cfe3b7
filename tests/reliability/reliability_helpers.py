"""Shared pieces of the reliability suite: a tiny training config, running the CLI in-process and in a
subprocess, reading run directories, and simulated disk faults (ENOSPC, EROFS) for one directory tree."""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load as st_load

from vaekit.cli import main

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "kill_runner.py"
PYTHON = sys.executable

#: A training run that takes about 0.05 s an epoch on one core: 1257 digits / 64 = 20 steps an epoch.
TINY = ["--dataset", "digits", "--hidden", "16", "--latent", "2", "--batch-size", "64", "--device", "cpu",
        "--threads", "1", "--seed", "3", "--quiet"]
STEPS_PER_EPOCH = 20


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``vaekit.cli.main(argv)`` in this process: (exit status, stdout, stderr); SystemExit is a status."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *needles: str, status_lines: bool = False) -> None:
    """Exit status 2 and exactly one line on stderr, naming the problem; never a traceback.

    ``status_lines``: the command may have printed progress lines on stderr before the error (``vaekit
    report`` says what it evaluates); the error is then the last line and the only one saying 'error'."""
    assert code == 2, f"exit status {code}, stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if status_lines:
        assert "error:" in lines[-1] and sum("error" in line for line in lines) == 1, err
        err = lines[-1]
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    env.pop("VAEKIT_KILL_WRITE", None)
    env.pop("VAEKIT_KILL_STEP", None)
    env.update(extra)
    return env


def spawn(argv: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run ``vaekit argv`` through kill_runner.py (fault hooks from ``env``) in a subprocess."""
    return subprocess.run([PYTHON, str(RUNNER), *argv], env=subprocess_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def popen(argv: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, str(RUNNER), *argv], env=subprocess_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# -- reading run directories --------------------------------------------------------------


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return st_load(Path(path).read_bytes())


def metadata(path: Path) -> dict[str, str]:
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]).get("__metadata__") or {}


def epochs_done(run: Path) -> int:
    """The epoch a run's checkpoint was written after (0 when there is none yet)."""
    path = run / "checkpoint.safetensors"
    return json.loads(metadata(path)["progress"])["epoch"] if path.exists() else 0


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str = "") -> None:
    """Bit for bit: the same names, dtypes, shapes and bytes."""
    assert a.keys() == b.keys(), what
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, f"{what} {k}"
        assert a[k].contiguous().numpy().tobytes() == b[k].contiguous().numpy().tobytes(), f"{what}: {k} differs"


def metrics_without_time(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def temp_files(run: Path) -> list[Path]:
    return sorted(run.glob(".*.tmp"))


# -- simulated disk faults --------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _under(path, root: Path) -> bool:
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:  # a file descriptor
        return False
    return p == str(root) or p.startswith(str(root) + os.sep)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class _FullFile:
    """A writable file on a full disk: the first write puts half of its bytes down, then fails."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


@contextlib.contextmanager
def disk_full(monkeypatch, root: Path, names: tuple[str, ...] | None = None) -> Iterator[None]:
    """ENOSPC for writes into files under ``root`` whose name contains one of ``names`` (all if None):
    half of the data reaches the file, then the write raises, as on a disk that fills up mid-write."""
    root = Path(os.path.abspath(root))
    real_open, real_fdopen = builtins.open, os.fdopen

    def hit(path: str) -> bool:
        return _under(path, root) and (names is None or any(n in os.path.basename(path) for n in names))

    def writing(mode: str) -> bool:
        return any(c in mode for c in "wax+")

    def fake_open(file, mode="r", *args, **kwargs):
        fh = real_open(file, mode, *args, **kwargs)
        return _FullFile(fh) if writing(mode) and not isinstance(file, int) and hit(file) else fh

    def fake_fdopen(fd, mode="r", *args, **kwargs):
        fh = real_fdopen(fd, mode, *args, **kwargs)
        return _FullFile(fh) if writing(mode) and hit(_fd_path(fd)) else fh

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "fdopen", fake_fdopen)
    try:
        yield
    finally:
        monkeypatch.setattr(builtins, "open", real_open)
        monkeypatch.setattr(io, "open", real_open)
        monkeypatch.setattr(os, "fdopen", real_fdopen)


@contextlib.contextmanager
def read_only(monkeypatch, root: Path, code: int = errno.EROFS) -> Iterator[None]:
    """Everything under ``root`` is read-only (EROFS, or EACCES as for a directory we may not write):
    creating, opening for writing, renaming, deleting and making folders fail; reading works.
    (The suite runs as root, for whom chmod does not make anything read-only, so this is simulated.)"""
    root = Path(os.path.abspath(root))
    saved = {name: getattr(os, name) for name in ("open", "mkdir", "replace", "rename", "unlink", "remove", "rmdir")}
    real_open = builtins.open

    def fail(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and _under(path, root):
            fail(path)
        return saved["open"](path, flags, *args, **kwargs)

    def fake_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not isinstance(file, int) and _under(file, root):
            fail(file)
        return real_open(file, mode, *args, **kwargs)

    def guard(name):
        def fake(path, *args, **kwargs):
            if name == "mkdir" and _under(path, root) and os.path.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
            if _under(path, root) or any(_under(a, root) for a in args if isinstance(a, (str, os.PathLike))):
                fail(path)
            return saved[name](path, *args, **kwargs)
        return fake

    monkeypatch.setattr(os, "open", fake_os_open)
    for name in ("mkdir", "replace", "rename", "unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, guard(name))
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    try:
        yield
    finally:
        for name, f in saved.items():
            monkeypatch.setattr(os, name, f)
        monkeypatch.setattr(builtins, "open", real_open)
        monkeypatch.setattr(io, "open", real_open)


# -- snapshots of folders and bounded in-process calls (test_fuzz_run_folders.py) ------------------


def snapshot_tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``, links not followed: relative path -> ('file', bytes), ('link', target),
    ('dir',) or ('special', file type). Two snapshots differ exactly where a byte, a link or an entry changed."""
    import stat

    root = Path(root)
    entries: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):  # does not descend into links to folders
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                entry: tuple = ("link", os.readlink(path))
            elif stat.S_ISDIR(mode):
                entry = ("dir",)
            elif stat.S_ISREG(mode):
                with open(path, "rb") as fh:
                    entry = ("file", fh.read())
            else:
                entry = ("special", stat.S_IFMT(mode))
            entries[os.path.relpath(path, root)] = entry
    return entries


def changed_entries(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    """The relative paths created, removed or changed between two :func:`snapshot_tree` snapshots."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


class Overrun(Exception):
    """A call ran past the time limit of :func:`bounded` (it would have hung)."""


@contextlib.contextmanager
def bounded(seconds: float, extra_memory: int = 4 * 2**30) -> Iterator[None]:
    """Raise :class:`Overrun` in this (main) thread after ``seconds``, and cap the address space at the
    current size plus ``extra_memory`` bytes, so that an in-process call that would hang or eat the machine's
    memory fails instead (a refused allocation is a MemoryError or RuntimeError in the call)."""
    import resource
    import signal

    def ring(signum, frame):
        raise Overrun(f"still running after {seconds} s")

    with open("/proc/self/statm") as fh:
        size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = size + extra_memory if hard == resource.RLIM_INFINITY else min(hard, size + extra_memory)
    old_handler = signal.signal(signal.SIGALRM, ring)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# -- links, special files, checkpoint metadata (issue 16) ---------------------------------------


def tree_state(root: Path) -> dict[str, object]:
    """Every entry under ``root``: a link's target, a file's bytes, or the kind of a special file (no link followed)."""
    out: dict[str, object] = {}
    for p in sorted(Path(root).rglob("*")):
        key = str(p.relative_to(root))
        if p.is_symlink():
            out[key] = ("link", os.readlink(p))
        elif p.is_file():
            out[key] = p.read_bytes()
        else:
            out[key] = ("dir" if p.is_dir() else "special", os.lstat(p).st_mode)
    return out


def rewrite_checkpoint(path: Path, edit) -> None:
    """Rewrite the safetensors file ``path`` with a valid checksum after ``edit(tensors, metadata)`` changed them
    in place: a crafted file that only the schema checks can refuse."""
    from vaekit.io.checkpoint import safetensors_bytes

    ts, meta = tensors(path), metadata(path)
    meta.pop("sha256", None)
    edit(ts, meta)
    Path(path).write_bytes(safetensors_bytes(ts, meta))


def spawn_limited(argv: list[str], timeout: float = 60, memory: int = 4 * 2**30) -> subprocess.CompletedProcess:
    """``vaekit argv`` in a subprocess under an address-space limit (a runaway read fails, never eats the machine)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run([PYTHON, "-m", "vaekit.cli", *argv], env=subprocess_env(), capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


# -- run-folder contract (test_run_contract.py) ------------------------------------------------


def tree_bytes(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root``: relative path -> file bytes, ``'link:TARGET'`` or ``'dir'`` (not followed)."""
    root = Path(root)
    out: dict[str, bytes | str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


# -- resource limits (tests/reliability/test_resources.py) ------------------------------------

#: The memory limit the small-input cases run under (RLIMIT_AS of the child: torch imports in less).
MEMORY_LIMIT = 2 * 2**30


_LIMITED = """
import atexit, os, resource, sys

def _usage():
    u = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["VAEKIT_TEST_USAGE"], "w") as f:
        f.write(f"{u.ru_utime + u.ru_stime} {u.ru_maxrss}")

atexit.register(_usage)
from vaekit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_limited(argv: list[str], cwd: Path, limit: int = MEMORY_LIMIT, timeout: float = 120,
                env: dict[str, str] | None = None) -> tuple[int, str, float, int]:
    """``vaekit argv`` in a subprocess whose address space is capped at ``limit`` bytes:
    (exit status, stderr, CPU seconds (user + system) of the child, its peak RSS in bytes).
    CPU time, not wall time, is what the 5 s bound is checked on: the 2-core test machine is shared."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    usage = Path(cwd) / ".usage"
    usage.unlink(missing_ok=True)
    try:
        proc = subprocess.run([PYTHON, "-c", _LIMITED, *argv], cwd=cwd, capture_output=True, text=True,
                              env=subprocess_env(VAEKIT_TEST_USAGE=str(usage), **(env or {})), preexec_fn=cap,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"vaekit {' '.join(argv)[:200]} did not end within {timeout} s") from None
    seconds, rss = (usage.read_text().split() if usage.exists() else ("inf", "0"))
    return proc.returncode, proc.stderr, float(seconds), int(rss) * 1024


_LIMITED_MANY = """
import contextlib, io, json, os, resource, sys
from vaekit.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    before = resource.getrusage(resource.RUSAGE_SELF)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # a traceback in the product: reported as such
            import traceback
            err.write("Traceback (in process)\\n" + "".join(traceback.format_exception(exc))[-2000:])
            code = 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    results.append([code, err.getvalue()[-20000:], cpu, after.ru_maxrss * 1024])
    with open(os.environ["VAEKIT_TEST_USAGE"], "w") as f:
        json.dump(results, f)
"""


def run_limited_many(cases: list[list[str]], cwd: Path, limit: int = MEMORY_LIMIT, timeout: float = 300,
                     env: dict[str, str] | None = None) -> list[tuple[int, str, float, int]]:
    """Each ``vaekit argv`` of ``cases`` in turn, in one subprocess capped at ``limit`` bytes of address space
    (torch is imported once): per case (exit status, stderr, CPU seconds of that case, peak RSS so far).
    A case that never ends fails them all (the timeout); results so far are kept in ``cwd/.usage-many``."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    usage = Path(cwd) / ".usage-many"
    usage.unlink(missing_ok=True)
    try:
        proc = subprocess.run([PYTHON, "-c", _LIMITED_MANY, json.dumps(cases)], cwd=cwd, capture_output=True,
                              text=True, env=subprocess_env(VAEKIT_TEST_USAGE=str(usage), **(env or {})),
                              preexec_fn=cap, timeout=timeout)
    except subprocess.TimeoutExpired:
        done = json.loads(usage.read_text()) if usage.exists() else []
        raise AssertionError(f"case {len(done)} ({cases[len(done)]}) did not end within {timeout} s") from None
    done = json.loads(usage.read_text()) if usage.exists() else []
    if len(done) < len(cases):
        raise AssertionError(f"the process ended (status {proc.returncode}) in case {len(done)} "
                             f"{cases[len(done)]}: {proc.stderr[-1000:]}")
    return [tuple(r) for r in done]


def train_tiny_run(factory, name: str, *extra: str) -> Path:
    """A finished two-epoch run of the TINY model (train flags ``extra`` added), made once per module."""
    run = factory.mktemp(name) / "run"
    code, _, err = run_cli(["train", *TINY, "--epochs", "2", *extra, "--out", str(run)])
    assert code == 0, err
    return run


def copy_run(source: Path, tmp_path: Path) -> Path:
    """A private copy of a run folder (links copied as links) for a test to damage."""
    copy = tmp_path / "run"
    shutil.copytree(source, copy, symlinks=True)
    return copy
