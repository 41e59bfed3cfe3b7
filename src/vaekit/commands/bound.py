"""``vaekit bound``: the bound made visible, ELBO <= log p(x) checked against exact or numerical answers."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from vaekit.commands._args import grid_points, importance_samples, positive_int, seed_int
from vaekit.commands._json import print_json
from vaekit.commands.bound_bdmc import add_arguments as add_bdmc_arguments

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

DESCRIPTION = """\
Compare the ELBO, the importance-sampled log p(x) (IWAE_K, with its Monte Carlo standard error
sqrt(1/ESS - 1/K)) and a reference value of log p(x), example by example.

Without RUN: a linear-Gaussian model (x = W z + b + noise, z ~ N(0, I_2), D = 16), where log p(x)
is known in closed form, evaluated by the same code as a trained VAE, twice: with q(z|x) set to the
exact posterior (the ELBO then equals log p(x): every importance weight is p(x)) and with a
deliberately wrong q (the gap log p(x) - ELBO then equals KL(q || p(z|x)), printed in closed form).
The grid integral of the 2-D latent space is shown too.

With RUN: --n examples of the run's test split, a fixed random subset drawn with --seed
(class-balanced when the data set has labels; that of 'vaekit evaluate RUN --limit N', same seed).
For a 2-D latent space log p(x) is also computed by numerical integration over a grid of z (a
coarse 200x200 grid over [-6, 6]^2 finds the posterior mass, a fine --grid x --grid grid over that
box integrates it; the grid error is estimated from the same sum at half the resolution). For other
latent sizes grid integration is not feasible, and the command prints IWAE_K vs ELBO and the gap only.

With RUN of a model with discrete latents (categorical or binary codes, at most 2^24 of them): log p(x)
= logsumexp_z [log p(x|z) + log p(z)] exactly, by a sum over every code, beside IWAE_K for K = 1, 10,
100, 1000 and --k, the exact ELBO = sum_z q(z|x) [log p(x, z) - log q(z|x)] and the exact gap
log p(x) - ELBO = KL(q(z|x) || p(z|x)). In expectation ELBO = IWAE_1 <= IWAE_K <= log p(x), and
log p(x) - IWAE_K shrinks to 0 as K grows (shown on average, with its standard error over examples).

With --bdmc T[,T...] (bidirectional Monte Carlo, for a model with continuous latents; without RUN the
linear-Gaussian model): --n examples simulated from the model itself, whose log p(x) is sandwiched between
forward AIS from the prior (a stochastic lower bound) and reverse AIS started at the code that generated
each example (a stochastic upper bound), for each T; the width says how far AIS with these settings is
from exact on data like the model's own.

