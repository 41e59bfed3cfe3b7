"""``vaekit report``: write RUN/report.html, one self-contained page about a run."""

from __future__ import annotations

import argparse
import sys

from vaekit.commands._args import importance_samples, positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report", help="write RUN/report.html: curves, evaluation, samples, reconstructions, latent space",
        description="Write one self-contained HTML page (images embedded) with the run's settings, its training "
        "curves, an evaluation table (ELBO, importance-sampled log p(x) with --k samples, bits/dim, gap, active "
        "units), samples, reconstructions, interpolations, latent traversals and, for a 2-D latent space, the "
        "decoded manifold and a scatter of the test set. Discrete codes (categorical, binary) get the decoded "
        "mean of every category in place of traversals; a model with a cluster variable (one categorical group, "
        "a mixture of Bernoullis, the Gaussian-mixture prior) its clustering accuracy against the labels and, "
        "for the Gaussian mixture, its decoded cluster means. Prints the path of the page.",
    )
    parser.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    parser.add_argument("--k", type=importance_samples, default=500,
                        help="importance samples for the evaluation table (default 500; 5000 for published numbers)")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split (default test)")
    parser.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N examples")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--data-dir", default=None, help="folder holding the data set (default: the run's)")
    parser.add_argument("--dataset", default=None, help="use this data set instead of the run's")
    parser.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vaekit.report import write_report

    path = write_report(args.run, k=args.k, split=args.split, seed=args.seed, data_dir=args.data_dir,
                        dataset_name=args.dataset, limit=args.limit, out=args.out,
                        log=lambda msg: print(msg, file=sys.stderr))
    print(path)
    return 0
