"""Time to quality: wall-clock seconds from start until the validation ELBO of a fresh run on
static binarized MNIST first passes -95 nats and then -90 nats.

The clock starts before the data is loaded and includes everything (loading, model
building, validation after every epoch, checkpoint writes). The run stops when the last
threshold is passed or the time budget is spent; the thresholds not reached are reported as
such, with the best validation ELBO seen.

usage: python benchmarks/bench_time_to_quality.py [--config configs/mnist-fast.toml]
       [--data-dir DATA] [--budget 900] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

THRESHOLDS = (-95.0, -90.0)


class Done(Exception):
    pass


def main() -> None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/mnist-fast.toml")
    ap.add_argument("--data-dir", default=os.environ.get("VAEKIT_DATA_DIR", "data/binarized_mnist"))
    ap.add_argument("--budget", type=float, default=900.0, help="seconds before giving up")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    from vaekit.config import read_config_file, resolve
    from vaekit.train import train

    cfg = resolve(read_config_file(args.config), {"data_dir": args.data_dir})
    reached: dict[float, dict] = {}
    best = {"valid_elbo": -float("inf"), "epoch": 0}

    def on_epoch(row: dict) -> None:
        now = time.perf_counter() - t_start
        if row["valid_elbo"] > best["valid_elbo"]:
            best.update(valid_elbo=row["valid_elbo"], epoch=row["epoch"], seconds=now)
        for thr in THRESHOLDS:
            if thr not in reached and row["valid_elbo"] > thr:
                reached[thr] = {"seconds": now, "epoch": row["epoch"], "valid_elbo": row["valid_elbo"]}
                print(f"valid ELBO {row['valid_elbo']:.2f} > {thr:g} after {now:.1f} s (epoch {row['epoch']})",
                      flush=True)
        if len(reached) == len(THRESHOLDS) or now > args.budget:
            raise Done

    with tempfile.TemporaryDirectory() as tmp:
        try:
            train(cfg, Path(tmp) / "run", progress=False, on_epoch=on_epoch)
        except Done:
            pass
    total = time.perf_counter() - t_start
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "config": args.config, "budget_seconds": args.budget, "total_seconds": total,
        "thresholds": {str(t): reached.get(t) for t in THRESHOLDS}, "best": best,
    }
    print(f"\nmachine: {result['machine']}; config {args.config}")
    for t in THRESHOLDS:
        r = reached.get(t)
        print(f"valid ELBO > {t:g}: " + (f"{r['seconds']:.1f} s (epoch {r['epoch']})" if r else
                                         f"not reached in {total:.0f} s"))
    print(f"best valid ELBO {best['valid_elbo']:.2f} at epoch {best['epoch']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
