"""``vaekit gradients``: the variance of gradient estimators, on the worked example or on a trained run.

Without RUN: x = theta + eps, eps ~ N(0, 1), f(x) = x^2, true gradient d/dtheta E[x^2] = 2 theta.
For each estimator and sample count m, ``trials`` independent m-sample estimates give the
measured mean and variance, compared with the analytic variance
(:func:`vaekit.analysis.estimators.worked_example_variance`).

With RUN: at the run's best weights, on a fixed batch, for a discrete q(z|x) the discrete estimators' gradients
of the mean objective with respect to the inference parameters (:mod:`vaekit.analysis.gradient_variance`; see
:mod:`vaekit.commands.gradients_run`); for a reparameterized q(z|x) the signal-to-noise ratio and variance of the
encoder's and the decoder's gradients of IWAE_K for each estimator (pathwise, stl, dreg) and K
(:mod:`vaekit.analysis.gradient_snr`; see :mod:`vaekit.commands.gradients_snr`).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from vaekit.commands._args import finite_float, int_list, positive_int, seed_int
from vaekit.commands.gradients_run import check_plot_path, write_plot
from vaekit.errors import VaekitError

#: Largest m accepted (one trial's m draws are held in memory at once).
MAX_SAMPLES = 10_000_000
#: Largest |theta| accepted (the analytic variances hold theta^4, which overflows floats near 1e77).
MAX_THETA = 1e6
#: Plot size: 8 x 5 inches at 100 dpi = 800 x 500 pixels.
PLOT_INCHES = (8.0, 5.0)
PLOT_DPI = 100

_LABELS = {
    "pathwise": "pathwise (reparameterization)",
    "score_function": "score function",
    "score_function_baseline": "score function + leave-one-out baseline",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "gradients",
        help="gradient estimators' variance: the worked example, or a trained run's estimators (discrete: "
        "variance and bias; reparameterized: SNR of IWAE_K's gradients against K)",
        description="Without RUN: estimate d/dtheta E[x^2], x ~ N(theta, 1) (true value 2*theta), with the "
        "pathwise (reparameterization), score-function and score-function + leave-one-out "
        "baseline estimators; for each sample count m repeat --trials times and print the mean, "
        "the variance, the analytic variance and the bias in standard errors. "
        "Example: vaekit gradients --theta 1.5 --samples 1,10,100,1000 --plot variance.png. "
        "With RUN (a model with a discrete q(z|x)): for each of --estimators and each number of samples S, "
        "--trials estimates of the gradient of the mean objective over --n examples with respect to the "
        "inference parameters, at the run's best weights; prints their variance and, for a latent space "
        "that can be enumerated, their bias against the exact gradient. "
        "Example: vaekit gradients runs/cat --estimators score,nvil,gumbel --samples 1,10 --plot v.png. "
        "With RUN (a model with a reparameterized q(z|x)): for each of --estimators (pathwise, stl, dreg) and each "
        "K of --k, --trials gradients of the mean IWAE_K bound over --n examples with respect to the encoder's and "
        "the decoder's parameters; prints the mean SNR over parameters (|mean| / standard deviation, Rainforth et "
        "al. 2018) and the variance, with jackknife standard errors; costs trials x K x n decoder rows per "
        "estimator and K. Example: vaekit gradients runs/vae --estimators pathwise,stl,dreg --k 1,4,16,64 "
        "--plot snr.png",
    )
    parser.add_argument("run", metavar="RUN", nargs="?", default=None,
                        help="a run directory (omit it for the worked example)")
    parser.add_argument("--theta", type=finite_float, default=None,
                        help="the worked example's parameter theta (default 1.5)")
    parser.add_argument("--samples", type=int_list, default=None, metavar="M1,M2,...",
                        help="sample counts per estimate, comma-separated (default 1,10,100,1000; "
                        "with a discrete RUN 1,2,5,10,20: samples per example averaged inside one estimate, "
                        "for vimco the S of IWAE_S)")
    parser.add_argument("--trials", type=positive_int, default=None,
                        help="independent estimates per estimator and m (>= 2, default 2000; with RUN >= 3, "
                        "default 50 for a discrete run, 100 for a reparameterized one)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="write a log-log plot to this PNG file (variance against m, or with a "
                        "reparameterized RUN the SNR against K); an existing file is replaced only if it is a PNG "
                        "picture, never through a link")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    run_only = parser.add_argument_group("with RUN")
    run_only.add_argument("--estimators", default=None, metavar="E1,E2,...",
                          help="comma-separated; a discrete run: from enumerate, score, nvil, vimco, gumbel, "
                          "straight-through (default all of them; enumerate only where the latent space can be "
                          "enumerated); a reparameterized run: from pathwise, stl, dreg (default all three)")
    run_only.add_argument("--k", type=int_list, default=None, metavar="K1,K2,...",
                          help="a reparameterized run: the K of IWAE_K, comma-separated (default 1,4,16,64)")
    run_only.add_argument("--n", type=positive_int, default=None,
                          help="the first N examples of the split form the fixed batch (default 100)")
    run_only.add_argument("--split", choices=("train", "valid", "test"), default=None,
                          help="split (default test)")
    run_only.add_argument("--temperature", type=finite_float, default=None,
                          help="a discrete run: the Gumbel-softmax temperature of gumbel and straight-through "
                          "(default 0.5)")
    run_only.add_argument("--baseline-steps", type=positive_int, default=None,
                          help="a discrete run: Adam steps fitting NVIL's baseline at the fixed weights (default 300)")
    run_only.add_argument("--data-dir", default=None, help="folder holding the data set (default: the run's)")
    run_only.add_argument("--dataset", default=None, help="use this data set instead of the run's")
    run_only.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    parser.set_defaults(func=run)


#: Options that only the measurement on a run takes.
RUN_OPTIONS = ("estimators", "k", "n", "split", "temperature", "baseline_steps", "data_dir", "dataset")


def _check(args: argparse.Namespace) -> list[int]:
    for name in RUN_OPTIONS:
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise VaekitError(f"{flag} is for measuring a run's estimators: give a RUN directory, or leave it out")
    if args.device != "cpu":
        raise VaekitError("--device is for measuring a run's estimators: give a RUN directory, or leave it out")
    args.theta = 1.5 if args.theta is None else args.theta
    args.trials = 2000 if args.trials is None else args.trials
    args.samples = [1, 10, 100, 1000] if args.samples is None else args.samples
    if args.trials < 2:
        raise VaekitError(f"--trials must be at least 2 to measure a variance, got {args.trials}")
    if args.trials > MAX_SAMPLES:
        raise VaekitError(f"--trials must be at most {MAX_SAMPLES:,}, got {args.trials:,}")
    if abs(args.theta) > MAX_THETA:
        raise VaekitError(f"--theta must be between -{MAX_THETA:g} and {MAX_THETA:g} (x^4 terms overflow beyond), "
                          f"got {args.theta:g}")
    samples = sorted(set(args.samples))
    if samples[-1] > MAX_SAMPLES:
        raise VaekitError(f"--samples values must be at most {MAX_SAMPLES:,}, got {samples[-1]:,}")
    check_plot_path(args.plot)
    return samples


def _plot(rows: list[Any], theta: float, trials: int, path: str) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    from vaekit.analysis.estimators import ESTIMATORS, worked_example_variance

    fig = Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI)  # pyplot-free: the matplotlib backend stays as it is
    ax = fig.subplots()
    try:
        for k, name in enumerate(ESTIMATORS):
            mine = [r for r in rows if r.estimator == name]
            if not mine:
                continue
            color = f"C{k}"
            ms = np.array([r.samples for r in mine], dtype=float)
            lo = max(ms.min(), 2.0) if name == "score_function_baseline" else ms.min()
            grid = np.unique(np.round(np.geomspace(lo, max(ms.max(), lo), 200)).astype(int))
            ax.plot(grid, [worked_example_variance(name, theta, int(m)) for m in grid], "-",
                    color=color, lw=1.5, label=f"{_LABELS[name]}: analytic")
            ax.plot(ms, [r.variance for r in mine], "o", color=color, ms=7, mfc="none", mew=1.8,
                    label=f"{_LABELS[name]}: measured")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("samples per estimate, m")
        ax.set_ylabel("variance of the gradient estimate")
        ax.set_title(f"Gradient estimator variance: d/dθ E[x²], x ~ N(θ, 1), θ = {theta:g} "
                     f"({trials} trials)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        write_plot(fig, path, PLOT_DPI)
    finally:
        fig.clear()


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vaekit.analysis.estimators import worked_example_experiment

    if args.run is not None:
        from vaekit.commands.gradients_run import load_measured_model, run_measurement
        from vaekit.commands.gradients_snr import run_snr

        model = load_measured_model(args)
        return run_measurement(args, model) if model.is_discrete else run_snr(args, model)
    samples = _check(args)
    rows = worked_example_experiment(theta=args.theta, samples=samples, trials=args.trials,
                                     seed=args.seed)
    true = 2.0 * args.theta
    skipped = (["score_function_baseline needs m >= 2 (leave-one-out); no row for m = 1"]
               if 1 in samples else [])
    if args.plot is not None:
        _plot(rows, args.theta, args.trials, args.plot)
    if args.json:
        out = {"true_gradient": true, "theta": args.theta, "trials": args.trials,
               "seed": args.seed, "rows": [asdict(r) for r in rows], "notes": skipped}
        if args.plot is not None:
            out["plot"] = args.plot
        print(json.dumps(out))
        return 0
    print("Worked example: x = theta + eps, eps ~ N(0, 1), f(x) = x^2")
    print(f"theta = {args.theta:g}, true gradient d/dtheta E[x^2] = 2*theta = {true:g}; "
          f"{args.trials} trials per row, seed {args.seed}")
    print("variance: over the trials of one m-sample estimate; bias in standard errors of the mean")
    print()
    head = (f"{'estimator':<24} {'m':>8} {'mean':>10} {'variance':>12} {'analytic':>12} "
            f"{'ratio':>7} {'bias (SE)':>10}")
    print(head)
    print("-" * len(head))
    for r in rows:
        bias = f"{r.bias_se:+.2f}" if math.isfinite(r.bias_se) else "nan"
        print(f"{r.estimator:<24} {r.samples:>8} {r.mean:>10.4f} {r.variance:>12.5g} "
              f"{r.analytic_variance:>12.5g} {r.variance_ratio:>7.3f} {bias:>10}")
    for note in skipped:
        print(f"note: {note}")
    if args.plot is not None:
        print(f"plot written to {args.plot}")
    return 0
