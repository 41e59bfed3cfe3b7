"""``vaekit sweep``: train one run per point of a grid of settings and seeds, then write their comparison page."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from vaekit.commands._args import MAX_PICTURES, float_list, importance_samples, picture_samples, seed_int
from vaekit.commands._json import print_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from vaekit.config import TrainConfig

#: Flags of ``vaekit train`` that the sweep sets itself.
OWN_FLAGS = ("--beta", "--out")
#: Flags of ``vaekit train`` that name no setting, so no grid runs over them.
NOT_SETTINGS = ("--out", "--config", "--resume", "--overwrite", "--quiet", "--json", "--help", "-h")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sweep", help="train one run per point of a grid of settings (beta, ...) and seeds; compare them on one page",
        description="Train the same model once per point of a grid: the values of --beta (the weight of the KL "
        "term) and of each --grid KEY=V1,V2 (any setting flag of 'vaekit train'), times the training seeds of "
        "--seeds. Each run goes to OUT/<name>, named by its settings in the order given, KEY-VALUE joined by '_', "
        "the seed last: OUT/beta-0.5, OUT/beta-0.5_seed-1, OUT/objective-beta-tcvae_latent-5_seed-0 (a value's "
        "characters other than letters, digits, '-' and '.' are percent-encoded, a list's items joined by '+'). "
        "Then OUT/compare.html is written (as 'vaekit compare': metrics, curves and the rate-distortion plane, "
        "where betas trace out the trade-off between rate and distortion; runs that differ only by seed are "
        "also grouped, each metric as the mean +- SD across the seeds, since scores such as disentanglement "
        "vary with the seed as much as with the method). Any other 'vaekit train' flags go after '--' (or in "
        "--config FILE). Every setting is checked before anything trains. A run that already reaches the "
        "requested epochs is skipped and an unfinished one resumed, so calling the sweep again costs only the "
        "comparison. Examples: vaekit sweep --beta 0.1,0.5,1,2,4 --out sweeps/beta -- --dataset digits --epochs 20; "
        "vaekit sweep --grid objective=elbo,beta-tcvae --grid latent=5,10 --seeds 0,1,2 --out sweeps/dis -- "
        "--dataset dsprites --limit 3000",
    )
    parser.add_argument("--beta", type=_betas, default=None,
                        help="comma-separated KL weights, e.g. 0.1,0.5,1,2,4 (a grid over beta; runs OUT/beta-B)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a setting of 'vaekit train' (its flag without '--') and its values, comma-separated "
                        "(semicolon-separated where a value has commas: 'hidden=400;500,500'); repeatable, the "
                        "runs are every combination, e.g. --grid objective=elbo,beta-tcvae --grid latent=5,10")
    parser.add_argument("--seeds", type=_seeds, default=None,
                        help="comma-separated training seeds, e.g. 0,1,2: every point of the grid is trained once "
                        "per seed (OUT/<name>_seed-S), and the page gives mean +- SD across them")
    parser.add_argument("--out", required=True, help="folder of the sweep (one run folder per point in it)")
    parser.add_argument("--config", default=None, help="TOML or YAML file of training settings; flags override it")
    parser.add_argument("--k", type=importance_samples, default=200,
                        help="importance samples per test example in the comparison (default 200)")
    parser.add_argument("--n-samples", type=picture_samples, default=64,
                        help=f"images per run in the comparison's sample panels (default 64, at most {MAX_PICTURES})")
    parser.add_argument("--eval-seed", type=seed_int, default=0,
                        help="random seed of the comparison's evaluation and samples (default 0; the training "
                        "seed is the train flag --seed, or --seeds)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    parser.add_argument("--json", action="store_true",
                        help="end with one JSON object: the comparison (as 'vaekit compare --json'), each run with "
                        "its settings and what was done (trained, resumed, skipped)")
    parser.add_argument("train_flags", nargs="*", metavar="-- TRAIN-FLAGS",
                        help="flags of 'vaekit train' after '--' (not --out, nor a setting the sweep varies)")
    parser.set_defaults(func=run)


def _betas(text: str) -> list[float]:
    values = float_list(text)
    bad = [v for v in values if v < 0]
    if bad:
        raise argparse.ArgumentTypeError(f"beta must be >= 0, got {bad[0]:g}")
    return values


def _seeds(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds like 0,1,2, got {text!r}")
    return [seed_int(p) for p in parts]


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


def setting_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The flags of ``vaekit train`` (in ``parser``, from :func:`train_parser`) that name a setting, without their
    dashes (``latent``, ``vamp-components``) -> their argparse actions."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for action in sub.choices["train"]._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag not in NOT_SETTINGS:
                out[flag[2:]] = action
    return out


def _value(key: str, action: argparse.Action, text: str) -> object:
    """One value of ``--grid key=...``, parsed by the train flag's own parser (a switch: true or false)."""
    from vaekit.commands.train import _boolean
    from vaekit.errors import ConfigError

    parse = _boolean if action.nargs == 0 else (action.type or str)
    try:
        value = parse(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise ConfigError(f"--grid {key}: {' '.join(str(exc).split()) or f'bad value {text!r}'}") from None
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"--grid {key}: {text!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def parse_grid(texts: list[str], actions: dict[str, argparse.Action]) -> dict[str, list[object]]:
    """``["objective=elbo,beta-tcvae", "latent=5,10"]`` -> ``{"objective": [...], "latent": [5, 10]}``: each key a
    setting flag of ``vaekit train`` (:func:`setting_actions`), each value parsed by that flag's parser; a one-line
    ConfigError naming the bad key or value otherwise."""
    import difflib

    from vaekit.errors import ConfigError

    grid: dict[str, list[object]] = {}
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not sep or not key:
            raise ConfigError(f"--grid takes KEY=V1,V2 (e.g. --grid latent=5,10), got {text!r}")
        if key == "seed":
            raise ConfigError("--grid seed: give the training seeds as --seeds 0,1,2")
        if key not in actions:
            close = difflib.get_close_matches(key, list(actions), n=1)
            raise ConfigError(f"--grid {key}: 'vaekit train' has no setting flag --{key}"
                              + (f" (did you mean {close[0]}?)" if close else ""))
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; give all its values in one --grid")
        parts = [p.strip() for p in values.split(";" if ";" in values else ",")]
        if any(p == "" for p in parts):
            raise ConfigError(f"--grid {key}: expected comma-separated values like {key}=A,B, got {values!r}")
        grid[key] = [_value(key, actions[key], p) for p in parts]
    return grid


def _check_train_flags(args: argparse.Namespace) -> None:
    """The train flags after '--' set neither --out nor a swept --beta, and start with a flag."""
    from vaekit.errors import ConfigError

    own = ["--out", *(["--beta"] if args.beta is not None else [])]
    for flag in args.train_flags:
        if flag.split("=", 1)[0] in own:
            raise ConfigError(f"{flag.split('=', 1)[0]} is the sweep's own flag; give it before '--', not among the "
                              "train flags")
    if args.train_flags and not args.train_flags[0].startswith("-"):
        raise ConfigError(f"unexpected argument {args.train_flags[0]!r}; train flags go after '--', e.g. "
                          "vaekit sweep --beta 0.5,1 --out DIR -- --epochs 5")


def _check_swept(ns: argparse.Namespace, args: argparse.Namespace, grid: dict[str, list[object]],
                 actions: dict[str, argparse.Action]) -> None:
    """No train flag sets what the sweep varies (an abbreviated flag included)."""
    from vaekit.errors import ConfigError

    if args.beta is not None and ns.beta is not None:
        raise ConfigError("--beta is the sweep's own flag; give it before '--', not among the train flags")
    for key in grid:
        if getattr(ns, actions[key].dest, None) is not None:
            raise ConfigError(f"--{key} is swept by --grid {key}=...; leave it out of the train flags")
    if args.seeds is not None and ns.seed is not None:
        raise ConfigError("--seed is swept by --seeds; leave it out of the train flags")


def _settings(args: argparse.Namespace,
              ns: argparse.Namespace) -> tuple[TrainConfig, set[str], Callable[[dict], TrainConfig]]:
    """(the TrainConfig, the settings given explicitly, the TrainConfig of a point's settings) as 'vaekit train'
    resolves them: defaults < file < flags, a point's settings among the flags."""
    from vaekit.commands import train as train_cmd
    from vaekit.config import read_config_file, resolve
    from vaekit.errors import ConfigError

    if args.config and ns.config:
        raise ConfigError("give --config once: before '--' or among the train flags")
    ns.config = args.config or ns.config
    file_values = read_config_file(ns.config) if ns.config else {}
    given = [*train_cmd.FLAGS, *train_cmd.component_flags()]
    flags = {name: getattr(ns, name) for name in (flag.lstrip("-").replace("-", "_") for flag in given)}
    flags["compile"], flags["conditional"] = ns.compile, ns.conditional
    explicit = {k for k, v in flags.items() if v is not None} | {str(k).replace("-", "_") for k in file_values}

    def configure(settings: dict) -> TrainConfig:
        return resolve(file_values, {**flags, **{k.replace("-", "_"): v for k, v in settings.items()}})

    return resolve(file_values, flags), explicit, configure


def run(args: argparse.Namespace) -> int:
    from vaekit.commands import train as train_cmd
    from vaekit.pages.sweep import sweep

    _check_train_flags(args)
    parser = train_parser()
    actions = setting_actions(parser)
    grid = parse_grid(args.grid, actions)
    ns = parser.parse_args(["train", "--out", str(args.out), *args.train_flags])
    _check_swept(ns, args, grid, actions)
    cfg, explicit, configure = _settings(args, ns)
    if args.seeds is not None:
        explicit.add("seed")
    quiet = args.quiet or ns.quiet or args.json

    def log(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    result = sweep(cfg, args.beta, args.out, grid=grid, seeds=args.seeds, configure=configure, explicit=explicit,
                   check_model=train_cmd.check_batch_memory, overwrite=ns.overwrite,
                   progress=False if quiet else None, log=log,
                   notice=lambda msg: print(msg, file=sys.stderr, flush=True), k=args.k, n_samples=args.n_samples,
                   seed=args.eval_seed, device=cfg.device)
    if args.json:
        print_json(result.to_dict())
    else:
        for r in result.runs:
            print(f"{r.label}: {r.path} ({r.action}, {r.epochs} epochs)")
        print(result.comparison.page)
    return 0
