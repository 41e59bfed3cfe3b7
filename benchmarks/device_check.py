"""The speed figures that need a GPU, in one short run: an epoch of the 784-400-40 VAE, the K = 5000 importance-
sampled log p(x) of the test set, and the training step of every quality recipe (configs/quality/), on one device.

    python benchmarks/device_check.py [--device cuda] [--json benchmarks/results/device-check.json]
    python benchmarks/device_check.py --quick          # a small version of the same on the CPU (seconds)

1. Training: ``vaekit.train.train`` (the trainer as users run it: fused Adam, no wait for the device between
   its checks of the loss, every ``vaekit.train.CHECK_EVERY`` steps) for ``--epochs`` epochs of the 50,000
   static binarized MNIST training images, batch 100, no validation; the first epoch includes the warm-up.
2. Evaluation: ``evaluate_model`` with K = 5000 on the 10,000 test images (ELBO surgery off), on the weights
   just trained.
3. Recipes: each recipe's model, the trainer's own step on batches of the recipe's size (random binary images:
   the cost does not depend on the values), ``--steps`` steps after two warm-up steps, scaled to an epoch.

Without the data folder (``--data-dir``) random binary images of the same shape stand in (said in the output).
The whole run is sized to stay under ten minutes on a GPU; ``--quick`` shrinks every part (2,000 training images,
20 test images at K = 50, batches of 8, one step per recipe) so that it runs on the CPU in seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import tempfile
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_images(data_dir: str, n_train: int | None, n_test: int | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(train, test) images (N, 1, 28, 28) of static binarized MNIST, or random binary ones where it is absent."""
    try:
        from vaekit.data import load_dataset

        ds = load_dataset("binarized-mnist", data_dir=data_dir, download=False, splits=("train", "test"))
        train, test, source = ds.train, ds.test, "static binarized MNIST"
    except Exception as exc:  # noqa: BLE001 - any reason the data cannot be read: stand-ins of the same shape
        g = torch.Generator().manual_seed(0)
        train = torch.bernoulli(torch.full((50_000, 1, 28, 28), 0.13), generator=g)
        test = torch.bernoulli(torch.full((10_000, 1, 28, 28), 0.13), generator=g)
        source = f"random binary images (the data could not be read: {str(exc)[:80]})"
    train, test = train.reshape(-1, 1, 28, 28), test.reshape(-1, 1, 28, 28)
    return (train[:n_train] if n_train else train), (test[:n_test] if n_test else test), source


def time_training(train_x: torch.Tensor, epochs: int, device: torch.device, out: Path) -> dict:
    from vaekit.config import TrainConfig
    from vaekit.models import VAE
    from vaekit.train import read_metrics, train

    empty = train_x[:0]
    ds = types.SimpleNamespace(train=train_x, valid=empty, test=empty, shape=(1, 28, 28), binary=True, dynamic=False)
    cfg = TrainConfig(dataset="binarized-mnist", hidden=[400], latent=40, batch_size=100, lr=1e-3, epochs=epochs,
                      device=str(device))
    t0 = time.perf_counter()
    train(cfg, out, dataset=ds, progress=False)
    wall = time.perf_counter() - t0
    seconds = [row["seconds"] for row in read_metrics(out)]
    steady = seconds[1:] or seconds
    return {"images": train_x.shape[0], "epochs": epochs, "seconds_per_epoch": seconds,
            "steady_seconds_per_epoch": min(steady), "wall_seconds_with_setup": wall,
            "model": VAE.load(out, map_location=device).eval()}


def time_evaluation(model, test_x: torch.Tensor, k: int, device: torch.device) -> dict:
    from vaekit.evaluation import evaluate_model

    _sync(device)
    t0 = time.perf_counter()
    res = evaluate_model(model, test_x, k=k, seed=0, device=device, per_example=False, surgery_samples=0)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"images": test_x.shape[0], "k": k, "seconds": seconds, "nll": res.nll, "nll_stderr": res.nll_stderr,
            "log_weights_per_second": test_x.shape[0] * k / seconds, "batch": res.batch_size, "k_chunk": res.k_chunk}


