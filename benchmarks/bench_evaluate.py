"""Throughput of the importance-sampled evaluation (log-weights per second) at the MNIST shape.

    .venv/bin/python benchmarks/bench_evaluate.py [--n 20] [--k 5000] [--threads 2] [--device cpu]

A 784-400-40 MLP VAE with a Bernoulli likelihood (random weights: the speed does not depend on them)
on n binary images with K importance samples each. Prints the evaluator's rate with the fast kernel
and with the generic likelihood, the rate of the decoder's matrix products alone (the ceiling), and
the projected time of the literature's protocol, K = 5000 over 10,000 test images (5e7 log-weights,
about 3.3e13 matmul FLOPs).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from vaekit.evaluation import evaluate_model, plan_chunks
from vaekit.models import VAE


def matmul_ceiling(model: VAE, rows: int, seconds: float = 2.0) -> float:
    """Decoder rows per second doing only the two matrix products (and the ReLU) on (rows, L) inputs."""
    lin1, lin2 = model.decoder[0], model.decoder[2]
    z = torch.randn(rows, model.latent)
    done, t0 = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - t0 < seconds:
            F.linear(torch.relu(F.linear(z, lin1.weight, lin1.bias)), lin2.weight, lin2.bias)
            done += rows
    return done / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = VAE(shape=(1, 28, 28), latent=40, hidden=[400]).eval().to(args.device)
    x = torch.bernoulli(torch.full((args.n, 784), 0.13))
    flops_per_row = 2 * (40 * 400 + 400 * 784)
    out = {"device": args.device, "threads": torch.get_num_threads(), "n": args.n, "k": args.k}
    evaluate_model(model, x[:2], k=min(args.k, 200), seed=0)  # warm-up
    for name, fast in (("fast", True), ("generic", False)):
        r = evaluate_model(model, x, k=args.k, seed=0, fast=fast)
        out[f"{name}_log_weights_per_s"] = round(r.log_weights_per_second)
        out[f"{name}_gflops"] = round(r.log_weights_per_second * flops_per_row / 1e9, 1)
        out[f"{name}_projected_minutes_10k_x_5000"] = round(5e7 / r.log_weights_per_second / 60, 2)
        out["batch_size"], out["k_chunk"] = r.batch_size, r.k_chunk
    if args.device == "cpu":
        b, kc = plan_chunks(model, args.n, args.k, 40)
        ceiling = matmul_ceiling(model, b * kc)
        out["matmul_only_rows_per_s"] = round(ceiling)
        out["matmul_only_gflops"] = round(ceiling * flops_per_row / 1e9, 1)
        out["fast_fraction_of_matmul"] = round(out["fast_log_weights_per_s"] / ceiling, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
