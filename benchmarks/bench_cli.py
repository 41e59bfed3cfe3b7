"""The whole process, as a user runs it: a 3-epoch training from the command line, vaekit against pythae.

vaekit: ``vaekit train --dataset binarized-mnist --hidden 400 --latent 40 --batch-size 100 --lr 1e-3 --epochs 3``
(its defaults otherwise: the validation ELBO on the 10,000 validation images after every epoch, the best
weights and a resumable checkpoint written after every epoch). pythae: ``pythae_cli.py``, the same model with
pythae's ``BaseTrainer`` (train and eval data sets, 3 epochs, its best model written), the data read with the
same loader so that both pay the same parse. Each is a fresh ``python`` process, timed from start to exit
(imports, data, training, writing), rounds interleaved (vaekit, pythae, vaekit, ...), and the ratio
pythae / vaekit taken within each round. Both get the same thread count.

Each round also times a fresh ``python -c "import torch"``: the fixed cost that both processes pay and neither can
remove (the interpreter's start and torch's own import), and ``python -c "import torch, torch._dynamo"``: what
``torch.optim``'s optimizers add at their first use, which vaekit avoids. vaekit's time is split into torch's
import, its epochs (training and validation, the ``seconds`` of its metrics.jsonl) and the rest (vaekit's own
imports, the parser, the data, the model, the checkpoints, the exit); the ratio is also given with torch's import
taken from both sides.

usage: python benchmarks/bench_cli.py [--data-dir DATA] [--rounds 3] [--threads 2]
       [--epochs 3] [--json FILE]        (pythae: pip install -c constraints.txt -e '.[bench]')
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from threads import load_average

HERE = Path(__file__).resolve().parent


def vaekit_command(data_dir: str, out: Path, epochs: int, threads: int) -> list[str]:
    return [sys.executable, "-m", "vaekit", "train", "--dataset", "binarized-mnist", "--data-dir", data_dir,
            "--hidden", "400", "--latent", "40", "--batch-size", "100", "--lr", "1e-3", "--epochs", str(epochs),
            "--threads", str(threads), "--out", str(out), "--quiet"]


def pythae_command(data_dir: str, out: Path, epochs: int, threads: int) -> list[str]:
    return [sys.executable, str(HERE / "pythae_cli.py"), "--data-dir", data_dir, "--out", str(out),
            "--epochs", str(epochs), "--threads", str(threads)]


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{command[1:3]} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return seconds


def epoch_seconds(run: Path) -> float:
    """The seconds of a vaekit run's epochs (training and validation), summed from its metrics.jsonl."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return sum(row["seconds"] for row in rows)


def median_split(runs: dict[str, list[float]]) -> dict[str, float]:
    """vaekit's process split, the median of each part over the rounds: torch's import, the epochs, the rest."""
    rest = [v - t - e for v, t, e in zip(runs["vaekit"], runs["torch_import"], runs["vaekit_epochs"])]
    return {"torch_import": statistics.median(runs["torch_import"]),
            "epochs": statistics.median(runs["vaekit_epochs"]), "rest": statistics.median(rest)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("VAEKIT_DATA_DIR", "data/binarized_mnist"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    try:
        import pythae  # noqa: F401
    except ImportError:
        raise SystemExit("pythae is not installed: pip install -c constraints.txt -e '.[bench]'") from None
    load_before = load_average()
    runs: dict[str, list[float]] = {"vaekit": [], "pythae": [], "torch_import": [], "vaekit_epochs": [],
                                   "torch_and_dynamo_import": []}
    ratios, ratios_less_torch = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            t = timed([sys.executable, "-c", "import torch"])
            runs["torch_and_dynamo_import"].append(timed([sys.executable, "-c", "import torch, torch._dynamo"]))
            v = timed(vaekit_command(args.data_dir, Path(tmp) / f"vaekit-{r}", args.epochs, args.threads))
            p = timed(pythae_command(args.data_dir, Path(tmp) / f"pythae-{r}", args.epochs, args.threads))
            for key, value in (("torch_import", t), ("vaekit", v), ("pythae", p),
                               ("vaekit_epochs", epoch_seconds(Path(tmp) / f"vaekit-{r}"))):
                runs[key].append(value)
            ratios.append(p / v)
            ratios_less_torch.append((p - t) / (v - t))
            print(f"round {r + 1}: import torch {t:.2f} s, vaekit {v:.2f} s (epochs {runs['vaekit_epochs'][-1]:.2f}"
                  f" s), pythae {p:.2f} s, pythae/vaekit {p / v:.2f}x", flush=True)
    import torch

    result = {"machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, "
                         f"torch {torch.__version__}",
              "threads": args.threads, "epochs": args.epochs, "rounds": args.rounds,
              "load_average": {"before": load_before, "after": load_average()},
              "seconds": {k: statistics.median(v) for k, v in runs.items()}, "seconds_per_round": runs,
              "vaekit_split": median_split(runs),
              "ratio_pythae_over_vaekit": statistics.median(ratios), "ratios_per_round": ratios,
              "ratio_without_torch_import": statistics.median(ratios_less_torch),
              "ratios_without_torch_import_per_round": ratios_less_torch}
    split = result["vaekit_split"]
    print(f"median: vaekit {result['seconds']['vaekit']:.2f} s (import torch {split['torch_import']:.2f} s, epochs "
          f"{split['epochs']:.2f} s, the rest {split['rest']:.2f} s), pythae {result['seconds']['pythae']:.2f} s, "
          f"pythae/vaekit {result['ratio_pythae_over_vaekit']:.2f}x, without torch's import "
          f"{result['ratio_without_torch_import']:.2f}x")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
