"""torchrun with 2 CPU processes (gloo): a DDP step equals the single-process step, and a
whole training run writes one set of files."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

import ddp_step
from vaekit import runtime as D

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@functools.cache
def ddp_steps() -> Path:
    """The folder of one torchrun launch of ddp_step.py (2 ranks), made once a test session: ddp.safetensors (the
    VAE after one DDP step) and vq.0.safetensors, vq.1.safetensors (each rank's VQ-VAE codebook after two DDP steps,
    read by test_distributed_vq.py). One launch for both: each torchrun start-up is three processes importing torch."""
    folder = Path(tempfile.mkdtemp(prefix="vaekit-ddp-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    ddp = torchrun(str(HERE / "ddp_step.py"), str(folder))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return folder


def test_one_ddp_step_equals_one_step_on_the_union():
    a = load_file(ddp_steps() / "ddp.safetensors")
    b = ddp_step.step(D.DistContext())  # the same step in this process, on all 2B rows
    assert a.keys() == b.keys()
    initial_moved = False
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    from vaekit.models import VAE

    init = VAE(shape=(1, 4, 4), latent=3, hidden=[12]).state_dict()
    initial_moved = any(not torch.equal(init[k], a[k]) for k in a)
    assert initial_moved  # the step did something


def test_torchrun_training_writes_one_set_of_files_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["-m", "vaekit", "train", "--dataset", "digits", "--out", str(out), "--hidden", "16",
            "--latent", "2", "--device", "cpu", "--batch-size", "50", "--json"]
    first = torchrun(*args, "--epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    results = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1 and results[0]["epochs"] == 2  # only rank 0 prints
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    names = sorted(p.name for p in out.iterdir())
    assert names == [".lock", ".vaekit-run", "checkpoint.safetensors", "config.json", "metrics.jsonl", "model.json",
                     "model.safetensors"]
    state = load_file(out / "checkpoint.safetensors")
    assert {"rng.torch.0", "rng.torch.1"} <= state.keys()
    second = torchrun(*args, "--epochs", "3", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
