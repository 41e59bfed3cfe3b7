"""Registries of named components: a name, the class it builds and a small config dataclass.

A component (a prior, a likelihood, a posterior family, a network) is one class plus one registration::

    @PRIORS.register("laplace", LaplaceConfig)
    class LaplacePrior(Prior): ...

after which ``prior="laplace"`` works in Python, ``--prior laplace --laplace-scale 2`` on the command line
and ``[model.prior] name = "laplace"`` in a config file. A config dataclass states the settings and their
defaults; ``__post_init__`` may raise ``ValueError`` for values out of range. Unknown names and keys are
refused with a "did you mean" suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vaekit.errors import ConfigError


@dataclass
class NoSettings:
    """The config of a component without settings."""


@dataclass
class Entry:
    """A registered component: its name, class, config dataclass, flag prefix and one-line help."""

    name: str
    cls: type
    config: type
    prefix: str
    help: str
    flags: dict[str, str] = dataclasses.field(default_factory=dict)  # setting -> its flat name, if not PREFIX_FIELD

    def fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config)}

    def flat_name(self, field: str) -> str:
        """The flat name of a setting (``--FLAT-NAME`` on the command line): ``PREFIX_FIELD`` unless given."""
        return self.flags.get(field) or (f"{self.prefix}_{field}" if self.prefix else field)


def _hints(config: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(config)
    except Exception:  # a forward reference it cannot resolve: fall back on the raw annotations
        return dict(getattr(config, "__annotations__", {}))


def _check_type(kind: str, name: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` coerced to ``hint`` where a config file naturally differs (ints for floats, "1,2" lists)."""
    text = str(hint)
    optional = "None" in text or "Optional" in text
    where = f"{kind} {name!r} setting {key!r}"
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where} cannot be null; give a value or leave it out for the default")
    if "list" in text or "tuple" in text:
        if isinstance(value, str):
            try:
                value = [int(v) for v in value.split(",")]
            except ValueError:
                raise ConfigError(f"{where} must be integers like 400 or 500,500; got {value!r}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ConfigError(f"{where} must be a list of integers; got {value!r}")
        return list(value)
    base = hint if isinstance(hint, type) else None
    if base is None:
        for candidate in (bool, int, float, str):
            if text.startswith(candidate.__name__) or f"[{candidate.__name__}" in text:
                base = candidate
                break
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false; got {value!r}")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer; got {value!r}")
    elif base is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where} must be a number; got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number; got {value!r}")
        value = float(value)
    elif base is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string; got {value!r}")
    return value


class Registry:
    """Names -> component classes of one kind (``"prior"``, ``"likelihood"``, ``"posterior"``, ``"network"``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, config: type | None = None, *, prefix: str | None = None,
                 help: str = "", flags: dict[str, str] | None = None) -> Callable[[type], type]:
        """Class decorator: register ``cls`` under ``name`` with its ``config`` dataclass.

        ``prefix`` names the command-line flags of the settings (``--PREFIX-FIELD``; default: the name;
        ``""``: ``--FIELD``, for a setting that reads well alone, like a categorical posterior's ``--classes``).
        ``flags`` gives single settings a flat name of their own (``{"mixtures": "mixtures"}``: ``--mixtures``).
        Registering a name again replaces the entry (so a module reloaded in a notebook keeps working).
        """
        config = config if config is not None else NoSettings
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"the config of {self.kind} {name!r} must be a dataclass, got {config!r}")
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ValueError(f"{self.kind} names are letters, digits, - and _; got {name!r}")

        def decorate(cls: type) -> type:
            doc = help or (inspect.getdoc(cls) or "").split("\n")[0]
            self._entries[name] = Entry(name, cls, config, name if prefix is None else prefix, doc, dict(flags or {}))
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and notebooks); unknown names are ignored."""
        self._entries.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint}; choose from {', '.join(self._entries)}")
        return self._entries[name]

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def settings(self, spec: str | dict[str, Any]) -> tuple[str, Any]:
        """(name, validated config dataclass) of ``spec``: a name or ``{"name": ..., setting: value, ...}``."""
        values = {"name": spec} if isinstance(spec, str) else dict(spec)
        if "name" not in values:
            raise ConfigError(f"the {self.kind} settings need a name (one of {', '.join(self._entries)})")
        name = values.pop("name")
        if not isinstance(name, str):
            raise ConfigError(f"the {self.kind} name must be a string; got {name!r}")
        entry = self.entry(name)
        fields, hints = entry.fields(), _hints(entry.config)
        clean = {}
        for key, value in values.items():
            k = str(key).replace("-", "_")
            if k not in fields:
                close = difflib.get_close_matches(k, fields, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = f"; its settings are {', '.join(fields)}" if fields else "; it has no settings"
                raise ConfigError(f"unknown setting {key!r} for {self.kind} {name!r}{hint}{known}")
            clean[k] = _check_type(self.kind, name, k, value, hints.get(k, fields[k].type))
        try:
            cfg = entry.config(**clean)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.kind} {name!r}: {exc}") from None
        return name, cfg

    def spec(self, spec: str | dict[str, Any]) -> dict[str, Any]:
        """``spec`` validated and completed with the defaults: ``{"name": ..., **settings}``."""
        name, cfg = self.settings(spec)
        return {"name": name, **dataclasses.asdict(cfg)}

    def build(self, spec: str | dict[str, Any], **context: Any) -> Any:
        """An instance of the component ``spec`` names, with its settings and the ``context`` (e.g.
        ``latent``, ``shape``) that its ``__init__`` accepts."""
        name, cfg = self.settings(spec)
        cls = self._entries[name].cls
        params = inspect.signature(cls.__init__).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in context.items() if takes_any or k in params}
        kwargs.update(dataclasses.asdict(cfg))
        missing = [p.name for p in params.values() if p.name != "self" and p.default is inspect.Parameter.empty
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs]
        if missing:
            raise ConfigError(f"the {self.kind} {name!r} needs {', '.join(missing)} (e.g. the data's shape); "
                              "build it inside a model, which passes them")
        return cls(**kwargs)
