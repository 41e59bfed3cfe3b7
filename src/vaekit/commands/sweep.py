"""``vaekit sweep``: train one run per beta, then write their comparison page."""

from __future__ import annotations

import argparse
import json
import sys

from vaekit.commands._args import float_list, importance_samples, positive_int, seed_int

#: Flags of ``vaekit train`` that the sweep sets itself.
OWN_FLAGS = ("--beta", "--out")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sweep", help="train one run per beta (KL weight) and compare them on one page",
        description="Train the same model once per value of --beta (the weight of the KL term) into "
        "OUT/beta-<value>, then write OUT/compare.html (as 'vaekit compare': metrics, curves and the "
        "rate-distortion plane, where the betas trace out the trade-off between rate and distortion). Any "
        "'vaekit train' flags go after '--' (or in --config FILE). A run that already reaches the requested "
        "epochs is skipped and an unfinished one resumed, so calling the sweep again costs only the comparison. "
        "Example: vaekit sweep --beta 0.1,0.5,1,2,4 --out sweeps/beta -- --dataset digits --epochs 20",
    )
    parser.add_argument("--beta", type=_betas, required=True, help="comma-separated KL weights, e.g. 0.1,0.5,1,2,4")
    parser.add_argument("--out", required=True, help="folder of the sweep (one run folder per beta in it)")
    parser.add_argument("--config", default=None, help="TOML or YAML file of training settings; flags override it")
    parser.add_argument("--k", type=importance_samples, default=200,
                        help="importance samples per test example in the comparison (default 200)")
    parser.add_argument("--n-samples", type=positive_int, default=64,
                        help="images per run in the comparison's sample panels (default 64)")
    parser.add_argument("--eval-seed", type=seed_int, default=0,
                        help="random seed of the comparison's evaluation and samples (default 0; the training "
                        "seed is the train flag --seed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("--json", action="store_true",
                        help="end with one JSON object: each beta's run and what was done, and the comparison")
    parser.add_argument("train_flags", nargs="*", metavar="-- TRAIN-FLAGS",
                        help="flags of 'vaekit train' after '--' (not --beta or --out)")
    parser.set_defaults(func=run)


def _betas(text: str) -> list[float]:
    values = float_list(text)
    bad = [v for v in values if v < 0]
    if bad:
        raise argparse.ArgumentTypeError(f"beta must be >= 0, got {bad[0]:g}")
    return values


class _TrainFlagsParser(argparse.ArgumentParser):
    """A parser whose errors are a one-line ConfigError (the command prints it, exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from vaekit.errors import ConfigError

        raise ConfigError(f"train flags: {' '.join(message.split())}")


def train_parser() -> argparse.ArgumentParser:
    """The parser of ``vaekit train`` (its flags and their types), with one-line errors."""
    from vaekit.commands import train

    parser = _TrainFlagsParser(prog="vaekit sweep", add_help=False)
    train.register(parser.add_subparsers(dest="command", parser_class=_TrainFlagsParser))
    return parser


def run(args: argparse.Namespace) -> int:
    from vaekit.commands import train as train_cmd
    from vaekit.config import read_config_file, resolve
    from vaekit.errors import ConfigError
    from vaekit.pages.sweep import sweep

    for flag in args.train_flags:
        if flag.split("=", 1)[0] in OWN_FLAGS:
            raise ConfigError(f"{flag.split('=', 1)[0]} is the sweep's own flag; give it before '--', not among the "
                              "train flags")
    if args.train_flags and not args.train_flags[0].startswith("-"):
        raise ConfigError(f"unexpected argument {args.train_flags[0]!r}; train flags go after '--', e.g. "
                          "vaekit sweep --beta 0.5,1 --out DIR -- --epochs 5")
    ns = train_parser().parse_args(["train", "--out", str(args.out), *args.train_flags])
    if args.config and ns.config:
        raise ConfigError("give --config once: before '--' or among the train flags")
    ns.config = args.config or ns.config
    # the settings as 'vaekit train' resolves them: defaults < config file < flags
    file_values = read_config_file(ns.config) if ns.config else {}
    given = [*train_cmd.FLAGS, *train_cmd.component_flags()]
    flags = {name: getattr(ns, name) for name in (flag.lstrip("-").replace("-", "_") for flag in given)}
    flags["compile"], flags["conditional"] = ns.compile, ns.conditional
    cfg = resolve(file_values, flags)
    explicit = {k for k, v in flags.items() if v is not None} | {str(k).replace("-", "_") for k in file_values}
    quiet = args.quiet or ns.quiet or args.json

    def log(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    result = sweep(cfg, args.beta, args.out, explicit=explicit, check_model=train_cmd.check_batch_memory,
                   overwrite=ns.overwrite, progress=False if quiet else None, log=log,
                   notice=lambda msg: print(msg, file=sys.stderr, flush=True), k=args.k, n_samples=args.n_samples,
                   seed=args.eval_seed, device=cfg.device)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        for r in result.runs:
            print(f"beta {r.beta:g}: {r.path} ({r.action}, {r.epochs} epochs)")
        print(result.comparison.page)
    return 0
