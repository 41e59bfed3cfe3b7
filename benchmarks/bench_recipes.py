"""Cost of one training epoch for each recipe of the likelihood table (configs/quality/*.toml).

For every recipe: build its model for 28x28 binary images, time ``--steps`` optimiser steps of
the trainer's own loss (ELBO with the recipe's beta, or the IWAE bound with its k) on batches of
the recipe's size (random binary pixels: the cost does not depend on the values), and report
seconds per step, seconds per 50,000-image epoch, and the hours the recipe's schedule would take
at its full epoch count (an upper bound: early stopping usually ends it sooner). Validation and
checkpoints are not counted. Used to say what compute the table's rows need.

usage: python benchmarks/bench_recipes.py [--steps 10] [--threads 1] [--device cpu|cuda] [--json FILE] [recipe.toml ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

TRAIN_IMAGES = 50_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_recipe(path: Path, steps: int, device: torch.device, warmup: int = 2) -> dict:
    from vaekit.config import read_config_file, resolve
    from vaekit.train import LossModule, model_for

    cfg = resolve(read_config_file(str(path)), {})
    model = model_for(cfg, (1, 28, 28), True).to(device)
    loss_module = LossModule(model, cfg.objective, cfg.k)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((cfg.batch_size, 1, 28, 28), 0.13), generator=gen).to(device)  # as the trainer

    def step() -> None:
        loss, _, _ = loss_module(x, 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    per_epoch = per_step * TRAIN_IMAGES / cfg.batch_size
    return {"recipe": path.name, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds_per_step": per_step, "seconds_per_epoch": per_epoch,
            "hours_full_schedule": per_epoch * cfg.epochs / 3600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", help="recipe files (default: configs/quality/*.toml)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = [Path(p) for p in args.recipes] or sorted(Path("configs/quality").glob("*.toml"))
    device = torch.device(args.device)
    rows = [time_recipe(p, args.steps, device) for p in paths]
    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    print(f"machine: {where}, torch {torch.__version__}, {args.threads} thread(s), {args.steps} steps per recipe")
    print(f"{'recipe':28s} {'params':>9s} {'s/step':>8s} {'s/epoch':>8s} {'epochs':>7s} {'hours (full)':>12s}")
    for r in rows:
        print(f"{r['recipe']:28s} {r['parameters']:9d} {r['seconds_per_step']:8.3f} {r['seconds_per_epoch']:8.1f} "
              f"{r['epochs']:7d} {r['hours_full_schedule']:12.1f}")
    if args.json:
        result = {"threads": args.threads, "steps": args.steps, "device": where, "rows": rows}
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
