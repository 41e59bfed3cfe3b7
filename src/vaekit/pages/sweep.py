"""A sweep: one run per point of a grid of settings and seeds, then their comparison page (``vaekit sweep``).

Each point of the grid (:mod:`vaekit.pages.grid`: the cartesian product of the values of some ``vaekit train``
settings, times the training seeds) is trained by :func:`vaekit.train.train` into ``OUT/<name>`` with otherwise
the same settings (``OUT/beta-0.5``, ``OUT/beta-0.5_seed-1``, ``OUT/objective-beta-tcvae_latent-5_seed-0``); then
:func:`vaekit.pages.compare.compare_runs` writes ``OUT/compare.html``, where runs that differ only by seed are
also shown as one group, each metric's mean and standard deviation across the seeds (:mod:`vaekit.pages.seeds`).

A sweep over beta trains E_q[log p(x|z)] - beta KL(q(z|x) || p(z)) for each beta, and the page's rate-distortion
plane shows what beta buys: beta < 1 moves a run to a higher rate R and a lower distortion D, beta > 1 the other
way. At its optimum a run minimises D + beta R, a point of the rate-distortion curve where its slope is -beta; the
iso-ELBO lines R + D = c have slope -1, so the curve touches the best of them at beta = 1, and every other beta lies
on a worse one (Alemi et al., 2018).

Runs are resumed, not retrained: a run whose metrics reach the requested epochs (and that holds its best
weights) is skipped, one with a checkpoint short of them is continued (``resume``), and a run folder that holds
a run with other settings is refused, so that a second call with the same settings costs only the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaekit.config import TrainConfig, resolve
from vaekit.errors import ConfigError, VaekitError
from vaekit.pages.grid import Point, describe, points

#: Settings a run may change when it is resumed (more epochs, other hardware, other loggers); the others must match.
RESUMABLE_KEYS = ("epochs", "patience", "device", "threads", "compile", "eval_batch_size", "log", "log_images_every")
#: The name of the comparison page in the sweep's folder.
PAGE = "compare.html"


def run_name(beta: float) -> str:
    """The folder of a beta swept alone: ``beta-0.5``, ``beta-1``, ``beta-4`` (:func:`vaekit.pages.grid.run_name`)."""
    from vaekit.pages.grid import run_name as name

    return name({"beta": float(beta)})


def check_betas(betas: Sequence[float]) -> list[float]:
    """Finite betas >= 0, as floats; else a one-line ConfigError (a value given twice is refused by the grid)."""
    betas = [float(b) for b in betas]
    for b in betas:
        if not math.isfinite(b) or b < 0:
            raise ConfigError(f"beta must be a finite number >= 0, got {b:g}")
    return betas


@dataclass
class SweepRun:
    """One point of a sweep: its settings, run folder and what the sweep did (``trained``, ``resumed`` or
    ``skipped``)."""

    settings: dict[str, Any]
    path: Path
    action: str
    epochs: int = 0  # epochs the run holds afterwards

    @property
    def beta(self) -> float | None:
        """The swept beta, or None when beta is not swept."""
        return self.settings.get("beta")

    @property
    def label(self) -> str:
        return describe(self.settings)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.path.name, "run": str(self.path), "action": self.action, "epochs": self.epochs,
               "settings": dict(self.settings)}
        return {**({"beta": self.beta} if "beta" in self.settings else {}), **out}


@dataclass
class SweepResult:
    runs: list[SweepRun]
    comparison: Any  # vaekit.pages.compare.Comparison

    def to_dict(self) -> dict[str, Any]:
        """The comparison's JSON, each of its runs with what the sweep did (``action``) and its ``settings``."""
        out = self.comparison.to_dict()
        out["runs"] = [{**r.to_dict(), **evaluated} for evaluated, r in zip(out["runs"], self.runs)]
        return out


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




def _the_grid(betas: Sequence[float] | None, grid: Mapping[str, Sequence[Any]] | None) -> dict[str, list[Any]]:
    """The grid of a sweep: ``grid``, with ``betas`` as the grid over beta (first) when given."""
    from vaekit.pages.grid import key_name

    out = {key_name(k): list(v) for k, v in (grid or {}).items()}
    if betas is not None:
        if "beta" in out:
            raise ConfigError("give beta once: --beta or --grid beta=..., not both")
        out = {"beta": check_betas(betas), **out}
    elif "beta" in out:
        out["beta"] = check_betas(out["beta"])
    return out


def _sweep_folder(out: str | Path | None) -> Path:
    if not isinstance(out, (str, Path)) or not str(out).strip():
        raise ConfigError(f"the sweep folder (--out) must be a folder name, got {out!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose a folder for the sweep")
    return out


