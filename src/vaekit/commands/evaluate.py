"""``vaekit evaluate``: the test-set ELBO, the importance-sampled log p(x) (NLL, bits/dim) and the gap."""

from __future__ import annotations

import argparse

from vaekit.commands import _sampler
from vaekit.commands._args import (
    ais_chains,
    ais_steps,
    importance_samples,
    leapfrog_steps,
    nonnegative_int,
    positive_int,
    seed_int,
)
from vaekit.commands._json import print_json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate", help="honest likelihoods: ELBO, importance-sampled log p(x), bits/dim and the gap",
        description="Evaluate a run's best model on a split of its data set: the ELBO and its terms "
        "(reconstruction, KL), log p(x) estimated by importance sampling with K samples "
        "(logsumexp_i log w_i - log K, reported as NLL in nats and bits/dim), the gap log p(x) - ELBO "
        "(~ KL(q(z|x) || p(z|x))), the active units and the KL per unit, with standard errors over examples. "
        "For discrete latents with at most --exact-limit codes (categorical or binary codes) also the exact "
        "log p(x) = logsumexp_z [log p(x|z) + log p(z)] by a sum over every code (nll_exact), the exact ELBO and "
        "gap; the KL per unit and the active units of categorical codes are per group. "
        "Each example's K importance weights also get a Pareto k-hat (pareto_k_fraction: the share of examples with "
        "k-hat > 0.7, whose importance-sampled log p(x) cannot be trusted, named in a note). --ais T adds log p(x) by "
        "annealed importance sampling (ais_log_px, a stochastic lower bound that is usually far tighter than IWAE_K) "
        "and --gaps the approximation and amortization gaps. "
        "Only the evaluated split is loaded (the MNIST t10k- files alone serve --split test). "
        "Example: vaekit evaluate RUN --k 5000",
    )
    parser.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split (default test)")
    parser.add_argument("--k", type=importance_samples, default=None,
                        help=f"importance samples per example (default {DEFAULT_K}; {EXACT_K} where the exact log p(x) "
                        "is reported, a discrete latent space of at most --exact-limit codes, whose importance-sampled "
                        "figure is then only a check)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="examples per batch (default: chosen from a 256 MB memory budget)")
    parser.add_argument("--seed", type=seed_int, default=0, help="random seed (default 0)")
    parser.add_argument("--data-dir", default=None, help="folder holding the data set (default: the run's)")
    parser.add_argument("--dataset", default=None, help="evaluate on this data set instead of the run's")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="evaluate a fixed random subset of N examples, drawn with --seed: class-balanced when "
                        "the data set has labels, else uniform (never simply the first N); the notes say which")
    parser.add_argument("--device", default="auto",
                        help="auto (default: CUDA, then MPS, then the CPU), cpu, cuda or mps")
    parser.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32",
                        help="arithmetic: fp32 (default, the honest protocol), tf32 (CUDA matmuls) or bf16 "
                        "(autocast; faster on hardware with bf16 units, log p(x) then carries rounding error)")
    parser.add_argument("--exact-limit", type=_limit, default=None,
                        help="sum over every code for the exact NLL when the latent space has at most this many "
                        "(default 65536; 0: never)")
    parser.add_argument("--surgery-samples", type=nonnegative_int, default=10_000,
                        help="Monte Carlo draws splitting the rate into I_q(x; z) and KL(q(z) || p(z)) "
                        "(default 10000; 0: not estimated)")
    parser.add_argument("--disentanglement", action="store_true",
                        help="also score the codes against the data set's known factors (MIG, SAP, DCI, modularity "
                        "and explicitness, the beta-VAE and FactorVAE scores), each with its standard error, and the "
                        "mutual information I(z_j; v_k) of every unit with every factor (nats); for a data set with "
                        "factors (dsprites). The result (what --json prints) is also kept in RUN/disentanglement.json, "
                        "which 'vaekit report' and 'vaekit compare' show")
    _annealing_arguments(parser)
    _sampler.add_arguments(parser, evaluate=True)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (by default one on stderr when it is a terminal: examples done, "
                        "elapsed time and ETA)")
    parser.add_argument("--progress", action="store_true",
                        help="draw the progress bar even when stderr is not a terminal (a log file)")
    parser.set_defaults(func=run)


