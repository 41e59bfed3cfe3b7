"""Runs side by side: one self-contained HTML page (``vaekit compare RUN RUN ...``).

The page holds the settings that differ between the runs (``RUN/config.json``, the ``model`` table flattened
to ``model.prior.name`` and so on), a metrics table, the validation curves overlaid, the rate-distortion
plane, samples from each run's own prior and the decoder applied to z ~ N(0, I) for every run.

Metrics, nats per test example, from :func:`vaekit.evaluation.evaluate_run` with K importance samples:

    ELBO = reconstruction - KL = -(R + D),   R = E_x KL(q(z|x) || p(z)),   D = -E_x E_q log p(x|z)
    NLL  = -log p(x) ~ -(logsumexp_i log w_i - log K)      (IWAE_K, biased high by O(1/K))
    R    = I_q(x; z) + KL(q(z) || p(z))                    (ELBO surgery, vaekit.analysis.surgery)

each with its standard error over the test examples. On the R-D plane a run is the point (R, D); the dashed
line R + D = c through it (c = -ELBO) holds every model with the same ELBO, so runs on one line are equally
good as density models however they split the nats between rate and distortion (Alemi et al., 2018).

A deterministic autoencoder (``posterior = delta``) has no density q(z|x), hence no ELBO, NLL or rate: the page
says "n/a, no density" there, and shows its distortion D = -E_x log p(x | f(x)) as a dotted line on the
R-D plane. Its curves are its own objective (reconstruction minus the latent penalty), labelled so.

Runs whose settings differ only by ``seed`` are also grouped (:mod:`vaekit.pages.seeds`): a table gives each
metric's mean and sample standard deviation across a group's seeds, with n, next to the table of the runs. A run
folder that holds ``disentanglement.json`` (``vaekit evaluate RUN --disentanglement``) adds its disentanglement
scores, each with its standard error (:mod:`vaekit.pages.disentanglement`), to the page, the groups and the JSON.

Cost: the evaluation decodes K codes per test example and run (K = 200 by default: the test split of
``digits`` takes about a second per small run on a 2-core CPU; K = 5000 is the protocol for published numbers).
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.errors import CheckpointError, DataError, VaekitError
from vaekit.pages.disentanglement import FIELDS as SCORE_FIELDS

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Default importance samples per example of the comparison's evaluation (small, so the page is quick).
COMPARE_K = 200
#: Default samples per run in the sample panels.
COMPARE_SAMPLES = 64
#: What marks a page as a vaekit comparison (an existing file is replaced only when it carries it).
GENERATOR = "<meta name='generator' content='vaekit compare'>"
#: The report's style (vaekit.pages.report.CSS) and, for tables of several runs, numbers that do not wrap.
EXTRA_CSS = "td.num { white-space: nowrap; }"
#: Settings that say where and how fast a run was computed, or where it reported, not what it is; left out of the
#: settings table.
HARDWARE_KEYS = ("device", "threads", "compile", "eval_batch_size", "log", "log_images_every")
#: Fields of the evaluation that the JSON output carries (the names of ``vaekit evaluate --json``).
EVALUATION_KEYS = ("split", "k", "n", "elbo", "elbo_stderr", "reconstruction", "kl", "nll", "nll_stderr",
                   "bits_per_dim", "gap", "nll_exact", "nll_exact_stderr", "rate", "rate_stderr", "distortion",
                   "distortion_stderr", "mutual_information", "mutual_information_stderr", "marginal_kl",
                   "marginal_kl_stderr", "active_units", "selected_by", "vq_elbo", "vq_bits_per_dim", "vq_prior",
                   "pareto_k_fraction", "ais_log_px", "ais_log_px_stderr", "approximation_gap",
                   "approximation_gap_stderr", "amortization_gap", "amortization_gap_stderr")


@dataclass
class RunSummary:
    """One run of a comparison: its settings, training history and evaluation (None for an autoencoder)."""

    name: str
    path: Path
    model: LatentVariableModel
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    evaluation: Any = None  # vaekit.evaluation.EvaluationResult
    autoencoder: bool = False
    distortion: float | None = None  # D of an autoencoder, -E_x log p(x | f(x)), nats
    fitted: Any = None  # an autoencoder's evaluation as "decoder + the density fitted to its codes", or None
    distortion_stderr: float | None = None
    notes: list[str] = field(default_factory=list)
    disentanglement: dict[str, float | None] | None = None  # RUN/disentanglement.json (vaekit.pages.disentanglement)

    @property
    def train_seconds(self) -> float:
        """The training time: the sum of the ``seconds`` of the metrics rows."""
        return float(sum(r["seconds"] for r in self.metrics if _number(r.get("seconds"))))

    @property
    def epochs(self) -> int:
        """Epochs trained (the largest ``epoch`` of the metrics rows)."""
        return max((int(r["epoch"]) for r in self.metrics if _whole(r.get("epoch"))), default=0)

    @property
    def kept_epoch(self) -> int | None:
        """The epoch whose weights were kept: the last row marked ``best``."""
        kept = [int(r["epoch"]) for r in self.metrics if r.get("best") is True and _whole(r.get("epoch"))]
        return kept[-1] if kept else None

    @property
    def selected_by(self) -> str | None:
        if self.evaluation is not None and self.evaluation.selected_by:
            return self.evaluation.selected_by
        for row in reversed(self.metrics):
            if isinstance(row.get("selected_by"), str):
                return row["selected_by"]
        return "valid objective (reconstruction - latent penalty)" if self.autoencoder else None

    def to_dict(self) -> dict[str, Any]:
        """The run's metrics as JSON-ready values (None where there is no value: e.g. an autoencoder's ELBO)."""
        from vaekit.evaluation import json_safe

        ev = self.evaluation.to_dict() if self.evaluation is not None else {}
        from vaekit.config import named

        objective = named(self.config, "objective")  # an autoencoder's own objective unless it names another
        out: dict[str, Any] = {"name": self.name, "run": str(self.path), "objective": "autoencoder" if
                               self.autoencoder and objective in (None, "elbo", "autoencoder") else objective}
        out.update({key: ev.get(key) for key in EVALUATION_KEYS})
        if self.autoencoder:
            out.update(distortion=self.distortion, distortion_stderr=self.distortion_stderr,
                       selected_by=self.selected_by)
            if self.fitted is not None:
                out.update(fitted_density_nll=self.fitted.nll, fitted_density_nll_stderr=self.fitted.nll_stderr)
        out.update(train_seconds=self.train_seconds, epochs=self.epochs, kept_epoch=self.kept_epoch,
                   notes=list(self.notes) + list(getattr(self.evaluation, "notes", []) or []))
        out.update({name: (self.disentanglement or {}).get(name) for name in SCORE_FIELDS})
        return json_safe(out)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**9


# -- settings ---------------------------------------------------------------------------------------


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys: ``{"model": {"prior": {"name": "vamp"}}}`` -> ``{"model.prior.name": "vamp"}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


#: Shown for a setting that a run's config.json does not have.
MISSING = "(not set)"


def differing_settings(configs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """The flattened settings whose values differ between the runs, key -> one value per run (:data:`MISSING`
    where a run lacks the key); the hardware settings (:data:`HARDWARE_KEYS`) are left out."""
    flat = [flatten(c) for c in configs]
    keys: list[str] = []
    for f in flat:
        keys += [k for k in f if k not in keys]
    out = {}
    for key in keys:
        if key in HARDWARE_KEYS:
            continue
        values = [f.get(key, MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            out[key] = values
    return out


# -- loading ----------------------------------------------------------------------------------------


def check_run_folder(path: Path) -> None:
    """A folder written by ``vaekit train`` (or ``model.save``): it holds ``model.json``; else a one-line error."""
    from vaekit.io.files import exists_or_link

    if not path.exists():
        raise CheckpointError(f"run {path} not found; give folders written by 'vaekit train'")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a run folder; give folders written by 'vaekit train'")
    if not exists_or_link(path / "model.json"):
        raise CheckpointError(f"{path} is not a vaekit run (it has no model.json); give folders written by "
                              "'vaekit train'")


def run_names(paths: Sequence[Path]) -> list[str]:
    """Short names of the runs: the folder names, with their parents' names where two would be the same."""
    parts = [p.resolve().parts for p in paths]
    depth = 1
    while True:
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    if len(set(names)) < len(names):  # the same folder given twice
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    return names


