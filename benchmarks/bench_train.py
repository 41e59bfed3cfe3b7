"""Training throughput: vaekit's trainer against JAX + optax (the whole epoch under ``lax.scan``, and a jit'd
step called from Python), a plain PyTorch loop, pythae's BaseTrainer, and the matrix-multiply limit.

The same model everywhere: the 784-400-40 Bernoulli MLP VAE (one ReLU hidden layer of 400 units in encoder and
decoder), batch 100, Adam (lr 1e-3), one epoch = the 50,000 static binarized MNIST training images, no
validation during the timed epochs. Each contender runs ``--epochs`` epochs in turn, rounds interleaved
(A B C A B C ...) so that drift in the machine's speed hits all alike; the figure quoted is the median seconds
per epoch, and every ratio is taken within a round (then the median over rounds). JAX is compiled once before
the rounds (its compile time is reported, not counted). vaekit, the plain loop and pythae start fresh in every round
(a new ``train``, a new model and optimizer); with ``--warmup W`` (default 1) each runs W more epochs first, which are
not counted either (the allocation and first touch of its buffers; JAX's compile does the same for JAX).

Threads: ``--threads N`` gives torch and XLA the same N (see ``benchmarks/threads.py``: XLA takes its thread
count from the process's CPU affinity, so N = 1 restricts the process to one core). The machine's load average
is recorded with the results: on a shared machine the absolute times are noisy, the within-round ratios less so.

The matrix-multiply limit: the training step's matrix products (forward, and backward for the weights and the
hidden activations) timed one by one with torch.mm at their exact shapes (best of several repetitions),
summed, times the steps of an epoch. It is what an epoch would cost if nothing but the matrix products took
time.

usage: python benchmarks/bench_train.py [--data-dir DATA] [--epochs 2] [--warmup 1]
       [--rounds 3] [--threads 2] [--skip-pythae] [--skip-jax] [--json FILE]
       (pythae, jax, optax: pip install -c constraints.txt -e '.[bench]')
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

from matmul import time_mm
from threads import load_average, use_threads

D, H, L, B = 784, 400, 40, 100


def load_train(data_dir: str) -> torch.Tensor:
    from vaekit.data import load_dataset

    ds = load_dataset("binarized-mnist", data_dir=data_dir, download=False)
    return ds.train.reshape(-1, D).contiguous()


# -- contenders ---------------------------------------------------------------------------


def vaekit_epochs(x: torch.Tensor, epochs: int, **settings) -> list[float]:
    """Seconds of each epoch of ``vaekit.train`` (``settings``: further TrainConfig fields, e.g. fast_step)."""
    from vaekit.config import TrainConfig
    from vaekit.train import read_metrics, train

    ds = types.SimpleNamespace(train=x.reshape(-1, 1, 28, 28), valid=x[:0].reshape(0, 1, 28, 28),
                               test=x[:0].reshape(0, 1, 28, 28), shape=(1, 28, 28), binary=True, dynamic=False)
    cfg = TrainConfig(dataset="binarized-mnist", hidden=[H], latent=L, batch_size=B, lr=1e-3, epochs=epochs,
                      **settings)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", dataset=ds, progress=False)
        return [row["seconds"] for row in read_metrics(Path(tmp) / "run")]


class PlainVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 2 * L))
        self.dec = nn.Sequential(nn.Linear(L, H), nn.ReLU(), nn.Linear(H, D))

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, -1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.dec(z)
        rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
        return (rec + kl).mean()


def plain_epochs(x: torch.Tensor, epochs: int) -> list[float]:
    """What most users write: TensorDataset + DataLoader(shuffle=True) + Adam."""
    torch.manual_seed(0)
    model = PlainVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=B, shuffle=True)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for (xb,) in loader:
            loss = model(xb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def pythae_epochs(x: torch.Tensor, epochs: int) -> list[float] | None:
    try:
        from pythae.data.datasets import BaseDataset
        from pythae.trainers import BaseTrainer, BaseTrainerConfig

        from pythae_twin import pythae_vae
    except ImportError:
        return None

    import logging

    logging.getLogger("pythae").setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = pythae_vae()
    data = BaseDataset(x.reshape(-1, 1, 28, 28), torch.zeros(x.shape[0]))
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(epochs):  # one-epoch trainings, so that each epoch is timed on its own
            cfg = BaseTrainerConfig(output_dir=tmp, per_device_train_batch_size=B, num_epochs=1,
                                    learning_rate=1e-3, no_cuda=True)
            trainer = BaseTrainer(model=model, train_dataset=data, training_config=cfg)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                trainer.train()  # its progress bars and log lines
            times.append(time.perf_counter() - t0)
    return times


# -- the matrix-multiply limit ----------------------------------------------------------------


def matmul_shapes(batch: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product in one training step of the 784-400-40 VAE."""
    fwd = [(batch, D, H), (batch, H, 2 * L), (batch, L, H), (batch, H, D)]
    shapes = list(fwd)
    for m, k, n in fwd:
        shapes.append((k, m, n))  # weight gradient: X^T dY
    # input gradients: dY W^T for every layer but the first (x needs no gradient)
    for m, k, n in fwd[1:]:
        shapes.append((m, n, k))
    return shapes