def _annealing_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ais", type=ais_steps, default=None, metavar="T",
                        help="also estimate log p(x) by annealed importance sampling from the prior to the posterior "
                        "over T temperatures, HMC transitions (ais_log_px: a stochastic lower bound, like IWAE_K, "
                        "with its Monte Carlo standard error across chains, and the acceptance rate); continuous "
                        "latents only")
    parser.add_argument("--ais-chains", type=ais_chains, default=16, metavar="C",
                        help="AIS chains per example (default 16)")
    parser.add_argument("--ais-leapfrog", type=leapfrog_steps, default=10, metavar="L",
                        help="leapfrog steps per HMC transition of AIS (default 10)")
    parser.add_argument("--ais-schedule", choices=("sigmoid", "linear"), default="sigmoid",
                        help="spacing of the AIS temperatures (default sigmoid: crowded at both ends)")
    parser.add_argument("--gaps", action="store_true",
                        help="also split the gap log p(x) - ELBO into the approximation gap log p(x) - ELBO[q*] and "
                        "the amortization gap ELBO[q*] - ELBO[q_phi], q* fitted to each example by Adam from the "
                        "encoder's output (log p(x) from AIS with --ais, else IWAE_K)")
    parser.add_argument("--gaps-steps", type=positive_int, default=500, metavar="N",
                        help="Adam steps of the per-example fit of --gaps (default 500)")


def _annealing(args: argparse.Namespace) -> tuple:
    """(the AIS settings of --ais, or None; the gap settings of --gaps, or None)."""
    from vaekit.bounds.ais import AISSettings
    from vaekit.evaluation.annealed import GapSettings

    ais = None if args.ais is None else AISSettings(steps=args.ais, chains=args.ais_chains,
                                                    leapfrog=args.ais_leapfrog, schedule=args.ais_schedule,
                                                    seed=args.seed)
    return ais, (GapSettings(steps=args.gaps_steps) if args.gaps else None)


#: --k by default, and where the exact log p(x) is reported (the importance-sampled figure is then a check).
DEFAULT_K, EXACT_K = 5000, 100


def _default_k(args: argparse.Namespace, exact_limit: int) -> tuple[int, str | None]:
    """(K, a note or None): --k when given; else EXACT_K when the run's latent space has at most ``exact_limit``
    codes (the exact sum is reported, so minutes of K = 5000 draws would buy nothing), else DEFAULT_K."""
    if args.k is not None:
        return args.k, None
    if exact_limit <= 0 or args.sampler != "prior":
        return DEFAULT_K, None
    from vaekit.bounds.enumeration import is_enumerable
    from vaekit.evaluation import load_model

    try:
        enumerable = is_enumerable(load_model(args.run, "cpu"), exact_limit)
    except Exception:  # noqa: BLE001 - the evaluation itself reports a run it cannot load, in one line
        return DEFAULT_K, None
    if not enumerable:
        return DEFAULT_K, None
    return EXACT_K, (f"the exact log p(x) is reported (nll_exact); the importance-sampled figure is a check with "
                     f"K = {EXACT_K} (pass --k for more)")


#: The largest --exact-limit: the most codes a latent space can have and be enumerated (2^24).
MAX_EXACT_LIMIT = 2**24


def _limit(text: str) -> int:
    value = nonnegative_int(text)
    if value > MAX_EXACT_LIMIT:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_EXACT_LIMIT:,} codes, got {value:,}")
    return value


