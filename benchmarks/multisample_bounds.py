"""The multi-sample bounds of RESULTS.md on static binarized MNIST: seven objectives, one model, the same epochs.

    python benchmarks/multisample_bounds.py --data-dir DATA --out runs/bounds [--hidden 200] [--latent 20]
        [--epochs 5] [--workers 2] [--k-eval 5000] [--limit 1000] [--snr-k 1,4,16,64]

Each method is ``vaekit train --dataset binarized-mnist --hidden H --latent L --epochs E --threads 1`` plus its
objective's flags (below; a finished run is kept, an unfinished one resumed), then ``vaekit evaluate RUN --k K
--limit N --json``: the test NLL estimate -IWAE_K on a fixed random subset of N test images (the same subset for
every run: evaluate's seed 0), the test ELBO, the active units, with standard errors. ``--workers`` runs at a time,
one thread each. Then ``vaekit gradients RUN --estimators pathwise,stl,dreg --k ... --json --plot`` on the ELBO run
(the encoder and decoder gradient SNR against K at fixed weights, the figure in docs/figures/). Writes
OUT/METHOD/evaluation.json, the summary benchmarks/results/multisample-bounds.json, and prints the table in Markdown
with the load average.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import time
from pathlib import Path

from _runs import load_average, metrics, output, train_unless_finished, vaekit, write_summary

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "benchmarks" / "results" / "multisample-bounds.json"
FIGURE = ROOT / "docs" / "figures" / "gradient-snr.png"
#: The methods: name -> the objective's flags.
METHODS: dict[str, list[str]] = {
    "ELBO": ["--objective", "elbo"],
    "ELBO-STL": ["--objective", "elbo", "--estimator", "stl"],
    "IWAE(64)": ["--objective", "iwae", "--k", "64"],
    "IWAE-DReG(64)": ["--objective", "iwae", "--k", "64", "--estimator", "dreg"],
    "MIWAE(8, 8)": ["--objective", "miwae", "--m", "8", "--k", "8"],
    "CIWAE(0.5)": ["--objective", "ciwae", "--ciwae-beta", "0.5", "--k", "64"],
    "PIWAE(8, 8)": ["--objective", "piwae", "--m", "8", "--k", "8"],
}


def _slug(method: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in method.lower()).strip("-").replace("--", "-")


def train(method: str, args: argparse.Namespace) -> Path:
    run = Path(args.out) / _slug(method)
    return train_unless_finished(run, args.epochs, [
        vaekit(), "train", "--dataset", "binarized-mnist", "--data-dir", args.data_dir, "--model", "mlp",
        "--hidden", str(args.hidden), "--latent", str(args.latent), "--epochs", str(args.epochs),
        "--batch-size", "100", "--lr", "1e-3", "--seed", "0", "--threads", "1", "--out", str(run), "--quiet",
        *METHODS[method]])


def evaluate(method: str, args: argparse.Namespace) -> dict:
    run = train(method, args)
    path = run / "evaluation.json"
    if not path.is_file():
        path.write_text(output([vaekit(), "evaluate", str(run), "--k", str(args.k_eval), "--limit", str(args.limit),
                                "--data-dir", args.data_dir, "--json", "--quiet"]))
    result = json.loads(path.read_text())
    rows = metrics(run)
    return {"method": method, "flags": " ".join(METHODS[method]), "nll": result["nll"],
            "nll_stderr": result["nll_stderr"], "elbo": result["elbo"], "elbo_stderr": result["elbo_stderr"],
            "active_units": result["active_units"], "pareto_k_fraction": result.get("pareto_k_fraction"),
            "train_seconds": sum(r["seconds"] for r in rows), "epochs": len(rows)}


def snr(args: argparse.Namespace) -> dict:
    run = Path(args.out) / _slug("ELBO")
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    return json.loads(output([vaekit(), "gradients", str(run), "--estimators", "pathwise,stl,dreg", "--k",
                              args.snr_k, "--data-dir", args.data_dir, "--json", "--plot", str(FIGURE)],
                             one_thread=False))


def table(rows: list[dict]) -> str:
    lines = ["| method | flags | test NLL estimate (-IWAE_K) | test ELBO | active units | k-hat > 0.7 | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        k_frac = "" if r["pareto_k_fraction"] is None else f"{r['pareto_k_fraction']:.2f}"
        lines.append(f"| {r['method']} | `{r['flags']}` | {r['nll']:.2f} ± {r['nll_stderr']:.2f} | "
                     f"{r['elbo']:.2f} ± {r['elbo_stderr']:.2f} | {r['active_units']} | {k_frac} | "
                     f"{r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("VAEKIT_DATA_DIR", "data/binarized_mnist"))
    ap.add_argument("--out", default="runs/bounds")
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--latent", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--k-eval", type=int, default=5000)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--snr-k", default="1,4,16,64")
    ap.add_argument("--methods", default="all",
                    help=f"a comma-separated subset of the methods by slug ({', '.join(map(_slug, METHODS))}); "
                    "default all")
    args = ap.parse_args()
    wanted = set(args.methods.split(","))
    methods = [m for m in METHODS if args.methods == "all" or _slug(m) in wanted]
    start = time.time()
    with cf.ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(evaluate, methods, [args] * len(methods)))
    gradients = snr(args) if "ELBO" in methods and args.snr_k else None
    load = load_average()
    summary = {"setup": {k: getattr(args, k) for k in ("hidden", "latent", "epochs", "k_eval", "limit", "snr_k")},
               "rows": rows, "gradients": gradients, "load_average": load,
               "wall_seconds": time.time() - start}
    write_summary(SUMMARY, summary)
    print(table(rows))
    print(f"\nload average {' '.join(load)}; wall {summary['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