def is_autoencoder(model: LatentVariableModel, config: dict[str, Any], metrics: Sequence[dict[str, Any]]) -> bool:
    """Whether the run is a deterministic autoencoder (a point-mass q(z|x), which has no ELBO)."""
    if bool(getattr(getattr(model, "posterior_family", None), "autoencoder", False)):
        return True
    if any(r.get("objective") == "autoencoder" for r in metrics):
        return True
    posterior = (config.get("model") or {}).get("posterior") if isinstance(config.get("model"), dict) else None
    return isinstance(posterior, dict) and posterior.get("name") == "delta"


def load_runs(paths: Sequence[str | Path], device: str | None = None) -> list[RunSummary]:
    """Load the runs (best weights, config.json, metrics.jsonl); at least two, all on data of one shape."""
    from vaekit.evaluation import load_model, read_run_config
    from vaekit.pages.disentanglement import read_scores
    from vaekit.pages.kit import read_run_metrics

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise VaekitError(f"give at least 2 runs to compare, got {len(paths)}")
    for path in paths:
        check_run_folder(path)
    runs = []
    for name, path in zip(run_names(paths), paths):
        model = load_model(path, device)
        cfg = read_run_config(path)
        metrics, note = read_run_metrics(path)
        scores, score_note = read_scores(path)
        notes = [note] if note and (path / "metrics.jsonl").exists() else []
        runs.append(RunSummary(name, path, model, cfg, metrics, autoencoder=is_autoencoder(model, cfg, metrics),
                               notes=notes + ([score_note] if score_note else []), disentanglement=scores))
    shapes = {r.name: tuple(getattr(r.model, "shape", None) or ()) for r in runs}
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{n} {s}" for n, s in shapes.items())
        raise DataError(f"the runs were trained on data of different shapes ({listing}); compare runs on one "
                        "data set")
    return runs


