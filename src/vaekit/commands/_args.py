"""Argument types shared by the sub-commands: each raises ``ArgumentTypeError``
with a message saying what to fix, which argparse prints as one line."""

from __future__ import annotations

import argparse
import math

from vaekit.resources import MAX_SAMPLES


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


#: The most images per run in a sample panel of compare or sweep (as ``vaekit sample -n``): beyond it a page
#: never ends.
MAX_PICTURES = 4096


def picture_samples(text: str) -> int:
    """A positive number of images per run for a sample panel, at most :data:`MAX_PICTURES`."""
    value = positive_int(text)
    if value > MAX_PICTURES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_PICTURES} images per run, got {value:,}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


#: Largest ``--seed``: torch takes 64-bit seeds and the commands derive further seeds from it by offsets.
MAX_SEED = 2**32 - 1


def seed_int(text: str) -> int:
    """A random seed: an integer from 0 to :data:`MAX_SEED`."""
    value = nonnegative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED}, got {value}")
    return value


#: Largest number of importance samples K per example (evaluate, report, bound): beyond it a run never ends (the
#: Python API's bound too: :func:`vaekit.resources.check_samples`).
MAX_K = MAX_SAMPLES


def importance_samples(text: str) -> int:
    """K, importance samples per example: an integer from 1 to :data:`MAX_K`."""
    value = positive_int(text)
    if value > MAX_K:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_K:,} samples per example, got {value:,}")
    return value


def grid_points(text: str) -> int:
    """Grid points per axis of a 2-D grid: an integer from 1 to 4096 (4096^2 = 16.8M points)."""
    value = positive_int(text)
    if value > 4096:
        raise argparse.ArgumentTypeError(f"expected at most 4096 grid points per axis, got {value:,}")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def float_list(text: str) -> list[float]:
    """``"0.5,0.5"`` -> ``[0.5, 0.5]``; finite numbers only."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.5,0.5, got {text!r}")
    out = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{p!r} is not a number (expected comma-separated numbers like 0.5,0.5)"
            ) from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"{p!r} is not a finite number")
        out.append(v)
    return out


def int_list(text: str) -> list[int]:
    """``"1,10,100"`` -> ``[1, 10, 100]``; positive integers only."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,10,100, got {text!r}")
    return [positive_int(p) for p in parts]


def _at_most(maximum: int, what: str):
    def parse(text: str) -> int:
        value = positive_int(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected at most {maximum:,} {what}, got {value:,}")
        return value

    parse.__name__ = what.replace(" ", "_")
    return parse


#: AIS: temperatures T, chains per example C (their memory is checked against the budget too), leapfrog steps L.
ais_steps = _at_most(1_000_000, "annealing steps")
ais_chains = _at_most(100_000, "chains per example")
leapfrog_steps = _at_most(1_000, "leapfrog steps")
