"""The runs of a sweep: the cartesian product of settings' values and seeds, each with a safe folder name.

A grid maps settings (the names of ``vaekit train`` flags: ``beta``, ``objective``, ``latent``,
``vamp-components``) to their values; with seeds, every point of the grid is trained once per seed. A run's folder
is named by its settings in the grid's order, ``KEY-VALUE`` joined by ``_``, the seed last:

    beta-0.5                        a grid over beta alone (the folders of a beta sweep)
    beta-0.5_seed-1                 with --seeds
    objective-beta-tcvae_latent-5_seed-0

A value is written as text (numbers as Python writes them shortest, ``1`` for 1.0; booleans ``true`` /
``false``; the items of a list joined by ``+``), and every character but ASCII letters, digits, ``-`` and ``.`` is
percent-encoded (``/`` as ``%2F``, ``_`` as ``%5F``), as is any ``..``: a name is one path component, never a
path, and two different points never share a name.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vaekit.errors import ConfigError

#: The characters a folder name keeps as they are; every other one is percent-encoded.
SAFE = frozenset(string.ascii_letters + string.digits + "-.")
#: The most bytes of a folder name (the limit of common file systems).
MAX_NAME = 255


def encode(text: str) -> str:
    """``text`` with every character outside :data:`SAFE` (and each ``.`` of a ``..``) percent-encoded (UTF-8)."""
    out = "".join(c if c in SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in text)
    while ".." in out:
        out = out.replace("..", "%2E.", 1)
    return out


def _number(value: float) -> str:
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def value_text(value: Any) -> str:
    """A setting's value as it appears in a folder name (encoded; see the module docstring)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return encode(_number(value))
    if isinstance(value, (list, tuple)):
        return "+".join(value_text(v) for v in value)
    return encode("none" if value is None else str(value))


def describe(settings: Mapping[str, Any]) -> str:
    """The settings for a reader: ``beta 0.5``, ``objective elbo, latent 5, seed 0``."""
    def text(v: Any) -> str:
        if isinstance(v, float):
            return _number(v)
        if isinstance(v, (list, tuple)):
            return ",".join(text(x) for x in v)
        return str(v).lower() if isinstance(v, bool) else str(v)

    return ", ".join(f"{key_name(k)} {text(v)}" for k, v in settings.items())


def key_name(key: str) -> str:
    """A setting's name as a flag without dashes: ``vamp_components`` -> ``vamp-components``."""
    return str(key).lstrip("-").replace("_", "-")


def run_name(settings: Mapping[str, Any]) -> str:
    """The folder of one point: ``KEY-VALUE`` for each setting, joined by ``_`` (``beta-0.5_seed-1``)."""
    return "_".join(f"{encode(key_name(k))}-{value_text(v)}" for k, v in settings.items())


@dataclass(frozen=True)
class Point:
    """One run of a sweep: its settings (the grid's keys in order, then ``seed``) and its folder name."""

    settings: dict[str, Any]
    name: str


def points(grid: Mapping[str, Sequence[Any]], seeds: Sequence[int] | None = None) -> list[Point]:
    """Every point of ``grid`` x ``seeds`` (the first key varies slowest, the seed fastest); a one-line
    ConfigError for an empty grid key, a value or seed given twice, fewer than 2 runs, or a name too long."""
    axes = {key_name(k): list(v) for k, v in grid.items()}
    if len(axes) < len(grid):
        raise ConfigError("a setting is given twice in the grid; give each once")
    if "seed" in axes:
        raise ConfigError("give the training seeds as --seeds 0,1,2, not in the grid")
    if seeds is not None:
        axes["seed"] = [int(s) for s in seeds]
    for key, values in axes.items():
        if not values:
            raise ConfigError(f"{key} has no values in the grid; give at least one")
        names = [value_text(v) for v in values]
        dupes = sorted({f"{key}-{n}" for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"{key} is given twice ({', '.join(dupes)}); give each value once")
    combos = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    out = [Point(settings, run_name(settings)) for settings in combos]
    if len(out) < 2:
        raise ConfigError(f"a sweep needs at least 2 runs (values of the grid x seeds), got {len(out)}")
    long = [p.name for p in out if len(p.name.encode()) > MAX_NAME]
    if long:
        raise ConfigError(f"the run folder name {long[0][:60]}... is longer than {MAX_NAME} bytes; sweep fewer "
                          "settings at once")
    return out