def check_datasets(configs: Collection[TrainConfig]) -> None:
    """Every data set the points name is a registered one, or ``images:DIR`` / ``npy:FILE`` / ``npz:FILE`` of a
    path that exists; else a one-line error before anything trains (loading them all would cost too much)."""
    from vaekit.data import DATASETS, FILE_KINDS, _canonical, _unknown_message
    from vaekit.errors import DataError

    for spec in sorted({c.dataset for c in configs}):
        kind, sep, path = spec.partition(":")
        if sep and kind in FILE_KINDS:
            if not Path(path).expanduser().exists():
                raise DataError(f"data set {spec!r}: {path} not found")
        elif _canonical(spec) not in DATASETS:
            raise DataError(_unknown_message(spec))


def point_config(cfg: TrainConfig, settings: Mapping[str, Any]) -> TrainConfig:
    """``cfg`` with the point's settings (flag names: ``latent``, ``vamp-components``), as ``vaekit train`` would
    resolve them given as flags: a setting that names another component drops the settings of the old one."""
    flags = {key.replace("-", "_"): value for key, value in settings.items()}
    return resolve(cfg.to_dict(), flags)


def _train_points(pts: Sequence[Point], configs: Mapping[str, TrainConfig], plans: Mapping[str, str], out: Path,
                  say: Callable[[str], None], overwrite: bool, **options: Any) -> list[SweepRun]:
    """Train (or resume, or skip) each point as planned; ``options`` go to :func:`vaekit.train.train`."""
    from vaekit.train import train

    runs = []
    for p in pts:
        path, action = out / p.name, plans[p.name]
        if action == "skip":
            say(f"{describe(p.settings)}: {path} already has {_epochs_done(path)} epochs, skipped")
        else:
            say(f"{describe(p.settings)}: {'resuming' if action == 'resume' else 'training'} {path}")
            train(configs[p.name], path, resume=action == "resume", overwrite=overwrite and action == "train",
                  **options)
        runs.append(SweepRun(dict(p.settings), path,
                             {"skip": "skipped", "resume": "resumed", "train": "trained"}[action], _epochs_done(path)))
    return runs


def sweep(
    cfg: TrainConfig,
    betas: Sequence[float] | None,
    out: str | Path,
    *,
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: Sequence[int] | None = None,
    configure: Callable[[Mapping[str, Any]], TrainConfig] | None = None,
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
    """Train ``cfg`` once per point of ``grid`` (setting -> values; ``betas`` is the grid over beta) x ``seeds``
    (the training seeds; None: ``cfg.seed`` alone, and no seed in the folder names) into ``out/<name>``
    (:mod:`vaekit.pages.grid`), skipping finished runs and resuming unfinished ones, then write
    ``out/compare.html`` (K = ``k`` importance samples, ``seed``); see the module docstring. Every setting is
    checked and every folder planned before anything trains. ``configure(settings)`` gives a point's settings
    (default :func:`point_config` of ``cfg``; ``vaekit sweep`` resolves the config file and flags afresh with the
    point's settings among the flags, as ``vaekit train`` would).

    ``explicit``, ``check_model`` and ``notice`` are passed to :func:`vaekit.train.train` (as ``vaekit train``
    does); the swept settings always count as chosen."""
    from vaekit.pages.compare import COMPARE_K, COMPARE_SAMPLES, check_page_path, compare_runs

    say = log or (lambda _msg: None)
    pts = points(_the_grid(betas, grid), seeds)
    out = _sweep_folder(out)
    page = check_page_path(out / PAGE)
    configs = {p.name: (configure or (lambda settings: point_config(cfg, settings)))(p.settings) for p in pts}
    if any(c.fit == "em" for c in configs.values()):
        raise ConfigError("fit em (the exact EM of the mixture of Bernoullis) is not trained by the sweep; "
                          "sweep with fit vae")
    check_datasets(list(configs.values()))
    plans = {p.name: plan(configs[p.name], out / p.name, overwrite) for p in pts}  # every refusal before any work
    chosen = set(explicit or ()) | {key.replace("-", "_") for key in pts[0].settings}
    runs = _train_points(pts, configs, plans, out, say, overwrite, progress=progress, log=log, explicit=chosen,
                         check_model=check_model, notice=notice)
    missing = [str(r.path) for r in runs if not (r.path / "model.safetensors").exists()]
    if missing:
        raise VaekitError(f"no weights were kept in {', '.join(missing)}, so there is nothing to compare")
    say(f"comparing {len(runs)} runs ...")
    comparison = compare_runs([r.path for r in runs], page, k=k or COMPARE_K, n_samples=n_samples or COMPARE_SAMPLES,
                              seed=seed, device=device, log=log)
    return SweepResult(runs, comparison)
