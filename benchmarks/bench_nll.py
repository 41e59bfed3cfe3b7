"""Evaluation throughput: importance-sampled log p(x) with K = 5000, vaekit's ``evaluate_model`` against the same
estimator written in JAX (jit, chunks of draws under ``lax.scan``) and pythae's ``get_nll``, on the same weights
and the same static binarized MNIST test images, and against the matrix-multiply limit of this machine.

The model is the 784-400-40 Bernoulli MLP VAE of ``configs/mnist-vae.toml``: ``--run RUN`` names a trained run
(by default ``runs/mnist-vae`` where it exists, else ``runs/bench-nll-vae``); when that folder does not exist, a
short training (``--train-epochs`` epochs of that recipe) is written there first, so the script runs on a fresh
checkout. Its weights are copied into JAX and pythae. Each
estimates log p(x) = log (1/K) sum_k p(x, z_k) / q(z_k | x); the contenders run in turn, ``--rounds`` times, on
``--n`` test images spread over the digit classes, and the ratios are taken within each round. The mean NLLs
are printed with vaekit's Monte Carlo error of that mean (from each example's ESS): they must agree within it.
vaekit's time is the whole ``evaluate_model`` call (ELBO, ESS and KL per unit come with it; the ELBO surgery is
switched off, as the others have none). Before the rounds each contender runs once, untimed: JAX its compile, vaekit
one call at K = 100.

The matrix-multiply limit: the decoder's two products for n * K codes, at the rate torch.mm reaches on chunks of
4096 codes (vaekit's chunk on the CPU), best of several repetitions.

usage: python benchmarks/bench_nll.py [--run runs/mnist-vae] [--n 40] [--k 5000] [--rounds 3] [--threads 2]
       [--skip-pythae] [--skip-jax] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from matmul import time_mm
from threads import load_average, use_threads

D, H, L = 784, 400, 40


def test_images(data_dir: str, n: int) -> torch.Tensor:
    from vaekit.data import load_dataset

    ds = load_dataset("binarized-mnist", data_dir=data_dir, download=False, splits=("test",))
    x = ds.test.reshape(-1, D)
    idx = torch.linspace(0, x.shape[0] - 1, n).long()  # the test set is sorted by class: spread out
    return x[idx].contiguous()


def vaekit_model(run: str, data_dir: str, train_epochs: int):
    """The trained model of ``run``; a run that does not exist yet is trained first (``train_epochs`` epochs of
    configs/mnist-vae.toml)."""
    from vaekit.config import read_config_file, resolve
    from vaekit.models import VAE
    from vaekit.train import train

    if not (Path(run) / "model.safetensors").exists():
        cfg = resolve(read_config_file(str(Path(__file__).resolve().parents[1] / "configs" / "mnist-vae.toml")), {})
        cfg.epochs, cfg.data_dir, cfg.lr_schedule = train_epochs, data_dir, "none"
        print(f"training {run}: {train_epochs} epochs of configs/mnist-vae.toml", flush=True)
        train(cfg, run, progress=False)
    return VAE.load(run).eval()


def pythae_twin(model):
    """A pythae VAE with the same weights as the vaekit 784-400-40 model."""
    from pythae_twin import pythae_vae

    return pythae_vae(model).eval()


def matmul_limit(n: int, k: int, rows: int = 4096) -> float:
    """Seconds the decoder's products for n*k samples take at torch.mm's rate (chunks of ``rows``)."""
    per_chunk = sum(time_mm(rows, k_, n_, reps=50, warmup=5, repeats=3) for k_, n_ in ((L, H), (H, D)))
    return per_chunk * n * k / rows


def jax_contender(model, x: torch.Tensor, k: int):
    """log p(x) of the same weights in JAX, compiled once: (a function seed -> mean NLL, compile seconds)."""
    import jax

    import jax_twin

    params = jax_twin.params_from_vaekit(model)
    xj = jax.numpy.asarray(x.numpy())
    k_chunk = max(c for c in range(1, min(k, max(1, 4096 // x.shape[0])) + 1) if k % c == 0)
    fn = jax_twin.log_px_fn(k, k_chunk)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(params, xj, jax.random.PRNGKey(0)))
    compile_seconds = time.perf_counter() - t0

    def run(seed: int) -> float:
        return -float(jax.block_until_ready(fn(params, xj, jax.random.PRNGKey(seed))).mean())

    return run, compile_seconds, k_chunk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a vaekit run of the 784-400-40 model (default: runs/mnist-vae if it exists, else "
                    "runs/bench-nll-vae, trained first if absent)")
    ap.add_argument("--train-epochs", type=int, default=5, help="epochs of the training when --run does not exist")
    ap.add_argument("--data-dir", default=os.environ.get("VAEKIT_DATA_DIR", "data/binarized_mnist"))
    ap.add_argument("--n", type=int, default=40, help="test images")
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="threads for torch and XLA alike (default 2)")
    ap.add_argument("--skip-pythae", action="store_true")
    ap.add_argument("--skip-jax", action="store_true")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    threads = use_threads(args.threads)
    load_before = load_average()
    from vaekit.evaluation import evaluate_model

    x = test_images(args.data_dir, args.n)
    if args.run is None:
        args.run = "runs/mnist-vae" if Path("runs/mnist-vae/model.safetensors").exists() else "runs/bench-nll-vae"
    model = vaekit_model(args.run, args.data_dir, args.train_epochs)
    twin = None
    if not args.skip_pythae:
        try:
            twin = pythae_twin(model)
        except ImportError:
            print("pythae not installed: skipped (pip install -c constraints.txt -e '.[bench]')")
    jax_run = jax_compile = jax_chunk = None
    if not args.skip_jax:
        try:
            jax_run, jax_compile, jax_chunk = jax_contender(model, x, args.k)
        except ImportError:
            print("jax / optax not installed: the JAX contender is skipped")
    evaluate_model(model, x, k=100, seed=0, per_example=False, surgery_samples=0)  # warm-up, as JAX's compile run
    limits: list[float] = []
    times: dict[str, list[float]] = {"vaekit": [], "jax": [], "pythae": []}
    nlls: dict[str, list[float]] = {"vaekit": [], "jax": [], "pythae": []}
    ratios: dict[str, list[float]] = {"vaekit/jax": [], "vaekit/limit": [], "jax/limit": [], "pythae/vaekit": []}
    mc_error = []
    for r in range(args.rounds):
        limit = matmul_limit(args.n, args.k)  # in every round, like the contenders
        limits.append(limit)
        t0 = time.perf_counter()
        res = evaluate_model(model, x, k=args.k, seed=r, per_example=True, surgery_samples=0)
        times["vaekit"].append(time.perf_counter() - t0)
        nlls["vaekit"].append(res.nll)
        mc_error.append(float((res.per_example["log_px_stderr"] ** 2).sum() ** 0.5 / args.n))
        line = f"round {r + 1}: vaekit {times['vaekit'][-1]:.2f} s (NLL {res.nll:.3f})"
        if jax_run is not None:
            t0 = time.perf_counter()
            nlls["jax"].append(jax_run(r))
            times["jax"].append(time.perf_counter() - t0)
            ratios["vaekit/jax"].append(times["vaekit"][-1] / times["jax"][-1])
            ratios["jax/limit"].append(times["jax"][-1] / limit)
            line += f", jax {times['jax'][-1]:.2f} s (NLL {nlls['jax'][-1]:.3f})"
        if twin is not None:
            torch.manual_seed(r)
            t0 = time.perf_counter()
            with torch.no_grad():  # despite its name, get_nll returns the mean log p(x) (negative)
                nlls["pythae"].append(-float(twin.get_nll(x.reshape(-1, 1, 28, 28), n_samples=args.k,
                                                          batch_size=100)))
            times["pythae"].append(time.perf_counter() - t0)
            ratios["pythae/vaekit"].append(times["pythae"][-1] / times["vaekit"][-1])
            line += f", pythae get_nll {times['pythae'][-1]:.2f} s (NLL {nlls['pythae'][-1]:.3f})"
        ratios["vaekit/limit"].append(times["vaekit"][-1] / limit)
        print(line, flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    limit = statistics.median(limits)
    samples = args.n * args.k
    mc = statistics.mean(mc_error)
    nll_mean = {k: statistics.mean(v) for k, v in nlls.items() if v}
    result = {
        "machine": f"{platform.machine()}, {threads} threads, torch {torch.__version__}",
        "threads": threads, "n": args.n, "k": args.k, "model": args.run, "rounds": args.rounds,
        "load_average": {"before": load_before, "after": load_average()},
        "seconds": dict(med, matmul_limit=limit),
        "log_weights_per_second": {k: samples / v for k, v in med.items()},
        "ratios": {k: statistics.median(v) for k, v in ratios.items() if v},
        "ratios_per_round": {k: v for k, v in ratios.items() if v}, "seconds_per_round": dict(times, limit=limits),
        "nll": nll_mean, "nll_mc_error": mc,
        "nll_agree": {k: abs(v - nll_mean["vaekit"]) <= 3 * mc * 2**0.5 for k, v in nll_mean.items() if k != "vaekit"},
        "jax_compile_seconds": jax_compile, "jax_k_chunk": jax_chunk,
        "vaekit_chunk": {"batch": res.batch_size, "k_chunk": res.k_chunk},
        "projected_seconds_10k_test_images": med["vaekit"] * 10000 / args.n,
    }
    print(f"\nmachine: {result['machine']}; {args.n} test images x K = {args.k}; load average before "
          f"{load_before}, after {load_average()}")
    print(", ".join(f"{k} {v:.2f} s" for k, v in result["seconds"].items()))
    print("; ".join(f"{k}: {v:.2f}x" for k, v in result["ratios"].items()))
    print("mean NLL: " + ", ".join(f"{k} {v:.3f}" for k, v in nll_mean.items()) + f" (Monte Carlo error of the mean "
          f"{mc:.3f} nats)")
    print(f"projected K={args.k} over 10,000 test images: {result['projected_seconds_10k_test_images']:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
