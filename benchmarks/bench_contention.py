"""Training under contention: vaekit's epoch, a plain PyTorch loop and JAX's ``lax.scan`` epoch while CPU-bound
competitor processes share the machine, beside vaekit's quiet epoch.

    python benchmarks/bench_contention.py [--data-dir DATA] [--competitors N]
        [--rounds 3] [--json FILE]

The model of every contender: the 784-400-40 Bernoulli MLP VAE, batch 100, Adam (lr 1e-3), one epoch of the 50,000
static binarized MNIST training images. Each contender is a fresh process with nothing set by hand, so that it runs
with the threading its own defaults choose (that is what is measured):

- ``vaekit-cli``: ``vaekit train`` (its epoch time from the run's metrics; it includes the forward pass over the
  10,000 validation images, which the others do not have);
- ``vaekit-fit``: :func:`vaekit.fit` from a script (no validation split);
- ``torch``: the plain PyTorch loop most users write (DataLoader + ``torch.optim.Adam``), torch's defaults;
- ``torch-1``: the same with ``torch.set_num_threads(1)``, the by-hand remedy;
- ``jax-scan``: the JAX + optax twin (``jax_twin.py``), the whole epoch one jit'd ``lax.scan`` (compiled before the
  timed epoch, compile not counted), XLA's own thread pool.

Competitors: ``--competitors`` Python processes that spin on the CPU (default: one per CPU this process may use),
each bounded in time and stopped by the script. A round times ``vaekit-cli``, ``vaekit-fit`` and ``jax-scan`` with
no competitor running (JAX's own quiet epoch says how much any contender slows down), then starts the competitors
and times every contender in turn, then stops them; rounds repeat, and every figure is the median over rounds
(ratios taken within a round). Each worker also reports the cores it got while timed (its CPU seconds, all
threads, over the wall seconds; not for the CLI, a process of its own): a contender whose epoch is slow because it got
less CPU shows fewer cores; one that wastes what it gets (spinning) shows as many cores as quiet and a slow epoch.
The load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from threads import load_average

HERE = Path(__file__).resolve().parent
CONTENDERS = ("vaekit-cli", "vaekit-fit", "torch", "torch-1", "jax-scan")
QUIET = ("vaekit-cli", "vaekit-fit", "jax-scan")
THREAD_SETTINGS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "VAEKIT_THREADS")
SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


class Cores:
    """The CPU this process got over a block: its CPU seconds (all threads) / wall seconds, in cores."""

    def __enter__(self) -> Cores:
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cores = (time.process_time() - self.cpu) / (time.perf_counter() - self.wall)


def _worker_fit(data_dir: str) -> tuple[float, float]:
    import vaekit
    from vaekit.data import load_dataset

    x = load_dataset("binarized-mnist", data_dir=data_dir, download=False).train
    with tempfile.TemporaryDirectory() as tmp:
        model = vaekit.VAE(latent=40, shape=(1, 28, 28), arch="mlp", hidden=[400])
        with Cores() as got:
            vaekit.fit(model, x, out=Path(tmp) / "run", epochs=1, batch_size=100, lr=1e-3, progress=False)
        return json.loads((Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()[0])["seconds"], got.cores


def _worker_torch(data_dir: str, threads: int | None) -> tuple[float, float]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from bench_train import load_train, plain_epochs

    x = load_train(data_dir)
    with Cores() as got:
        seconds = plain_epochs(x, 1)[0]
    return seconds, got.cores


def _worker_jax(data_dir: str) -> tuple[float, float]:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax_twin
    from bench_train import load_train

    trainer = jax_twin.Trainer(load_train(data_dir).numpy())
    trainer.compile()
    with Cores() as got:
        t0 = time.perf_counter()
        trainer.epoch_scan()
        seconds = time.perf_counter() - t0
    return seconds, got.cores


def worker(name: str, data_dir: str) -> tuple[float, float]:
    """One epoch of contender ``name`` in this (fresh) process: its seconds, and the cores it got meanwhile."""
    if name == "vaekit-fit":
        return _worker_fit(data_dir)
    if name in ("torch", "torch-1"):
        return _worker_torch(data_dir, 1 if name == "torch-1" else None)
    if name == "jax-scan":
        return _worker_jax(data_dir)
    raise ValueError(name)


def _vaekit_cli(data_dir: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subprocess.run([sys.executable, "-m", "vaekit", "train", "--dataset", "binarized-mnist",
                        "--data-dir", data_dir, "--hidden", "400", "--latent", "40", "--batch-size", "100",
                        "--lr", "1e-3", "--epochs", "1", "--out", str(run), "--quiet"], check=True,
                       stdout=subprocess.DEVNULL, env=_clean_env())
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["seconds"]


def _clean_env() -> dict[str, str]:
    """This environment without the threading settings a user may have made by hand."""
    return {k: v for k, v in os.environ.items() if k not in THREAD_SETTINGS}


def timed(name: str, data_dir: str) -> tuple[float, float | None]:
    """Seconds of one epoch of ``name``, in a fresh process, and the cores it got meanwhile (None for the CLI)."""
    if name == "vaekit-cli":
        return _vaekit_cli(data_dir), None
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", name, "--data-dir", data_dir],
                          check=True, capture_output=True, text=True, env=_clean_env(), cwd=HERE)
    seconds, cores = done.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(cores)


class Competitors:
    """``n`` CPU-bound processes, each ending by itself after ``seconds`` and stopped on leaving the block."""

    def __init__(self, n: int, seconds: float):
        self.n, self.seconds, self.procs = n, seconds, []

    def __enter__(self) -> Competitors:
        code = SPIN.format(seconds=self.seconds)
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.n)]
        time.sleep(1.0)  # let them reach the CPU
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()


def one_round(data_dir: str, competitors: int, contenders: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(seconds, cores) of each contender, quiet where it is in QUIET, then with the competitors running."""
    row, cores = {}, {}

    def put(key: str, name: str) -> None:
        row[key], got = timed(name, data_dir)
        if got is not None:
            cores[key] = got

    for name in QUIET:
        if name in contenders:
            put(f"{name} quiet", name)
    with Competitors(competitors, seconds=900):
        for name in contenders:
            put(name, name)
    return row, cores


def summarise(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds per figure and the within-round ratios (median over rounds)."""
    out = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    for name in QUIET:
        if f"{name} quiet" in rounds[0]:
            out[f"{name} contended / quiet"] = statistics.median(r[name] / r[f"{name} quiet"] for r in rounds)
            if "jax-scan" in rounds[0] and name != "jax-scan":
                out[f"{name} / jax-scan (contended)"] = statistics.median(r[name] / r["jax-scan"] for r in rounds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "binarized_mnist"))
    ap.add_argument("--competitors", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(*worker(args.worker, args.data_dir))
        return
    contenders = args.contenders.split(",")
    before = load_average()
    rounds = []
    cores = []
    for r in range(args.rounds):
        row, got = one_round(args.data_dir, args.competitors, contenders)
        rounds.append(row)
        cores.append(got)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} s" + (f" ({got[k]:.2f} cores)" if k in got else "")
                                            for k, v in row.items()), flush=True)
    result = {"competitors": args.competitors, "cpus": len(os.sched_getaffinity(0)), "rounds": rounds,
              "median": summarise(rounds), "cores": cores,
              "median_cores": {k: statistics.median(c[k] for c in cores) for k in cores[0]},
              "load_average_before": before, "load_average_after": load_average()}
    for key, value in result["median"].items():
        print(f"{key}: {value:.2f}")
    print(f"load average before {before}, after {result['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
