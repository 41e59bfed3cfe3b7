"""Timing torch.mm at one shape: the building block of the benchmarks' matrix-multiply limits."""

from __future__ import annotations

import time

import torch


def time_mm(m: int, k: int, n: int, reps: int = 200, warmup: int = 20, repeats: int = 5,
            budget: float | None = None) -> float:
    """Seconds for one (m x k) @ (k x n) product: best of ``repeats`` means over ``reps`` calls.

    With ``budget`` (seconds), ``reps`` and ``warmup`` are chosen so that the whole measurement takes about that
    long (at least 2 calls a repeat): for large shapes, where 200 calls would take minutes."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    if budget is not None:
        t0 = time.perf_counter()
        torch.mm(a, b)
        one = max(time.perf_counter() - t0, 1e-6)
        reps = max(2, min(reps, int(budget / repeats / one)))
        warmup = max(1, min(warmup, reps // 4))
    for _ in range(warmup):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best
