"""``vaekit report``: write RUN/report.html, one self-contained page about a run."""

from __future__ import annotations

import argparse

from vaekit.commands._args import importance_samples, positive_int, seed_int


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report", help="write RUN/report.html: curves, evaluation, samples, reconstructions, latent space",
        description="Write one self-contained HTML page (images embedded) with the run's settings, its training "
        "curves, an evaluation table (ELBO, importance-sampled log p(x) with --k samples, bits/dim, gap, active "
        "units), samples, reconstructions, interpolations, latent traversals and, for a 2-D latent space, the "
        "decoded manifold and a scatter of the test set, and an interactive latent explorer (the decoder runs in "
        "the page: moving the pointer over a plane of two latent units shows the decoded image; MLP decoders). "
        "Discrete codes (categorical, binary) get the decoded "
        "mean of every category in place of traversals; a model with a cluster variable (one categorical group, "
        "a mixture of Bernoullis, the Gaussian-mixture prior) its clustering accuracy against the labels and, "
        "for the Gaussian mixture, its decoded cluster means. Prints the path of the page.",
    )
    parser.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    parser.add_argument("--k", type=importance_samples, default=500,
                        help="importance samples for the evaluation table (default 500; 5000 for published numbers)")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split (default test)")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="evaluate a fixed class-balanced (or, without labels, uniform) random subset of N "
                        "examples drawn with --seed")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--data-dir", default=None, help="folder holding the data set (default: the run's)")
    parser.add_argument("--dataset", default=None, help="use this data set instead of the run's")
    parser.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")
    parser.add_argument("--quiet", action="store_true",
                        help="nothing on stderr but errors (by default warnings, and the steps with a progress bar "
                        "and the ETA when stderr is a terminal)")
    parser.add_argument("--progress", action="store_true",
                        help="the steps and the progress bar even when stderr is not a terminal (a log file)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vaekit.pages.report import write_report
    from vaekit.progress import Bar, enabled, step_lines

    watched = True if args.progress else None
    show = not args.quiet and enabled(watched)
    say = step_lines(args.quiet, watched)
    with Bar(f"log p(x), K = {args.k}", "examples", enabled=show, flags="--k or --limit", say=say) as progress:
        path = write_report(args.run, k=args.k, split=args.split, seed=args.seed, data_dir=args.data_dir,
                            dataset_name=args.dataset, limit=args.limit, out=args.out, progress=progress, log=say)
    print(path)
    return 0