def matmul_limit(n_train: int, batch: int = B) -> dict[str, float]:
    shapes = matmul_shapes(batch)
    per_step = sum(time_mm(*s) for s in shapes)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    steps = -(-n_train // batch)
    return {"seconds_per_epoch": per_step * steps, "flops_per_epoch": flops * steps,
            "gflops_per_second": flops / per_step / 1e9}


class JaxContender:
    """The JAX + optax twin (``jax_twin.py``), compiled once; each call trains ``epochs`` more epochs."""

    def __init__(self, x: torch.Tensor):
        import jax_twin

        self.trainer = jax_twin.Trainer(x.numpy())
        self.compile_seconds = self.trainer.compile()
        self.version = jax_twin.version()

    def scan_epochs(self, epochs: int) -> list[float]:
        return [_timed(self.trainer.epoch_scan) for _ in range(epochs)]

    def loop_epochs(self, epochs: int) -> list[float]:
        return [_timed(self.trainer.epoch_loop) for _ in range(epochs)]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


CONTENDERS = ("vaekit", "jax-scan", "jax-loop", "plain", "pythae")
RATIOS = (("vaekit", "jax-scan"), ("vaekit", "jax-loop"), ("vaekit", "limit"), ("jax-scan", "limit"),
          ("plain", "vaekit"), ("pythae", "vaekit"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("VAEKIT_DATA_DIR", "data/binarized_mnist"))
    ap.add_argument("--epochs", type=int, default=2, help="epochs per round and contender")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted first epochs of each fresh run (default 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="threads for torch and XLA alike (default 2)")
    ap.add_argument("--skip-pythae", action="store_true")
    ap.add_argument("--skip-jax", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    threads = use_threads(args.threads)
    load_before = load_average()
    x = load_train(args.data_dir)
    jax = None
    if not args.skip_jax:
        try:
            jax = JaxContender(x)
        except ImportError:
            print("jax / optax not installed: JAX contenders skipped (pip install -c constraints.txt -e '.[bench]')")
    runs: dict[str, list[float]] = {k: [] for k in (*CONTENDERS, "limit")}
    limits = []
    ratios: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in RATIOS}
    for r in range(args.rounds):
        limits.append(matmul_limit(x.shape[0]))  # in every round, like the contenders: the same drift
        w = args.warmup
        this = {"vaekit": statistics.median(vaekit_epochs(x, w + args.epochs)[w:])}
        if jax is not None:
            this["jax-scan"] = statistics.median(jax.scan_epochs(args.epochs))
            this["jax-loop"] = statistics.median(jax.loop_epochs(args.epochs))
        this["plain"] = statistics.median(plain_epochs(x, w + args.epochs)[w:])
        if not args.skip_pythae:
            py = pythae_epochs(x, w + args.epochs)
            if py is not None:
                this["pythae"] = statistics.median(py[w:])
        this["limit"] = limits[-1]["seconds_per_epoch"]
        for k, v in this.items():
            runs[k].append(v)
        for a, b in RATIOS:
            if a in this and b in this:
                ratios[f"{a}/{b}"].append(this[a] / this[b])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in this.items()) + " s/epoch", flush=True)
    limit = {key: statistics.median(lim[key] for lim in limits) for key in limits[0]}
    med = {k: statistics.median(v) for k, v in runs.items() if v and k != "limit"}
    rat = {k: statistics.median(v) for k, v in ratios.items() if v}
    result = {"machine": f"{platform.processor() or platform.machine()}, {threads} threads, "
                         f"torch {torch.__version__}" + (f", {jax.version}" if jax else ""),
              "threads": threads, "epochs_per_round": args.epochs, "warmup_epochs": args.warmup, "rounds": args.rounds,
              "load_average": {"before": load_before, "after": load_average()},
              "seconds_per_epoch": med, "ratios": rat, "ratios_per_round": {k: v for k, v in ratios.items() if v},
              "seconds_per_epoch_per_round": {k: v for k, v in runs.items() if v},
              "matmul_limit": limit, "samples_per_second": {k: x.shape[0] / v for k, v in med.items()},
              "jax_compile_seconds": jax.compile_seconds if jax else None}
    print(f"\nmachine: {result['machine']}; load average before {load_before}, after {load_average()}")
    print(f"matrix-multiply limit: {limit['seconds_per_epoch']:.3f} s/epoch "
          f"({limit['flops_per_epoch'] / 1e9:.0f} GFLOP at {limit['gflops_per_second']:.0f} GFLOP/s)")
    for k, v in med.items():
        print(f"{k:>9}: {v:.3f} s/epoch  ({x.shape[0] / v:,.0f} samples/s)")
    for k, v in rat.items():
        print(f"{k:>17}: {v:.2f}x")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
