"""Run ``vaekit ARGV`` with a SIGKILL injected at a chosen point (for test_kill_resume.py).

    python tests/reliability/kill_runner.py train --dataset digits ... --out RUN

Environment:

- ``VAEKIT_KILL_WRITE=NAME:N:half``: during the N-th atomic write of a file called NAME by this
  process, put half of the bytes in the temporary file, fsync it, and die by SIGKILL (as a crash
  in the middle of ``vaekit.io.checkpoint.atomic_write_bytes``).
- ``VAEKIT_KILL_WRITE=NAME:N:rename``: the temporary file is complete, the process dies just
  before renaming it over NAME.
- ``VAEKIT_KILL_STEP=N``: die by SIGKILL at the N-th optimisation step (``loss.backward()``) of
  this process, in the middle of an epoch.

Without these variables it is plain ``vaekit``; the parent may still kill it at any moment.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import torch

from vaekit.cli import main
from vaekit.io import checkpoint
from vaekit.models import persistence


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def hook_writes(spec: str) -> None:
    name, nth, how = spec.split(":")
    real = checkpoint.atomic_write_bytes
    seen = {"n": 0}

    def atomic_write_bytes(path, data):
        path = Path(path)
        if path.name == name:
            seen["n"] += 1
            if seen["n"] == int(nth):
                if how == "half":
                    fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                    os.write(fd, data[: len(data) // 2])
                    os.fsync(fd)
                    die()
                real_replace = os.replace

                def replace(src, dst):
                    if Path(dst).name == name:
                        die()
                    real_replace(src, dst)

                os.replace = replace
        return real(path, data)

    checkpoint.atomic_write_bytes = atomic_write_bytes
    persistence.atomic_write_bytes = atomic_write_bytes  # save_model's own reference (model.safetensors, model.json)


def hook_steps(nth: int) -> None:
    real = torch.Tensor.backward
    seen = {"n": 0}

    def backward(self, *args, **kwargs):
        seen["n"] += 1
        if seen["n"] == nth:
            die()
        return real(self, *args, **kwargs)

    torch.Tensor.backward = backward


if __name__ == "__main__":
    if os.environ.get("VAEKIT_KILL_WRITE"):
        hook_writes(os.environ["VAEKIT_KILL_WRITE"])
    if os.environ.get("VAEKIT_KILL_STEP"):
        hook_steps(int(os.environ["VAEKIT_KILL_STEP"]))
    raise SystemExit(main(sys.argv[1:]))
