"""vaekit's training epoch at two versions of the code, side by side: this working tree against a git revision.

Each round runs, in fresh processes and in turn, the same workload at the revision (``--base``, checked out into
a temporary git worktree) and at this tree: ``bench_train.vaekit_epochs`` (the 784-400-40 Bernoulli MLP VAE, batch
100, Adam, one epoch = the 50,000 static binarized MNIST training images, no validation) and, as a yardstick of
the machine's speed at that moment, ``bench_train.plain_epochs`` (the plain PyTorch loop). It prints, per round and
as medians over rounds: each version's median seconds per epoch (the first epoch of a fresh ``train`` dropped),
its ratio to the plain loop, and the ratio new / base within the round. The load average is printed with them.

With ``--switch SETTING`` (a boolean TrainConfig field, e.g. ``fast_step``) the two versions are this tree with
the setting off (base) and on (new), run in one process per round, in turn (the order alternating from round to
round), beside the plain loop.

usage: python benchmarks/bench_ab.py (--base REV | --switch SETTING) [--data-dir DATA]
       [--epochs 3] [--rounds 3] [--threads 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from threads import load_average

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WORKLOAD = """
import json, statistics, sys
sys.path[:0] = [{src!r}, {bench!r}]
from threads import use_threads
use_threads({threads})
from bench_train import load_train, plain_epochs, vaekit_epochs
x = load_train({data_dir!r})
v = vaekit_epochs(x, {epochs})[1:]
p = plain_epochs(x, {epochs})[1:]
print(json.dumps({{"vaekit": statistics.median(v), "plain": statistics.median(p)}}))
"""

SWITCHED = """
import json, statistics, sys
sys.path[:0] = [{src!r}, {bench!r}]
from threads import use_threads
use_threads({threads})
from bench_train import load_train, plain_epochs, vaekit_epochs
x = load_train({data_dir!r})
out = {{}}
for on in {order}:
    out["new" if on else "base"] = statistics.median(vaekit_epochs(x, {epochs}, {switch}=on)[1:])
p = statistics.median(plain_epochs(x, {epochs})[1:])
print(json.dumps({{key: {{"vaekit": value, "plain": p}} for key, value in out.items()}}))
"""


def run(src: Path, args: argparse.Namespace) -> dict[str, float]:
    """One version's seconds per epoch (median over epochs after the first), vaekit and the plain loop."""
    code = WORKLOAD.format(src=str(src), bench=str(HERE), threads=args.threads, data_dir=args.data_dir,
                           epochs=args.epochs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_switched(args: argparse.Namespace, first_on: bool) -> tuple[dict[str, float], dict[str, float]]:
    """(base, new): this tree's seconds per epoch with ``args.switch`` off and on, in one process."""
    code = SWITCHED.format(src=str(ROOT / "src"), bench=str(HERE), threads=args.threads, data_dir=args.data_dir,
                           epochs=args.epochs, switch=args.switch, order=(True, False) if first_on else (False, True))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                    check=True).stdout.strip().splitlines()[-1])
    return out["base"], out["new"]


def rounds(args: argparse.Namespace, base: Path | None) -> list[dict]:
    """Each round's (base, new) seconds per epoch and their ratio, printed as they come."""
    rows = []
    for r in range(args.rounds):
        if args.switch:
            old, new = run_switched(args, first_on=r % 2 == 1)
        else:
            old, new = run(base / "src", args), run(ROOT / "src", args)
        row = {"round": r + 1, "base": old, "new": new, "new_over_base": new["vaekit"] / old["vaekit"],
               "load": load_average()}
        rows.append(row)
        print(f"round {r + 1}: base {old['vaekit']:.3f} s/epoch ({old['vaekit'] / old['plain']:.3f}x plain), "
              f"new {new['vaekit']:.3f} s/epoch ({new['vaekit'] / new['plain']:.3f}x plain), "
              f"new / base {row['new_over_base']:.3f}  (load {row['load']})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--base", help="the git revision to compare against (e.g. a commit)")
    which.add_argument("--switch", help="a boolean setting: this tree with it off (base) against on (new)")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "binarized_mnist"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    before = load_average()
    if args.switch:
        rows = rounds(args, None)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "base"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.base],
                           check=True, capture_output=True)
            try:
                rows = rounds(args, base)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                               capture_output=True)
    summary = {"base": args.base, "switch": args.switch, "threads": args.threads, "epochs": args.epochs,
               "load_before": before, "rounds": rows,
               "median_new_over_base": statistics.median(r["new_over_base"] for r in rows),
               "median_base_over_plain": statistics.median(r["base"]["vaekit"] / r["base"]["plain"] for r in rows),
               "median_new_over_plain": statistics.median(r["new"]["vaekit"] / r["new"]["plain"] for r in rows)}
    print(f"median new / base {summary['median_new_over_base']:.3f}; vaekit / plain loop: base "
          f"{summary['median_base_over_plain']:.3f}, new {summary['median_new_over_plain']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
