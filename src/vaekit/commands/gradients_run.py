"""``vaekit gradients RUN``: the discrete estimators' gradient variance and bias on a trained run.

At the run's best weights, on the first N examples of a split, for each estimator and each S (samples per
example averaged inside one estimate; for vimco the S of the bound IWAE_S), T independent estimates of the
gradient of the mean objective with respect to the inference parameters phi give
(:mod:`vaekit.analysis.gradient_variance`)

    variance = mean over the P parameters of the per-coordinate variance across the T trials,
    bias^2   = mean over the P parameters of (mean estimate - exact)^2, minus its noise variance / T,

each with a jackknife standard error over the trials. The exact gradient is the enumerated one (every code),
when the latent space is small enough: the ELBO's for enumerate, score, nvil, gumbel and straight-through (the
relaxations are measured against the discrete ELBO they stand in for); for vimco that of IWAE_S where the
S-tuples of codes can be enumerated, else that of log p(x) (0 for phi), which IWAE_S's approaches as S grows.
NVIL's baseline is fitted first at the fixed weights (Adam steps on the baseline alone, on the same batch).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

DEFAULT_SAMPLES = [1, 2, 5, 10, 20]
DEFAULT_TRIALS = 50
DEFAULT_N = 100
DEFAULT_TEMPERATURE = 0.5
DEFAULT_BASELINE_STEPS = 300
#: Largest S, and the most decoder rows N * S of one estimate.
MAX_SAMPLES = 100_000
MAX_ROWS = 2**22
#: Largest T, and the most bytes the T gradients of one row may hold (float32).
MAX_TRIALS = 100_000
MAX_GRADIENT_BYTES = 2**31
#: Plot size: 8 x 5 inches at 100 dpi (as the worked example's).
PLOT_INCHES = (8.0, 5.0)
PLOT_DPI = 100


#: The first bytes of every PNG file: an existing --plot is replaced only if it is one (as vaekit sample --out).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_plot_path(plot: str | None) -> None:
    """Refuse, before any work, a --plot path that is not a PNG file name in an existing folder, or where something
    other than a PNG picture lies (a link, a folder, another file): the rules of ``vaekit sample --out``
    (:func:`vaekit.io.files.check_output`)."""
    if plot is None:
        return
    from vaekit.io.files import check_output

    path = Path(plot)
    if path.suffix.lower() != ".png":
        raise VaekitError(f"--plot writes a PNG file; give a name ending in .png, got {plot!r}")
    if path.is_dir() and not path.is_symlink():
        raise VaekitError(f"--plot {plot!r} is a directory; give a file name ending in .png")
    if not path.parent.is_dir():
        raise VaekitError(f"--plot directory {str(path.parent)!r} does not exist; create it or choose another path")
    check_output(path, ".png", lambda head: head.startswith(PNG_SIGNATURE), "a PNG picture", flag="--plot")


def write_plot(fig: Any, plot: str, dpi: int = 100) -> None:
    """Write the figure to --plot as a PNG, atomically and never through a link (checked again just before)."""
    import io

    from vaekit.io.checkpoint import atomic_write_bytes

    check_plot_path(plot)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # the whole figure, at its size in inches x dpi
    try:
        atomic_write_bytes(Path(plot), buf.getvalue())
    except OSError as exc:
        raise VaekitError(f"cannot write --plot {plot!r}: {exc.strerror or exc}") from None


def _estimators(text: str | None) -> tuple[list[str], bool]:
    """(the estimators asked for, whether they were named), in order, without repeats."""
    from vaekit.objectives.discrete import ESTIMATORS

    if text is None:
        return list(ESTIMATORS), False
    names = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in names):
        raise VaekitError(f"--estimators takes comma-separated names like score,nvil; got {text!r}")
    for name in names:
        if name in ("pathwise", "stl", "dreg"):
            raise VaekitError(f"{name} estimates the gradient of a reparameterized q(z|x); this run's is discrete: "
                              f"choose from {', '.join(ESTIMATORS)}")
        if name not in ESTIMATORS:
            raise VaekitError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
    return list(dict.fromkeys(names)), True


def _settings(args: argparse.Namespace) -> tuple[list[str], list[int], bool]:
    """(estimators, sample counts S, whether the estimators were named); fills in the defaults of RUN mode."""
    if args.theta is not None:
        raise VaekitError("--theta is the worked example's parameter; leave out RUN to run it")
    estimators, named = _estimators(args.estimators)
    samples = sorted(set(args.samples)) if args.samples is not None else list(DEFAULT_SAMPLES)
    trials = DEFAULT_TRIALS if args.trials is None else args.trials
    if trials < 3:
        raise VaekitError(f"--trials must be at least 3 to measure a variance with its standard error, got {trials}")
    if trials > MAX_TRIALS:
        raise VaekitError(f"--trials must be at most {MAX_TRIALS:,}, got {trials:,}")
    if samples[-1] > MAX_SAMPLES:
        raise VaekitError(f"--samples values must be at most {MAX_SAMPLES:,}, got {samples[-1]:,}")
    if args.samples is not None and named and "vimco" in estimators and 1 in samples:
        raise VaekitError("vimco needs S >= 2 samples (leave-one-out baselines in IWAE_S); drop 1 from --samples")
    temperature = DEFAULT_TEMPERATURE if args.temperature is None else args.temperature
    if temperature <= 0:
        raise VaekitError(f"--temperature must be > 0, got {temperature:g}")
    args.trials, args.temperature = trials, temperature
    args.n = DEFAULT_N if args.n is None else args.n
    args.split = args.split or "test"
    args.baseline_steps = DEFAULT_BASELINE_STEPS if args.baseline_steps is None else args.baseline_steps
    check_plot_path(args.plot)
    return estimators, samples, named


def load_measured_model(args: argparse.Namespace) -> LatentVariableModel:
    """The model of ``args.run`` (its best weights, on ``args.device``), after the checks of every RUN mode."""
    from vaekit.evaluation import load_model

    if args.theta is not None:
        raise VaekitError("--theta is the worked example's parameter; leave out RUN to run it")
    return load_model(args.run, args.device)


def run_measurement(args: argparse.Namespace, model: LatentVariableModel) -> int:
    """``vaekit gradients RUN`` on a model with a discrete q(z|x): the discrete estimators' variance and bias."""
    from vaekit.analysis.gradient_variance import measure
    from vaekit.evaluation import check_shape, load_run_data, split_images
    from vaekit.objectives.discrete import MAX_ENUMERATED, latent_support_size
    from vaekit.progress import Bar, enabled, step_lines

    if args.k is not None:
        raise VaekitError("--k is the K of IWAE_K for a run with a reparameterized q(z|x); this run's is discrete: "
                          "give the samples per estimate with --samples")
    estimators, samples, named = _settings(args)
    if getattr(model, "condition", 0):
        raise VaekitError(f"{args.run} is a conditional model; vaekit gradients RUN measures unconditional ones")
    if not model.inference_parameters():
        raise VaekitError(f"{args.run} has no inference parameters: its q(z|x) is the exact posterior (a mixture "
                          "fitted by EM), so there is no gradient for an estimator to estimate")
    size = latent_support_size(model)
    notes: list[str] = []
    if "enumerate" in estimators and (size is None or size > MAX_ENUMERATED):
        if named:
            shown = "too many to count" if size is None else f"{size:,}"
            raise VaekitError(f"--estimators enumerate sums over every code, and this latent space has {shown} "
                              f"(at most {MAX_ENUMERATED:,}); leave enumerate out")
        estimators.remove("enumerate")
        notes.append("enumerate left out: the latent space is too large to sum over")
    ds = load_run_data(args.run, data_dir=args.data_dir, dataset_name=args.dataset)
    x, _ = split_images(ds, args.split, args.seed)
    x = x[: args.n]
    check_shape(model, x, f"the {args.split} split")
    param = next(iter(model.parameters()))
    x = x.to(device=param.device, dtype=param.dtype).reshape(x.shape[0], *model.shape)
    n_params = sum(p.numel() for p in model.inference_parameters())
    if x.shape[0] * samples[-1] > MAX_ROWS:
        raise VaekitError(f"--n {x.shape[0]} times S = {samples[-1]} is {x.shape[0] * samples[-1]:,} decoder rows "
                          f"per estimate, more than {MAX_ROWS:,}; lower --n or --samples")
    if 4 * n_params * args.trials > MAX_GRADIENT_BYTES:
        raise VaekitError(f"{args.trials} trials of {n_params:,} gradient coordinates need "
                          f"{4 * n_params * args.trials / 2**30:.1f} GiB; lower --trials")
    with Bar("NVIL's baseline fit", "steps", enabled=enabled(None), flags="--baseline-steps",
             say=step_lines()) as progress:  # said, drawn on a terminal, refused when it would take hours
        result = measure(model, x, estimators, samples, args.trials, seed=args.seed, temperature=args.temperature,
                         baseline_steps=args.baseline_steps, progress=progress)
    result.notes[:0] = notes
    if args.plot is not None:
        _plot(result, args)
    out = _as_dict(result, args, model)
    if args.json:
        print(json.dumps(out))
        return 0
    _print(out)
    return 0