def run(args: argparse.Namespace) -> int:
    from vaekit.analysis.surgery import check_samples
    from vaekit.bounds.enumeration import DEFAULT_LIMIT
    from vaekit.evaluation import evaluate_run, format_table, json_safe
    from vaekit.progress import Bar, enabled, step_lines

    check_samples(args.surgery_samples, "--surgery-samples")  # its memory, before any work
    exact_limit = DEFAULT_LIMIT if args.exact_limit is None else args.exact_limit
    args.k, k_note = _default_k(args, exact_limit)
    _sampler.check_arguments(args)
    show = not args.quiet and enabled(True if args.progress else None)
    progress = Bar(f"log p(x), K = {args.k}", "examples", enabled=show,  # on stderr: stdout is the result
                   flags="--k or --limit", say=step_lines(args.quiet, True if args.progress else None))

    from vaekit.runtime import autocast_context, resolve_device, set_precision

    device = resolve_device(args.device)
    set_precision(device, args.precision)
    ais, gaps = _annealing(args)
    scores = _disentanglement(args, device) if args.disentanglement else None
    compare = None
    with progress, autocast_context(device, args.precision):
        if args.sampler != "prior":
            result, compare = _sampler.evaluate_with_sampler(args, device, progress)
        else:
            result = evaluate_run(args.run, split=args.split, k=args.k, batch_size=args.batch_size, seed=args.seed,
                                  device=args.device, data_dir=args.data_dir, dataset_name=args.dataset,
                                  limit=args.limit, progress=progress,
                                  exact_limit=exact_limit,
                                  surgery_samples=args.surgery_samples, ais=ais, gaps=gaps)
    if args.precision != "fp32":
        result.notes.append(f"computed with --precision {args.precision}")
    if k_note is not None and result.nll_exact is not None:
        result.notes.append(k_note)
    if compare is None:  # kept in RUN/evaluations/ for report and compare (vaekit.evaluation.store)
        from vaekit.evaluation import store

        store.keep(args.run, store.evaluation_key(split=args.split, k=args.k, seed=args.seed, limit=args.limit,
                                                  dataset=args.dataset, precision=args.precision), result.to_dict())
    summary = json_safe({**result.summary(), **(compare or {"sampler": "prior"}), **(scores or {})})
    saved = None if scores is None else _save(args.run, summary)
    if args.json:
        print_json(summary)
    else:
        text = format_table(result)
        print(text if compare is None else _sampler.table(text, compare, args.k, result.log_px_label))
        if scores is not None:
            _print_scores(scores)
            print(f"saved to {saved}")
    return 0


def _save(run: str, summary: dict) -> str:
    from vaekit.evaluation.disentanglement import save_scores

    return str(save_scores(run, summary))


def _print_scores(scores: dict) -> None:
    """One line per score of :data:`vaekit.evaluation.disentanglement.SCORES` that the data allowed: value +- stderr."""
    from vaekit.evaluation.disentanglement import SCORES

    for name in SCORES:
        value, stderr = scores.get(name), scores.get(name + "_stderr")
        if value is not None:
            print(f"{name:<22} {value:8.4f} +- {stderr if stderr is not None else float('nan'):.4f}")


def _disentanglement(args: argparse.Namespace, device) -> dict:
    """The disentanglement scores of the run's kept model on its data set's factors and the matrix I(z_j; v_k)
    (nats; :func:`~vaekit.evaluation.disentanglement.unit_factor_information`), one dict (one line if the data
    set has no factors: :func:`~vaekit.evaluation.disentanglement.disentanglement_scores` refuses before any work)."""
    from vaekit.evaluation import load_model, load_run_data
    from vaekit.evaluation.disentanglement import disentanglement_scores, scores_path, unit_factor_information

    model = load_model(args.run, device)
    scores_path(args.run)  # RUN/disentanglement.json: a link or a special file there is refused before any work
    ds = load_run_data(args.run, data_dir=args.data_dir, dataset_name=args.dataset)
    scores = disentanglement_scores(model, ds, split=args.split, seed=args.seed)
    return {**scores, **unit_factor_information(model, ds, seed=args.seed).summary()}