def time_recipe(path: Path, steps: int, device: torch.device, batch: int | None = None) -> dict:
    """The trainer's own step (loss module, step function, fused Adam) for one recipe, per step and per epoch."""
    from vaekit import runtime
    from vaekit.config import read_config_file, resolve
    from vaekit.train import LossModule, _fused_if_supported, _make_step, model_for

    cfg = resolve(read_config_file(str(path)), {})
    if batch is not None:
        cfg.batch_size = batch
    torch.manual_seed(0)
    model = model_for(cfg, (1, 28, 28), True).to(device)
    module = LossModule(model, cfg.objective, cfg.k, cfg.encoder_noise)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, **_fused_if_supported(device))
    step = _make_step(module, model, optimizer, cfg, contextlib.nullcontext(), runtime.from_env(), eager=module)
    x = torch.bernoulli(torch.full((cfg.batch_size, 1, 28, 28), 0.13), generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    for _ in range(2):
        step(x, cfg.beta)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = step(x, cfg.beta)
    _sync(device)
    per_step = (time.perf_counter() - t0) / steps
    finite = bool(torch.isfinite(loss))
    per_epoch = per_step * math.ceil(50_000 / cfg.batch_size)
    return {"recipe": path.name, "batch_size": cfg.batch_size, "epochs": cfg.epochs, "steps_timed": steps,
            "parameters": sum(p.numel() for p in model.parameters()), "seconds_per_step": per_step,
            "seconds_per_epoch": per_epoch, "hours_full_schedule": per_epoch * cfg.epochs / 3600, "loss_finite": finite}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default where there is one) or cpu")
    ap.add_argument("--quick", action="store_true", help="a small version of every part, for the CPU")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 3; --quick 1)")
    ap.add_argument("--k", type=int, default=None, help="importance samples (default 5000; --quick 50)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per recipe (default 10; --quick 1)")
    ap.add_argument("--recipes", nargs="*", default=None, help="recipe files (default: configs/quality/*.toml)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "binarized_mnist"))
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    quick = args.quick
    epochs = args.epochs or (1 if quick else 3)
    k = args.k or (50 if quick else 5000)
    steps = args.steps or (1 if quick else 10)
    recipes = [Path(p) for p in args.recipes] if args.recipes is not None else \
        sorted((ROOT / "configs" / "quality").glob("*.toml"))
    t_start = time.perf_counter()
    train_x, test_x, source = load_images(args.data_dir, 2000 if quick else None, 20 if quick else None)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or
                                                                              platform.machine())
    result: dict = {"device": where, "torch": torch.__version__, "quick": quick, "data": source}
    print(f"device: {where}; torch {torch.__version__}; data: {source}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        training = time_training(train_x, epochs, device, Path(tmp) / "run")
    model = training.pop("model")
    result["training"] = training
    print(f"training: {training['images']} images, epochs {[round(s, 3) for s in training['seconds_per_epoch']]} s "
          f"(steady {training['steady_seconds_per_epoch']:.3f} s per epoch)", flush=True)
    result["evaluation"] = time_evaluation(model, test_x, k, device)
    ev = result["evaluation"]
    print(f"evaluation: {ev['images']} test images, K = {k}: {ev['seconds']:.2f} s "
          f"({ev['log_weights_per_second']:,.0f} log-weights/s), NLL {ev['nll']:.2f} +- {ev['nll_stderr']:.2f}",
          flush=True)
    result["recipes"] = []
    for path in recipes:
        row = time_recipe(path, steps, device, batch=8 if quick else None)
        result["recipes"].append(row)
        print(f"recipe {row['recipe']:24s} batch {row['batch_size']:4d}: {row['seconds_per_step'] * 1e3:8.1f} ms/step, "
              f"{row['seconds_per_epoch']:8.1f} s/epoch, {row['hours_full_schedule']:7.2f} h for {row['epochs']} "
              "epochs", flush=True)
    result["total_seconds"] = time.perf_counter() - t_start
    print(f"total: {result['total_seconds']:.0f} s", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
