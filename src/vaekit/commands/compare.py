"""``vaekit compare RUN RUN ...``: runs side by side on one self-contained HTML page."""

from __future__ import annotations

import argparse

from vaekit.commands._args import MAX_PICTURES, importance_samples, picture_samples, seed_int
from vaekit.commands._json import print_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare", help="runs side by side on one HTML page: settings, metrics, curves, the rate-distortion plane",
        description="Evaluate each run on the test split of its own data set (vaekit.evaluation.evaluate_run with "
        "--k importance samples: the ELBO, the NLL, the rate R and distortion D, I_q(x; z), KL(q(z) || p(z)), the "
        "active units) and write one self-contained HTML page (images embedded) with the settings that differ, "
        "the metrics table (with training time, epochs and the kept epoch), the validation curves overlaid, the "
        "rate-distortion plane with the iso-ELBO lines R + D = -ELBO, samples from each run's own prior and the "
        "decoder applied to z ~ N(0, I) in every run. Cost: K decoder passes per test example and run (the "
        "default K = 200 takes about a second per small digits run on a 2-core CPU). A deterministic autoencoder "
        "has no ELBO or NLL (shown as n/a, no density). Runs whose settings (config.json) differ only by seed are "
        "also grouped: each metric's mean +- SD (sample SD, n stated) across the seeds. A run folder holding "
        "disentanglement.json (written by 'vaekit evaluate RUN --disentanglement') adds its disentanglement scores "
        "(value +- standard error; in a group, mean +- SD). Prints the path of the page. "
        "Example: vaekit compare runs/beta-1 runs/beta-4 --out beta.html",
    )
    parser.add_argument("runs", metavar="RUN", nargs="+", help="run directories written by 'vaekit train' (2 or more)")
    parser.add_argument("--out", default="compare.html", help="HTML file to write (default compare.html)")
    parser.add_argument("--k", type=importance_samples, default=200,
                        help="importance samples per test example (default 200; 5000 for published numbers)")
    parser.add_argument("--n-samples", type=picture_samples, default=64,
                        help=f"images per run in the sample panels (default 64, at most {MAX_PICTURES})")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed of the evaluation and samples "
                        "(default 0; the same seed gives the numbers of 'vaekit evaluate RUN --k K --seed S')")
    parser.add_argument("--data-dir", default=None, help="folder holding the data set (default: each run's)")
    parser.add_argument("--dataset", default=None, help="evaluate on this data set instead of the runs' own")
    parser.add_argument("--device", default="auto",
                        help="auto (default: CUDA, then MPS, then the CPU), cpu, cuda or mps")
    parser.add_argument("--quiet", action="store_true",
                        help="nothing on stderr but errors (by default the steps, when stderr is a terminal)")
    parser.add_argument("--progress", action="store_true",
                        help="say the steps even when stderr is not a terminal (a log file)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the path: the page's path, the metrics of every run "
                        "(with its disentanglement scores, null where it has none) and the groups of runs that differ "
                        "only by seed (each metric's mean, SD and n)")
    parser.set_defaults(func=run)


#: The most images per run in a sample panel (as ``vaekit sample -n``): beyond it a page never ends.
def run(args: argparse.Namespace) -> int:
    from vaekit.pages.compare import compare_runs
    from vaekit.progress import step_lines

    log = step_lines(args.quiet or args.json, True if args.progress else None)
    result = compare_runs(args.runs, args.out, k=args.k, n_samples=args.n_samples, seed=args.seed,
                          device=args.device, data_dir=args.data_dir, dataset_name=args.dataset, log=log)
    if args.json:
        print_json(result.to_dict())
    else:
        print(result.page)
    return 0
