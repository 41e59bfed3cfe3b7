"""Evaluation throughput: importance-sampled NLL with K = 5000, vaekit against pythae's
``get_nll``, on the same model weights and the same static binarized MNIST test images,
and against the matrix-multiply limit of this machine.

The model is the 784-400-40 Bernoulli MLP VAE; with ``--run RUN`` its trained weights are
used (they are copied into an identical pythae model), otherwise random weights (the speed
does not depend on them). Both estimate log p(x) = log (1/K) sum_k p(x, z_k) / q(z_k | x).
The two contenders run in turn, ``--rounds`` times, on ``--n`` test images spread over the
digit classes; the ratio is taken within each round and its median printed. Both NLL values
are printed too: they must agree within their Monte Carlo error.

The matrix-multiply limit: the FLOPs of the decoder (and encoder) products for n * K samples,
at the rate torch.mm reaches on those shapes (chunks of 100 examples x 50 samples).

usage: python benchmarks/bench_nll.py [--run RUN] [--n 40] [--k 5000] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from matmul import time_mm

D, H, L = 784, 400, 40


def test_images(data_dir: str, n: int) -> torch.Tensor:
    from vaekit.data import load_dataset

    ds = load_dataset("binarized-mnist", data_dir=data_dir, download=False, splits=("test",))
    x = ds.test.reshape(-1, D)
    idx = torch.linspace(0, x.shape[0] - 1, n).long()  # the test set is sorted by class: spread out
    return x[idx].contiguous()


def vaekit_model(run: str | None):
    from vaekit.models import VAE

    if run:
        return VAE.load(run).eval()
    torch.manual_seed(0)
    return VAE(shape=(1, 28, 28), latent=L, hidden=[H]).eval()


def pythae_twin(model):
    """A pythae VAE with the same weights as the vaekit 784-400-40 model."""
    from pythae_twin import pythae_vae

    return pythae_vae(model).eval()


def matmul_limit(n: int, k: int, rows: int = 5000) -> float:
    """Seconds the decoder's products for n*k samples take at torch.mm's rate (chunks of ``rows``)."""
    per_chunk = sum(time_mm(rows, k_, n_, reps=50, warmup=5, repeats=3) for k_, n_ in ((L, H), (H, D)))
    return per_chunk * n * k / rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a vaekit run directory with a trained 784-400-40 model")
    ap.add_argument("--data-dir", default="../shared/data/binarized_mnist")
    ap.add_argument("--n", type=int, default=40, help="test images")
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vaekit.evaluation import evaluate_model

    x = test_images(args.data_dir, args.n)
    model = vaekit_model(args.run)
    twin = pythae_twin(model)
    limit = matmul_limit(args.n, args.k)
    ours, theirs, ratios, nll_ours, nll_theirs = [], [], [], [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        res = evaluate_model(model, x, k=args.k, seed=r, per_example=False)
        t_ours = time.perf_counter() - t0
        torch.manual_seed(r)
        t0 = time.perf_counter()
        with torch.no_grad():  # despite its name, get_nll returns the mean log p(x) (negative)
            nll_p = -twin.get_nll(x.reshape(-1, 1, 28, 28), n_samples=args.k, batch_size=100)
        t_theirs = time.perf_counter() - t0
        ours.append(t_ours)
        theirs.append(t_theirs)
        ratios.append(t_theirs / t_ours)
        nll_ours.append(res.nll)
        nll_theirs.append(float(nll_p))
        print(f"round {r + 1}: vaekit {t_ours:.2f} s (NLL {res.nll:.3f}), pythae get_nll {t_theirs:.2f} s "
              f"(NLL {float(nll_p):.3f})", flush=True)
    samples = args.n * args.k
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "n": args.n, "k": args.k, "model": args.run or "random weights",
        "seconds": {"vaekit": statistics.median(ours), "pythae": statistics.median(theirs),
                    "matmul_limit": limit},
        "log_weights_per_second": {"vaekit": samples / statistics.median(ours),
                                   "pythae": samples / statistics.median(theirs)},
        "ratios": {"pythae/vaekit": statistics.median(ratios),
                   "vaekit/limit": statistics.median(ours) / limit},
        "nll": {"vaekit": statistics.mean(nll_ours), "pythae": statistics.mean(nll_theirs)},
        "projected_seconds_10k_test_images": statistics.median(ours) * 10000 / args.n,
    }
    print(f"\nmachine: {result['machine']}; {args.n} test images x K = {args.k}")
    print(f"vaekit {result['seconds']['vaekit']:.2f} s, pythae {result['seconds']['pythae']:.2f} s, "
          f"matmul limit {limit:.2f} s")
    rat = result["ratios"]
    print(f"pythae/vaekit: {rat['pythae/vaekit']:.1f}x;  vaekit/limit: {rat['vaekit/limit']:.2f}x")
    print(f"projected K={args.k} over 10,000 test images: {result['projected_seconds_10k_test_images']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
