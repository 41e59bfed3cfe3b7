"""Training throughput: vaekit's trainer vs pythae's BaseTrainer vs a plain PyTorch loop,
and vs the matrix-multiply limit of this machine.

The same model everywhere: the 784-400-40 Bernoulli MLP VAE (one ReLU hidden layer of 400
units in encoder and decoder), batch 100, Adam (lr 1e-3), on static binarized MNIST, no
validation during the timed epochs. Each contender runs its epochs in turn, rounds
interleaved (A B C A B C ...) so that drift in the machine's speed hits all alike; the
figure quoted is the median seconds per epoch, and ratios are taken within a round.

The matrix-multiply limit: the training step's matrix products (forward, and backward for
the weights and the hidden activations) timed one by one with torch.mm at their exact shapes
(best of several repetitions), summed, times the steps of an epoch. It is what an epoch
would cost if nothing but the matrix products took time.

usage: python benchmarks/bench_train.py [--data-dir ../shared/data/binarized_mnist] [--epochs 2]
       [--rounds 3] [--threads N] [--json FILE]   (pythae: pip install -c constraints.txt -e '.[bench]')
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch
from torch import nn

from matmul import time_mm

D, H, L, B = 784, 400, 40, 100


def load_train(data_dir: str) -> torch.Tensor:
    from vaekit.data import load_dataset

    ds = load_dataset("binarized-mnist", data_dir=data_dir, download=False)
    return ds.train.reshape(-1, D).contiguous()


# -- contenders ---------------------------------------------------------------------------


def vaekit_epochs(x: torch.Tensor, epochs: int) -> list[float]:
    from vaekit.config import TrainConfig
    from vaekit.train import read_metrics, train

    ds = types.SimpleNamespace(train=x.reshape(-1, 1, 28, 28), valid=x[:0].reshape(0, 1, 28, 28),
                               test=x[:0].reshape(0, 1, 28, 28), shape=(1, 28, 28), binary=True, dynamic=False)
    cfg = TrainConfig(dataset="binarized-mnist", hidden=[H], latent=L, batch_size=B, lr=1e-3, epochs=epochs)
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
            trainer.train()
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data/binarized_mnist")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per round and contender")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-pythae", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = load_train(args.data_dir)
    limit = matmul_limit(x.shape[0])
    runs: dict[str, list[float]] = {"vaekit": [], "plain": [], "pythae": []}
    ratios: dict[str, list[float]] = {"pythae/vaekit": [], "plain/vaekit": [], "vaekit/limit": []}
    for r in range(args.rounds):
        v = statistics.median(vaekit_epochs(x, args.epochs))
        p = statistics.median(plain_epochs(x, args.epochs))
        runs["vaekit"].append(v)
        runs["plain"].append(p)
        ratios["plain/vaekit"].append(p / v)
        ratios["vaekit/limit"].append(v / limit["seconds_per_epoch"])
        if not args.skip_pythae:
            py = pythae_epochs(x, args.epochs)
            if py is not None:
                py_med = statistics.median(py)
                runs["pythae"].append(py_med)
                ratios["pythae/vaekit"].append(py_med / v)
        print(f"round {r + 1}: vaekit {v:.3f} s/epoch, plain loop {p:.3f}"
              + (f", pythae {runs['pythae'][-1]:.3f}" if runs["pythae"] else ""), flush=True)
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    rat = {k: statistics.median(v) for k, v in ratios.items() if v}
    result = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                         f"torch {torch.__version__}",
              "seconds_per_epoch": med, "ratios": rat, "matmul_limit": limit,
              "samples_per_second": {k: x.shape[0] / v for k, v in med.items()}}
    print(f"\nmachine: {result['machine']}")
    print(f"matrix-multiply limit: {limit['seconds_per_epoch']:.3f} s/epoch "
          f"({limit['flops_per_epoch'] / 1e9:.0f} GFLOP at {limit['gflops_per_second']:.0f} GFLOP/s)")
    for k, v in med.items():
        print(f"{k:>8}: {v:.3f} s/epoch  ({x.shape[0] / v:,.0f} samples/s)")
    for k, v in rat.items():
        print(f"{k:>14}: {v:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