# -- evaluation -------------------------------------------------------------------------------------


def evaluate_runs(runs: Sequence[RunSummary], *, k: int = COMPARE_K, seed: int = 0, split: str = "test",
                  device: str | None = None, data_dir: str | None = None, dataset_name: str | None = None,
                  log: Callable[[str], None] | None = None) -> None:
    """Evaluate every run on ``split`` of its own data set with K = ``k`` (:func:`vaekit.evaluation.evaluate_run`,
    with the defaults of ``vaekit evaluate``, so the numbers are those of ``vaekit evaluate RUN --k K``); an
    autoencoder gets its distortion alone. Data sets shared by runs are loaded once, all before the first
    evaluation."""
    from vaekit.evaluation import evaluate_run, load_run_data, read_run_config
    from vaekit.evaluation.store import evaluation_key, reuse_or_evaluate

    say = log or (lambda _msg: None)
    cache: dict[Any, Any] = {}
    data = []
    for r in runs:  # every data set before any evaluation: one that cannot be loaded is refused before any work
        cfg = read_run_config(r.path)
        key = (dataset_name or cfg.get("dataset"), data_dir or cfg.get("data_dir"), cfg.get("binarize"),
               cfg.get("seed", 0))
        key = tuple(str(v) for v in key)
        if key not in cache:
            cache[key] = load_run_data(r.path, data_dir=data_dir, dataset_name=dataset_name, split=split)
        data.append(cache[key])
    for r, ds in zip(runs, data):
        if r.autoencoder:
            say(f"{r.name}: a deterministic autoencoder (no density q(z|x)): its distortion, and the NLL of decoder + "
                "the density fitted to its codes")
            r.distortion, r.distortion_stderr = autoencoder_distortion(r.model, ds, split, seed)
            r.notes.append("a deterministic autoencoder has no density q(z|x): no ELBO, NLL, rate or ELBO surgery")
            if getattr(getattr(r.model, "prior", None), "fitted", False):  # decoder + the density fitted afterwards
                r.fitted = evaluate_run(r.path, split=split, k=k, seed=seed, device=device, dataset=ds,
                                        surgery_samples=0)
                r.notes.append("its NLL is that of the decoder with the Gaussian mixture fitted to its training "
                               "codes after training (importance-sampled), not of a trained latent-variable model")
            continue
        key = evaluation_key(split=split, k=k, seed=seed, dataset=dataset_name)
        try:
            r.evaluation, reused = reuse_or_evaluate(r.path, key, lambda r=r, ds=ds: _evaluate_one(
                r, ds, split, k, seed, device, say))
            if reused:
                say(f"{r.name}: the evaluation kept in its run folder ({split} split, K = {k}, seed {seed})")
        except (ValueError, NotImplementedError) as exc:  # a model without the densities the evaluation needs
            if isinstance(exc, VaekitError):
                raise
            r.notes.append(f"not evaluated: {' '.join(str(exc).split())[:200]}")


def _evaluate_one(r: RunSummary, ds: Any, split: str, k: int, seed: int, device: str | None,
                  say: Callable[[str], None]) -> Any:
    from vaekit.evaluation import evaluate_run

    say(f"{r.name}: evaluating on the {split} split with K = {k} ...")
    return evaluate_run(r.path, split=split, k=k, seed=seed, device=device, dataset=ds)


@torch.inference_mode()
def autoencoder_distortion(model: LatentVariableModel, ds: Any, split: str = "test",
                           seed: int = 0) -> tuple[float, float]:
    """D = -E_x log p(x | f(x)) of a deterministic autoencoder (f(x) its code), nats, with its standard error."""
    from vaekit.evaluation import check_shape, split_images

    x, y = split_images(ds, split, seed)
    check_shape(model, x, f"the {split} split")
    if len(x) == 0:
        raise DataError(f"the {split} split is empty")
    dev, dtype = _device_dtype(model)
    y = y if getattr(model, "condition", 0) else None
    values = []
    for start in range(0, len(x), 500):
        xb = x[start : start + 500].to(device=dev, dtype=dtype)
        yb = y[start : start + 500].to(dev) if y is not None else None
        values.append(model.log_likelihood(xb, model.code(xb, yb), yb).double().cpu())
    d = -torch.cat(values).numpy()
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan


def _device_dtype(model: LatentVariableModel) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


# -- figures ----------------------------------------------------------------------------------------


def _label(text: str) -> str:
    from vaekit.pages.viz import plain_text

    return plain_text(text, 40)


