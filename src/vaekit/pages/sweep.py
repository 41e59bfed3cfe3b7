"""A beta sweep: one run per KL weight beta, then their comparison page (``vaekit sweep``).

For each beta the objective E_q[log p(x|z)] - beta KL(q(z|x) || p(z)) is trained into ``OUT/beta-<beta>`` with
otherwise the same settings, by :func:`vaekit.train.train`; then :func:`vaekit.pages.compare.compare_runs` writes
``OUT/compare.html``, whose rate-distortion plane shows what beta buys: beta < 1 moves a run to a higher rate R
and a lower distortion D, beta > 1 the other way. At its optimum a run minimises D + beta R, a point of the
rate-distortion curve where its slope is -beta; the iso-ELBO lines R + D = c have slope -1, so the curve touches
the best of them at beta = 1, and every other beta lies on a worse one (Alemi et al., 2018).

Runs are resumed, not retrained: a run whose metrics reach the requested epochs (and that holds its best
weights) is skipped, one with a checkpoint short of them is continued (``resume``), and a run folder that holds
a run with other settings is refused, so that a second call with the same settings costs only the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaekit.config import TrainConfig, from_dict
from vaekit.errors import ConfigError, VaekitError

#: Settings a run may change when it is resumed (more epochs, other hardware, other loggers); the others must match.
RESUMABLE_KEYS = ("epochs", "patience", "device", "threads", "compile", "eval_batch_size", "log", "log_images_every")
#: The name of the comparison page in the sweep's folder.
PAGE = "compare.html"


def run_name(beta: float) -> str:
    """The folder of a beta: ``beta-0.5``, ``beta-1``, ``beta-4``."""
    return f"beta-{beta:g}"


def check_betas(betas: Sequence[float]) -> list[float]:
    """At least two distinct finite betas >= 0, whose folder names differ; else a one-line ConfigError."""
    betas = [float(b) for b in betas]
    if len(betas) < 2:
        raise ConfigError(f"a sweep needs at least 2 values of beta, got {len(betas)}")
    for b in betas:
        if not math.isfinite(b) or b < 0:
            raise ConfigError(f"beta must be a finite number >= 0, got {b:g}")
    names = [run_name(b) for b in betas]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"beta is given twice ({', '.join(dupes)}); give each value once")
    return betas


@dataclass
class SweepRun:
    """One beta of a sweep: its run folder and what the sweep did (``trained``, ``resumed`` or ``skipped``)."""

    beta: float
    path: Path
    action: str
    epochs: int = 0  # epochs the run holds afterwards


@dataclass
class SweepResult:
    runs: list[SweepRun]
    comparison: Any  # vaekit.pages.compare.Comparison

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [{"beta": r.beta, "run": str(r.path), "action": r.action, "epochs": r.epochs}
                         for r in self.runs], **self.comparison.to_dict()}


def _epochs_done(run: Path) -> int:
    from vaekit.io.runs import read_metrics

    rows = read_metrics(run) if (run / "metrics.jsonl").is_file() else []
    epochs = [r.get("epoch") for r in rows]
    return max((e for e in epochs if isinstance(e, int) and not isinstance(e, bool)), default=0)


def _other_settings(run: Path, cfg: TrainConfig) -> str | None:
    """The first setting (flattened) in which the run's config.json differs from ``cfg``, described; else None."""
    from vaekit.evaluation import read_run_config
    from vaekit.pages.compare import MISSING, flatten

    theirs, mine = flatten(read_run_config(run)), flatten(cfg.to_dict())
    for key in [*mine, *(k for k in theirs if k not in mine)]:
        if key in RESUMABLE_KEYS:
            continue
        a, b = theirs.get(key, MISSING), mine.get(key, MISSING)
        if a != b:
            return f"{key} is {a!r} there, {b!r} now"
    return None


def plan(cfg: TrainConfig, run: Path, overwrite: bool = False) -> str:
    """What a sweep does with ``run`` for ``cfg``: ``train`` (a new or empty folder, or ``overwrite``), ``resume``
    (a run short of ``cfg.epochs``) or ``skip`` (a run that reaches them and holds its best weights); a run of
    other settings is refused (ConfigError)."""
    from vaekit.io import contract

    state = contract.inspect(run)
    if overwrite or not state.exists or not state.run_files:
        return "train"
    if "config.json" in state.run_files:
        other = _other_settings(run, cfg)
        if other:
            raise ConfigError(f"{run} holds a run with other settings ({other}); choose another --out, or pass "
                              "--overwrite to train it afresh")
    if state.is_run and "model.safetensors" in state.run_files and _epochs_done(run) >= cfg.epochs:
        return "skip"
    return "resume"


def sweep(
    cfg: TrainConfig,
    betas: Sequence[float],
    out: str | Path,
    *,
    explicit: Collection[str] | None = None,
    check_model: Callable[[Any, TrainConfig], None] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    notice: Callable[[str], None] | None = None,
    k: int | None = None,
    n_samples: int | None = None,
    seed: int = 0,
    device: str | None = None,
) -> SweepResult:
    """Train ``cfg`` once per beta into ``out/beta-<beta>`` (skipping finished runs, resuming unfinished ones),
    then write ``out/compare.html`` (K = ``k`` importance samples, ``seed``); see the module docstring.

    ``explicit``, ``check_model`` and ``notice`` are passed to :func:`vaekit.train.train` (as ``vaekit train``
    does); ``beta`` always counts as chosen."""
    from vaekit.pages.compare import COMPARE_K, COMPARE_SAMPLES, check_page_path, compare_runs
    from vaekit.train import train

    say = log or (lambda _msg: None)
    betas = check_betas(betas)
    if cfg.fit == "em":
        raise ConfigError("fit em (the exact EM of the mixture of Bernoullis) has no KL weight to sweep; "
                          "sweep beta with fit vae")
    if not isinstance(out, (str, Path)) or not str(out).strip():
        raise ConfigError(f"the sweep folder (--out) must be a folder name, got {out!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose a folder for the sweep")
    page = check_page_path(out / PAGE)
    configs = {b: from_dict({**cfg.to_dict(), "beta": b}, source="the sweep's settings") for b in betas}
    plans = {b: plan(configs[b], out / run_name(b), overwrite) for b in betas}  # every refusal before any work
    chosen = set(explicit or ()) | {"beta"}
    runs = []
    for b in betas:
        path, action = out / run_name(b), plans[b]
        if action == "skip":
            say(f"beta {b:g}: {path} already has {_epochs_done(path)} epochs, skipped")
        else:
            say(f"beta {b:g}: {'resuming' if action == 'resume' else 'training'} {path}")
            train(configs[b], path, resume=action == "resume", progress=progress, log=log,
                  overwrite=overwrite and action == "train", explicit=chosen, check_model=check_model, notice=notice)
        runs.append(SweepRun(b, path, {"skip": "skipped", "resume": "resumed", "train": "trained"}[action],
                             _epochs_done(path)))
    if not all((r.path / "model.safetensors").exists() for r in runs):
        missing = ", ".join(str(r.path) for r in runs if not (r.path / "model.safetensors").exists())
        raise VaekitError(f"no weights were kept in {missing}, so there is nothing to compare")
    say(f"comparing {len(runs)} runs ...")
    comparison = compare_runs([r.path for r in runs], page, k=k or COMPARE_K, n_samples=n_samples or COMPARE_SAMPLES,
                              seed=seed, device=device, log=log)
    return SweepResult(runs, comparison)
