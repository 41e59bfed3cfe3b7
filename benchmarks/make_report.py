"""Regenerate BENCHMARKS.md from the JSON files the benchmark scripts wrote.

    python benchmarks/bench_train.py --json benchmarks/results/train-2threads.json
    python benchmarks/bench_train.py --threads 1 --json benchmarks/results/train-1thread.json
    python benchmarks/bench_nll.py --run runs/mnist-vae --json benchmarks/results/nll-2threads.json
    python benchmarks/bench_time_to_quality.py --json benchmarks/results/time-to-quality.json
    python benchmarks/bench_recipes.py --json benchmarks/results/recipes-cpu.json
    python benchmarks/make_report.py            # writes BENCHMARKS.md

The prose (targets, what limits them) lives in ``NOTES`` below; every number comes from the
JSON files, so the page and the measurements cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

NOTES = """\
## What the targets ask, and where they stand

| target (2-core CPU, side by side) | measured | met? |
|---|---|---|
| training: >= 3x pythae's samples/s | {train_pythae:.2f}x | {m1} |
| training: within 1.5x of the matrix-multiply limit | {train_limit:.2f}x | {m2} |
| evaluation: >= 5x pythae's `get_nll` | {nll_pythae:.2f}x | {m3} |
| evaluation: within 1.5x of the limit | {nll_limit:.2f}x | {m4} |
| time to a validation ELBO of -90 nats: < 5 minutes | {ttq90} | {m5} |

**Why the pythae ratios cannot reach 3x and 5x here.** On this machine pythae is much closer
to the hardware than the issue's once-measured figures suggested (pythae 4.3 s per epoch,
matmul limit 1.1 s): pythae runs an epoch in {pythae_epoch:.2f} s against a limit of
{limit_epoch:.2f} s, i.e. {pythae_over_limit:.2f}x the limit. Being 3x faster than pythae would
mean running at {three_x:.2f}x the limit, faster than the matrix products alone allow. The same
holds for the evaluation: pythae's `get_nll` runs at {pythae_nll_over_limit:.2f}x the limit, so
5x faster than it is below the limit. Both targets assume overheads that this pythae release
and this CPU do not have.

**Where vaekit's remaining time goes** (torch profiler, 2 threads, one training step of
batch 100): the matrix products take about 60% (at the rate of the limit), Adam's fused update
about 12%, and the rest is the ~30 small element-wise kernels of the forward and backward pass
(log-sigmoid, reparameterization, KL, ReLU masks) whose per-call cost dominates at this size.
Tried: `torch.compile` of the loss module (inductor C++ kernels): about 4% faster per step,
measured side by side, which does not pay for its 20-60 s compile on a short run (it stays
available as `--compile`). Kept: Adam's fused kernel (on by default where torch has it), which
in isolation took 0.22 ms per update against 1.4 ms for the default `foreach` implementation
(measured while the machine was shared, so only the order of magnitude is reliable).

**Evaluation** batches examples and importance samples into chunks of up to 4,096 decoder
rows (one matrix product each, running logsumexp) and computes sum_d x_d l_d as a product with
the last layer's weights, so only the softplus needs all 784 logits. The time above the limit
is element-wise work (that softplus, the log q - log p terms, the running logsumexp); it was
not profiled further. Chunks of 1,024 to 16,384 rows were tried: 4,096 and below are equally
fast, larger chunks are slower (they leave the cache).

**Time to quality.** Static binarized MNIST overfits, so a validation ELBO of -95 or -90
needs a better model, not only more epochs: the 784-400-40 VAE's best validation ELBO is
-97.45 after 300 epochs and -97.43 after 600 (RESULTS.md). Tried with a 7-minute budget:
a ReLU MLP with two hidden layers of 400 units (best -98.71 at epoch 49, then overfitting) and
the recommended two-layer gated MLP of `configs/mnist-fast.toml` (best -97.06 at epoch 69).
Neither passes -95; the VampPrior and hierarchical models of issue 10 are the next candidates.

