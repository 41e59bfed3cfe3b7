"""The disentanglement comparison of RESULTS.md on dSprites: six methods x three seeds, the same data, conv networks
and number of steps (the recipes in ``configs/disentanglement/``), every metric as mean +- SD over the seeds.

    python benchmarks/dsprites_disentanglement.py --out runs/dsprites [--seeds 0,1,2] [--workers 2]
        [--train-points 1000] [--test-points 500] [--dci-estimators 20] [--intervention-points 500,250] [--train-only]

Each run trains with ``vaekit train --config configs/disentanglement/METHOD.toml --seed S --threads 1`` (a finished
run is kept, an unfinished one resumed), then is scored by
:func:`vaekit.evaluation.disentanglement.disentanglement_scores` on its test split, one thread each, ``--workers``
processes at a time. The scores use fewer points than disentanglement_lib (its 10,000 / 5,000) and DCI fewer
boosting stages (20, not 100) so that scoring a run takes minutes on a CPU: the intervention scores (beta-VAE,
FactorVAE) encode ``64 x (train + eval points)`` images, and DCI's trees grow with dSprites' 40 orientations.
No bootstrap within a run (``resamples=0``): the spread reported is the SD over seeds. Writes
OUT/METHOD-seed-S/scores.json, the summary benchmarks/results/dsprites-disentanglement.json, and prints the table
in Markdown with the load average.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _runs import metrics, train_unless_finished, vaekit, write_summary

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("beta-vae-1", "beta-vae-4", "annealed-capacity", "beta-tcvae", "factorvae", "dip-vae-ii")
METRICS = ("beta_vae_score", "factor_vae_score", "mig", "sap", "dci_disentanglement", "dci_completeness",
           "dci_informativeness", "modularity", "explicitness")
SUMMARY = ROOT / "benchmarks" / "results" / "dsprites-disentanglement.json"


def train(method: str, seed: int, out: Path, epochs: int) -> Path:
    run = out / f"{method}-seed-{seed}"
    return train_unless_finished(run, epochs, [
        vaekit(), "train", "--config", str(ROOT / "configs" / "disentanglement" / f"{method}.toml"),
        "--seed", str(seed), "--threads", "1", "--out", str(run), "--quiet"])


def score(run: Path, args: argparse.Namespace) -> dict:
    """The scores of one run, computed in a process of its own (one thread)."""
    path = run / "scores.json"
    if path.is_file():
        return json.loads(path.read_text())
    code = ("import json, sys, time, torch; torch.set_num_threads(1)\n"
            "from vaekit.evaluation import load_model\n"
            "from vaekit.evaluation.evaluator import load_run_data\n"
            "from vaekit.evaluation.disentanglement import disentanglement_scores\n"
            "run, tr, te, dci, itr, ite = sys.argv[1], *map(int, sys.argv[2:])\n"
            "t0 = time.perf_counter()\n"
            "s = disentanglement_scores(load_model(run), load_run_data(run), train_points=tr, test_points=te,\n"
            "                           resamples=0, dci_estimators=dci, intervention_points=(itr, ite))\n"
            "s['scoring_seconds'] = time.perf_counter() - t0\n"
            "print(json.dumps(s))\n")
    numbers = (args.train_points, args.test_points, args.dci_estimators, *args.intervention_points)
    done = subprocess.run([sys.executable, "-c", code, str(run), *map(str, numbers)], check=True,
                          capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rows = metrics(run)
    kept = max((r for r in rows if r.get("best")), key=lambda r: r["epoch"])
    result.update(train_seconds=sum(r["seconds"] for r in rows), kept_epoch=kept["epoch"],
                  kept_valid_elbo=kept["valid_elbo"], final_valid_kl=rows[-1]["valid_kl"])
    path.write_text(json.dumps(result, indent=1))
    return result


def _one(method: str, seed: int, args: argparse.Namespace, epochs: int) -> tuple[str, int, dict]:
    run = train(method, seed, args.out, epochs)
    return method, seed, {} if args.train_only else score(run, args)


def summarise(results: dict[str, list[dict]]) -> dict:
    out = {}
    for method, rows in results.items():
        entry = {}
        for key in (*METRICS, "kept_valid_elbo", "train_seconds", "final_valid_kl"):
            values = [r[key] for r in rows if r.get(key) is not None]
            entry[key] = {"mean": statistics.fmean(values) if values else None,
                          "sd": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}
        out[method] = entry
    return out


def _cell(entry: dict, digits: int) -> str:
    """mean +- SD over the seeds (the mean alone, marked, from one seed; a dash from none)."""
    if entry["mean"] is None:
        return "—"
    if entry["sd"] is None:
        return f"{entry['mean']:.{digits}f} (1 seed)"
    return f"{entry['mean']:.{digits}f} ± {entry['sd']:.{digits}f}"


def table(summary: dict) -> str:
    head = "| method | seeds | " + " | ".join(METRICS) + " | valid ELBO (nats) | training (s) |"
    lines = [head, "|" + "---|" * (len(METRICS) + 4)]
    for method, entry in summary.items():
        cells = [_cell(entry[c], 3) for c in METRICS]
        lines.append(f"| {method} | {entry['mig']['n']} | " + " | ".join(cells)
                     + f" | {_cell(entry['kept_valid_elbo'], 1)} | {_cell(entry['train_seconds'], 0)} |")
    return "\n".join(lines)


FIGURE = ROOT / "docs" / "figures" / "dsprites-traversals.png"


def figure(results: dict[str, list[dict]], out: Path) -> str:
    """Traversals of the run with the highest MIG, one row per unit with Cov_x E_q[z_j] > 0.01 over 1,000
    training images (at most 8, the most informative first), labelled with the factor each tells most about
    (I(z_j; v_k) in nats over those images); written to docs/figures/dsprites-traversals.png. Returns the run."""
    import torch

    from vaekit.evaluation import load_model
    from vaekit.evaluation.disentanglement import unit_factor_information
    from vaekit.evaluation.evaluator import load_run_data
    from vaekit.pages import viz

    method, row = max(((m, r) for m, rows in results.items() for r in rows), key=lambda mr: mr[1]["mig"])
    run = out / f"{method}-seed-{row['seed']}"
    model, ds = load_model(run), load_run_data(run)
    info = unit_factor_information(model, ds, split="train", points=1000)
    with torch.inference_mode():
        codes = model.code(ds.train[:1000])
    active = [j for j in range(codes.shape[1]) if float(codes[:, j].var()) > 0.01]
    units = sorted(active, key=lambda j: -info.matrix[j].max())[:8]
    labels = [f"z{j}: {info.factor_names[int(info.matrix[j].argmax())]} ({info.matrix[j].max():.2f} nats)"
              for j in units]
    viz.save_figure(viz.traversals_figure(model, units, codes[0], 9, labels), FIGURE)
    return str(run.relative_to(out.parent) if out.is_absolute() else run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-points", type=int, default=1000)
    parser.add_argument("--test-points", type=int, default=500)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--train-only", action="store_true", help="train (or resume) the runs, score none")
    parser.add_argument("--dci-estimators", type=int, default=20)
    parser.add_argument("--intervention-points", type=lambda t: tuple(int(v) for v in t.split(",")), default=(500, 250))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    epochs = 3
    load0, t0 = os.getloadavg(), time.perf_counter()
    results: dict[str, list[dict]] = {m: [] for m in methods}
    with cf.ThreadPoolExecutor(args.workers) as pool:
        jobs = [pool.submit(_one, m, s, args, epochs) for s in seeds for m in methods]
        for job in cf.as_completed(jobs):
            method, seed, result = job.result()
            results[method].append({"seed": seed, **result})
            print(f"{method} seed {seed}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.train_only:
        return
    summary = {"load_average_start": load0, "load_average_end": os.getloadavg(),
               "wall_seconds": time.perf_counter() - t0, "train_points": args.train_points,
               "test_points": args.test_points, "dci_estimators": args.dci_estimators,
               "intervention_points": args.intervention_points, "seeds": seeds, "runs": results,
               "methods": summarise(results)}
    write_summary(SUMMARY, summary)
    print(table(summary["methods"]))
    if all(len(rows) == len(seeds) for rows in results.values()):
        print(f"traversals of {figure(results, args.out)} written to {FIGURE.relative_to(ROOT)}")
    print(f"load average at start {load0}, at end {summary['load_average_end']}")


if __name__ == "__main__":
    main()
