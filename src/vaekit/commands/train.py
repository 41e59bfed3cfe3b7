"""``vaekit train``: train a VAE on a data set and write the run directory."""

from __future__ import annotations

import argparse
import sys

from vaekit.commands._args import finite_float
from vaekit.commands._json import print_json

#: The line of ``vaekit --help`` for this command. The CLI lists a command that has one by it alone when another
#: command runs: the flags of this one come from every registry (components, objectives) and need torch.
HELP = "train a VAE and write a run directory"

#: The flags that name no setting of their own: --flow is another name of --posterior.
ALIASES: dict[str, tuple] = {
    "--flow": (str, "normalizing flow in q(z|x): iaf or planar (the same as --posterior; one level only)"),
}


#: The boolean settings' kinds of flag: ``store_true`` (--FLAG) and ``switch`` (--FLAG / --no-FLAG).
SWITCHES = {"store_true": "store_true", "switch": argparse.BooleanOptionalAction}


def setting_flags() -> dict[str, tuple]:
    """flag -> (parser, help) for every TrainConfig setting with a help text (its field metadata); defaults live in
    TrainConfig, so every flag defaults to None here and "given on the command line" is exactly "not None"."""
    import dataclasses

    from vaekit.commands import _args
    from vaekit.config import TrainConfig

    out: dict[str, tuple] = {}
    for f in dataclasses.fields(TrainConfig):
        if "help" in f.metadata:
            parse = f.metadata["parse"]
            out["--" + f.name.replace("_", "-")] = (parse if parse in SWITCHES else getattr(_args, parse, str),
                                                     f.metadata["help"])
    return {**out, **ALIASES}


FLAGS = setting_flags()


def _registries() -> dict:
    from vaekit.config import registries

    return registries()


