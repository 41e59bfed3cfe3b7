"""Data given in Python to :func:`vaekit.fit` and :func:`vaekit.evaluate`: a tensor or array, an ``(x, y)`` pair of
examples and labels, a map-style ``torch.utils.data.Dataset`` or a ``DataLoader`` (its ``dataset``), checked and held
in memory. Each rule below is refused in one :class:`~vaekit.errors.DataError` naming the argument (``train``,
``valid``, ``x``), before any work:

* numbers only: strings, Python objects and complex values are refused; integers and booleans are taken by value
  (0 -> 0.0, 255 -> 255.0, never rescaled, so that 0/1 integers stay binary pixels and 0..255 is caught by the
  likelihood's check, which asks for ``x / 255``);
* values that exist: a tensor on the meta device (shapes, no values) is refused, and so are NaN and infinities;
* a tensor that requires grad is detached (the data are not trained);
* at least one example, of at least one value: shape (N, ...) with N >= 1;
* a ``Dataset``'s items are a tensor (or array) or an ``(x, y)`` pair; a ``DataLoader`` gives its ``dataset`` (its
  batches, order and workers are vaekit's own business). The items are stacked into one float32 tensor after a
  check that N x D x 4 bytes fit the memory budget (:func:`vaekit.resources.memory_budget`);
* labels are whole numbers >= 0, one per example (NaN, fractions, negative values and strings are refused).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from vaekit.errors import DataError
from vaekit.resources import BUDGET_SOURCE, gib, memory_budget


def examples(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, labels or None) of ``data`` given as the argument ``what``: a tensor or array (N, ...), an ``(x, y)``
    pair, a map-style ``torch.utils.data.Dataset`` of such items, or a ``DataLoader`` over one (the module
    docstring has the rules). x is floating point (integers become float32 by value), detached, N >= 1."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

    if isinstance(data, DataLoader):
        data = data.dataset
        what = f"{what} (a DataLoader's dataset)"
    if isinstance(data, IterableDataset):
        raise DataError(f"{what} is an IterableDataset, which has no length to hold in memory; give a map-style "
                        "Dataset (with __len__ and __getitem__), or the examples as one tensor")
    if isinstance(data, TensorDataset):
        data = tuple(data.tensors)
        if len(data) == 1:
            return values(data[0], what), None
    elif isinstance(data, Dataset):
        return _stacked(data, what)
    if isinstance(data, (tuple, list)) and len(data) == 2 and not _is_number(data[0]):
        x = values(data[0], what)
        return x, labels(data[1], f"the labels of {what}", x.shape[0])
    if isinstance(data, (tuple, list)):
        raise DataError(f"{what} must be a tensor or array (N, ...), an (x, y) pair of examples and labels, or a "
                        f"torch Dataset or DataLoader; got a {type(data).__name__} of {len(data)} items")
    return values(data, what), None


def values(data: Any, what: str) -> torch.Tensor:
    """``data`` (a tensor or array of examples (N, ...)) as a floating-point tensor, checked as the module says."""
    if isinstance(data, np.ndarray):
        if data.dtype.kind not in "biuf":
            raise DataError(f"{what} must hold numbers; got a numpy array of {_kind(data.dtype)} (dtype {data.dtype})")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise DataError(f"{what} must be a tensor or array of examples (N, C, H, W), an (x, y) pair, a torch "
                        f"Dataset or DataLoader, or a vaekit data set; got a {type(data).__name__}")
    if data.is_meta:
        raise DataError(f"{what} is a tensor on the meta device, which has a shape but no values; give the data")
    if data.is_complex():
        raise DataError(f"{what} holds complex numbers; give real values")
    if data.requires_grad:
        data = data.detach()
    if data.dim() < 2 or data.shape[0] == 0 or data[0].numel() == 0:
        raise DataError(f"{what} must be a batch of examples (N, C, H, W) or (N, D) with N >= 1 and at least one "
                        f"value each; got shape {tuple(data.shape)}")
    if not data.is_floating_point():
        data = data.float()  # integers and booleans by value, never rescaled
    elif data.dtype in (torch.float16, torch.bfloat16):
        data = data.float()
    if not bool(torch.isfinite(data).all()):
        bad = int((~torch.isfinite(data)).sum())
        raise DataError(f"{what} holds {bad} NaN or infinite values; give finite numbers")
    return data


def labels(y: Any, what: str, n: int) -> torch.Tensor:
    """Labels ``y`` (N,) as int64: whole numbers >= 0, one for each of the ``n`` examples."""
    if isinstance(y, np.ndarray):
        if y.dtype.kind not in "biuf":
            raise DataError(f"{what} must be whole numbers (class indices 0, 1, ...); got a numpy array of "
                            f"{_kind(y.dtype)} (dtype {y.dtype})")
        y = torch.from_numpy(np.ascontiguousarray(y))
    try:
        y = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"{what} must be whole numbers (class indices 0, 1, ...); got a {type(y).__name__}") from None
    if y.is_meta or y.is_complex():
        raise DataError(f"{what} must be whole numbers (class indices 0, 1, ...) with values")
    y = y.detach().reshape(-1) if y.dim() <= 1 else y.detach()
    if y.shape != (n,):
        raise DataError(f"{what} must be (N,) = ({n},), one class index per example; got shape {tuple(y.shape)}")
    if y.is_floating_point():
        if not bool(torch.isfinite(y).all()):
            raise DataError(f"{what} hold {int((~torch.isfinite(y)).sum())} NaN or infinite values; give class "
                            "indices 0, 1, ...")
        if not bool((y == y.round()).all()):
            raise DataError(f"{what} must be whole numbers (class indices 0, 1, ...); got fractions")
    if n and int(y.min()) < 0:
        raise DataError(f"{what} must be class indices 0, 1, ...; got {int(y.min())}")
    return y.long()


def check_classes(y: torch.Tensor | None, classes: int, what: str) -> None:
    """Refuse labels ``y`` outside 0..``classes`` - 1 (the classes a conditional model was built for), naming them."""
    if y is not None and classes and y.numel() and int(y.max()) >= classes:
        raise DataError(f"{what} must be 0..{classes - 1}, the classes the model was built for (condition="
                        f"{classes}); got {int(y.max())}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(dtype: np.dtype) -> str:
    return {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers", "M": "dates",
            "m": "time spans", "V": "records"}.get(dtype.kind, dtype.kind)


def _stacked(data: Any, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The items of a map-style Dataset stacked into (x, labels or None), after the memory check."""
    try:
        n = len(data)
    except TypeError:
        raise DataError(f"{what} is a Dataset without a length; give a map-style Dataset (__len__ and "
                        "__getitem__), or the examples as one tensor") from None
    if n == 0:
        raise DataError(f"{what} is an empty Dataset: no examples")
    first = _item(data, 0, what)
    x0 = values(first[0].unsqueeze(0) if isinstance(first[0], torch.Tensor) else np.asarray(first[0])[None],
                f"item 0 of {what}")
    need, budget = n * x0[0].numel() * 4, memory_budget()
    if need > budget:
        raise DataError(f"{what} is a Dataset of {n:,} examples of shape {tuple(x0.shape[1:])}, which needs "
                        f"{gib(need)} to hold in memory, more than the memory budget of {gib(budget)} "
                        f"({BUDGET_SOURCE}); vaekit trains and evaluates on data held in memory: give a "
                        "torch.utils.data.Subset of it")
    xs, ys = [x0[0].float()], [first[1]]
    for i in range(1, n):
        x, y = _item(data, i, what)
        xs.append(torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float())
        ys.append(y)
        if tuple(xs[-1].shape) != tuple(xs[0].shape):
            raise DataError(f"item {i} of {what} has shape {tuple(xs[-1].shape)}, item 0 {tuple(xs[0].shape)}; "
                            "every example must have the same shape")
    x = values(torch.stack(xs), what)
    if all(y is None for y in ys):
        return x, None
    if any(y is None for y in ys):
        raise DataError(f"{what} gives labels for some items and not for others; give (x, y) for every item")
    return x, labels(torch.tensor([_scalar(y, what) for y in ys], dtype=torch.float64), f"the labels of {what}", n)


def _item(data: Any, i: int, what: str) -> tuple[Any, Any]:
    """(x, y or None) of item ``i``: a tensor or array, or an (x, y) pair."""
    item = data[i]
    if isinstance(item, (tuple, list)):
        if len(item) == 1:
            return item[0], None
        if len(item) == 2:
            return item[0], item[1]
        raise DataError(f"item {i} of {what} has {len(item)} parts; an item is x or an (x, y) pair")
    if isinstance(item, (torch.Tensor, np.ndarray)):
        return item, None
    raise DataError(f"item {i} of {what} is a {type(item).__name__}; an item is a tensor (or array) x or an "
                    "(x, y) pair")


def _scalar(y: Any, what: str) -> float:
    value = y.item() if isinstance(y, (torch.Tensor, np.ndarray)) and math.prod(np.shape(y)) == 1 else y
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"the labels of {what} must be whole numbers (class indices 0, 1, ...); got "
                        f"{type(value).__name__}")
    return float(value)
