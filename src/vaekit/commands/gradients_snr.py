"""``vaekit gradients RUN`` for a run with a reparameterized q(z|x): the signal-to-noise ratio of the encoder's and
the decoder's gradients of IWAE_K, for each estimator of the encoder's gradient (pathwise, stl, dreg) and each K.

At the run's best weights, on the first N examples of a split, T repeats of the gradient of the mean IWAE_K bound
over the batch give, for the encoder's parameters phi and the generative model's theta, the mean SNR over parameters
(|mean| / standard deviation per parameter, Rainforth et al., 2018) and the mean variance, each with a jackknife
standard error over the T repeats (:mod:`vaekit.analysis.gradient_snr`). pathwise and dreg estimate the gradient of
IWAE_K; stl drops the score term of the same log weights (unbiased for the ELBO, K = 1; biased for IWAE_K beyond).

Cost: T x K x N decoder rows, forward and backward, per estimator and K (``--trials``, ``--k``, ``--n``); one
estimate's N K rows and the T gradients kept are checked against the memory budget before any work.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaekit.commands.gradients_run import MAX_ROWS, MAX_TRIALS, check_plot_path, write_plot
from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

DEFAULT_K = [1, 4, 16, 64]
DEFAULT_TRIALS = 100
DEFAULT_N = 100
#: Largest K accepted.
MAX_K = 100_000
#: The options of the discrete measurement, which a reparameterized run refuses.
DISCRETE_ONLY = ("samples", "temperature", "baseline_steps")
#: Plot size: 8 x 5 inches at 100 dpi (as the other gradients plots).
PLOT_INCHES = (8.0, 5.0)
PLOT_DPI = 100


def _estimators(text: str | None) -> list[str]:
    """The reparameterized estimators asked for, in order, without repeats (default all three)."""
    from vaekit.objectives.discrete import ESTIMATORS
    from vaekit.objectives.reparameterized import REPARAMETERIZED

    if text is None:
        return REPARAMETERIZED.names()
    names = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in names):
        raise VaekitError(f"--estimators takes comma-separated names like pathwise,dreg; got {text!r}")
    for name in names:
        if name in ESTIMATORS:
            raise VaekitError(f"{name} estimates the gradient of a discrete q(z|x); this run's is reparameterized: "
                              f"choose from {', '.join(REPARAMETERIZED.names())}")
        if name not in REPARAMETERIZED:
            raise VaekitError(f"unknown estimator {name!r}; choose from {', '.join(REPARAMETERIZED.names())}")
    return list(dict.fromkeys(names))


def _settings(args: argparse.Namespace) -> tuple[list[str], list[int]]:
    """(estimators, the Ks); fills in the defaults of the measurement (trials, n, split)."""
    for name in DISCRETE_ONLY:
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            raise VaekitError(f"{flag} is for a run with a discrete q(z|x); this run's is reparameterized (give the "
                              "K of IWAE_K with --k)")
    estimators = _estimators(args.estimators)
    ks = sorted(set(args.k)) if args.k is not None else list(DEFAULT_K)
    if ks[-1] > MAX_K:
        raise VaekitError(f"--k values must be at most {MAX_K:,}, got {ks[-1]:,}")
    trials = DEFAULT_TRIALS if args.trials is None else args.trials
    if trials < 3:
        raise VaekitError(f"--trials must be at least 3 to measure an SNR with its standard error, got {trials}")
    if trials > MAX_TRIALS:
        raise VaekitError(f"--trials must be at most {MAX_TRIALS:,}, got {trials:,}")
    args.trials, args.n, args.split = trials, DEFAULT_N if args.n is None else args.n, args.split or "test"
    check_plot_path(args.plot)
    return estimators, ks


def _applicable(model: LatentVariableModel, names: list[str], objective: Any, asked: bool) -> list[str]:
    """The estimators to measure, checked before any work (stl and dreg need log q at stopped parameters): each one
    asked for by --estimators must apply to ``model`` (one line otherwise); of the default ones, those that do."""
    from vaekit.errors import ConfigError
    from vaekit.objectives.reparameterized import check_reparameterized_estimator

    kept = []
    for name in names:
        try:
            check_reparameterized_estimator(model, name, objective)
        except ConfigError:
            if asked:
                raise
            continue
        kept.append(name)
    return kept


def _check_cost(model: LatentVariableModel, n: int, k: int, trials: int, parameters: int) -> None:
    """Refuse, in one line, a measurement whose one estimate (n k decoder rows, kept for the backward pass) or whose
    kept gradients (trials x parameters, float32) pass the memory budget."""
    from vaekit.bounds.sizing import bytes_per_row
    from vaekit.resources import check_memory

    if n * k > MAX_ROWS:
        raise VaekitError(f"--n {n} times K = {k} is {n * k:,} decoder rows per estimate, more than {MAX_ROWS:,}; "
                          "lower --n or --k")
    try:
        row = bytes_per_row(model, model.latent_size)
    except Exception:  # noqa: BLE001 - a model the probe cannot measure: the row cap above holds
        row = 0
    check_memory(2 * n * k * row, f"one estimate of IWAE_{k}'s gradient ({n} x {k} decoder rows)", "--n or --k")
    check_memory(2 * 4 * parameters * trials, f"{trials} gradients of {parameters:,} parameters", "--trials")


def run_snr(args: argparse.Namespace, model: LatentVariableModel) -> int:
    """The measurement on a reparameterized ``model`` (loaded from ``args.run``); prints a table or JSON."""
    from vaekit.analysis.gradient_snr import measure_snr
    from vaekit.evaluation import check_shape, load_run_data, split_images
    from vaekit.objectives import build_objective

    estimators, ks = _settings(args)
    if getattr(model, "condition", 0):
        raise VaekitError(f"{args.run} is a conditional model; vaekit gradients RUN measures unconditional ones")
    if getattr(model, "is_autoencoder", False):
        raise VaekitError(f"{args.run} is an autoencoder (a point-mass q(z|x)): it has no IWAE bound to measure")
    estimators = _applicable(model, estimators, build_objective("iwae", k=ks[-1]), asked=args.estimators is not None)
    ds = load_run_data(args.run, data_dir=args.data_dir, dataset_name=args.dataset)
    x, _ = split_images(ds, args.split, args.seed)
    x = x[: args.n]
    check_shape(model, x, f"the {args.split} split")
    param = next(iter(model.parameters()))
    x = x.to(device=param.device, dtype=param.dtype).reshape(x.shape[0], *model.shape)
    _check_cost(model, x.shape[0], ks[-1], args.trials, sum(p.numel() for p in model.parameters()))
    result = measure_snr(model, x, estimators, ks, args.trials, seed=args.seed)
    if args.plot is not None:
        _plot(result, args)
    out = _as_dict(result, args, model)
    if args.json:
        print(json.dumps(out))
        return 0
    _print(out)
    return 0


def _as_dict(result: Any, args: argparse.Namespace, model: LatentVariableModel) -> dict[str, Any]:
    from vaekit.evaluation import json_safe

    rows = [asdict(r) for r in result.rows]
    out = {
        "run": str(args.run), "split": args.split, "n": result.n, "trials": result.trials, "seed": args.seed,
        "posterior": getattr(getattr(model, "posterior_family", None), "name", None), "objective": "iwae",
        "encoder_parameters": result.encoder_parameters, "decoder_parameters": result.decoder_parameters,
        "snr_floor": result.snr_floor, "decoder_rows": sum(r["k"] for r in rows) * result.n * result.trials,
        "standard_errors": "jackknife over the repeats", "rows": rows, "notes": list(result.notes),
    }
    if args.plot is not None:
        out["plot"] = args.plot
    return json_safe(out)


def _pm(value: float | None, se: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g} +- {se:.2g}" if se is not None and math.isfinite(se) else f"{value:.3g}"


def _print(out: dict[str, Any]) -> None:
    print(f"Gradients of IWAE_K on {out['run']} ({out['posterior']} q(z|x)), {out['split']} split, first {out['n']} "
          f"examples, {out['trials']} repeats per row, seed {out['seed']} ({out['decoder_rows']:,} decoder rows)")
    print(f"encoder: {out['encoder_parameters']:,} parameters of q(z|x); decoder: {out['decoder_parameters']:,} of "
          "p(z) p(x|z); at the run's best weights")
    print("SNR: mean over parameters of |mean| / standard deviation across repeats; variance: mean over parameters; "
          f"+- jackknife SE. An SNR near {out['snr_floor']:.3f} is noise ({out['trials']} repeats of a zero mean)")
    print()
    head = (f"{'estimator':<9} {'K':>6} {'encoder SNR':>18} {'decoder SNR':>18} {'encoder variance':>20} "
            f"{'IWAE_K':>10} {'seconds':>8}")
    print(head)
    print("-" * len(head))
    for r in out["rows"]:
        print(f"{r['estimator']:<9} {r['k']:>6} {_pm(r['encoder_snr'], r['encoder_snr_stderr']):>18} "
              f"{_pm(r['decoder_snr'], r['decoder_snr_stderr']):>18} "
              f"{_pm(r['encoder_variance'], r['encoder_variance_stderr']):>20} {r['bound']:>10.3f} "
              f"{r['seconds']:>8.2f}")
    print("pathwise, dreg: unbiased for the gradient of IWAE_K; stl: unbiased for the ELBO (K = 1); the decoder's "
          "gradient is the same for the three (the same draws)")
    for note in out["notes"]:
        print(f"note: {note}")
    if "plot" in out:
        print(f"plot written to {out['plot']}")


def _plot(result: Any, args: argparse.Namespace) -> None:
    """SNR against K, log-log, encoder and decoder, with reference slopes 1/sqrt(K) and sqrt(K)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=PLOT_INCHES, dpi=PLOT_DPI)  # pyplot-free: the matplotlib backend stays as it is
    axes = fig.subplots(1, 2, sharex=True)
    try:
        ks = sorted({r.k for r in result.rows})
        for ax, part in zip(axes, ("encoder", "decoder")):
            _plot_part(ax, result, part, ks, np)
        title = (f"Gradient SNR of IWAE_K, {Path(str(args.run)).name}: {result.n} examples, {result.trials} repeats "
                 "(+- jackknife SE)")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        write_plot(fig, args.plot, PLOT_DPI)
    finally:
        fig.clear()


