"""How training and evaluation time grow: epoch time against batch size, hidden width and threads, and the
importance-sampled evaluation against K, each next to its matrix-multiply limit.

Training: the trainer's own step (``vaekit.train``'s loss module, step function and batch gathering, with the
fused Adam update) on the 784-H-40 Bernoulli MLP VAE, run for a fraction of an epoch (after a few warm-up steps,
as many steps as fit in about ``--seconds`` seconds) and scaled to one epoch of 50,000 images; validation and
checkpoints are not counted. Batch sizes 20..1000 at hidden width 400, widths 100..2000 at batch 100, each at 1
and 2 threads. The limit of a point: the step's matrix products (forward; backward for the weights and the
hidden activations) timed alone with torch.mm at their shapes, times the steps of an epoch. Random binary
images: the cost does not depend on the pixel values.

Evaluation: ``evaluate_model`` (ELBO surgery off) on ``--n`` test images for K = 100..20,000 at 2 threads, against
the decoder's products for n * K codes (chunks of 4096 codes, vaekit's chunk on the CPU). Random weights: the
speed does not depend on them.

The time vaekit spends beyond the limit is per-step work that does not grow with the matrix sizes (Python,
dispatch, small element-wise kernels, the optimizer's pass over the weights), so the ratio falls as the batch
or the width grows: the knee is where the matrix products start to dominate.

usage: python benchmarks/bench_scaling.py [--seconds 0.6] [--n 10] [--json benchmarks/results/scaling.json]
       [--plots docs/figures]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from matmul import time_mm
from threads import load_average

D, L, N_TRAIN = 784, 40, 50_000
BATCHES = (20, 50, 100, 200, 500, 1000)
WIDTHS = (100, 200, 400, 800, 1600, 2000)
KS = (100, 500, 1000, 2000, 5000, 10_000, 20_000)


def step_shapes(batch: int, hidden: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of every matrix product of one training step of the 784-hidden-40 VAE."""
    fwd = [(batch, D, hidden), (batch, hidden, 2 * L), (batch, L, hidden), (batch, hidden, D)]
    return fwd + [(k, m, n) for m, k, n in fwd] + [(m, n, k) for m, k, n in fwd[1:]]


def train_point(batch: int, hidden: int, seconds: float) -> dict:
    """Seconds per epoch of the trainer's step, and the limit, for one (batch, hidden)."""
    from vaekit import runtime
    from vaekit.config import TrainConfig
    from vaekit.train import LossModule, _BatchBuffer, _fused_if_supported, _make_step, model_for

    cfg = TrainConfig(dataset="binarized-mnist", hidden=[hidden], latent=L, batch_size=batch, lr=1e-3)
    torch.manual_seed(0)
    model = model_for(cfg, (1, 28, 28), True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **_fused_if_supported(torch.device("cpu")))
    module = LossModule(model, "elbo", 1)
    step = _make_step(module, model, optimizer, cfg, contextlib.nullcontext(), runtime.from_env(), eager=module)
    pool = torch.bernoulli(torch.full((max(20 * batch, 2000), 1, 28, 28), 0.13),
                           generator=torch.Generator().manual_seed(0))
    batches = _BatchBuffer(pool, batch)
    perm = torch.randperm(pool.shape[0], generator=torch.Generator().manual_seed(1))
    rows = pool.shape[0] // batch

    def run(steps: int) -> float:
        t0 = time.perf_counter()
        for s in range(steps):
            i = s % rows
            step(batches.take(perm[i * batch : (i + 1) * batch]), 1.0)
        return time.perf_counter() - t0

    one = run(3) / 3
    steps = max(3, min(200, int(seconds / max(one, 1e-6))))
    per_step = run(steps) / steps
    per_epoch_steps = math.ceil(N_TRAIN / batch)
    shapes = step_shapes(batch, hidden)
    limit = sum(time_mm(*s, budget=seconds / len(shapes)) for s in shapes)
    return {"batch": batch, "hidden": hidden, "threads": torch.get_num_threads(), "steps_timed": steps,
            "seconds_per_epoch": per_step * per_epoch_steps, "limit_seconds_per_epoch": limit * per_epoch_steps,
            "ratio": per_step / limit}


