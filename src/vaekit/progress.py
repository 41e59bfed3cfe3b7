"""Progress on a terminal and in a notebook: which tqdm bar to draw, whether to draw one, and a bar as a callback.

:func:`bar_class` makes ``tqdm.auto``'s choice without its warning: in a Jupyter kernel with ipywidgets the
widget bar of ``tqdm.notebook``, otherwise (a terminal, a log file, or a notebook without ipywidgets, where
``tqdm.auto`` warns "IProgress not found") the text bar of ``tqdm.std``. :func:`enabled` resolves the default
``progress=None``: a bar when stderr is a terminal or in a notebook (whose streams are no terminals).
:class:`Bar` is a ``(done, total)`` callback, such as ``evaluate_model(progress=...)`` takes, that draws a bar
with the elapsed time, the rate and the ETA (on stderr unless told otherwise).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO, Any

#: The text of a bar: what, how far, and the time left.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed} elapsed, ETA {remaining}, " \
             "{rate_fmt}]"


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell: Jupyter, JupyterLab, VS Code, Colab)."""
    if "ipykernel" not in sys.modules and "ipykernel.zmqshell" not in sys.modules:
        return False
    get = getattr(sys.modules.get("IPython"), "get_ipython", None)
    try:
        shell = get() if callable(get) else None
    except Exception:  # noqa: BLE001 - an IPython that cannot say: not a notebook
        return False
    return shell is not None and any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__)


def widgets_available() -> bool:
    """Whether tqdm's notebook bar can draw its widget (ipywidgets is installed)."""
    try:
        from tqdm.notebook import IProgress
    except Exception:  # noqa: BLE001 - any failure to import means no widget
        return False
    return IProgress is not None


def bar_class() -> type:
    """``tqdm.notebook.tqdm`` in a notebook with ipywidgets, else ``tqdm.std.tqdm`` (no TqdmWarning either way)."""
    if in_notebook() and widgets_available():
        from tqdm.notebook import tqdm

        return tqdm
    from tqdm.std import tqdm

    return tqdm


def enabled(progress: bool | None, stream: IO[str] | None = None) -> bool:
    """``progress`` if given; for None, whether ``stream`` (stderr) is a terminal or this is a notebook."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        tty = False
    return tty or in_notebook()


def step_lines(quiet: bool = False, progress: bool | None = None) -> Callable[[str], None] | None:
    """Where a command says its steps ("evaluating on 270 test examples ...") and warnings: stderr, and a step only
    where someone watches it (:func:`enabled`: a terminal, a notebook, or ``progress`` True), so that in a log or a
    pipe an error is the only line; a warning (a line starting ``warning:``) wherever it is; with ``quiet``, None
    (nothing but errors)."""
    if quiet:
        return None
    watched = enabled(progress)

    def say(msg: str) -> None:
        if watched or msg.startswith("warning:"):
            print(msg, file=sys.stderr, flush=True)

    return say


def notebook_log() -> Callable[[str], None] | None:
    """Where the trainer's per-epoch lines go by default: printed in a notebook, nowhere otherwise."""
    return (lambda msg: print(msg, flush=True)) if in_notebook() else None


#: Work projected (from its first second or more) to take longer than this many seconds is announced.
ANNOUNCE_SECONDS = 10.0
#: How long the projection waits before it extrapolates (seconds of work done).
PILOT_SECONDS = 1.0


def max_seconds() -> float:
    """The longest a piece of work may be projected to take before it is refused: $VAEKIT_MAX_HOURS hours
    (default 6)."""
    try:
        hours = float(os.environ.get("VAEKIT_MAX_HOURS", "6"))
    except ValueError:
        hours = 6.0
    return hours * 3600.0 if hours > 0 else float("inf")


def duration(seconds: float) -> str:
    """``seconds`` for a person: "40 s", "3.5 min", "2.1 h", "3.2 days"."""
    for size, unit in ((86400.0, "days"), (3600.0, "h"), (60.0, "min")):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


class Bar:
    """A ``(done, total)`` progress callback drawing a bar with the ETA (:data:`BAR_FORMAT`) on ``file``.

    The bar appears at the first call and is finished when ``done`` reaches ``total``; ``enabled=False`` draws
    nothing. Use it as a context manager (or call :meth:`close`) so that the bar is finished if the work fails.

    Whether drawn or not, the first call after :data:`PILOT_SECONDS` of work projects the whole: more than
    :data:`ANNOUNCE_SECONDS` is said once through ``say`` (what it will take), and more than :func:`max_seconds`
    is refused (a ConfigError naming ``flags``, the settings to lower) when ``flags`` is given. :meth:`phase` makes
    a bar of the same kind for another piece of the same command's work (an exact sum, AIS).
    """

    def __init__(self, desc: str, unit: str = "it", *, enabled: bool = True, file: IO[str] | None = None,
                 leave: bool = True, flags: str | None = None, say: Callable[[str], None] | None = None):
        self.desc, self.unit, self.enabled, self.file, self.leave = desc, unit, enabled, file, leave
        self.flags, self.say = flags, say
        self.bar: Any = None
        self.started: float | None = None
        self.projected = False

    def phase(self, desc: str, unit: str, flags: str | None = None) -> Bar:
        """A bar for another piece of the work, drawn, said and refused as this one's."""
        return Bar(desc, unit, enabled=self.enabled, file=self.file, leave=self.leave, flags=flags, say=self.say)

    def _project(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.started is None:
            self.started = now
        elapsed = now - self.started
        if self.projected or done <= 0 or done >= total or elapsed < PILOT_SECONDS:
            return
        self.projected = True
        whole = elapsed / done * total
        if self.flags is not None and whole > max_seconds():
            from vaekit.errors import ConfigError

            self.close()
            raise ConfigError(f"{self.desc} would take about {duration(whole)} ({done:,} of {total:,} {self.unit} in "
                              f"{elapsed:.0f} s); lower {self.flags} (or raise $VAEKIT_MAX_HOURS, now "
                              f"{max_seconds() / 3600:g})")
        if whole > ANNOUNCE_SECONDS and self.say is not None:
            self.say(f"{self.desc}: about {duration(whole)} in all ({done:,} of {total:,} {self.unit} done in "
                     f"{elapsed:.1f} s)")

    def __call__(self, done: int, total: int) -> None:
        self._project(done, total)
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = bar_class()(total=total, desc=self.desc, unit=self.unit, leave=self.leave,
                                   file=self.file if self.file is not None else sys.stderr, dynamic_ncols=True,
                                   bar_format=BAR_FORMAT)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(max(0, done - self.bar.n))
        if done >= total:  # finished: the bar's last state stays on its own line
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
