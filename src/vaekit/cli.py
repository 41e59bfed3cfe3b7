"""The ``vaekit`` command.

Each sub-command lives in ``vaekit/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (``args -> int``).
Errors the user can fix (:class:`vaekit.errors.VaekitError`, bad arguments) are
printed as one line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import gc
import importlib
import os
import sys
from collections.abc import Collection, Sequence

from vaekit import __version__
from vaekit.errors import VaekitError

#: Sub-command modules under ``vaekit.commands``, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = ("info", "gradients", "data", "train", "evaluate", "sample", "report", "bound", "compare",
                             "sweep")


#: What str.splitlines() breaks at, shown escaped in error messages (an argument or a file name may hold one).
_LINE_BREAKS = {ord(c): ascii(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    """``text`` on one line: line breaks inside it are shown as escapes (``\\n``)."""
    return str(text).translate(_LINE_BREAKS)


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


def build_parser(full: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``vaekit`` and its commands. With ``full``, only the commands named there get their flags; a
    command whose module states its ``HELP`` line is listed by that line alone otherwise, so that ``vaekit --help``
    or another command never builds flags it will not parse (those of ``vaekit train`` need torch)."""
    parser = OneLineArgumentParser(
        prog="vaekit",
        description="Variational autoencoders, correct to the last nat.",
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    for name in COMMANDS:
        module = importlib.import_module(f"vaekit.commands.{name}")
        if full is None or name in full or not hasattr(module, "HELP"):
            module.register(sub)
        else:
            sub.add_parser(name, help=module.HELP)
    return parser


def invoked(argv: Sequence[str]) -> set[str]:
    """The command ``argv`` runs, as a set (empty for ``--help``, ``--version`` or no command): the first word
    that is not an option, since ``vaekit`` itself takes no option with a value."""
    words = [a for a in argv if not a.startswith("-")]
    return {words[0]} & set(COMMANDS) if words else set()


def _startup_parser(command: set[str], own_process: bool) -> argparse.ArgumentParser:
    """``build_parser(full=command)``; in a process of its own (``vaekit ...``, not ``main(argv)`` in a caller's
    process) with the cyclic garbage collector paused while it imports torch and the registries, whose objects are
    then frozen (``gc.freeze``: never scanned again; CPython's advice for long-lived objects). The collections that
    scan torch's objects took 0.2 to 0.5 s of a one-epoch CPU training run (timed by ``gc.callbacks``)."""
    if not own_process:
        return build_parser(full=command)
    gc.disable()
    try:
        return build_parser(full=command)
    finally:
        gc.freeze()
        gc.enable()


#: Entry-point group of installed packages that register components (``vaekit.plugins``): loading one imports
#: that package, which registers its priors, likelihoods or posteriors. Nothing in a run folder is imported.
PLUGIN_GROUP = "vaekit.plugins"


@functools.cache
def _plugin_entry_points() -> tuple:
    """The ``vaekit.plugins`` entry points of the installed packages, looked up once a process: the lookup reads
    every installed distribution's metadata (5 ms on a 2-core CPU), which ``main(argv)`` called many times in one
    process need not repeat."""
    from importlib.metadata import entry_points

    return tuple(entry_points(group=PLUGIN_GROUP))


def load_plugins() -> list[str]:
    """Import the installed packages that declare a ``vaekit.plugins`` entry point; their names."""
    loaded = []
    for ep in _plugin_entry_points():
        try:
            ep.load()
        except Exception as exc:  # a broken plugin: say so in one line, go on without it
            print(f"vaekit: warning: plugin {ep.name} ({ep.value}) failed to load: {one_line(exc)}", file=sys.stderr)
            continue
        loaded.append(ep.name)
    return loaded


def main(argv: Sequence[str] | None = None) -> int:
    if sys.stdout is None:  # started with standard output closed (vaekit ... >&-): nowhere to put a result
        print("vaekit: error: standard output is closed; give vaekit somewhere to write it, e.g. >/dev/null",
              file=sys.stderr)  # print() to a closed stderr (None) writes nothing
        return 2
    command = invoked(sys.argv[1:] if argv is None else argv)
    if command:  # plugins register components, which only commands use
        load_plugins()
    parser = _startup_parser(command, own_process=argv is None)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed stdout shows here, not as a warning at exit
        return code
    except VaekitError as exc:
        print(f"vaekit {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (vaekit ... | head -1): stop quietly
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a command that a closed pipe stopped
    except OSError as exc:  # a path the commands did not foresee: too long, no space, no permission, ...
        print(f"vaekit {args.command}: error: {one_line(os_error_line(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vaekit {args.command}: interrupted", file=sys.stderr)
        return 130


def _short(path: object, limit: int = 160) -> str:
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2:]} ({len(text)} characters)"


def os_error_line(exc: OSError) -> str:
    """An ``OSError`` as one line: the path(s) it concerns and the reason (``strerror``, e.g. ENAMETOOLONG)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENAMETOOLONG:
        reason += " (a name in a path may have at most 255 bytes)"
    paths = [_short(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that flushing it at exit raises no second BrokenPipeError (Python's advice)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
