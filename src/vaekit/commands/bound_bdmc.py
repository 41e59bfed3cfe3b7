"""``vaekit bound [RUN] --bdmc T[,T...]``: the BDMC sandwich of log p(x) on data simulated from the model
(:mod:`vaekit.bounds.bdmc`), printed for each T; without RUN on the linear-Gaussian demo model, beside its exact
log p(x)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from vaekit.commands._args import ais_chains, int_list, leapfrog_steps

#: The most annealing steps of one --bdmc value (as --ais).
MAX_STEPS = 1_000_000


def _steps(text: str) -> list[int]:
    values = int_list(text)
    if max(values) > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_STEPS:,} annealing steps, got {max(values):,}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the BDMC sandwich."""
    parser.add_argument("--bdmc", type=_steps, default=None, metavar="T[,T...]",
                        help="bidirectional Monte Carlo instead: simulate --n examples from the model and sandwich "
                        "their log p(x) between forward AIS (a stochastic lower bound) and reverse AIS from the code "
                        "that generated each (a stochastic upper bound), for each number of temperatures T "
                        "(e.g. 10,100,1000); --json gives bdmc_lower, bdmc_upper and bdmc_width at the largest T")
    parser.add_argument("--bdmc-chains", type=ais_chains, default=16, metavar="C",
                        help="AIS chains per example of --bdmc (default 16)")
    parser.add_argument("--bdmc-leapfrog", type=leapfrog_steps, default=10, metavar="L",
                        help="leapfrog steps per HMC transition of --bdmc (default 10)")


def _model(args: argparse.Namespace) -> tuple[Any, Any]:
    """(the run's kept model, or the linear-Gaussian demo model without RUN; its closed-form log p(x) or None)."""
    if args.run is None:
        from vaekit.models.linear_gaussian import LinearGaussian

        lg = LinearGaussian.random(data_dim=16, latent=2, sigma=0.5, seed=args.seed).set_exact_posterior()
        return lg, lg.log_marginal
    from vaekit.evaluation import load_model

    return load_model(args.run), None


def run_bdmc(args: argparse.Namespace) -> dict[str, Any]:
    """The sandwich for each T of --bdmc: printed as a table unless --json; the summary (what --json prints)."""
    from vaekit.bounds.ais import AISSettings
    from vaekit.bounds.bdmc import bdmc, simulate

    model, exact_of = _model(args)
    settings = AISSettings(steps=1, chains=args.bdmc_chains, leapfrog=args.bdmc_leapfrog, seed=args.seed)
    from vaekit.progress import Bar, enabled, step_lines

    with Bar("BDMC", "temperatures", enabled=enabled(None), say=step_lines()) as progress:
        res = bdmc(model, args.n, args.bdmc, settings, progress=progress)
    out = {"run": None if args.run is None else str(args.run), **res.summary(),
           "values": "log p(x) of data simulated from the model (nats)", "evaluations": res.evaluations}
    if exact_of is not None:  # the same simulated examples again
        out["exact"] = float(exact_of(simulate(model, args.n, args.seed)[0]).mean())
    out["examples"] = [{key: float(res.per_example[key][i]) for key in sorted(res.per_example)}
                       for i in range(res.n)]
    if not args.json:
        _print(out, res)
    return out


def _print(out: dict[str, Any], res: Any) -> None:
    where = out["run"] or "the linear-Gaussian demo model (D = 16, L = 2)"
    print(f"BDMC on {res.n} examples simulated from {where}: forward AIS from the prior (a stochastic lower bound on "
          f"log p(x)) and reverse AIS from the code that generated each (a stochastic upper bound); C = {res.chains} "
          f"chains, L = {res.leapfrog} leapfrog steps, {res.schedule} schedule. Means over the examples, nats "
          "(+- the Monte Carlo error across chains; the width +- its standard error over examples).")
    print(f"{'T':>8}  {'lower':>20}  {'upper':>20}  {'width':>18}  {'acceptance':>10}  {'seconds':>8}")
    for row in res.rows:
        print(f"{row.steps:>8}  {row.lower:>11.4f} +- {row.lower_stderr:<6.4f}  {row.upper:>11.4f} +- "
              f"{row.upper_stderr:<6.4f}  {row.width:>9.4f} +- {row.width_stderr:<6.4f}  "
              f"{row.forward_acceptance:>10.2f}  {row.seconds:>8.1f}")
    if "exact" in out:
        print(f"exact log p(x), closed form: {out['exact']:.4f}")
    last = res.rows[-1]
    if math.isfinite(last.width_stderr) and last.width > 3 * last.width_stderr:
        print(f"the sandwich is still {last.width:.3f} nats wide at T = {last.steps}: AIS with these settings is not "
              "yet exact on this model's own data; increase T")
