"""Errors that the CLI reports as one clear line (exit status 2), never a traceback; how their messages name a
setting (a command-line flag, or the argument of the Python call that was made: :func:`python_call`)."""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar


class VaekitError(Exception):
    """A problem the user can fix: bad input, a missing or corrupt file, a bad config.

    The message says what is wrong and how to fix it.
    """


class DataError(VaekitError, ValueError):
    """A data file is missing, truncated or corrupt (the message names the file)."""


class CheckpointError(VaekitError):
    """A run directory or checkpoint is missing, corrupt or unsafe to load."""


class ConfigError(VaekitError, ValueError):
    """A config file or CLI value has a wrong type, range or an unknown key."""


class ArgumentError(ConfigError, TypeError):
    """A Python call of the public API got an argument it does not take (an unknown keyword, or a value of the
    wrong type): a :class:`ConfigError` that is also the ``TypeError`` Python itself would raise."""


# -- how a message names a setting ---------------------------------------------------------------------------------

#: The Python call under way (its argument names, where they differ from the settings'), or None: the command line.
_CALL: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("vaekit_python_call", default=None)
_UNSET: Any = object()


@contextlib.contextmanager
def python_call(**names: str) -> Iterator[None]:
    """Within it, messages name the arguments of a Python call (``out=``, ``resume=True``) instead of command-line
    flags (``--out``, ``--resume``). ``names`` maps a setting to the argument that gives it in this call where the
    two differ (``labels="y"``: :func:`vaekit.evaluate` takes the labels as ``y``)."""
    token = _CALL.set(dict(names))
    try:
        yield
    finally:
        _CALL.reset(token)


def in_python_call() -> bool:
    """Whether a :func:`python_call` is under way (messages then name Python arguments)."""
    return _CALL.get() is not None


def argument(name: str) -> str:
    """The Python argument that gives the setting ``name`` in the call under way (``name`` itself by default)."""
    return (_CALL.get() or {}).get(name, name)


def option(name: str, value: Any = _UNSET) -> str:
    """How the user gives the setting ``name`` (underscores): ``--name-with-dashes [VALUE]`` on the command line,
    ``name=VALUE`` (``name=`` without a value) in a Python call."""
    if _CALL.get() is None:
        flag = "--" + name.replace("_", "-")
        return flag if value is _UNSET else f"{flag} {value}"
    return f"{argument(name)}=" + ("" if value is _UNSET else repr(value))


def switch(name: str) -> str:
    """How the user turns the switch ``name`` on: ``--name-with-dashes`` on the command line, ``name=True`` in a
    Python call."""
    return "--" + name.replace("_", "-") if _CALL.get() is None else f"{argument(name)}=True"


# -- unknown keywords ----------------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def unknown_keyword(call: str, name: str, known: Iterable[str]) -> ArgumentError:
    """The error for an unknown keyword ``name`` of ``call`` (e.g. ``"fit()"``): the closest known one, if any, and
    the list of them."""
    import difflib

    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ArgumentError(f"{call} got an unknown keyword argument {name!r}{hint}; it takes {', '.join(known)}")


def keywords_checked(func: F) -> F:
    """``func``, whose unknown keyword arguments raise :class:`ArgumentError` with the closest known one ("did you
    mean"), not Python's bare ``TypeError``. A function that takes ``**kwargs`` checks them itself."""
    import inspect

    parameters = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return func
    known = frozenset(n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                      and n != "self")
    owner, _, method = func.__qualname__.rpartition(".")
    call = f"{owner}()" if method == "__init__" else f"{func.__name__}()"

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for name in kwargs:
            if name not in known:
                raise unknown_keyword(call, name, known)
        return func(*args, **kwargs)

    return checked  # type: ignore[return-value]


def whole_number(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an int, refused in one error naming ``name`` unless it is a whole number (not a bool, not a
    string) of at least ``minimum``: an :class:`ArgumentError` for a wrong type, a :class:`ConfigError` below it."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{name} must be a whole number >= {minimum}, got {value!r} ({type(value).__name__})")
    if int(value) < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
