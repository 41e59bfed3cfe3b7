"""One thread count for every contender of a benchmark: torch, XLA (JAX) and the process's cores.

torch takes it from ``torch.set_num_threads``. XLA's CPU backend sizes its thread pool from the process's CPU
affinity and has no thread-count setting of its own, so for fewer threads than the machine has cores the
process is restricted to that many cores (``os.sched_setaffinity``, which holds torch to the same cores), and
for one thread Eigen's multi-threading is also switched off (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``).
:func:`use_threads` must run before jax is first imported.
"""

from __future__ import annotations

import os
import sys


def use_threads(threads: int | None) -> int:
    """Give torch and XLA ``threads`` threads (None: as many as the process has cores); returns the count."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    threads = len(cores) if threads is None else max(1, int(threads))
    if "jax" in sys.modules:
        raise RuntimeError("use_threads must run before jax is imported")
    if threads < len(cores) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cores[:threads]))
    if threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import torch

    torch.set_num_threads(threads)
    return threads


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (None where the system has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None
