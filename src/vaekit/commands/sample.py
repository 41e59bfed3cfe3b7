"""``vaekit sample``: a PNG grid of samples from the prior (decoded means and draws)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.commands._args import nonnegative_int, positive_int, seed_int

#: The first bytes of every PNG file: an existing file is replaced only when it starts with them.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sample", help="draw samples from a trained model into a PNG",
        description="Draw z ~ p(z) and write two panels: the decoded means E[x|z] and one draw x ~ p(x|z) "
        "per z (of a conditional model: the classes in turn, or the class --label C). "
        "Example: vaekit sample RUN -n 64 --out samples.png",
    )
    parser.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    parser.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    parser.add_argument("--out", default=None, help="PNG file to write (default RUN/samples.png)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--label", type=nonnegative_int, default=None, metavar="C",
                        help="a conditional model (trained with --conditional): draw every sample of class C, "
                        "0..classes-1, as model.sample(n, y=C) does in Python (default: the classes in turn)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vaekit.errors import VaekitError
    from vaekit.evaluation import load_model
    from vaekit.io.files import check_output
    from vaekit.pages import viz

    if args.n > 4096:
        raise VaekitError(f"-n {args.n} is too many for one picture; use at most 4096")
    out = Path(args.out) if args.out is not None else Path(args.run) / "samples.png"
    png = None if args.out is None else (lambda head: head.startswith(PNG_SIGNATURE))  # RUN/samples.png: the run's
    check_output(out, ".png", png, "a PNG picture")  # before any work
    model = load_model(args.run)
    _check_label(model, args)
    try:
        viz.save_figure(viz.samples_figure(model, args.n, args.seed, args.label), out)
    except OSError as exc:
        raise VaekitError(f"could not write {out}: {exc.strerror or exc}") from None
    print(out)
    return 0


def _check_label(model, args: argparse.Namespace) -> None:
    """--label C names a class of a conditional model: 0 <= C < the classes it was trained on."""
    from vaekit.errors import VaekitError

    if args.label is None:
        return
    classes = int(getattr(model, "condition", 0) or 0)
    if not classes:
        raise VaekitError(f"--label {args.label}: {args.run} is not conditional (trained without --conditional), so "
                          "it has no class to choose; leave out --label")
    if args.label >= classes:
        raise VaekitError(f"--label {args.label}: {args.run} is conditional on {classes} classes; give a class "
                          f"0..{classes - 1}")
