"""vaekit.threads: the OpenMP wait policy chosen before torch starts, from the tasks runnable at that moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from vaekit import threads

SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end:\n    pass\n"
SHOW = ("import json, os, sys; {first}from vaekit import threads; p = threads._PLAN; "
        "print(json.dumps(None if p is None else [p.busy, p.wait_policy, os.environ.get('OMP_WAIT_POLICY')]))")


def _plan_in_fresh_process(first: str = "", env: dict[str, str] | None = None):
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environ.update(env or {})
    out = subprocess.run([sys.executable, "-c", SHOW.format(first=first)], capture_output=True, text=True,
                         env=environ, check=True)
    return json.loads(out.stdout)


def test_quiet_machine_keeps_openmps_policy():
    assert threads.plan(cpus=2, busy=0, environ={}).wait_policy is None


def test_busy_machine_gets_the_passive_policy():
    p = threads.plan(cpus=2, busy=2, environ={})
    assert (p.cpus, p.busy, p.wait_policy) == (2, 2, "PASSIVE")


def test_a_policy_in_the_environment_is_kept():
    assert threads.plan(cpus=2, busy=3, environ={"OMP_WAIT_POLICY": "ACTIVE"}).wait_policy is None


def test_usable_cpus_follow_the_affinity_mask():
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this system")
    assert threads.usable_cpus() == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="needs /proc/loadavg (Linux)")
def test_spinning_competitors_are_seen_and_set_the_policy_before_torch():
    procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
    try:
        time.sleep(0.5)
        busy, policy, environ = _plan_in_fresh_process()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert busy >= 2
    assert policy == environ == "PASSIVE"


def test_nothing_is_set_when_torch_came_first_or_the_user_chose():
    assert _plan_in_fresh_process(first="import torch; ") is None
    busy, policy, environ = _plan_in_fresh_process(env={"OMP_WAIT_POLICY": "ACTIVE"})
    assert policy is None and environ == "ACTIVE"