def _plot_part(ax: Any, result: Any, part: str, ks: list[int], np: Any) -> None:
    names = list(dict.fromkeys(r.estimator for r in result.rows))
    shown = []
    for index, name in enumerate(names):
        mine = [r for r in result.rows if r.estimator == name and getattr(r, f"{part}_snr") is not None]
        if not mine:
            continue
        snr = np.array([getattr(r, f"{part}_snr") for r in mine])
        se = np.array([getattr(r, f"{part}_snr_stderr") for r in mine], dtype=float)
        ax.errorbar([r.k for r in mine], snr, yerr=np.minimum(np.nan_to_num(se), 0.99 * snr), fmt="o-",
                    color=f"C{index}", ms=4, capsize=3, label=name)
        shown.extend(snr.tolist())
    if shown and ks[-1] > ks[0]:
        grid = np.geomspace(ks[0], ks[-1], 50)
        anchor = float(np.exp(np.mean(np.log(np.maximum(shown, 1e-300)))))
        middle = math.sqrt(ks[0] * ks[-1])
        ax.plot(grid, anchor * np.sqrt(middle / grid), ":", color="0.5", label="slope 1/sqrt(K)")
        ax.plot(grid, anchor * np.sqrt(grid / middle), "--", color="0.5", label="slope sqrt(K)")
    ax.axhline(result.snr_floor, color="0.8", lw=1, label="noise floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("K (draws per example in IWAE_K)")
    ax.set_ylabel(f"{part} SNR (mean over parameters)")
    ax.set_title("encoder q(z|x)" if part == "encoder" else "decoder p(z) p(x|z): the same for every estimator",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
