"""How vaekit uses the CPU on a machine it does not have to itself.

torch runs its CPU kernels in OpenMP parallel regions (GNU libgomp in the Linux wheels). By default a thread that
has finished its share of a region spins, waiting for the others and for the next region. On a quiet machine that
is the fastest choice; on a machine whose cores other processes also want (a busy laptop, a shared server, several
runs at once), the thread a region waits for is often not running, and a training step of a few milliseconds then
takes 4 to 10 times longer (``benchmarks/bench_contention.py`` measures it). With ``OMP_WAIT_POLICY=PASSIVE``
waiting threads sleep instead, which costs about 2x on a quiet machine and saves 2 to 5x on a loaded one.

So vaekit looks at the machine once, before torch starts its OpenMP runtime (which reads the policy once, when it
loads): if other processes are runnable at that moment (``/proc/loadavg``'s count of runnable tasks, an instant
reading, not the load average, which lags by a minute), it sets the passive policy; on a quiet machine it changes
nothing. This happens when ``vaekit`` is imported before torch (the ``vaekit`` command always does) and only where
the environment does not set ``OMP_WAIT_POLICY`` itself. A notebook that imported torch first keeps OpenMP's
default: on a shared machine start it with ``OMP_WAIT_POLICY=PASSIVE`` in the environment. The thread count stays
torch's (or ``--threads N``): under contention one thread with spinning measured about the same as two passive ones,
and a count chosen from the load would make a run's float rounding depend on what else ran when it started.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

#: The environment variable of OpenMP's wait policy, and the value vaekit sets on a busy machine.
WAIT_POLICY, PASSIVE = "OMP_WAIT_POLICY", "PASSIVE"


@dataclass(frozen=True)
class ThreadPlan:
    """What vaekit chose at import: the CPUs it may use, how many other tasks were runnable, and the wait policy it
    set (None: left as it was)."""

    cpus: int
    busy: int
    wait_policy: str | None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def runnable_elsewhere(readings: int = 3, pause: float = 0.005) -> int:
    """Tasks runnable now on the machine besides this one (the smallest of a few instant readings of
    ``/proc/loadavg``'s runnable count, minus this process); 0 where the system does not say."""
    fewest = None
    for i in range(readings):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                count = int(f.read().split()[3].split("/")[0]) - 1
        except (OSError, ValueError, IndexError):
            return 0
        fewest = count if fewest is None else min(fewest, count)
        if fewest <= 0:  # the smallest can only be 0 now: no pause on a quiet machine
            return 0
        if i + 1 < readings:
            time.sleep(pause)
    return fewest or 0


def plan(cpus: int | None = None, busy: int | None = None, environ: dict[str, str] | None = None) -> ThreadPlan:
    """The choice for ``cpus`` usable CPUs with ``busy`` other runnable tasks: a quiet machine keeps OpenMP's
    policy; a busy one gets the passive policy, unless ``environ`` sets one."""
    environ = os.environ if environ is None else environ
    cpus = usable_cpus() if cpus is None else cpus
    busy = runnable_elsewhere() if busy is None else busy
    policy = PASSIVE if busy > 0 and WAIT_POLICY not in environ else None
    return ThreadPlan(cpus, busy, policy)


_PLAN: ThreadPlan | None = None


def prepare() -> ThreadPlan | None:
    """Look at the machine and set the wait policy, once, before torch is imported (called by ``import vaekit``);
    None where torch was imported first (its OpenMP runtime has read the environment already)."""
    global _PLAN
    if _PLAN is None and "torch" not in sys.modules:
        _PLAN = plan()
        if _PLAN.wait_policy is not None:
            os.environ[WAIT_POLICY] = _PLAN.wait_policy
    return _PLAN
