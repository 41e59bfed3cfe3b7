"""``vaekit sample``: a PNG grid of samples from the prior (decoded means and draws)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaekit.commands import _sampler
from vaekit.commands._args import nonnegative_int, positive_int, seed_int

#: The first bytes of every PNG file: an existing file is replaced only when it starts with them.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sample", help="draw samples from a trained model into a PNG",
        description="Draw z ~ p(z) and write two panels: the decoded means E[x|z] and one draw x ~ p(x|z) "
        "per z (of a conditional model: the classes in turn, or the class --label C); with --sampler NAME, z is "
        "drawn from a density fitted to the run's codes after training instead. "
        "Example: vaekit sample RUN -n 64 --out samples.png",
    )
    parser.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    parser.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    parser.add_argument("--out", default=None, help="PNG file to write (default RUN/samples.png); for a run "
                        "trained on a table, FILE.csv or FILE.npy: the n draws x ~ p(x|z) in the table's original "
                        "units (its standardisation undone)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--label", type=nonnegative_int, default=None, metavar="C",
                        help="a conditional model (trained with --conditional): draw every sample of class C, "
                        "0..classes-1, as model.sample(n, y=C) does in Python (default: the classes in turn)")
    _sampler.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vaekit.errors import VaekitError
    from vaekit.evaluation import load_model
    from vaekit.io.files import check_output
    from vaekit.pages import viz

    if args.n > 4096:
        raise VaekitError(f"-n {args.n} is too many for one picture; use at most 4096")
    _sampler.check_arguments(args)
    out = Path(args.out) if args.out is not None else Path(args.run) / "samples.png"
    if out.suffix.lower() in (".csv", ".npy"):
        return _table(args, out)
    png = None if args.out is None else (lambda head: head.startswith(PNG_SIGNATURE))  # RUN/samples.png: the run's
    check_output(out, ".png", png, "a PNG picture")  # before any work
    model = load_model(args.run)
    _check_label(model, args)
    source = "the prior"
    if args.sampler != "prior":
        model, source = _sampler.fitted_model(args, model)[0], f"the {args.sampler} sampler"
    try:
        viz.save_figure(viz.samples_figure(model, args.n, args.seed, args.label, source), out)
    except OSError as exc:
        raise VaekitError(f"could not write {out}: {exc.strerror or exc}") from None
    print(out)
    return 0


def _table(args: argparse.Namespace, out: Path) -> int:
    """``--out FILE.csv`` / ``FILE.npy``: draws of a run trained on a table, in its original units."""
    from vaekit.errors import VaekitError
    from vaekit.evaluation import load_model
    from vaekit.evaluation.tables import CSV_HEADER, table_bytes, table_samples
    from vaekit.io.checkpoint import atomic_write_bytes
    from vaekit.io.files import check_output

    suffix = out.suffix.lower()
    looks = (lambda head: head.startswith(b"\x93NUMPY")) if suffix == ".npy" else \
        (lambda head: head.startswith(CSV_HEADER.encode()))
    check_output(out, suffix, looks, "a table of samples")  # before any work
    model = load_model(args.run)
    _check_label(model, args)
    if len(getattr(model, "shape", ())) != 3 or tuple(model.shape[:2]) != (1, 1):
        raise VaekitError(f"--out {out.name}: {args.run} was trained on images of shape {tuple(model.shape)}, not "
                          "a table (1, 1, D); write its samples as a PNG")
    x = table_samples(args.run, model, args.n, args.seed, args.label)
    try:
        atomic_write_bytes(out, table_bytes(x, suffix))
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