def curve_limits(curves: Sequence[Sequence[float]], q: float = 5.0) -> tuple[float, float] | None:
    """The y-range of overlaid curves, so that a bad first epoch does not flatten the rest: from the higher of the
    ``q``-th percentile of all their values and the lowest value after each curve's first point, lowered where
    needed to every curve's last value; up to the largest value; padded by 5%."""
    curves = [list(c) for c in curves if len(c)]
    if not curves:
        return None
    values = np.asarray([v for c in curves for v in c], dtype=float)
    second = min(min(c[1:]) if len(c) >= 3 else min(c) for c in curves)
    lo = min(max(float(np.percentile(values, q)), float(second)), *(float(c[-1]) for c in curves))
    hi = float(values.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(1.0, 0.05 * abs(hi))
    return lo - pad, hi + pad


def curves_figure(runs: Sequence[RunSummary]) -> Any:
    """The validation ELBO (an autoencoder: its objective) per epoch, one line per run, nats per example."""
    from vaekit.pages.viz import _plottable, new_figure

    fig = new_figure(8.5, 3.8)
    ax = fig.subplots()
    curves = []
    for r in runs:
        pts = [(row["epoch"], row["valid_elbo"]) for row in r.metrics
               if _whole(row.get("epoch")) and _plottable(row.get("valid_elbo"))]
        if not pts:
            continue
        label = r.name + (" (autoencoder objective)" if r.autoencoder else "")
        style = ":" if r.autoencoder else "-"
        ax.plot(*zip(*pts), style, marker="o" if len(pts) < 30 else None, ms=3, label=_label(label))
        curves.append([y for _, y in pts])
    limits = curve_limits(curves)
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per example")
    ax.set_title("validation ELBO per epoch" + (" (dotted, autoencoders: reconstruction - latent penalty, not an "
                                                 "ELBO)" if any(r.autoencoder for r in runs) else ""), fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def rd_points(runs: Sequence[RunSummary]) -> list[tuple[str, float, float, float, float]]:
    """(name, R, D, stderr R, stderr D) of the runs that have a rate, nats."""
    out = []
    for r in runs:
        ev = r.evaluation
        if ev is not None and _number(ev.rate) and _number(ev.distortion):
            out.append((r.name, float(ev.rate), float(ev.distortion), _or_zero(ev.rate_stderr),
                        _or_zero(ev.distortion_stderr)))
    return out


def _or_zero(v: Any) -> float:
    return float(v) if _number(v) else 0.0


def rate_distortion_figure(runs: Sequence[RunSummary]) -> Any:
    """The runs on the rate-distortion plane: points (R, D) with one-standard-error bars, and the iso-ELBO
    lines R + D = c (c = -ELBO) through each point, dashed and labelled; autoencoders (no rate) as dotted
    horizontal lines at their distortion."""
    import matplotlib

    from vaekit.pages.viz import new_figure

    fig = new_figure(7.5, 5.0)
    ax = fig.subplots()
    points = rd_points(runs)
    ae = [(r.name, r.distortion) for r in runs if r.autoencoder and _number(r.distortion)]
    xs = [p[1] for p in points] or [0.0]
    ys = [p[2] for p in points] + [d for _, d in ae] or [0.0]
    x_lo, x_hi = min(0.0, min(xs)), max(xs)
    x_pad = 0.15 * (x_hi - x_lo) if x_hi > x_lo else 1.0
    y_lo, y_hi = min(ys), max(ys)
    y_pad = 0.15 * (y_hi - y_lo) if y_hi > y_lo else max(1.0, 0.02 * abs(y_hi))
    xlim, ylim = (x_lo - 0.02 * x_pad, x_hi + x_pad), (y_lo - y_pad, y_hi + y_pad)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, rate, dist, se_r, se_d) in enumerate(points):
        colour = colours[i % len(colours)]
        c = rate + dist
        line = np.linspace(xlim[0], xlim[1], 2)
        ax.plot(line, c - line, "--", color=colour, lw=1, alpha=0.6)
        ax.errorbar([rate], [dist], xerr=[se_r], yerr=[se_d], fmt="o", color=colour, capsize=3,
                    label=_label(f"{name}: R + D = {c:.2f}"))
        ax.annotate(_label(f"{name}  (-ELBO {c:.2f})"), (rate, dist), textcoords="offset points", xytext=(6, 6),
                    fontsize=8, color=colour)
    for j, (name, dist) in enumerate(ae):
        colour = colours[(len(points) + j) % len(colours)]
        ax.axhline(dist, ls=":", color=colour, lw=1.5, label=_label(f"{name}: autoencoder, D = {dist:.2f}, no rate"))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("rate R = E KL(q(z|x) || p(z))  (nats)")
    ax.set_ylabel("distortion D = -E log p(x|z)  (nats)")
    ax.set_title("rate-distortion plane; dashed: R + D = -ELBO through each run", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _condition_labels(model: LatentVariableModel, n: int) -> torch.Tensor | None:
    if not getattr(model, "condition", 0):
        return None
    return torch.arange(n, device=_device_dtype(model)[0]) % model.condition


@torch.inference_mode()
def prior_sample_means(model: LatentVariableModel, n: int, seed: int = 0) -> torch.Tensor:
    """Decoded means E[x|z] of n codes z ~ p(z), the model's own prior, as images (n, C, H, W) in [0, 1]."""
    gen = torch.Generator(device=_device_dtype(model)[0]).manual_seed(seed)
    s = model.sample(n, y=_condition_labels(model, n), generator=gen)
    return s.means.reshape(n, *model.shape).clamp(0, 1).cpu()


def standard_normal_codes(latent: int, n: int, seed: int = 0) -> torch.Tensor:
    """n codes z ~ N(0, I) of size ``latent`` (the same codes for every run of that latent size and seed)."""
    return torch.randn(n, latent, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def standard_normal_means(model: LatentVariableModel, n: int, seed: int = 0) -> torch.Tensor:
    """E[x|z] = ``model.likelihood.mean(model.decode(z))`` for z ~ N(0, I) of the model's latent size, as
    images (n, C, H, W); ValueError for discrete codes, which N(0, I) draws are not."""
    from vaekit.pages.viz import decode_means, discrete_prior

    if discrete_prior(model) is not None or bool(getattr(getattr(model, "posterior_family", None), "discrete",
                                                         False)):
        raise ValueError("its codes are discrete (one-hot or binary), which draws from N(0, I) are not")
    z = standard_normal_codes(int(model.latent_size), n, seed)
    return decode_means(model, z, _condition_labels(model, n))


def panels_figure(images: Sequence[torch.Tensor], titles: Sequence[str], suptitle: str) -> Any:
    """Image grids side by side, one per run."""
    from vaekit.pages.viz import image_grid, panels

    grids = [image_grid(im, max(1, int(math.ceil(math.sqrt(len(im)))))) for im in images]
    return panels(grids, [_label(t) for t in titles], suptitle)


# -- the page ---------------------------------------------------------------------------------------


def _value(v: Any, se: Any = None, digits: int = 3) -> str:
    if not _number(v):
        return "n/a"
    s = f"{v:.{digits}f}"
    if _number(se):
        s += f" &plusmn; {se:.{digits}f}"
    return s


NO_DENSITY = "n/a, no density"


def metrics_rows(runs: Sequence[RunSummary], k: int) -> list[tuple[str, list[str], str]]:
    """(quantity, one cell per run, note) of the metrics table."""
    def cells(get: Callable[[Any], str], ae: str = NO_DENSITY) -> list[str]:
        out = []
        for r in runs:
            if r.autoencoder:
                out.append(ae)
            elif r.evaluation is None:
                out.append("n/a")
            else:
                out.append(get(r.evaluation))
        return out

    nll = cells(lambda e: _value(e.nll, e.nll_stderr))
    for i, r in enumerate(runs):
        if r.autoencoder and r.fitted is not None:
            nll[i] = _value(r.fitted.nll, r.fitted.nll_stderr) + " (decoder + density fitted to its codes)"
        elif r.evaluation is not None and r.evaluation.vq_elbo is not None:  # no importance sampling: one bound
            nll[i] += f" (&minus;vq_elbo, {html.escape(str(r.evaluation.vq_prior))} prior: a bound, q a point mass)"
    rows = [
        ("ELBO", cells(lambda e: _value(e.elbo, e.elbo_stderr)), "nats per test example, = &minus;(R + D)"),
        (f"NLL, importance sampled (K = {k})", nll,
         "nats; &minus;(logsumexp<sub>i</sub> log w<sub>i</sub> &minus; log K), biased high by O(1/K)"),
    ]
    if any(r.evaluation is not None and r.evaluation.nll_exact is not None for r in runs):
        rows.append(("NLL, exact (sum over every code)", cells(lambda e: _value(e.nll_exact, e.nll_exact_stderr)
                                                                if e.nll_exact is not None else "n/a"), "nats"))
    rows += _trust_rows(runs, cells)
    rows += [
        ("rate R = KL(q(z|x) || p(z))", cells(lambda e: _value(e.rate, e.rate_stderr)), "nats"),
        ("distortion D = &minus;E<sub>q</sub> log p(x|z)",
         [(_value(r.distortion, r.distortion_stderr) + " (at z = f(x))") if r.autoencoder
          else (_value(r.evaluation.distortion, r.evaluation.distortion_stderr) if r.evaluation is not None
                else "n/a") for r in runs], "nats"),
        ("&nbsp;&nbsp;I<sub>q</sub>(x; z)", cells(lambda e: _value(e.mutual_information,
                                                                  e.mutual_information_stderr)),
         "nats; R = I<sub>q</sub>(x; z) + KL(q(z) || p(z)) (ELBO surgery)"),
        ("&nbsp;&nbsp;KL(q(z) || p(z))", cells(lambda e: _value(e.marginal_kl, e.marginal_kl_stderr)),
         "nats; the aggregate posterior against the prior"),
        ("active units", cells(lambda e: f"{e.active_units} of {len(e.latent_variance)}", ae="n/a"),
         "Cov<sub>x</sub>(E<sub>q</sub>[z<sub>j</sub>]) &gt; 0.01"),
        ("training time", [f"{r.train_seconds:.1f} s" if r.metrics else "n/a" for r in runs],
         "the sum of the epochs' seconds in metrics.jsonl"),
        ("epochs", [str(r.epochs) if r.metrics else "n/a" for r in runs], ""),
        ("kept epoch", [str(r.kept_epoch) if r.kept_epoch is not None else "n/a" for r in runs],
         "the weights evaluated here"),
        ("chosen by", [html.escape(r.selected_by or "n/a") for r in runs], "the validation score that chose them"),
    ]
    return rows


def _trust_rows(runs: Sequence[RunSummary], cells: Callable[..., list[str]]) -> list[tuple[str, list[str], str]]:
    """The k-hat share of every evaluation, and AIS and the gap split where a kept evaluation has them (vaekit
    evaluate RUN --ais T --gaps with the comparison's K and seed)."""
    def has(key: str) -> bool:
        return any(r.evaluation is not None and getattr(r.evaluation, key, None) is not None for r in runs)

    def pm(key: str) -> Callable[[Any], str]:
        return lambda e: _value(getattr(e, key), getattr(e, key + "_stderr")) if getattr(e, key) is not None else "n/a"

    rows = []
    if has("pareto_k_fraction"):
        rows.append(("Pareto k-hat &gt; 0.7", cells(lambda e: f"{100 * e.pareto_k_fraction:.1f}%"
                                                    if e.pareto_k_fraction is not None else "n/a"),
                     "share of examples whose importance-sampled log p(x) is untrusted"))
    if has("ais_log_px"):
        rows.append(("log p(x), AIS", cells(pm("ais_log_px")),
                     "nats; a stochastic lower bound (vaekit evaluate --ais)"))
    if has("approximation_gap"):
        rows.append(("approximation gap", cells(pm("approximation_gap")), "nats; log p(x) &minus; ELBO[q*]"))
        rows.append(("amortization gap", cells(pm("amortization_gap")), "nats; ELBO[q*] &minus; ELBO[q]"))
    return rows


def grouped_notes(runs: Sequence[RunSummary]) -> list[tuple[str, str]]:
    """(note, the runs it concerns: "all runs" or their names) for the runs' notes, each note once."""
    order: dict[str, list[str]] = {}
    for r in runs:
        for note in [*r.notes, *(getattr(r.evaluation, "notes", []) or [])]:
            order.setdefault(note, [])
            if r.name not in order[note]:
                order[note].append(r.name)
    return [(note, "all runs" if len(who) == len(runs) > 1 else ", ".join(who)) for note, who in order.items()]


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], notes: bool = False) -> str:
    """A table whose columns after the first are numbers (right-aligned), but a last column of ``notes``."""
    th = "".join(f"<th>{h}</th>" for h in head)
    last = len(head) - 1 if notes else len(head)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if 1 <= i < last else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def disentanglement_section(runs: Sequence[RunSummary]) -> str:
    """The runs' disentanglement scores side by side (value &plusmn; its standard error), from each run's
    disentanglement.json; empty when no run has one."""
    from vaekit.pages.disentanglement import FILE, score_rows

    rows = score_rows([r.disentanglement for r in runs])
    if not rows:
        return ""
    return ("<h2>Disentanglement</h2>" + _table(["score", *(html.escape(r.name) for r in runs)],
                                                [[label, *cells] for label, cells in rows])
            + f"<p class='sub'>From each run's <code>{FILE}</code> (<code>vaekit evaluate RUN --disentanglement</code>"
            "); &plusmn; is the score's standard error, n/a where a run has no score.</p>")


#: The metrics of a group of runs (key of :meth:`RunSummary.to_dict`, quantity, notes), K filled in.
GROUP_METRICS = (
    ("elbo", "ELBO", "nats per test example"),
    ("nll", "NLL, importance sampled (K = {k})", "nats"),
    ("nll_exact", "NLL, exact (sum over every code)", "nats"),
    ("fitted_density_nll", "NLL, decoder + density fitted to its codes", "nats; autoencoders"),
    ("rate", "rate R", "nats"),
    ("distortion", "distortion D", "nats"),
    ("mutual_information", "I<sub>q</sub>(x; z)", "nats"),
    ("marginal_kl", "KL(q(z) || p(z))", "nats"),
    ("active_units", "active units", ""),
    ("train_seconds", "training time", "seconds"),
)


def group_metrics(k: int) -> list[tuple[str, str, str]]:
    """(key, quantity, notes) of every metric a group of runs shows: :data:`GROUP_METRICS`, then the scores of
    disentanglement.json."""
    from vaekit.pages.disentanglement import LABELS

    return [(key, quantity.format(k=k), note) for key, quantity, note in GROUP_METRICS] + \
        [(key, label, "disentanglement.json") for key, label in LABELS.items()]


def run_groups(runs: Sequence[RunSummary]) -> list[Any]:
    """The runs grouped by their settings but the seed (and the hardware), each metric's mean and SD across a
    group (:func:`vaekit.pages.seeds.seed_groups`)."""
    from vaekit.pages.seeds import seed_groups

    return seed_groups([r.name for r in runs], [flatten(r.config) for r in runs], [r.to_dict() for r in runs],
                       [key for key, _, _ in group_metrics(0)], ignore=HARDWARE_KEYS)


def settings_section(runs: Sequence[RunSummary]) -> str:
    """The settings that differ between the runs, one column per run; the common ones folded away."""
    from vaekit.pages.kit import fmt

    configs = [r.config for r in runs]
    diff = differing_settings(configs)
    names = [html.escape(r.name) for r in runs]
    out = ["<h2>Settings that differ</h2>"]
    if diff:
        rows = [[f"<code>{html.escape(k)}</code>", *(f"<code>{html.escape(fmt(v))}</code>" for v in vs)]
                for k, vs in diff.items()]
        th = "".join(f"<th>{h}</th>" for h in ["setting", *names])
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
        out.append(f"<table class='settings'><tr>{th}</tr>{body}</table>")
    else:
        out.append("<p class='sub'>None: the runs have the same settings in config.json.</p>")
    if any(not c for c in configs):
        missing = ", ".join(html.escape(r.name) for r in runs if not r.config)
        out.append(f"<p class='note'>No config.json in {missing} (a model folder, not a training run).</p>")
    common = {k: v for k, v in flatten(configs[0]).items() if k not in diff and k not in HARDWARE_KEYS} \
        if configs[0] else {}
    if common:
        rows = "".join(f"<tr><td><code>{html.escape(k)}</code></td><td><code>{html.escape(fmt(v))}</code></td></tr>"
                       for k, v in common.items())
        out.append(f"<details><summary>the {len(common)} settings they share</summary><table>{rows}</table>"
                   "</details>")
    return "".join(out)


def metrics_section(runs: Sequence[RunSummary], k: int, split: str) -> str:
    """The metrics of every run side by side (value &plusmn; standard error) and the runs' notes."""
    rows = metrics_rows(runs, k)
    block = [f"<h2>Metrics on the {html.escape(split)} set (K = {k} importance samples)</h2>",
             _table(["quantity", *(html.escape(r.name) for r in runs), "notes"],
                    [[q, *cells, note] for q, cells, note in rows], notes=True)]
    block.append(f"<p class='sub'>&plusmn; is one standard error over the {html.escape(split)} examples. K = {k} "
                 "for speed (the evaluation decodes K codes per example); the literature's protocol is K = 5000 "
                 "(<code>vaekit evaluate RUN --k 5000</code>), and log p(x) estimates grow with K towards the "
                 "true value.</p>")
    block += [f"<p class='note'>{html.escape(who)}: {html.escape(note)}.</p>" for note, who in grouped_notes(runs)]
    return "".join(block)


def build_page(runs: Sequence[RunSummary], *, k: int, n_samples: int = COMPARE_SAMPLES, seed: int = 0,
               split: str = "test") -> str:
    """The HTML page of a comparison of evaluated runs (images embedded as base64 PNG)."""
    from vaekit.pages import viz
    from vaekit.pages.kit import CSS, page_figure
    from vaekit.pages.seeds import grouped, groups_section

    names = [r.name for r in runs]
    title = f"vaekit compare: {len(runs)} runs"
    datasets = sorted({str(r.config.get("dataset", "?")) for r in runs})
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = (f"<h1>{html.escape(title)}</h1><p class='sub'>{', '.join(html.escape(n) for n in names)} &middot; "
            f"{html.escape(', '.join(datasets))} &middot; written {stamp}</p>")
    sections = [settings_section(runs), metrics_section(runs, k, split), disentanglement_section(runs)]
    groups = run_groups(runs)
    if grouped(groups):
        sections.append(groups_section(groups, group_metrics(k)))

    if any(r.metrics for r in runs):
        sections.append("<h2>Training curves</h2>" + page_figure(
            viz.figure_png(curves_figure(runs)), "training curves",
            "Validation ELBO per epoch (nats per example), one line per run; the y-axis starts at the higher of "
            "the 5th percentile of all the values and the lowest value after each run's first epoch, so a poor "
            "first epoch does not flatten the curves."
            + (" Autoencoder runs (dotted) show their own objective, the reconstruction minus the latent penalty, "
               "which is no ELBO." if any(r.autoencoder for r in runs) else "")))

    points = rd_points(runs)
    rd_caption = ("One point per run at (R, D), the rate and distortion of its evaluation, with one-standard-error "
                  "bars; the dashed line R + D = c through a point (c = &minus;ELBO) holds every model with that "
                  "ELBO, so runs on one line are equally good density models however they split the nats.")
    if any(r.autoencoder for r in runs):
        rd_caption += " A deterministic autoencoder has no rate (no density q(z|x)): a dotted line at its distortion."
    rd = "<h2>The rate-distortion plane</h2>" + page_figure(viz.figure_png(rate_distortion_figure(runs)),
                                                         "rate-distortion plane", rd_caption)
    if points:
        rd += _table(["run", "R (nats)", "D (nats)", "R + D = &minus;ELBO (nats)"],
                     [[html.escape(n), _value(r_, se_r), _value(d, se_d), _value(r_ + d)]
                      for n, r_, d, se_r, se_d in points])
    else:
        rd += "<p class='note'>No run has a rate to place on the plane.</p>"
    sections.append(rd)

    sections.append(_samples_section(runs, n_samples, seed))
    sections.append(_standard_normal_section(runs, n_samples, seed))

    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>{GENERATOR}"
            f"<style>{CSS}{EXTRA_CSS}</style></head>"
            f"<body><main>{head}{''.join(sections)}</main></body></html>\n")


