"""``--sampler NAME`` of ``vaekit sample`` and ``vaekit evaluate``: a density fitted to a run's codes after training
standing in for its p(z) (:mod:`vaekit.analysis.samplers`)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from vaekit.commands._args import importance_samples

#: The samplers (:data:`vaekit.analysis.samplers.SAMPLERS`, kept here so that --help needs no torch).
SAMPLERS = ("prior", "gmm", "flow", "two-stage")


#: What ``nll`` is the negation of, by sampler (``sampler_figure`` in the JSON).
FIGURES = {"gmm": "decoder + fitted density (gmm), importance-sampled with q(z|x)",
           "flow": "decoder + fitted density (flow), importance-sampled with q(z|x)",
           "two-stage": "nested estimate: decoder + second-stage density, each importance-sampled (a stochastic "
                        "lower bound on log p(x) under decoder + second stage)"}


def add_arguments(parser: argparse.ArgumentParser, evaluate: bool = False) -> None:
    parser.add_argument("--sampler", choices=SAMPLERS, default="prior",
                        help="the density of z: the run's own prior p(z) (default), or one fitted after training to "
                        "the aggregate posterior's codes (one draw of q(z|x) per training image, seed 0): gmm (a "
                        "50-component full-covariance Gaussian mixture, scikit-learn), flow (a masked autoregressive "
                        "flow, 5 steps, 30 epochs of Adam), two-stage (a second VAE on the codes, Dai & Wipf 2019, 30 "
                        "epochs); fitted once and kept in RUN/samplers/")
    parser.add_argument("--refit", action="store_true",
                        help="fit the --sampler density again even if RUN/samplers/ keeps one for these weights")
    if not evaluate:  # evaluate has its own --data-dir
        parser.add_argument("--data-dir", default=None,
                            help="folder holding the run's data set, read to fit a --sampler density (default: the "
                            "run's)")
    if evaluate:
        parser.add_argument("--sampler-k", type=importance_samples, default=16, metavar="K2",
                            help="--sampler two-stage: importance draws of the second stage's q(u|z) that estimate its "
                            "density of each z (default 16); the figure is then a nested estimate, a stochastic lower "
                            "bound (see the note)")


def check_arguments(args: argparse.Namespace) -> None:
    """What a --sampler cannot be combined with, refused before any work."""
    from vaekit.errors import VaekitError

    if args.sampler == "prior":
        if getattr(args, "refit", False):
            raise VaekitError("--refit refits a --sampler density (gmm, flow or two-stage); the prior is the run's own")
        return
    for flag, value in (("--ais", getattr(args, "ais", None)), ("--gaps", getattr(args, "gaps", False)),
                        ("--label", getattr(args, "label", None))):
        if value not in (None, False):
            raise VaekitError(f"{flag} with --sampler {args.sampler}: not supported; use --sampler prior")


def fitted_model(args: argparse.Namespace, model: Any, *, inner_k: int = 16, seed: int = 0) -> tuple[Any, Any]:
    """(a copy of ``model`` with the --sampler density as its p(z), the fitted sampler); the density fitted now
    when RUN/samplers/ keeps none for the run's weights (or --refit), which says so on stderr."""
    import torch

    from vaekit.analysis import samplers
    from vaekit.evaluation import load_run_data, split_images

    samplers.check_model(model, args.run)

    def images() -> torch.Tensor:
        ds = load_run_data(args.run, data_dir=getattr(args, "data_dir", None), split="train")
        return split_images(ds, "train", samplers.SamplerSettings().seed)[0]

    fitted, line = samplers.run_sampler(args.run, args.sampler, model, images, refit=args.refit)
    print(f"vaekit {args.command}: {line}", file=sys.stderr)
    p = next(model.parameters())
    dist = samplers.density(fitted, inner_k=inner_k, seed=seed, device=p.device, dtype=p.dtype)
    return samplers.with_density(model, args.sampler, dist), fitted


def evaluate_with_sampler(args: argparse.Namespace, device: Any, progress: Any) -> tuple[Any, dict[str, Any]]:
    """(the sampler's :class:`~vaekit.evaluation.EvaluationResult`, the comparison with the run's own prior): both
    importance-sampled on the same examples with the same K, seed and proposal q(z|x); the gain in nats is the
    paired difference of the per-example estimates, with its standard error."""
    from vaekit.analysis.samplers import sampler_note
    from vaekit.evaluation import load_model, load_run_data, split_images
    from vaekit.evaluation.evaluator import check_shape, data_log_jacobian, evaluate_model, limit_split, selected_by

    model = load_model(args.run, device)
    twin, fitted = fitted_model(args, model, inner_k=args.sampler_k, seed=args.seed)
    ds = load_run_data(args.run, data_dir=args.data_dir, dataset_name=args.dataset, split=args.split)
    x, y = split_images(ds, args.split, args.seed)
    subset = None
    if args.limit is not None:
        x, y, subset = limit_split(x, y, args.limit, args.seed, args.split)
    check_shape(model, x, f"the {args.split} split")
    common = {"k": args.k, "batch_size": args.batch_size, "seed": args.seed, "split": args.split,
              "per_example": True, "class_labels": y, "levels": getattr(ds, "levels", None),
              "log_jacobian": data_log_jacobian(ds)}  # a standardised table: in the data's original units
    result = evaluate_model(twin, x, progress=progress, surgery_samples=args.surgery_samples, **common)
    prior = evaluate_model(model, x, surgery_samples=0, **common)
    result.selected_by = selected_by(args.run)
    result.notes.insert(0, sampler_note(fitted, args.sampler_k))
    if subset is not None:
        result.notes.append(f"evaluated on {subset}")
    gain = result.per_example["log_px"] - prior.per_example["log_px"]
    n = len(gain)
    compare = {"sampler": args.sampler, "sampler_figure": FIGURES[args.sampler], "prior_nll": prior.nll,
               "prior_nll_stderr": prior.nll_stderr,
               "nll_gain": float(gain.mean()),
               "nll_gain_stderr": float(gain.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
               "sampler_fit": {k: v for k, v in fitted.info.items() if k not in ("epoch_losses",)}}
    return result, compare


def table(text: str, compare: dict[str, Any], k: int, label: str = "log p(x)") -> str:
    """The evaluation's table with the sampler named on its log p(x) rows (``label``: the result's name for log p(x)),
    and the run's prior beside it."""
    name, what = compare["sampler"], compare["sampler_figure"]
    text = text.replace(f"{label}, K = {k}", f"{label} [{name}], K = {k}", 1)
    text = text.replace(f"NLL (IWAE K={k})", f"NLL [{name}]", 1)
    se = compare["nll_gain_stderr"]
    rows = [f"  {'NLL [run prior p(z)]':<24} {compare['prior_nll']:>15.3f} +- {compare['prior_nll_stderr']:.3f} nats  "
            f"(K = {k}, the same examples and draws of q(z|x))",
            f"  {'gain over the prior':<24} {compare['nll_gain']:>15.3f}"
            + (f" +- {se:.3f}" if se is not None else "") + " nats  (log p(x) with the sampler - with the prior, "
            "paired SE)"]
    lines = text.split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith("  gap log p(x)")), len(lines))
    return "\n".join([f"sampler: {name} ({what})", *lines[:at], *rows, *lines[at:]])