def _boolean(value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _flag_type(hint: object, flag: str):
    text = str(hint)
    if text in ("bool", "<class 'bool'>"):
        return _boolean
    if "int" in text and "list" not in text:
        base = int
    elif "float" in text:
        base = finite_float
    else:
        base = str

    def parse(value: str):
        if base is int:
            try:
                return int(value)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        return base(value)

    parse.__name__ = getattr(base, "__name__", "value")
    return parse


def component_flags() -> dict[str, tuple]:
    """``--PREFIX-FIELD`` flags for the settings of every registered component (``--vamp-components``, ...): the
    flat setting names of :func:`vaekit.config.component_flags`, typed and explained from the config dataclass."""
    import dataclasses
    import typing

    from vaekit.config import component_flags as flat_settings

    out: dict[str, tuple] = {}
    for key, owners in flat_settings().items():
        kind, name, field = owners[0]
        entry = _registries()[kind].entry(name)
        try:
            hint = typing.get_type_hints(entry.config).get(field)
        except Exception:
            hint = None
        f = entry.fields()[field]
        defaults = {}  # each owner's default: components that share a flag may differ (wae-mmd's and infovae-mmd's)
        for _, owner, setting in owners:
            own = _registries()[kind].entry(owner).fields()[setting]
            defaults[owner] = own.default if own.default is not dataclasses.MISSING else None
        shown = ", ".join(f"{v} for {o}" for o, v in defaults.items()) if len(set(map(repr, defaults.values()))) > 1 \
            else defaults[owners[0][1]]
        if len(owners) == 1 and "default_help" in f.metadata:  # a default computed at run time, said in words
            shown = f.metadata["default_help"]
        flag = "--" + key.replace("_", "-")
        text = f"{kind} {' / '.join(owner for _, owner, _ in owners)}: {field.replace('_', ' ')} (default {shown})"
        out[flag] = (_flag_type(hint if hint is not None else f.type, flag), text)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help=HELP,
        description="Train a VAE by maximising the ELBO (or the IWAE bound). Writes RUN/config.json, "
        "RUN/metrics.jsonl, RUN/model.safetensors (best weights) and RUN/checkpoint.safetensors (for --resume); "
        "with --log also RUN/metrics.csv (csv) and RUN/tensorboard/ (tensorboard: scalars per epoch and grids of "
        "samples, for tensorboard --logdir RUN).",
    )
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--config", help="TOML or YAML file of settings; flags override it")
    plural = {"family": "families"}
    names = {plural.get(kind, f"{kind}s"): ", ".join(registry.names()) for kind, registry in _registries().items()}
    for flag, (typ, text) in FLAGS.items():
        if typ in SWITCHES:  # a setting that is on by default is turned off by --no-FLAG
            parser.add_argument(flag, action=SWITCHES[typ], default=None, help=text)
        else:
            parser.add_argument(flag, type=typ, default=None, help=text.format(**names))
    for flag, (typ, text) in component_flags().items():
        parser.add_argument(flag, type=typ, default=None, help=text)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the run in --out afresh (removes only the run's own files)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")
    parser.set_defaults(func=run)


def _budget_of(device) -> tuple[int, str]:
    """The memory a batch may take, and where that number comes from: ``vaekit.resources.memory_budget`` (min(8 GB,
    half of physical memory), or $VAEKIT_MEMORY_BUDGET) on the CPU, half the GPU's memory on a GPU."""
    import os

    from vaekit.resources import memory_budget

    if device.type == "cuda" and not os.environ.get("VAEKIT_MEMORY_BUDGET", "").strip():
        try:
            import torch

            return int(torch.cuda.get_device_properties(device).total_memory) // 2, "half the GPU's memory"
        except (RuntimeError, AssertionError, ValueError):
            pass
    return memory_budget(), "min(8 GB, half of physical memory), or $VAEKIT_MEMORY_BUDGET"


def check_batch_memory(model, cfg) -> None:
    """Refuse, before any work, draws * batch size that cannot fit: each of the draws of every example in a batch
    (k, or the objective's own count: MIWAE's m * k) is one decoder row (``vaekit.evaluation.bytes_per_row``),
    kept for the backward pass."""
    from vaekit.objectives import build_objective

    draws = build_objective(cfg.component("objective"), k=cfg.k).draws()
    if draws <= 1:
        return
    from vaekit.errors import ConfigError
    from vaekit.evaluation import bytes_per_row
    from vaekit.resources import gib

    try:
        device = next(iter(model.parameters())).device
        row = bytes_per_row(model, int(model.latent_size))
    except Exception:  # noqa: BLE001 - a model the probe cannot measure: no estimate, no refusal
        return
    budget, source = _budget_of(device)
    need = draws * cfg.batch_size * row
    if need > budget:
        what = "IWAE" if cfg.objective == "iwae" else "ELBO" if cfg.objective == "elbo" else cfg.objective
        sized, lower = (f"--k {cfg.k}", "--k") if draws == cfg.k else \
            (f"{draws} draws per example (objective {cfg.objective}, --k {cfg.k})", "its draws (e.g. --m, --k)")
        raise ConfigError(
            f"{sized} with --batch-size {cfg.batch_size} needs at least {gib(need)} for the {what} draws "
            f"({draws} x {cfg.batch_size} decoder rows of {row} bytes), more than the memory budget of {gib(budget)} "
            f"({source}); lower {lower} or --batch-size")


def run(args: argparse.Namespace) -> int:
    from vaekit.config import read_config_file, resolve
    from vaekit.runtime import from_env
    from vaekit.train import train

    file_values = read_config_file(args.config) if args.config else {}
    given = [*FLAGS, *component_flags()]
    flags = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_")) for flag in given}
    cfg = resolve(file_values, flags)
    explicit = {k for k, v in flags.items() if v is not None} | {str(k).replace("-", "_") for k in file_values}
    main_process = from_env().is_main  # under torchrun only rank 0 prints
    quiet = args.quiet or args.json or not main_process

    def log(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    try:
        if cfg.fit == "em":  # the mixture of Bernoullis by exact EM: its own loop, the same run folder
            from vaekit.training.em import train_em

            result = train_em(cfg, args.out, log=log, progress=False if quiet else None, resume=args.resume,
                              overwrite=args.overwrite,
                              notice=(lambda msg: print(msg, file=sys.stderr, flush=True)) if main_process else None)
        else:
            result = train(cfg, args.out, resume=args.resume, progress=False if quiet else None, log=log,
                           overwrite=args.overwrite, explicit=explicit, check_model=check_batch_memory,
                           notice=(lambda msg: print(msg, file=sys.stderr, flush=True)) if main_process else None)
    except (MemoryError, RuntimeError) as exc:  # sizes too large for this machine: one line, not a traceback
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc) and "out of memory" not in str(exc):
            raise
        from vaekit.errors import VaekitError

        reason = " ".join(str(exc).split())[:160]
        raise VaekitError(f"out of memory: the model or a batch is too large for this machine ({reason}); "
                          "use smaller --hidden, --latent, --batch-size or --k") from None
    if not main_process:
        return 0
    if args.json:
        print_json(result.to_dict())
    else:
        kept = result.kept()
        if cfg.fit == "em":
            print(f"fitted by EM in {result.epochs} iterations, {result.seconds:.1f} s: valid log p(x) "
                  f"{result.valid_elbo:.3f} nats, exact (best {result.best_valid_elbo:.3f} at iteration "
                  f"{result.best_epoch})" + (" - converged" if result.stopped_early else ""))
        else:
            autoencoder = getattr(result.model, "is_autoencoder", False)  # the model says what it is
            what = "valid objective (reconstruction - penalty)" if autoencoder else "valid ELBO"
            print(f"trained {result.epochs} epochs in {result.seconds:.1f} s: {what} {result.valid_elbo:.3f} "
                  f"nats ({kept})" + (" - stopped early" if result.stopped_early else ""))
        print(f"run written to {result.run}  (next: vaekit evaluate {result.run})", file=sys.stdout)
    return 0