def _samples_section(runs: Sequence[RunSummary], n: int, seed: int) -> str:
    from vaekit.pages.kit import page_figure

    images, titles, notes = [], [], []
    for r in runs:
        try:
            images.append(prior_sample_means(r.model, n, seed))
            prior = str(r.model.describe().get("prior", {}).get("name", "")) if hasattr(r.model, "describe") else ""
            titles.append(f"{r.name}" + (f" ({prior} prior)" if prior else ""))
        except (ValueError, NotImplementedError, RuntimeError) as exc:
            notes.append(f"{r.name}: no samples ({' '.join(str(exc).split())[:160]})")
    out = "<h2>Samples from each run's own prior</h2>"
    if images:
        out += page_figure(panels_figure(images, titles, f"{n} samples per run, z ~ p(z) (seed {seed})"),
                       "samples from the priors",
                       "Decoded means E[x|z] of codes z drawn from each run's own prior p(z) (for an autoencoder, "
                       "the density fitted to its training codes).")
    out += "".join(f"<p class='note'>{html.escape(note)}</p>" for note in notes)
    return out


def _standard_normal_section(runs: Sequence[RunSummary], n: int, seed: int) -> str:
    from vaekit.pages.kit import page_figure

    images, titles, notes = [], [], []
    for r in runs:
        try:
            images.append(standard_normal_means(r.model, n, seed))
            titles.append(f"{r.name} (latent {int(r.model.latent_size)})")
        except (ValueError, NotImplementedError, RuntimeError) as exc:
            notes.append(f"{r.name}: left out, {' '.join(str(exc).split())[:160]}")
    out = "<h2>The decoder on z ~ N(0, I)</h2>"
    if images:
        out += page_figure(panels_figure(images, titles, f"decoder applied to {n} codes z ~ N(0, I) (seed {seed})"),
                       "decoder on standard normal codes",
                       "E[x|z] = likelihood mean of decode(z) for the same standard normal codes z in every run of "
                       "one latent size. A VAE trained with p(z) = N(0, I) decodes such codes into data-like images; "
                       "an autoencoder, whose codes were never pulled towards N(0, I), often does not: this is "
                       "where the two differ. For a run whose prior is N(0, I) these are the codes of the panel above.")
    out += "".join(f"<p class='note'>{html.escape(note)}</p>" for note in notes)
    return out


