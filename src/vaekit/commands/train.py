"""``vaekit train``: train a VAE on a data set and write the run directory."""

from __future__ import annotations

import argparse
import json
import sys

from vaekit.commands._args import finite_float, int_list, nonnegative_int, positive_float, positive_int, seed_int

# flag name -> (type, help); defaults live in vaekit.config.TrainConfig, so every flag
# defaults to None here and "given on the command line" is exactly "not None".
FLAGS: dict[str, tuple] = {
    "--dataset": (str, "data set: digits, binarized-mnist, mnist, mnist-grey, mnist-t10k, fashion-mnist, kmnist, "
                  "cifar10, images:DIR, npz:FILE (vaekit data --help lists them all)"),
    "--data-dir": (str, "folder holding the data set's files (default: $VAEKIT_DATA_DIR or the cache)"),
    "--binarize": (str, "none, static, dynamic or threshold (grey-level data: dynamic or threshold)"),
    "--epochs": (positive_int, "number of epochs (default 10)"),
    "--family": (str, "model family: vae (default), gmvae (a Gaussian-mixture prior, --clusters C) or "
                      "bernoulli-mixture (one categorical z, --components K, --fit em|vae)"),
    "--components": (positive_int, "bernoulli-mixture: mixture components K (default 10)"),
    "--fit": (str, "bernoulli-mixture: vae (an amortized q(z|x), trained like any model; default) or em (exact EM)"),
    "--em-iterations": (positive_int, "--fit em: the most EM iterations (default 100)"),
    "--model": (str, "mlp or conv"),
    "--hidden": (int_list, "hidden layer sizes, e.g. 400 or 500,500"),
    "--latent": (positive_int, "latent dimensions (default 40; per level with --levels 2)"),
    "--levels": (positive_int, "stochastic layers: 1 (VAE) or 2 (hierarchical VAE)"),
    "--activation": (str, "relu, tanh, elu, gelu, softplus or gated (gated dense and conv layers)"),
    "--posterior": (str, "posterior family q(z|x): {posteriors} (default gaussian)"),
    "--likelihood": (str, "likelihood p(x|z): {likelihoods} (default: bernoulli for binary data, else gaussian)"),
    "--prior": (str, "prior p(z): {priors} (default standard)"),
    "--flow": (str, "normalizing flow in q(z|x): iaf or planar (the same as --posterior; one level only)"),
    "--conv-channels": (int_list, "channels of the conv networks' stride-2 layers (default 32,64)"),
    "--objective": (str, "elbo or iwae"),
    "--estimator": (str, "discrete latents: enumerate, score, nvil, vimco (with --objective iwae), gumbel or "
                         "straight-through (default: enumerate for at most 4,096 codes, else gumbel)"),
    "--temperature": (positive_float, "gumbel / straight-through: the starting temperature (default 1)"),
    "--temperature-min": (positive_float, "gumbel / straight-through: the lowest temperature (default 0.5)"),
    "--anneal-rate": (finite_float, "gumbel / straight-through: r in tau = max(tau_min, tau_0 exp(-r step)) "
                                    "(default 1e-4)"),
    "--k": (positive_int, "samples per example (IWAE k, or ELBO samples)"),
    "--beta": (finite_float, "weight of the KL term (default 1)"),
    "--warmup": (nonnegative_int, "KL warm-up epochs (default 0)"),
    "--encoder-noise": (finite_float, "denoising encoder: train it on x + N(0, sigma^2) noise (default 0)"),
    "--init-from": (str, "start from this run's best weights (same architecture, e.g. --config RUN/config.json)"),
    "--train-only": (str, "all (default) or encoder: train q(z|x) alone, p(z) p(x|z) fixed (needs --init-from)"),
    "--batch-size": (positive_int, "minibatch size (default 100)"),
    "--lr": (positive_float, "Adam learning rate (default 1e-3)"),
    "--lr-schedule": (str, "none, cosine or plateau"),
    "--weight-decay": (finite_float, "Adam weight decay (default 0)"),
    "--clip-grad": (positive_float, "clip the gradient norm at this value"),
    "--patience": (nonnegative_int, "stop after this many epochs without a better validation score"),
    "--select-by": (str, "what chooses the kept epoch: objective (the training objective on the validation set: "
                         "the IWAE bound, the beta-weighted ELBO; default) or elbo (the ELBO, whatever the objective)"),
    "--eval-batch-size": (positive_int, "batch size for validation (default 1000)"),
    "--seed": (seed_int, "random seed (default 0)"),
    "--device": (str, "auto, cpu, cuda or mps"),
    "--precision": (str, "fp32, tf32 or bf16"),
    "--threads": (positive_int, "CPU threads for torch"),
    "--log": (str, "loggers besides RUN/metrics.jsonl, comma-separated: csv (RUN/metrics.csv), tensorboard "
                   "(RUN/tensorboard/), mlflow, wandb; none: no other (default none; a resume keeps the run's)"),
    "--log-images-every": (nonnegative_int, "a grid of decoded samples z ~ p(z) to the image loggers every N "
                                            "epochs and at the last (default 5; 0: never)"),
}


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
        default = f.default if f.default is not dataclasses.MISSING else None
        flag = "--" + key.replace("_", "-")
        text = f"{kind} {' / '.join(owner for _, owner, _ in owners)}: {field.replace('_', ' ')} (default {default})"
        out[flag] = (_flag_type(hint if hint is not None else f.type, flag), text)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help="train a VAE and write a run directory",
        description="Train a VAE by maximising the ELBO (or the IWAE bound). Writes RUN/config.json, "
        "RUN/metrics.jsonl, RUN/model.safetensors (best weights) and RUN/checkpoint.safetensors (for --resume); "
        "with --log also RUN/metrics.csv (csv) and RUN/tensorboard/ (tensorboard: scalars per epoch and grids of "
        "samples, for tensorboard --logdir RUN).",
    )
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--config", help="TOML or YAML file of settings; flags override it")
    names = {f"{kind}s": ", ".join(registry.names()) for kind, registry in _registries().items()}
    for flag, (typ, text) in FLAGS.items():
        parser.add_argument(flag, type=typ, default=None, help=text.format(**names))
    for flag, (typ, text) in component_flags().items():
        parser.add_argument(flag, type=typ, default=None, help=text)
    parser.add_argument("--conditional", action="store_true", default=None,
                        help="condition q(z|x, y) and p(x|z, y) on the data set's labels (a conditional VAE)")
    parser.add_argument("--compile", action="store_true", default=None, help="use torch.compile")
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
    """Refuse, before any work, a k * batch size that cannot fit: each of the k draws of every example in a
    batch is one decoder row (``vaekit.evaluation.bytes_per_row``), kept for the backward pass."""
    if cfg.k <= 1:
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
    need = cfg.k * cfg.batch_size * row
    if need > budget:
        what = "IWAE" if cfg.objective == "iwae" else "ELBO"
        raise ConfigError(
            f"--k {cfg.k} with --batch-size {cfg.batch_size} needs at least {gib(need)} for the {what} draws "
            f"({cfg.k} x {cfg.batch_size} decoder rows of {row} bytes), more than the memory budget of {gib(budget)} "
            f"({source}); lower --k or --batch-size")


