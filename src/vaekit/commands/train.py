"""``vaekit train``: train a VAE on a data set and write the run directory."""

from __future__ import annotations

import argparse
import json
import sys

from vaekit.commands._args import finite_float, int_list, nonnegative_int, positive_float, positive_int, seed_int

# flag name -> (type, help); defaults live in vaekit.config.TrainConfig, so every flag
# defaults to None here and "given on the command line" is exactly "not None".
FLAGS: dict[str, tuple] = {
    "--dataset": (str, "data set: digits, binarized-mnist, mnist, fashion-mnist, kmnist, images:DIR, npz:FILE"),
    "--data-dir": (str, "folder holding the data set's files (default: $VAEKIT_DATA_DIR or the cache)"),
    "--binarize": (str, "none, static, dynamic or threshold (grey-level data: dynamic or threshold)"),
    "--epochs": (positive_int, "number of epochs (default 10)"),
    "--model": (str, "mlp or conv"),
    "--hidden": (int_list, "hidden layer sizes, e.g. 400 or 500,500"),
    "--latent": (positive_int, "latent dimensions (default 40; per level with --levels 2)"),
    "--levels": (positive_int, "stochastic layers: 1 (VAE) or 2 (hierarchical VAE)"),
    "--activation": (str, "relu, tanh, elu, gelu, softplus or gated (gated dense and conv layers)"),
    "--likelihood": (str, "bernoulli, gaussian, continuous-bernoulli or pixelcnn (default: from the data)"),
    "--prior": (str, "standard or vamp"),
    "--vamp-components": (positive_int, "pseudo-inputs of the VampPrior (default 500)"),
    "--pixelcnn-layers": (positive_int, "masked convolutions of the pixelcnn likelihood (default 6)"),
    "--pixelcnn-channels": (positive_int, "features per pixelcnn layer (default 64)"),
    "--pixelcnn-params": (positive_int, "decoder outputs per pixel conditioning the pixelcnn (default 4)"),
    "--pixelcnn-kernel": (positive_int, "odd kernel size of the pixelcnn's masked convolutions (default 3)"),
    "--flow": (str, "normalizing flow in q(z|x): iaf or planar (default none; one level only)"),
    "--flow-steps": (positive_int, "flow steps (default 2)"),
    "--flow-hidden": (positive_int, "iaf: units per MADE hidden layer (default 320)"),
    "--flow-layers": (positive_int, "iaf: MADE hidden layers (default 2)"),
    "--flow-context": (nonnegative_int, "size of the encoder's context vector h(x) for the flow (default 32)"),
    "--objective": (str, "elbo or iwae"),
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
    "--patience": (nonnegative_int, "stop after this many epochs without a better validation ELBO"),
    "--eval-batch-size": (positive_int, "batch size for validation (default 1000)"),
    "--seed": (seed_int, "random seed (default 0)"),
    "--device": (str, "auto, cpu, cuda or mps"),
    "--precision": (str, "fp32, tf32 or bf16"),
    "--threads": (positive_int, "CPU threads for torch"),
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train", help="train a VAE and write a run directory",
        description="Train a VAE by maximising the ELBO (or the IWAE bound). Writes RUN/config.json, "
        "RUN/metrics.jsonl, RUN/model.safetensors (best weights) and RUN/checkpoint.safetensors (for --resume).",
    )
    parser.add_argument("--out", required=True, help="run directory to write")
    parser.add_argument("--config", help="TOML or YAML file of settings; flags override it")
    for flag, (typ, text) in FLAGS.items():
        parser.add_argument(flag, type=typ, default=None, help=text)
    parser.add_argument("--compile", action="store_true", default=None, help="use torch.compile")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of results")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vaekit.config import read_config_file, resolve
    from vaekit.distributed import from_env
    from vaekit.train import train

    file_values = read_config_file(args.config) if args.config else {}
    flags = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_")) for flag in FLAGS}
    flags["compile"] = args.compile
    cfg = resolve(file_values, flags)
    main_process = from_env().is_main  # under torchrun only rank 0 prints
    quiet = args.quiet or args.json or not main_process

    def log(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    try:
        result = train(cfg, args.out, resume=args.resume, progress=False if quiet else None, log=log)
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
        else:
            kept = f"best {result.best_valid_elbo:.3f} at epoch {result.best_epoch}"
        print(f"trained {result.epochs} epochs in {result.seconds:.1f} s: valid ELBO {result.valid_elbo:.3f} nats "
              f"({kept})" + (" - stopped early" if result.stopped_early else ""))
        print(f"run written to {result.run}  (next: vaekit evaluate {result.run})", file=sys.stdout)
    return 0
