"""What a figure of log p(x) is, by the likelihood and the data's grey levels L (values x = k / (L - 1)): a
log-probability, the dequantised bound of a density on integer data, a density, or a cross-entropy. Training and
evaluation both ask here, so that a run's figures are the same quantity wherever they are shown.

* ``log-probability``: a probability of the data's values (the Bernoulli on binary data; the discretized
  logistic, its mixture and the L-way categorical on data of their L).
* ``dequantized-bound``: a density p on [0, 1]^D (Gaussian, continuous Bernoulli) on integer-valued data (L > 2),
  evaluated at y = (k + u) / L, u ~ U[0, 1)^D, with D log L subtracted:
  log P(k) >= E_u log p((k + u) / L) - D log L (uniform dequantisation; Theis et al. 2016).
* ``density``: a density on real-valued (or binary) data, nats of a density (it can exceed 0).
* ``cross-entropy``: a likelihood of binary pixels on data that are not binary: not a log-likelihood at all.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.errors import DataError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: What log p(x) is (``EvaluationResult.log_px_kind``; the module docstring).
LOG_PROBABILITY, DEQUANTIZED, DENSITY, CROSS_ENTROPY = "log-probability", "dequantized-bound", "density", \
    "cross-entropy"
FIGURE_KINDS = (LOG_PROBABILITY, DEQUANTIZED, DENSITY, CROSS_ENTROPY)
#: Offset added to the evaluation seed for the dequantisation noise u (apart from the importance samples').
DEQUANTIZATION_SEED_OFFSET = 7_777_777


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def on_grid(x: torch.Tensor, levels: int) -> bool:
    """Whether every value of x is k / (L - 1) for an integer k in 0..L-1 (to within float32 rounding)."""
    k = x.double() * (levels - 1)
    return bool(((k - k.round()).abs() <= 1e-3).all() and (k >= -1e-3).all() and (k <= levels - 1 + 1e-3).all())


def figure_kind(model: LatentVariableModel, x: torch.Tensor, data: Any = None,
                levels: int | None = None) -> tuple[str, int | None]:
    """(what log p(x) is, the data's grey levels L) for ``model``'s likelihood on images x (N, D) in [0, 1].

    L is ``levels``, else the data set's ``levels``, else 2 when every value is 0 or 1, else None (real values;
    a discrete likelihood's own L where x lies on its grid). A discrete likelihood on data of other levels, or
    off its grid, is a :class:`DataError` (its log-probability would be of rounded values)."""
    if levels is None and not isinstance(data, (torch.Tensor, np.ndarray)):
        levels = getattr(data, "levels", None)
    if levels is None and _is_binary(x):
        levels = 2
    lik = getattr(model, "likelihood", None)
    want = getattr(lik, "levels", None)
    name = getattr(lik, "name", "") or type(lik).__name__
    if want is None:  # a density
        if dequantizes(model, levels):
            if not on_grid(x, levels):
                raise DataError(f"the data are said to have {levels} grey levels but are not on the grid k / "
                                f"{levels - 1}; give their true levels")
            return DEQUANTIZED, levels
        return DENSITY, levels
    if want == 2:  # a likelihood of binary pixels
        return (LOG_PROBABILITY, 2) if _is_binary(x) else (CROSS_ENTROPY, levels)
    if levels is None:
        levels = want if on_grid(x, want) else None
    if levels != want or not on_grid(x, want):
        have = f"{levels} grey levels" if levels is not None else "real values (not on its grid)"
        raise DataError(f"the {name} likelihood is a probability of {want} grey levels but the data have {have}; "
                        "evaluate it on the data it was trained on")
    return LOG_PROBABILITY, levels


def dequantize(x: torch.Tensor, levels: int, seed: int = 0) -> torch.Tensor:
    """Uniform dequantisation of images on the grid x = k / (L - 1): y = (k + u) / L, u ~ U[0, 1) per value,
    drawn on the CPU from a generator seeded with ``seed`` + :data:`DEQUANTIZATION_SEED_OFFSET` (the same y
    on every device and batch size). The bins [k / L, (k + 1) / L) partition [0, 1); each holds k / (L - 1)."""
    g = torch.Generator().manual_seed((int(seed) + DEQUANTIZATION_SEED_OFFSET) % 2**63)
    k = torch.round(x.detach().to("cpu", torch.float64) * (levels - 1))
    u = torch.rand(k.shape, generator=g, dtype=torch.float64)
    return ((k + u) / levels).to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)


def dequantization_nats(shape: tuple[int, ...], levels: int) -> float:
    """D log L: what a dequantised bound subtracts per example of ``shape`` (D values) on L grey levels."""
    return math.prod(shape) * math.log(levels)


def dequantizes(model: LatentVariableModel, levels: int | None) -> bool:
    """Whether ``model``'s figures on data of ``levels`` grey levels are dequantised bounds: a density likelihood
    (no ``levels`` of its own) on integer data of more than two levels."""
    return getattr(getattr(model, "likelihood", None), "levels", None) is None and levels is not None and levels > 2