def eval_point(model, x: torch.Tensor, k: int) -> dict:
    from vaekit.evaluation import evaluate_model

    t0 = time.perf_counter()
    evaluate_model(model, x, k=k, seed=0, per_example=False, surgery_samples=0)
    seconds = time.perf_counter() - t0
    rows = 4096
    hidden = model.decoder[0].out_features
    per_chunk = sum(time_mm(rows, a, b, budget=0.2) for a, b in ((L, hidden), (hidden, D)))
    limit = per_chunk * x.shape[0] * k / rows
    return {"k": k, "n": x.shape[0], "seconds": seconds, "limit_seconds": limit, "ratio": seconds / limit,
            "log_weights_per_second": x.shape[0] * k / seconds}


def plot(result: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")  # a script: no display
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sweeps = ((axes[0], "batch", "batch size (hidden 400)"), (axes[1], "hidden", "hidden width (batch 100)"))
    for ax, key, label in sweeps:
        for threads, marker in ((1, "o"), (2, "s")):
            rows = [r for r in result["train"][key] if r["threads"] == threads]
            if not rows:
                continue
            xs = [r[key] for r in rows]
            line = ax.plot(xs, [r["seconds_per_epoch"] for r in rows], marker=marker, linestyle="-",
                           label=f"vaekit, {threads} thread(s)")
            ax.plot(xs, [r["limit_seconds_per_epoch"] for r in rows], marker=marker, linestyle="--", alpha=0.5,
                    color=line[0].get_color(), label=f"matrix-multiply limit, {threads} thread(s)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per epoch (50,000 images)")
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    ax = axes[2]
    for key, label in (("batch", "batch size"), ("hidden", "hidden width")):
        for threads in (1, 2):
            rows = [r for r in result["train"][key] if r["threads"] == threads]
            if rows:
                ax.plot([r[key] for r in rows], [r["ratio"] for r in rows], "o-", label=f"{label}, {threads} thr.")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("batch size or hidden width")
    ax.set_ylabel("vaekit / limit")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = folder / "scaling-train.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))
    if result.get("eval"):
        fig, ax = plt.subplots(figsize=(6, 4.2))
        rows = result["eval"]
        ks = [r["k"] for r in rows]
        ax.plot(ks, [r["seconds"] for r in rows], "o-", label="vaekit evaluate_model")
        ax.plot(ks, [r["limit_seconds"] for r in rows], "o--", alpha=0.6, label="matrix-multiply limit")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"K (importance samples per image, {rows[0]['n']} images)")
        ax.set_ylabel("seconds")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = folder / "scaling-eval.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.6, help="about this long per training point (and its limit)")
    ap.add_argument("--n", type=int, default=10, help="images of the evaluation sweep")
    ap.add_argument("--threads", default="1,2", help="thread counts of the training sweeps")
    ap.add_argument("--data-dir", default=os.environ.get("VAEKIT_DATA_DIR", "data/binarized_mnist"))
    ap.add_argument("--json", default="benchmarks/results/scaling.json")
    ap.add_argument("--plots", default="docs/figures", help="folder of the PNG plots ('' for none)")
    args = ap.parse_args()
    load_before = load_average()
    result: dict = {"machine": f"{platform.machine()}, torch {torch.__version__}", "train": {"batch": [], "hidden": []},
                    "seconds_per_point": args.seconds}
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for b in BATCHES:
            result["train"]["batch"].append(train_point(b, 400, args.seconds))
            print("train", result["train"]["batch"][-1], flush=True)
        for h in WIDTHS:
            result["train"]["hidden"].append(train_point(100, h, args.seconds))
            print("train", result["train"]["hidden"][-1], flush=True)
    torch.set_num_threads(2)
    from vaekit.models import VAE

    torch.manual_seed(0)
    model = VAE(shape=(1, 28, 28), latent=L, hidden=[400]).eval()
    try:
        from bench_nll import test_images

        x = test_images(args.data_dir, args.n)
    except Exception:  # noqa: BLE001 - no data folder: random binary images cost the same
        x = torch.bernoulli(torch.full((args.n, D), 0.13), generator=torch.Generator().manual_seed(0))
    result["eval_threads"] = torch.get_num_threads()
    result["eval"] = []
    for k in KS:
        result["eval"].append(eval_point(model, x, k))
        print("eval", result["eval"][-1], flush=True)
    result["load_average"] = {"before": load_before, "after": load_average()}
    if args.plots:
        result["plots"] = [Path(p).name for p in plot(result, Path(args.plots))]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
