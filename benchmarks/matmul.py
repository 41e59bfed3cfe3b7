"""Timing torch.mm at one shape: the building block of the benchmarks' matrix-multiply limits."""

from __future__ import annotations

import time

import torch


def time_mm(m: int, k: int, n: int, reps: int = 200, warmup: int = 20, repeats: int = 5) -> float:
    """Seconds for one (m x k) @ (k x n) product: best of ``repeats`` means over ``reps`` calls."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(warmup):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best
