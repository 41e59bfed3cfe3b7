"""Which number to trust, measured on static binarized MNIST: ELBO, IWAE_K, AIS, the BDMC sandwich, the gap split
and the Pareto k-hat for two models (the table of RESULTS.md).

    python benchmarks/evaluation_sandwich.py --data-dir DATA --out runs/sandwich [--epochs 20] [--limit 100]
        [--k 5000] [--ais 500] [--chains 8] [--leapfrog 10] [--bdmc 100,500] [--bdmc-n 50] [--gaps-steps 300]

The models: the 784-400-40 Bernoulli MLP VAE (Gaussian q, standard normal prior) and the same networks with the
VampPrior (500 pseudo-inputs), each ``vaekit train --dataset binarized-mnist --hidden 400 --latent 40 --epochs E
--threads 1`` (a finished run is kept, an unfinished one resumed). Each is then measured by

    vaekit evaluate RUN --k K --limit N --ais T --ais-chains C --ais-leapfrog L --gaps --gaps-steps S --json
    vaekit bound RUN --bdmc T1,T2 --n M --bdmc-chains C --bdmc-leapfrog L --json

on a fixed random subset of N test images (evaluate's seed 0) and M examples simulated from the model. Writes
OUT/MODEL/{evaluation,bdmc}.json, the summary benchmarks/results/evaluation-sandwich.json (with AIS's log-joint
evaluations per second beside the evaluator's log-weights per second, the same run and process), and prints the
table in Markdown with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _runs import load_average, output, train_unless_finished, vaekit, write_summary

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "benchmarks" / "results" / "evaluation-sandwich.json"
MODELS: dict[str, list[str]] = {
    "VAE 784-400-40": ["--prior", "standard"],
    "VampPrior 784-400-40": ["--prior", "vamp", "--vamp-components", "500"],
}
FIELDS = ("elbo", "elbo_stderr", "nll", "nll_stderr", "ais_log_px", "ais_log_px_stderr", "ais_acceptance",
          "approximation_gap", "approximation_gap_stderr", "amortization_gap", "amortization_gap_stderr",
          "pareto_k_fraction", "mean_ess", "log_weights_per_second", "ais_evaluations_per_second", "n", "k")


def train(name: str, args: argparse.Namespace) -> Path:
    run = Path(args.out) / name.split()[0].lower()
    return train_unless_finished(run, args.epochs, [
        vaekit(), "train", "--dataset", "binarized-mnist", "--data-dir", args.data_dir, "--model", "mlp",
        "--hidden", "400", "--latent", "40", "--epochs", str(args.epochs), "--batch-size", "100", "--lr", "1e-3",
        "--seed", "0", "--threads", "1", "--out", str(run), "--quiet", *MODELS[name]])


def measure(name: str, args: argparse.Namespace) -> dict:
    run = train(name, args)
    ev_path, bd_path = run / "evaluation.json", run / "bdmc.json"
    if not ev_path.is_file():
        ev_path.write_text(output([vaekit(), "evaluate", str(run), "--k", str(args.k), "--limit", str(args.limit),
                                   "--ais", str(args.ais), "--ais-chains", str(args.chains), "--ais-leapfrog",
                                   str(args.leapfrog), "--gaps", "--gaps-steps", str(args.gaps_steps),
                                   "--data-dir", args.data_dir, "--json", "--quiet"]))
    if not bd_path.is_file():
        bd_path.write_text(output([vaekit(), "bound", str(run), "--bdmc", args.bdmc, "--n", str(args.bdmc_n),
                                   "--bdmc-chains", str(args.chains), "--bdmc-leapfrog", str(args.leapfrog), "--json"]))
    ev, bd = json.loads(ev_path.read_text()), json.loads(bd_path.read_text())
    return {"model": name, "flags": " ".join(MODELS[name]), **{key: ev.get(key) for key in FIELDS},
            "bdmc": {key: value for key, value in bd.items() if key != "examples"}}


def figure(value: float | None) -> str:
    """A figure to 2 decimals; a dash for one not computed (k-hat under a K too small to fit any example's tail, AIS's
    standard error from one chain), as the other benchmark tables."""
    return "—" if value is None else f"{value:.2f}"


def table(rows: list[dict], args: argparse.Namespace) -> str:
    def pm(r: dict, key: str, sign: float = 1.0) -> str:
        value = r.get(key)
        return "—" if value is None else f"{figure(sign * value)} ± {figure(r.get(key + '_stderr'))}"

    lines = [f"| model | ELBO | -NLL estimate IWAE_{args.k} | AIS (T = {args.ais}) | BDMC width (simulated) | "
             "approximation gap | amortization gap | k-hat > 0.7 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {pm(r, 'elbo')} | {pm(r, 'nll', -1.0)} | {pm(r, 'ais_log_px')} | "
                     f"{figure(r['bdmc'].get('bdmc_width'))} | {pm(r, 'approximation_gap')} | "
                     f"{pm(r, 'amortization_gap')} | {figure(r.get('pareto_k_fraction'))} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("VAEKIT_DATA_DIR", "data/binarized_mnist"))
    ap.add_argument("--out", default="runs/sandwich")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--ais", type=int, default=500)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--leapfrog", type=int, default=10)
    ap.add_argument("--bdmc", default="100,500")
    ap.add_argument("--bdmc-n", type=int, default=50)
    ap.add_argument("--gaps-steps", type=int, default=300)
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    start = time.time()
    rows = [measure(name, args) for name in MODELS if name in args.models.split(",")]
    load = load_average()
    setup = {key: getattr(args, key) for key in ("epochs", "limit", "k", "ais", "chains", "leapfrog", "bdmc",
                                                  "bdmc_n", "gaps_steps")}
    summary = {"setup": setup, "rows": rows, "load_average": load, "wall_seconds": time.time() - start}
    write_summary(SUMMARY, summary)
    print(table(rows, args))
    print(f"\nload average {' '.join(load)}; wall {summary['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