def run(args: argparse.Namespace) -> int:
    from vaekit.config import read_config_file, resolve
    from vaekit.runtime import from_env
    from vaekit.train import train

    file_values = read_config_file(args.config) if args.config else {}
    given = [*FLAGS, *component_flags()]
    flags = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_")) for flag in given}
    flags["compile"] = args.compile
    flags["conditional"] = args.conditional
    cfg = resolve(file_values, flags)
    explicit = {k for k, v in flags.items() if v is not None} | {str(k).replace("-", "_") for k in file_values}
    main_process = from_env().is_main  # under torchrun only rank 0 prints
    quiet = args.quiet or args.json or not main_process

    def log(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    try:
        if cfg.fit == "em":  # the mixture of Bernoullis by exact EM: its own loop, the same run folder
            from vaekit.em import train_em

            result = train_em(cfg, args.out, log=log, progress=False if quiet else None, resume=args.resume,
                              overwrite=args.overwrite)
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
        print(json.dumps(result.to_dict()))
    else:
        if result.best_valid_iwae is not None:
            kept = f"kept epoch {result.best_epoch}: valid IWAE bound {result.best_valid_iwae:.3f}"
        elif result.selected_by != "valid ELBO":
            kept = f"kept epoch {result.best_epoch}, chosen by its {result.selected_by} {result.best_score:.3f}"
        else:
            kept = f"best {result.best_valid_elbo:.3f} at epoch {result.best_epoch}"
        if cfg.fit == "em":
            print(f"fitted by EM in {result.epochs} iterations, {result.seconds:.1f} s: valid log p(x) "
                  f"{result.valid_elbo:.3f} nats, exact (best {result.best_valid_elbo:.3f} at iteration "
                  f"{result.best_epoch})" + (" - converged" if result.stopped_early else ""))
        else:
            what = "valid objective (reconstruction - penalty)" if cfg.posterior == "delta" else "valid ELBO"
            print(f"trained {result.epochs} epochs in {result.seconds:.1f} s: {what} {result.valid_elbo:.3f} "
                  f"nats ({kept})" + (" - stopped early" if result.stopped_early else ""))
        print(f"run written to {result.run}  (next: vaekit evaluate {result.run})", file=sys.stdout)
    return 0