A deterministic autoencoder (--posterior delta) has no ELBO (its q(z|x) is a point mass): refused in one
line; 'vaekit evaluate RUN' gives the log p(x) of its decoder with the density fitted to its codes. So is a
VQ-VAE (--family vqvae), whose q(z|x) is a point mass on its codes: 'vaekit evaluate RUN' gives its vq_elbo.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bound", help="ELBO vs importance-sampled vs exact/grid log p(x), per example",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", metavar="RUN", nargs="?", default=None,
                        help="run directory (omit it for the linear-Gaussian demo)")
    parser.add_argument("--n", type=positive_int, default=20,
                        help="number of test examples, a fixed random subset drawn with --seed (default 20)")
    parser.add_argument("--k", type=importance_samples, default=5000,
                        help="importance samples per example (default 5000)")
    parser.add_argument("--grid", type=grid_points, default=200, help="fine grid points per axis (default 200)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--data-dir", default=None, help="folder holding the data set (default: the run's)")
    parser.add_argument("--dataset", default=None, help="use this data set instead of the run's")
    add_bdmc_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _examples(c: dict[str, Any], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    keys = [k for k in ("exact", "grid", "grid_error", "iwae", "iwae_stderr", "elbo", "gap") if k in c]
    rows = []
    for i in range(c["n"]):
        row = {k: float(c[k][i]) for k in keys}
        for name, values in (extra or {}).items():
            row[name] = float(values[i])
        rows.append(row)
    return rows


def _checks(c: dict[str, Any], tol: float = 1e-6) -> dict[str, Any]:
    """ELBO <= IWAE (always: same draws, Jensen); ELBO <= reference; |IWAE - reference| in SE units."""
    import numpy as np

    # float32 rounds a log-likelihood of size |v| to about 1e-7 |v| per operation: an exact posterior (every
    # weight equal to p(x), standard error 0) must not read as a violation of the bound by that rounding
    rounding = tol + 1e-5 * np.abs(c["iwae"])
    out: dict[str, Any] = {"elbo_le_iwae": bool((c["elbo"] <= c["iwae"] + rounding).all())}
    ref_key = "exact" if "exact" in c else ("grid" if "grid" in c else None)
    if ref_key is not None:
        ref = c[ref_key]
        out["reference"] = ref_key
        out["elbo_le_reference"] = bool((c["elbo"] <= ref + rounding).all())
        se = np.sqrt(c["iwae_stderr"] ** 2 + (c["grid_error"] ** 2 if ref_key == "grid" else 0.0))
        z = np.abs(c["iwae"] - ref) / np.maximum(se, rounding)
        out["iwae_within_3se"] = int((z <= 3).sum())
        out["max_abs_z"] = float(z.max())
        out["mean_abs_error"] = float(np.abs(c["iwae"] - ref).mean())
    return out


def _print_table(c: dict[str, Any], kl: Any = None) -> None:
    cols = [("exact", "exact log p(x)"), ("grid", "grid log p(x)")]
    head = f"{'#':>3}"
    for key, name in cols:
        if key in c:
            head += f"  {name:>15}"
    head += f"  {'IWAE_K +- SE':>21}  {'ELBO':>10}  {'gap':>8}"
    if kl is not None:
        head += f"  {'KL(q||p(z|x))':>14}"
    print(head)
    for i in range(c["n"]):
        line = f"{i:>3}"
        for key, _ in cols:
            if key in c:
                err = f" ({c['grid_error'][i]:.0e})" if key == "grid" else ""
                line += f"  {c[key][i]:>15.4f}"[: 17] if not err else f"  {c[key][i]:>9.4f}{err:>6}"
        se = c["iwae_stderr"][i]
        line += f"  {c['iwae'][i]:>11.4f} +- {se:<6.4f}" if math.isfinite(se) else f"  {c['iwae'][i]:>21.4f}"
        line += f"  {c['elbo'][i]:>10.4f}  {c['gap'][i]:>8.4f}"
        if kl is not None:
            line += f"  {float(kl[i]):>14.4f}"
        print(line)
    m = c["means"]
    line = f"{'avg':>3}"
    for key, _ in cols:
        if key in c:
            line += f"  {m[key]:>15.4f}"
    line += f"  {m['iwae']:>21.4f}  {m['elbo']:>10.4f}  {m['gap']:>8.4f}"
    if kl is not None:
        line += f"  {float(kl.mean()):>14.4f}"
    print(line)


def _print_checks(ch: dict[str, Any], n: int) -> None:
    yes = {True: "yes", False: "NO"}
    text = f"ELBO <= IWAE_K for every example: {yes[ch['elbo_le_iwae']]}"
    if "reference" in ch:
        ref = ch["reference"]
        text += (f"; ELBO <= {ref} log p(x): {yes[ch['elbo_le_reference']]}; IWAE_K within 3 SE of {ref}: "
                 f"{ch['iwae_within_3se']}/{n} (largest |error|/SE {ch['max_abs_z']:.2f})")
    print(text)


def _linear_gaussian(args: argparse.Namespace) -> dict[str, Any]:
    from vaekit.evaluation.exact import LinearGaussian, compare_bounds

    lg = LinearGaussian.random(data_dim=16, latent=2, sigma=0.5, seed=args.seed).set_exact_posterior()
    x = lg.sample_data(args.n, seed=args.seed + 1)
    exact = lg.log_marginal(x)
    out: dict[str, Any] = {"model": "linear-gaussian", "data_dim": 16, "latent": 2, "sigma": 0.5,
                           "k": args.k, "n": args.n}
    for name, setup in (("exact_q", lg.set_exact_posterior), ("wrong_q", lg.set_wrong_posterior)):
        setup()
        kl = lg.kl_to_posterior(x)
        c = compare_bounds(lg, x, k=args.k, seed=args.seed, grid=args.grid, exact=exact)
        out[name] = {"means": c["means"] | {"kl_to_posterior": float(kl.mean())}, "checks": _checks(c),
                     "examples": _examples(c, {"kl_to_posterior": kl.numpy()}), "_c": c, "_kl": kl.numpy()}
    return out


#: The K of IWAE_K shown beside the exact log p(x) of a discrete run, besides --k.
DISCRETE_KS = (1, 10, 100, 1000)


def _discrete_checks(c: dict[str, Any], tol: float = 1e-4) -> dict[str, Any]:
    """ELBO <= log p(x) for every example (exact values, float32 rounding ``tol``); on average over examples,
    IWAE_K <= log p(x) and IWAE_K >= ELBO within 3 standard errors for each K, and |log p(x) - IWAE_K| at
    the largest K smaller than at K = 1."""
    import numpy as np

    n = c["n"]
    out: dict[str, Any] = {"reference": "exact", "elbo_le_exact": bool((c["elbo"] <= c["exact"] + tol).all())}
    below, above = {}, {}
    for k in c["ks"]:
        short = c["shortfall"][k]
        se = short["stderr"] if math.isfinite(short["stderr"]) else 0.0
        below[str(k)] = bool(short["mean"] >= -3 * se - tol)
        over = c["iwae"][k] - c["elbo"]
        se_over = float(over.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        above[str(k)] = bool(over.mean() >= -3 * se_over - tol)
    out["iwae_le_exact_within_3se"] = below
    out["iwae_ge_elbo_within_3se"] = above
    first, last = c["ks"][0], c["ks"][-1]
    out["error_shrinks"] = bool(abs(c["shortfall"][last]["mean"]) <= abs(c["shortfall"][first]["mean"]) + tol)
    err = np.abs(c["exact"] - c["iwae"][last])
    out["mean_abs_error_at_largest_k"] = float(err.mean())
    return out


def _print_discrete(c: dict[str, Any], checks: dict[str, Any]) -> None:
    ks = c["ks"]
    head = f"{'#':>3}  {'exact log p(x)':>14}" + "".join(f"  {'IWAE_' + str(k):>11}" for k in ks)
    print(head + f"  {'ELBO':>10}  {'gap = KL(q||p(z|x))':>19}")
    for i in range(c["n"]):
        line = f"{i:>3}  {c['exact'][i]:>14.4f}" + "".join(f"  {c['iwae'][k][i]:>11.4f}" for k in ks)
        print(line + f"  {c['elbo'][i]:>10.4f}  {c['gap'][i]:>19.4f}")
    m = c["means"]
    line = f"{'avg':>3}  {m['exact']:>14.4f}" + "".join(f"  {m['iwae'][k]:>11.4f}" for k in ks)
    print(line + f"  {m['elbo']:>10.4f}  {m['gap']:>19.4f}")
    print("\nlog p(x) - IWAE_K on average (+- SE over examples): "
          + ", ".join(f"K={k}: {c['shortfall'][k]['mean']:.4f} +- {c['shortfall'][k]['stderr']:.4f}" for k in ks))
    yes = {True: "yes", False: "NO"}
    below = all(checks["iwae_le_exact_within_3se"].values())
    above = all(checks["iwae_ge_elbo_within_3se"].values())
    print(f"ELBO <= exact log p(x) for every example: {yes[checks['elbo_le_exact']]}; on average ELBO <= IWAE_K "
          f"<= log p(x) within 3 SE for every K: {yes[below and above]}; the error shrinks with K: "
          f"{yes[checks['error_shrinks']]}")


def _discrete_run(args: argparse.Namespace, model: LatentVariableModel, x: Any, y: Any,
                  log_jacobian: float = 0.0) -> dict[str, Any]:
    from vaekit.evaluation.exact import compare_enumerated
    from vaekit.progress import Bar, enabled, step_lines

    with Bar("the exact sum over every code", "codes", enabled=enabled(None), flags="--n",
             say=step_lines()) as progress:
        c = compare_enumerated(model, x, ks=(*DISCRETE_KS, args.k), seed=args.seed, y=y, progress=progress,
                               log_jacobian=log_jacobian)
    checks = _discrete_checks(c)
    if not args.json:
        print(f"{args.run}: {c['n']} test examples, a discrete latent space of {c['codes']:,} codes; log p(x) "
              "exact (a sum over every code), IWAE_K by importance sampling, the ELBO and the gap exact")
        _print_discrete(c, checks)
    examples = []
    for i in range(c["n"]):
        examples.append({"exact_log_px": float(c["exact"][i]), "elbo": float(c["elbo"][i]),
                         "gap": float(c["gap"][i]), "reconstruction": float(c["reconstruction"][i]),
                         "kl": float(c["kl"][i]), "iwae": {str(k): float(c["iwae"][k][i]) for k in c["ks"]}})
    m = c["means"]
    return {"run": str(args.run), "latent": c["latent"], "codes": c["codes"], "k": args.k, "ks": c["ks"],
            "n": c["n"], "grid": False, "exact": True, "exact_log_px": m["exact"], "elbo": m["elbo"], "gap": m["gap"],
            "iwae": {str(k): v for k, v in m["iwae"].items()},
            "iwae_shortfall": {str(k): v for k, v in c["shortfall"].items()},
            "means": {"exact": m["exact"], "elbo": m["elbo"], "gap": m["gap"], "iwae": m["iwae"][args.k]},
            "checks": checks, "examples": examples}


def density_note(name: str, levels: int) -> str:
    """The line saying what the numbers are when p(x|z) is a density and the data are grey levels (the figure
    ``vaekit evaluate`` dequantises): log-densities of the images scaled to [0, 1], not the log-probability of
    their integer values."""
    return (f"note: the {name} likelihood is a density, so these values are log-densities of the images "
            f"scaled to [0, 1], not log-probabilities of their {levels} grey levels (vaekit evaluate quotes the "
            f"dequantised bound log P(x) >= E_u log p((k + u) / {levels}) - D log {levels})")


def run(args: argparse.Namespace) -> int:
    import torch

    with torch.no_grad():  # not torch.set_grad_enabled(False): that would leak into the caller's process
        return _run(args)


def _demo(args: argparse.Namespace) -> dict[str, Any]:
    """The linear-Gaussian demo (no RUN), printed as tables unless --json; the summary without its working arrays."""
    out = _linear_gaussian(args)
    if not args.json:
        print(f"Linear-Gaussian model: x = W z + b + N(0, 0.5^2 I), z ~ N(0, I_2), D = 16; {args.n} examples "
              f"x ~ p(x); K = {args.k}. log p(x) exact = log N(x; b, W W^T + sigma^2 I).")
        for name, title in (("exact_q", "q(z|x) = p(z|x), the exact posterior: every log w_i = log p(x), "
                             "so ELBO = IWAE = log p(x)"),
                            ("wrong_q", "a wrong q(z|x): gap = log p(x) - ELBO = KL(q || p(z|x)) "
                             "(closed form, last column)")):
            print(f"\n{title}")
            _print_table(out[name]["_c"], out[name]["_kl"])
            _print_checks(out[name]["checks"], args.n)
    for name in ("exact_q", "wrong_q"):
        out[name].pop("_c"), out[name].pop("_kl")
    return out


def _continuous_run(args: argparse.Namespace, model: LatentVariableModel, x: Any, values: str,
                    log_jacobian: float = 0.0) -> dict[str, Any]:
    """ELBO, IWAE_K and (for a 2-D latent space) the grid log p(x) of a run's test examples, printed unless
    --json; the summary."""
    from vaekit.evaluation.exact import compare_bounds

    c = compare_bounds(model, x, k=args.k, seed=args.seed, grid=args.grid, log_jacobian=log_jacobian)
    latent = c["latent"]
    out: dict[str, Any] = {"run": str(args.run), "latent": latent, "k": args.k, "n": c["n"], "grid": "grid" in c,
                           "means": c["means"], "checks": _checks(c), "examples": _examples(c),
                           "values": values}
    if not args.json:
        print(f"{args.run}: {c['n']} test examples, latent {latent}, K = {args.k}")
        if "grid" in c:
            print(f"grid log p(x): fine {args.grid}x{args.grid} grid over each example's posterior box "
                  "(grid error estimate in brackets)")
        _print_table(c)
        _print_checks(out["checks"], c["n"])
        if "grid" not in c:
            print(f"grid integration of log p(x) needs a 2-D latent space (this model has {latent}); "
                  "the gap IWAE_K - ELBO is a lower estimate of KL(q(z|x) || p(z|x)).")
        elif bool(c["grid_edge"].any()):
            print("note: for some examples the posterior reaches the edge of the coarse grid; "
                  "the grid value may miss mass there")
    return out


def _check_applies(model: LatentVariableModel, run: str) -> None:
    """Refuse, before any work, a model that has no ELBO to set against log p(x): an autoencoder's q(z|x) is a
    point mass delta(z - f(x)), which has no density (the model says so itself: ``is_autoencoder``); a VQ-VAE's is
    a point mass on its codes (``one_hot_codes``), whose one bound no K tightens; an M2 model sums a latent class
    out (``class_log_probs``)."""
    from vaekit.errors import VaekitError

    if model.is_autoencoder:
        raise VaekitError(f"{run} is a deterministic autoencoder: its q(z|x) is a point mass with no density, so it "
                          "has no ELBO to compare with log p(x) and 'vaekit bound' does not apply; 'vaekit evaluate "
                          f"{run}' gives the log p(x) of its decoder with the density fitted to its codes")
    if getattr(model, "one_hot_codes", False):
        raise VaekitError(f"{run} is a VQ-VAE: its q(z|x) is a point mass on one code grid, so its ELBO equals IWAE_K "
                          "for every K and there is no gap to show; 'vaekit bound' does not apply, 'vaekit evaluate "
                          f"{run}' gives its bound vq_elbo")
    if hasattr(model, "class_log_probs"):
        raise VaekitError(f"{run} is a semi-supervised M2 model: its latent class y is summed out of its bound, and "
                          "'vaekit bound' (one code z per draw, a grid over z) does not apply; 'vaekit evaluate "
                          f"{run}' gives its bound and the classifier's error")


def _run(args: argparse.Namespace) -> int:
    from vaekit.bounds.enumeration import is_enumerable
    from vaekit.distributions.discrete import MAX_SUPPORT as MAX_CODES
    from vaekit.errors import DataError
    from vaekit.evaluation import (
        CROSS_ENTROPY,
        DEQUANTIZED,
        LOG_PROBABILITY,
        check_shape,
        figure_kind,
        limit_split,
        load_model,
        load_run_data,
        split_images,
    )
    from vaekit.evaluation.evaluator import data_log_jacobian

    if args.bdmc is not None:  # the BDMC sandwich on simulated data (vaekit.commands.bound_bdmc)
        from vaekit.commands.bound_bdmc import run_bdmc

        out = run_bdmc(args)
    elif args.run is None:
        out = _demo(args)
    else:
        model = load_model(args.run)
        _check_applies(model, args.run)
        ds = load_run_data(args.run, data_dir=args.data_dir, dataset_name=args.dataset, split="test")
        x, y = split_images(ds, "test", args.seed)
        x, y, _ = limit_split(x, y, args.n, args.seed)
        check_shape(model, x, "the test split")
        kind, levels = figure_kind(model, x, ds)
        values = {LOG_PROBABILITY: "log-probability", CROSS_ENTROPY: "cross-entropy"}.get(kind, "log-density")
        if kind == DEQUANTIZED and not args.json:
            print(density_note(model.likelihood.name, levels))
        jacobian = data_log_jacobian(ds)  # a standardised table: every figure in the data's original units
        if jacobian and not args.json:
            print(f"the values are a standardised table: every log-density includes its log-Jacobian "
                  f"-sum_d log sd_d = {jacobian:.4f} nats, so it is of the data in their original units")
        if is_enumerable(model, MAX_CODES):
            if getattr(model, "condition", 0) and y is None:
                raise DataError("the model is conditional and the test split has no labels")
            out = _discrete_run(args, model, x, y if getattr(model, "condition", 0) else None, jacobian)
            out["values"], out["log_jacobian"] = values, jacobian
            if args.json:
                print_json(out)
            return 0
        out = _continuous_run(args, model, x, values, jacobian)
        out["log_jacobian"] = jacobian
    if args.json:
        print_json(out)
    return 0