**GPU.** No GPU was available when these numbers were measured; the GPU targets
(an epoch under 0.5 s, the K=5000 test evaluation under 30 s) are not measured yet.
"""


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def train_section(res: dict, title: str) -> str:
    s, r, lim = res["seconds_per_epoch"], res["ratios"], res["matmul_limit"]
    rows = "\n".join(f"| {k} | {v:.3f} | {res['samples_per_second'][k]:,.0f} |" for k, v in s.items())
    return f"""### {title}

Machine: {res['machine']}.

| contender | seconds per epoch (median) | samples per second |
|---|---|---|
{rows}
| matrix-multiply limit | {lim['seconds_per_epoch']:.3f} | ({lim['flops_per_epoch'] / 1e9:.0f} GFLOP at {lim['gflops_per_second']:.0f} GFLOP/s) |

Ratios (median over rounds): pythae/vaekit **{r.get('pythae/vaekit', float('nan')):.2f}x**, plain loop/vaekit
**{r['plain/vaekit']:.2f}x**, vaekit/limit **{r['vaekit/limit']:.2f}x**.
"""


def main() -> None:
    t2, t1, nll, ttq = (load("train-2threads.json"), load("train-1thread.json"), load("nll-2threads.json"),
                        load("time-to-quality.json"))
    parts = ["""# Benchmarks

Every number here was measured by the scripts in `benchmarks/` and written into
`benchmarks/results/*.json`; this page is regenerated from them by
`python benchmarks/make_report.py`. Contenders run in turn within one process, rounds
interleaved, and ratios are taken within a round. Model everywhere: the 784-400-40 Bernoulli
MLP VAE, batch 100, Adam (lr 1e-3), static binarized MNIST (`../shared/data/binarized_mnist`).
Machine: the 2-core AMD EPYC (Zen 4, AVX-512) development machine, no GPU, torch 2.13.0 CPU build.
pythae 0.1.2 (`pip install -c constraints.txt -e '.[bench]'`).

## 1. Training throughput

`python benchmarks/bench_train.py --epochs 2 --rounds 3 --json benchmarks/results/train-2threads.json`
"""]
    if t2:
        parts.append(train_section(t2, "2 threads, quiet machine"))
    if t1:
        parts.append(train_section(t1, "1 thread, the other core busy with a training run")
                     + "\n(noisier: the second core was running a long training at the time.)\n")
    if nll:
        s, r = nll["seconds"], nll["ratios"]
        parts.append(f"""## 2. Evaluation throughput (importance-sampled NLL)

`python benchmarks/bench_nll.py --run runs/mnist-vae --n {nll['n']} --k {nll['k']} --rounds 3 --json benchmarks/results/nll-2threads.json`

Machine: {nll['machine']}. Model: {nll['model']} (trained, `configs/mnist-vae.toml`), the same
weights copied into pythae; {nll['n']} test images spread over the classes, K = {nll['k']}.

| contender | seconds | log-weights per second | mean NLL (nats) |
|---|---|---|---|
| vaekit `evaluate_model` | {s['vaekit']:.2f} | {nll['log_weights_per_second']['vaekit']:,.0f} | {nll['nll']['vaekit']:.3f} |
| pythae `get_nll` | {s['pythae']:.2f} | {nll['log_weights_per_second']['pythae']:,.0f} | {nll['nll']['pythae']:.3f} |
| matrix-multiply limit (decoder products) | {s['matmul_limit']:.2f} | | |

Ratios: pythae/vaekit **{r['pythae/vaekit']:.2f}x**, vaekit/limit **{r['vaekit/limit']:.2f}x**. The two NLLs
agree within their Monte Carlo error. Projected time of the full protocol (10,000 test images,
K = 5000) at this rate: {nll['projected_seconds_10k_test_images']:.0f} s.
""")
    amat = load("parse-amat.json")
    if amat:
        parts.append(f"""## 0. Parsing static binarized MNIST (issue 4: under 2 s)

`python benchmarks/bench_parse_amat.py --json > benchmarks/results/parse-amat.json`

The {amat['rows']:,}-image training file ({amat['text_mb']} MB of text, {amat['gz_mb']} MB gzipped), best of 3:

| step | seconds |
|---|---|
| read + gunzip + parse + structure checks | **{amat['read_gunzip_parse_s']:.3f}** |
| of which parse and checks | {amat['parse_s']:.3f} |
| `np.loadtxt` (float64), timed on {amat['loadtxt_rows']:,} rows and scaled | {amat['loadtxt_scaled_s']:.2f} ({amat['speedup_vs_loadtxt']:.0f}x slower) |
| `np.loadtxt(dtype=uint8)`, scaled | {amat['loadtxt_uint8_scaled_s']:.2f} ({amat['speedup_vs_loadtxt_uint8']:.1f}x slower) |
| reading the packed-bit cache | {amat['cached_read_s']:.3f} |
| `load_dataset('binarized-mnist')`, all splits, no cache / cached | {amat['load_dataset_cold_s']:.2f} / {amat['load_dataset_cached_s']:.3f} |
""")
    parts.append("## 3. The hardware limit\n\nThe matrix-multiply limits above: each matrix product of the step "
                 "(forward; backward for the weights and for the hidden activations) timed alone with `torch.mm` "
                 "at its exact shape, best of several repetitions, summed over an epoch (training) or over the "
                 "n*K decoder rows (evaluation).\n")
    if ttq:
        rows = []
        for thr, v in ttq["thresholds"].items():
            rows.append(f"| {thr} | " + (f"{v['seconds']:.0f} s (epoch {v['epoch']})" if v else
                                          f"not reached in {ttq['total_seconds']:.0f} s") + " |")
        parts.append(f"""## 4. Time to quality

`python benchmarks/bench_time_to_quality.py --config {ttq['config']} --budget {ttq['budget_seconds']:.0f} --json benchmarks/results/time-to-quality.json`

Machine: {ttq['machine']}. Wall time from the start of the process (data loading, validation
every epoch and checkpoints included).

| validation ELBO above | wall time |
|---|---|
""" + "\n".join(rows) + f"\n\nBest validation ELBO: {ttq['best']['valid_elbo']:.2f} at epoch {ttq['best']['epoch']}.\n")
    recipes = load("recipes-cpu.json")
    if recipes:
        rows = [f"| `{r['recipe']}` | {r['parameters']:,} | {r['batch_size']} | {r['seconds_per_step']:.3f} | "
                f"{r['seconds_per_epoch']:.1f} | {r['epochs']} | {r['hours_full_schedule']:.1f} |" for r in recipes["rows"]]
        parts.append(f"""## 5. Cost of the quality recipes (issue 10)

`python benchmarks/bench_recipes.py --steps {recipes['steps']} --threads {recipes['threads']} --json benchmarks/results/recipes-cpu.json`

Training steps only (no validation), {recipes['threads']} thread(s) on the 2-core CPU{recipes.get('note', '')}.
"hours (full)" is the recipe's whole epoch budget at this speed; early stopping usually ends sooner.

| recipe | parameters | batch | s/step | s/epoch | epochs | hours (full) |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n")
    if t2 and nll:
        lim = t2["matmul_limit"]["seconds_per_epoch"]
        py = t2["seconds_per_epoch"].get("pythae", float("nan"))
        ttq90, m5 = "not measured", "no"
        if ttq:
            v = ttq["thresholds"].get("-90.0")
            ttq90 = f"{v['seconds']:.0f} s" if v else f"not reached in {ttq['total_seconds']:.0f} s"
            m5 = "yes" if v and v["seconds"] < 300 else "no"

        def yes(ok: bool) -> str:
            return "yes" if ok else "no"

        parts.append(NOTES.format(
            train_pythae=t2["ratios"].get("pythae/vaekit", float("nan")), train_limit=t2["ratios"]["vaekit/limit"],
            nll_pythae=nll["ratios"]["pythae/vaekit"], nll_limit=nll["ratios"]["vaekit/limit"], ttq90=ttq90,
            pythae_epoch=py, limit_epoch=lim, pythae_over_limit=py / lim, three_x=py / lim / 3,
            pythae_nll_over_limit=nll["seconds"]["pythae"] / nll["seconds"]["matmul_limit"],
            m1=yes(t2["ratios"].get("pythae/vaekit", 0) >= 3), m2=yes(t2["ratios"]["vaekit/limit"] <= 1.5),
            m3=yes(nll["ratios"]["pythae/vaekit"] >= 5), m4=yes(nll["ratios"]["vaekit/limit"] <= 1.5), m5=m5))
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