# -- the whole comparison ---------------------------------------------------------------------------


def _looks_like_comparison(head: bytes) -> bool:
    return GENERATOR.encode() in head


def check_page_path(path: str | Path) -> Path:
    """``path`` may take a comparison page: a ``.html`` name, no link, no other existing file than such a page."""
    from vaekit.io.files import check_output

    return check_output(path, ".html", _looks_like_comparison, "a comparison page")


@dataclass
class Comparison:
    """A written comparison: the page and the evaluated runs."""

    page: Path
    runs: list[RunSummary]
    k: int
    seed: int
    split: str

    def to_dict(self) -> dict[str, Any]:
        """The page, the evaluation's settings, each run's metrics and, where runs differ only by seed, their
        groups (each metric's mean and SD across the seeds; empty when no group holds two runs)."""
        from vaekit.evaluation import json_safe
        from vaekit.pages.seeds import grouped

        groups = run_groups(self.runs)
        return {"page": str(self.page), "k": self.k, "seed": self.seed, "split": self.split,
                "runs": [r.to_dict() for r in self.runs],
                "groups": [json_safe(g.to_dict()) for g in groups] if grouped(groups) else []}


def compare_runs(paths: Sequence[str | Path], out: str | Path = "compare.html", *, k: int = COMPARE_K,
                 n_samples: int = COMPARE_SAMPLES, seed: int = 0, split: str = "test", device: str | None = None,
                 data_dir: str | None = None, dataset_name: str | None = None,
                 log: Callable[[str], None] | None = None) -> Comparison:
    """Evaluate the runs (K = ``k`` on ``split``) and write their comparison page to ``out``; see the module
    docstring. Bad input (a folder that is not a run, fewer than 2 runs, data of different shapes) raises a
    :class:`~vaekit.errors.VaekitError` before any work."""
    from vaekit.io.checkpoint import atomic_write_text

    path = check_page_path(out)
    runs = load_runs(paths, device)
    evaluate_runs(runs, k=k, seed=seed, split=split, device=device, data_dir=data_dir, dataset_name=dataset_name,
                  log=log)
    page = build_page(runs, k=k, n_samples=n_samples, seed=seed, split=split)
    try:
        check_page_path(path)  # nothing else has appeared there meanwhile
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, page)
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}") from None
    return Comparison(path, runs, k, seed, split)
