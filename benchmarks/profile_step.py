"""Where one training step's time goes: torch.profiler over the trainer's own step, per-operator self time.

The step is the one ``vaekit train`` runs for the 784-400-40 Bernoulli MLP VAE at batch 100 with fused Adam (lr
1e-3): built by the trainer's ``_step_for`` (the hand-written fast step, ``--path fast``, or the autograd step,
``--path autograd``; both by default), fed as the loop feeds it (batches gathered into the reused buffer, the losses
looked at every 25 steps). The data are random binary images of MNIST's shape, drawn with a fixed seed: the time of
a step does not depend on the pixel values, and the benchmark needs no data set on disk.

For each path: the wall-clock time per step without the profiler (median of ``--rounds`` blocks of ``--steps``
steps, the paths interleaved), then one profiled block: the operators' self time per step and calls per step, the
``--top`` largest, and the sum over all operators. The profiler adds a few microseconds to every operator call and
the wall clock counts the time other processes held the core, so the two totals differ; the shares are what the
profile is for.

usage: python benchmarks/profile_step.py [--threads 1] [--steps 200] [--rounds 5] [--top 15]
       [--path both|fast|autograd] [--json benchmarks/results/profile-step-1thread.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import types
from pathlib import Path

import torch

from threads import load_average, use_threads

D, H, L, B = 784, 400, 40, 100
N_TRAIN = 20_000


def build(fast: bool, x: torch.Tensor):
    """(the trainer's step for the 784-400-40 VAE, the objective), with ``fast_step`` on or off."""
    from vaekit import runtime
    from vaekit.config import TrainConfig
    from vaekit.training.build import model_for, objective_for
    from vaekit.training.step import _fused_if_supported
    from vaekit.training.trainer import _step_for

    cfg = TrainConfig(dataset="binarized-mnist", hidden=[H], latent=L, batch_size=B, lr=1e-3, fast_step=fast)
    torch.manual_seed(0)
    model = model_for(cfg, (1, 28, 28), True)
    objective = objective_for(cfg, model, x.shape[0])
    device = torch.device("cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, **_fused_if_supported(device))
    loop = types.SimpleNamespace(model=model, objective=objective, optimizer=optimizer, estimator=None,
                                 data=types.SimpleNamespace(train=x))
    step = _step_for(loop, cfg, runtime.from_env(), device, runtime.autocast_context(device, "fp32"), {})
    return step, objective


class Feeder:
    """The loop's side of a step: a shuffled batch into the reused buffer, the step, the sums, a look every 25."""

    def __init__(self, fast: bool, x: torch.Tensor):
        from vaekit.training.step import CHECK_EVERY, _BatchBuffer, _first_nonfinite

        self.step, self.objective = build(fast, x)
        self.x, self.batches, self.every, self.check = x, _BatchBuffer(x, B), CHECK_EVERY, _first_nonfinite
        self.gen = torch.Generator().manual_seed(1)
        self.done = 0

    def run(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps."""
        losses = torch.empty(steps)
        sums = torch.zeros(3, dtype=torch.float64)
        perm = torch.randperm(self.x.shape[0], generator=self.gen)
        t0 = time.perf_counter()
        for i in range(steps):
            j = (i * B) % (self.x.shape[0] - B)
            batch = self.batches.take(perm[j : j + B])
            self.objective.set_step(self.done + i, steps)
            losses[i], stats = self.step(batch, 1.0)
            sums += stats
            if (i + 1) % self.every == 0 and self.check(losses[i + 1 - self.every : i + 1]) is not None:
                raise RuntimeError("the loss is not finite")
        self.done += steps
        return (time.perf_counter() - t0) / steps


def profile(feeder: Feeder, steps: int, top: int) -> dict:
    """One profiled block: the operators by self time (ms per step, calls per step), the largest ``top``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        feeder.run(steps)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
    rows = [{"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1e3 / steps, "calls_per_step": e.count / steps,
             "share": e.self_cpu_time_total / 1e3 / steps / total} for e in events[:top]]
    return {"profiled_ms_per_step": total, "calls_per_step": sum(e.count for e in events) / steps, "top": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200, help="steps per timed block and in the profiled block")
    ap.add_argument("--rounds", type=int, default=5, help="timed blocks per path, interleaved")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--path", choices=("both", "fast", "autograd"), default="both")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    threads = use_threads(args.threads)
    before = load_average()
    x = (torch.rand(N_TRAIN, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.13).float()
    paths = {"fast": True, "autograd": False}
    feeders = {name: Feeder(fast, x) for name, fast in paths.items() if args.path in ("both", name)}
    times: dict[str, list[float]] = {name: [] for name in feeders}
    for feeder in feeders.values():
        feeder.run(20)  # warm-up: the optimizer's state, the buffers, the allocator
    for _ in range(args.rounds):
        for name, feeder in feeders.items():
            times[name].append(feeder.run(args.steps) * 1e3)
    result = {"command": "python benchmarks/profile_step.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
              "machine": f"{platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}",
              "threads": threads, "steps": args.steps, "rounds": args.rounds, "paths": {}}
    for name, feeder in feeders.items():
        result["paths"][name] = {"wall_ms_per_step": statistics.median(times[name]),
                                 "wall_ms_per_step_per_round": times[name], **profile(feeder, args.steps, args.top)}
    if len(feeders) == 2:
        result["fast_over_autograd_per_round"] = [f / a for f, a in zip(times["fast"], times["autograd"])]
        result["fast_over_autograd"] = statistics.median(result["fast_over_autograd_per_round"])
    result["load_average"] = {"before": before, "after": load_average()}
    print(f"machine: {result['machine']}; load average before {before}, after {result['load_average']['after']}")
    for name, res in result["paths"].items():
        print(f"\n{name}: {res['wall_ms_per_step']:.3f} ms per step (wall, median of {args.rounds}), profiled "
              f"{res['profiled_ms_per_step']:.3f} ms, {res['calls_per_step']:.0f} operator calls per step")
        for row in res["top"]:
            print(f"  {row['op'][:40]:<40} {row['self_ms_per_step']:8.3f} ms {row['calls_per_step']:6.1f} calls "
                  f"{row['share']:6.1%}")
    if "fast_over_autograd" in result:
        print(f"\nfast / autograd (median of the rounds' ratios): {result['fast_over_autograd']:.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