def _describe_latent(model: LatentVariableModel, size: int | None) -> str:
    family = model.posterior_family
    if family.name == "categorical":
        what = f"categorical, {family.latent} groups of {family.classes} classes"
    else:
        what = f"{family.name}, {family.latent} units"
    return f"{what}: {size:,} codes" if size is not None else what


def _as_dict(result: Any, args: argparse.Namespace, model: LatentVariableModel) -> dict[str, Any]:
    from vaekit.analysis.gradient_variance import TARGETS

    out = {
        "run": str(args.run), "split": args.split, "n": result.n, "trials": result.trials, "seed": args.seed,
        "parameters": result.parameters, "support_size": result.support_size,
        "latent": _describe_latent(model, result.support_size), "exact_elbo": result.exact_elbo,
        "temperature": result.temperature, "nvil_baseline": result.baseline, "targets": TARGETS,
        "rows": [asdict(r) for r in result.rows], "notes": list(result.notes),
    }
    if args.plot is not None:
        out["plot"] = args.plot
    from vaekit.evaluation import json_safe

    return json_safe(out)


def _pm(value: float | None, se: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3e} +- {se:.1e}" if se is not None else f"{value:.3e}"


def _print(out: dict[str, Any]) -> None:
    print(f"Gradient estimators on {out['run']} ({out['latent']}), {out['split']} split, first {out['n']} examples, "
          f"{out['trials']} trials per row, seed {out['seed']}")
    print(f"the gradient of the mean objective with respect to the {out['parameters']:,} inference parameters, "
          "at the run's best weights")
    print("variance: mean over parameters of the per-coordinate variance across trials; bias^2: mean over "
          "parameters of (mean estimate - exact)^2 minus its noise (variance / trials); +- jackknife SE")
    if out["exact_elbo"] is not None:
        print(f"exact ELBO of the batch (every code enumerated): {out['exact_elbo']:.4f} nats per example")
    b = out["nvil_baseline"]
    if b is not None:
        print(f"nvil: baseline fitted first at the fixed weights, {b['steps']} Adam steps on the baseline only "
              f"(mean squared f - c - b(x): {b['squared_error_first']:.4g} at the start, c = b = 0, -> "
              f"{b['squared_error_last']:.4g} nats^2)")
    if any(r["estimator"] in ("gumbel", "straight-through") for r in out["rows"]):
        print(f"gumbel, straight-through: temperature {out['temperature']:g}; bias against the discrete ELBO")
    print()
    head = (f"{'estimator':<17} {'S':>5} {'objective':>9} {'bias against':>13} {'variance +- SE':>22} "
            f"{'bias^2 +- SE':>22} {'rel. bias':>9} {'seconds':>8}")
    print(head)
    print("-" * len(head))
    shown = {"elbo": "ELBO", "iwae": "IWAE_S", "log_px": "log p(x)", None: "-"}
    for r in out["rows"]:
        s = "-" if r["samples"] is None else str(r["samples"])
        objective = "IWAE_S" if r["objective"] == "iwae" else "ELBO"
        significant = r["bias2"] is not None and r["bias2"] > 2 * (r["bias2_stderr"] or 0.0)
        rel = f"{r['bias_relative']:.3f}" if significant and r["bias_relative"] is not None else "-"
        print(f"{r['estimator']:<17} {s:>5} {objective:>9} {shown[r['target']]:>13} "
              f"{_pm(r['variance'], r['variance_stderr']):>22} {_pm(r['bias2'], r['bias2_stderr']):>22} "
              f"{rel:>9} {r['seconds']:>8.2f}")
    print("rel. bias: sqrt(bias^2 / mean over parameters of exact^2), shown where bias^2 exceeds 2 SE")
    for note in out["notes"]:
        print(f"note: {note}")
    if "plot" in out:
        print(f"plot written to {out['plot']}")


def _plot(result: Any, args: argparse.Namespace) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI)  # pyplot-free: the matplotlib backend stays as it is
    ax = fig.subplots()
    try:
        names = list(dict.fromkeys(r.estimator for r in result.rows))
        flat = []
        for k, name in enumerate(names):
            mine = [r for r in result.rows if r.estimator == name and r.samples is not None and r.variance > 0]
            if not mine:
                flat.append(name)
                continue
            ax.errorbar([r.samples for r in mine], [r.variance for r in mine],
                        yerr=[min(r.variance_stderr, 0.99 * r.variance) for r in mine], fmt="o-", color=f"C{k}",
                        ms=5, capsize=3, label=name + (" (IWAE_S)" if name == "vimco" else ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("samples per example in one estimate, S")
        ax.set_ylabel("gradient variance (mean over parameters)")
        title = f"Gradient variance, {Path(str(args.run)).name}: {result.n} examples, {result.trials} trials"
        if flat:
            title += f"\n(variance 0, not drawn on log axes: {', '.join(flat)})"
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if len(names) > len(flat):
            ax.legend(fontsize=8)
        fig.tight_layout()
        write_plot(fig, args.plot, PLOT_DPI)
    finally:
        fig.clear()
