"""``RUN/report.html``: one self-contained page about a trained run.

The page holds the run's settings, its training curves (from ``metrics.jsonl``), an evaluation
table (test ELBO and its terms, the importance-sampled log p(x) with K samples, bits/dim, the gap,
active units; K is stated on the page), samples from the prior, reconstructions, interpolations,
traversals of the most active latent units and, for a 2-D latent space, the decoded manifold and a
scatter plot of the test set's posterior means, and the interactive latent explorer
(:mod:`vaekit.pages.explorer`: the decoder runs in the page, under the pointer). Images are embedded as base64
PNG (pictures of images enlarged by whole factors and shown at their own size), the explorer's weights
as base64 too, so the file can be mailed or archived on its own and works without JavaScript (the
explorer aside). Latent units are named z_1 ... z_L, from 1; the settings table lists the settings that
apply to the run (:func:`run_settings`).

Discrete codes (categorical, binary) get the decoded mean of every category of the first groups in place
of the traversals (the other groups held at the most probable code of the first evaluated image, or at a
draw from p(z) without data); interpolations and the manifold, which move z continuously, are left out
with a note. A model with a cluster variable (one categorical group, a mixture of Bernoullis, the
Gaussian-mixture prior) gets its clustering accuracy against the labels (:mod:`vaekit.analysis.clustering`), and
the Gaussian-mixture VAE its decoded cluster means.

A run whose data set has known factors (``Dataset.factors``, e.g. dSprites) gets a section "Disentanglement": the
heat map of I(z_j; v_k) (nats) of its active units against the factors, as ``vaekit evaluate RUN --disentanglement``
kept it in ``RUN/disentanglement.json`` (over training images) when that file is newer than the model, else from the
posterior means of at most :data:`~vaekit.evaluation.disentanglement.INFORMATION_POINTS` images of the training split
when it is loaded, or of the evaluated split (one encoder pass: the report loads no other split); a traversal of
each active unit labelled with the factor it informs most; and the scores of ``RUN/disentanglement.json`` (the page
computes none of them).
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vaekit.errors import CheckpointError, VaekitError
from vaekit.pages.explorer import CSS as EXPLORER_CSS
from vaekit.pages.kit import CSS, page_figure, read_run_metrics, settings_table

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Default number of importance samples for the report's evaluation (modest, so the page is quick).
REPORT_K = 500



def _networks(spec: dict[str, Any]) -> str:
    """A short name of the model's networks: "mlp 400", "conv", or the class names of the user's."""
    if spec.get("model") == "hvae":
        return f"{spec.get('arch')} {'-'.join(map(str, spec.get('hidden', [])))}"
    if spec.get("model") == "bernoulli-mixture":
        return "mixture of Bernoullis (no networks)"
    parts = []
    for role in ("encoder", "decoder"):
        net = spec.get(role, {})
        if net.get("name") == "custom":
            parts.append(f"{role} {net.get('class')}")
        elif net.get("name") == "mlp":
            parts.append(f"mlp {'-'.join(map(str, net.get('hidden', [])))}")
        else:
            parts.append(str(net.get("name")))
    return parts[0] if len(set(parts)) == 1 else ", ".join(parts)


#: Training settings the report shows wherever they apply, even at their defaults (the others only where they
#: apply and differ from the defaults): what a reader asks first about a run of its kind.
def _field_rules() -> tuple[tuple[str, ...], dict[str, Callable[[dict[str, Any]], bool]]]:
    """(the settings always shown, when each setting applies), from TrainConfig's field metadata."""
    import dataclasses

    from vaekit.config import TrainConfig

    fields = dataclasses.fields(TrainConfig)
    return (tuple(f.name for f in fields if f.metadata.get("core")),
            {f.name: f.metadata["applies"] for f in fields if f.metadata.get("applies") is not None})


#: The settings a run's page always shows (when they apply), and when a training setting does anything at all
#: (config.json -> bool; one that does not is never shown): both from TrainConfig's field metadata.
CORE_SETTINGS, APPLIES = _field_rules()


def _objective_core(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The settings the run's objective always shows (IWAE's k), from the objective's class."""
    from vaekit.config import named
    from vaekit.objectives import OBJECTIVES

    name = named(cfg, "objective")
    return OBJECTIVES.entry(name).cls.core_settings if isinstance(name, str) and name in OBJECTIVES else ()


def run_settings(cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The training settings of ``config.json`` that the report shows, and the names of those it leaves out.

    Rule: a setting is shown when it applies to the run (:data:`APPLIES`; e.g. no temperatures without a
    Gumbel-softmax or straight-through estimator, no ``em_iterations`` without EM, no ``k`` for EM) and either
    is one of :data:`CORE_SETTINGS` or differs from :class:`vaekit.config.TrainConfig`'s default (``k`` also
    for the IWAE objective). Keys vaekit does not know (an older run's) are shown. The model's own settings
    (``model``) are the model table's."""
    import dataclasses

    from vaekit.config import TrainConfig

    defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                for f in dataclasses.fields(TrainConfig)}
    core = set(CORE_SETTINGS) | set(_objective_core(cfg))
    shown, hidden = {}, []
    for key, value in cfg.items():
        if key == "model":
            continue
        applies = APPLIES.get(key, lambda _c: True)(cfg)
        if applies and (key in core or key not in defaults or value != defaults[key]):
            shown[key] = value
        else:
            hidden.append(key)
    return shown, hidden


def _pm(v: float, se: float, digits: int = 3) -> str:
    s = f"{v:.{digits}f}"
    if se is not None and math.isfinite(se):
        s += f" &plusmn; {se:.{digits}f}"
    return s


def _vq_rows(r: Any) -> list[tuple[str, str, str]]:
    """The evaluation table's rows of a model whose q(z|x) is a point mass on one-hot codes (a VQ-VAE)."""
    return [
        (f"vq_elbo ({html.escape(str(r.vq_prior))} prior)", _pm(r.vq_elbo, r.vq_elbo_stderr),
         "nats per example; log p(x|z<sub>q</sub>) + log p(z<sub>q</sub>) &le; log p(x), a lower bound"),
        ("&nbsp;&nbsp;reconstruction log p(x|z<sub>q</sub>)", _pm(r.reconstruction, math.nan), "nats"),
        ("&nbsp;&nbsp;&minus;log p(z<sub>q</sub>)", _pm(r.kl, math.nan), "nats; = KL(q(z|x) || p(z)), q a point mass"),
        ("bits per dimension from the bound", _pm(r.vq_bits_per_dim, r.bits_per_dim_stderr, 4),
         f"&minus;vq_elbo / ({r.data_dim} ln 2), an upper bound"),
        ("examples", f"{r.n}", f"{html.escape(str(r.split))} split; &plusmn; is one standard error over examples"),
    ]


def _eval_table(r: Any) -> str:
    rows = _vq_rows(r) if getattr(r, "vq_elbo", None) is not None else [
        ("ELBO", _pm(r.elbo, r.elbo_stderr), "nats per example; the same K draws, (1/K) &sum; log w<sub>i</sub>"),
        ("&nbsp;&nbsp;reconstruction E<sub>q</sub>[log p(x|z)]", _pm(r.reconstruction, math.nan), "nats"),
        ("&nbsp;&nbsp;KL(q(z|x) || p(z))", _pm(r.kl, math.nan), "nats"
         + (f" (closed form: {r.kl_analytic:.3f})" if r.kl_analytic is not None else "")),
        (f"{html.escape(getattr(r, 'log_px_label', 'log p(x)'))}, importance sampled, K = {r.k}",
         _pm(-r.nll, r.nll_stderr),
         "nats; logsumexp<sub>i</sub> log w<sub>i</sub> &minus; log K"),
        ("NLL = &minus;log p(x)", _pm(r.nll, r.nll_stderr), "nats"),
        ("NLL in bits per dimension", _pm(r.bits_per_dim, r.bits_per_dim_stderr, 4), f"NLL / ({r.data_dim} ln 2)"),
        ("gap log p(x) &minus; ELBO", _pm(r.gap, r.gap_stderr), "nats; estimates KL(q(z|x) || p(z|x))"),
        ("active units", f"{r.active_units} of {len(r.latent_variance)}",
         "Cov<sub>x</sub>(E<sub>q</sub>[z<sub>j</sub>]) &gt; 0.01"),
        ("mean effective sample size", f"{r.mean_ess:.1f}", f"of the K = {r.k} importance weights"),
        ("examples", f"{r.n}", f"{html.escape(str(r.split))} split; &plusmn; is one standard error over examples"),
        ("time", f"{r.seconds:.2f} s", f"{r.log_weights_per_second:,.0f} log-weights per second"),
    ]
    rows += _trust_rows(r)
    body = "".join(f'<tr><td>{a}</td><td class="num">{b}</td><td>{c}</td></tr>' for a, b, c in rows)
    return f"<table><tr><th>quantity</th><th>value</th><th>notes</th></tr>{body}</table>"


def _trust_rows(r: Any) -> list[tuple[str, str, str]]:
    """The rows that say how far to trust log p(x), where the evaluation computed them: the Pareto k-hat share,
    AIS (``vaekit evaluate --ais``) and the gap split (``--gaps``), the names of ``vaekit evaluate``."""
    rows = []
    if getattr(r, "pareto_k_fraction", None) is not None:
        rows.append(("Pareto k-hat &gt; 0.7", f"{100 * r.pareto_k_fraction:.1f}% of the examples",
                     "pareto_k_fraction; their importance-sampled log p(x) has an error that its standard error "
                     "understates"))
    if getattr(r, "ais_log_px", None) is not None:
        rows.append((f"log p(x), AIS (T = {r.ais_steps}, C = {r.ais_chains}, L = {r.ais_leapfrog})",
                     _pm(r.ais_log_px, r.ais_log_px_stderr),
                     f"ais_log_px, nats; a stochastic lower bound, &plusmn; its Monte Carlo error across chains; "
                     f"HMC acceptance {r.ais_acceptance:.2f}"))
    if getattr(r, "approximation_gap", None) is not None:
        rows.append(("approximation gap log p(x) &minus; ELBO[q*]", _pm(r.approximation_gap,
                                                                       r.approximation_gap_stderr),
                     f"nats; q* fitted to each example ({r.gaps_steps} Adam steps), log p(x) from {r.gaps_log_px}"))
        rows.append(("amortization gap ELBO[q*] &minus; ELBO[q]", _pm(r.amortization_gap, r.amortization_gap_stderr),
                     "nats; what the encoder loses against the best q of its family"))
    return rows


def write_report(
    run: str | Path,
    *,
    k: int = REPORT_K,
    split: str = "test",
    seed: int = 0,
    data_dir: str | None = None,
    dataset: Any = None,
    dataset_name: str | None = None,
    limit: int | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the report of ``run`` to ``out`` (default ``RUN/report.html``) and return its path.

    The evaluation uses K = ``k`` importance samples on ``split`` (a fixed class-balanced random subset of
    ``limit`` examples if given, drawn with ``seed``); the figures take their images in an order that
    interleaves the classes, so that the first few already show every class. When the data set cannot be
    loaded, the page is still written without the data parts and says why. ``progress(done, total)``
    follows the evaluation's examples (:func:`vaekit.evaluation.evaluate_model`).
    """
    say = log or (lambda _msg: None)
    run = Path(run)
    path = check_report_path(Path(out) if out is not None else run / "report.html", own=out is None)  # before work
    ctx = _open_run(run, device, split=split, seed=seed, k=k, say=say)
    _load_split(ctx, data_dir=data_dir, dataset=dataset, dataset_name=dataset_name, limit=limit)
    result = _evaluate(ctx, progress)
    _factor_information(ctx)
    title = f"vaekit report: {run.resolve().name}"
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    mc = ctx.model.describe()
    head = f"<h1>{html.escape(title)}</h1><p class='sub'>{_summary(ctx, mc)} &middot; written {stamp}</p>"
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>{GENERATOR}"
            f"<style>{CSS}{EXPLORER_CSS}</style></head>"
            f"<body><main>{head}{''.join(_sections(ctx, result, mc))}</main></body></html>\n")
    _write_page(path, page, own=out is None)
    return path


@dataclass
class _Report:
    """What the parts of one report share: the run, its model and the evaluated split's images (``x`` and
    ``labels`` None when the data set could not be loaded)."""

    run: Path
    model: LatentVariableModel
    split: str
    seed: int
    k: int  # importance samples of the evaluation
    say: Callable[[str], None]
    cfg: dict[str, Any]  # config.json ({} when absent)
    metrics: list[dict[str, Any]]  # metrics.jsonl's rows
    latent: int  # the size of z (2L for a two-level model)
    discrete: bool  # categorical or binary codes
    clusters: int | None  # the number of clusters of a model with a cluster variable
    notes: list[str] = field(default_factory=list)  # shown at the top of the page
    ds: Any = None  # the loaded data set
    x: torch.Tensor | None = None  # (N, C, H, W) in class-interleaved order
    labels: torch.Tensor | None = None
    class_names: Any = None
    factor_info: Any = None  # I(z_j; v_k) (UnitFactorInformation) when the data set has factors
    factor_note: str | None = None  # why a data set with factors has no factor_info
    factor_kept: bool = False  # factor_info is the one RUN/disentanglement.json holds
    saved: dict[str, Any] | None = None  # RUN/disentanglement.json's object, for a data set with factors
    saved_note: str | None = None  # why RUN/disentanglement.json could not be read
    saved_stale: bool = False  # RUN/disentanglement.json is older than RUN/model.safetensors
    key: dict[str, Any] | None = None  # what names the evaluation kept in RUN/evaluations/ (vaekit.evaluation.store)


def _open_run(run: Path, device: str | None, *, split: str, seed: int, k: int, say: Callable[[str], None]) -> _Report:
    """The run's best model (on ``device``), its config and metrics, and what kind of latent space it has."""
    from vaekit.analysis import clustering
    from vaekit.evaluation import load_model, read_run_config
    from vaekit.pages import viz

    model = load_model(run, device)
    cfg = read_run_config(run)
    metrics, metrics_note = read_run_metrics(run)
    latent = viz.latent_size(model)  # z = [z1, z2] (2L) for a two-level model
    discrete = viz.discrete_prior(model) is not None
    clusters = clustering.cluster_count(model)
    ctx = _Report(run, model, split, seed, k, say, cfg, metrics, latent, discrete, clusters)
    if metrics_note:
        ctx.notes.append(metrics_note)
    return ctx


def _load_split(ctx: _Report, *, data_dir: str | None, dataset: Any, dataset_name: str | None,
                limit: int | None) -> None:
    """Load the images and labels of ``ctx.split`` into ``ctx`` (a class-balanced random subset of ``limit``
    examples if given, drawn with ``ctx.seed``), in an order that interleaves the classes so that the first
    few figures already show every class. When that fails a note says why and ``ctx.x`` stays None."""
    from vaekit.data.base import class_interleaved_order
    from vaekit.evaluation import check_shape, limit_split, load_run_data, split_images
    from vaekit.evaluation.store import evaluation_key

    split, seed = ctx.split, ctx.seed
    ctx.key = evaluation_key(split=split, k=ctx.k, seed=seed, limit=limit, dataset=dataset_name)
    try:
        ctx.ds = load_run_data(ctx.run, data_dir=data_dir, dataset=dataset, dataset_name=dataset_name, split=split)
        x, labels = split_images(ctx.ds, split, seed)
        ctx.class_names = getattr(ctx.ds, "classes", None)
        if limit is not None:
            x, labels, subset = limit_split(x, labels, limit, seed, split)
            ctx.notes.append(f"Evaluated on {subset}.")
        order = torch.from_numpy(class_interleaved_order(labels, seed, size=len(x)))  # figures: every class
        x, labels = x[order], (labels[order] if labels is not None else None)
        check_shape(ctx.model, x, f"the {split} split")
        if len(x) == 0:
            raise VaekitError(f"the {split} split is empty")
        ctx.x, ctx.labels = x, labels
    except VaekitError as exc:
        ctx.notes.append(f"The data set could not be loaded, so the evaluation, reconstructions and interpolations "
                         f"are missing: {exc}")
        ctx.say(f"warning: {exc}")
        ctx.x = ctx.labels = None


def _evaluate(ctx: _Report, progress: Callable[[int, int], None] | None) -> Any:
    """The evaluation of the loaded images with K = ``ctx.k`` importance samples
    (:func:`vaekit.evaluation.evaluate_model`), or None without data."""
    from vaekit.evaluation import evaluate_model
    from vaekit.evaluation.evaluator import data_log_jacobian
    from vaekit.evaluation.store import reuse_or_evaluate

    if ctx.x is None:
        return None

    def compute() -> Any:
        ctx.say(f"evaluating on {len(ctx.x)} {ctx.split} examples with K = {ctx.k} ...")
        return evaluate_model(ctx.model, ctx.x, k=ctx.k, seed=ctx.seed, split=ctx.split, per_example=False,
                              labels=ctx.labels if getattr(ctx.model, "condition", 0) else None, progress=progress,
                              levels=getattr(ctx.ds, "levels", None), log_jacobian=data_log_jacobian(ctx.ds))

    result, reused = reuse_or_evaluate(ctx.run, ctx.key, compute)
    if reused:
        ctx.say(f"using the evaluation kept in {ctx.run}/evaluations/ (the same split, K = {ctx.k} and seed)")
        ctx.notes.append(f"The evaluation is the one kept in the run folder for the {ctx.split} split, K = {ctx.k} "
                         f"and seed {ctx.seed} (by vaekit evaluate or an earlier report), for this model's weights.")
    return result


def _summary(ctx: _Report, mc: dict[str, Any]) -> str:
    """The page's subtitle (HTML): data set, networks, latent space, likelihood and prior."""
    from vaekit.pages import viz

    level = int(mc.get("latent", ctx.latent))
    return (f"{html.escape(str(ctx.cfg.get('dataset', '?')))} &middot; {html.escape(_networks(mc))} &middot; latent "
            f"{html.escape(_latent_text(viz.discrete_prior(ctx.model), ctx.latent, level))} &middot; "
            f"{html.escape(str(mc['likelihood'].get('name', '')))} likelihood &middot; "
            f"{html.escape(str(mc['prior'].get('name', '')))} prior")


def _sections(ctx: _Report, result: Any, mc: dict[str, Any]) -> list[str]:
    """The page's sections (HTML) in order: notes, evaluation, training curves, samples, the data's figures,
    clusters, the latent space and the settings."""
    from vaekit.pages import viz

    model, x, labels = ctx.model, ctx.x, ctx.labels
    sections = [f"<p class='note'>{html.escape(note)}</p>" for note in ctx.notes]
    if result is not None:
        sections.append(_evaluation_section(ctx, result))
    if ctx.metrics:
        sections += _training_sections(ctx.metrics, result)
    sections.append("<h2>Samples from the prior</h2>" + page_figure(
        viz.samples_figure(model, 64, ctx.seed), "samples",
        "z ~ p(z): left the decoded means E[x|z], right one draw x ~ p(x|z) per z."))
    if x is not None:
        sections += _data_sections(ctx)
    if ctx.clusters is not None:
        sections.append(_clusters_section(model, ctx.clusters, x, labels, ctx.split, ctx.class_names))
    if getattr(model, "one_hot_codes", False):  # a VQ-VAE: a grid of codebook choices, nothing to move along
        sections.append(_codebook_section(ctx))
    elif ctx.discrete:
        sections.append(_categories_section(model, x, labels, ctx.seed))
        sections.append("<h2>The latent space</h2><p class='sub'>Latent traversals, the decoded manifold and the "
                        "scatter of posterior means move z continuously; they are left out for discrete codes "
                        "(the category panels above take their place).</p>")
    else:
        level = int(mc.get("latent", ctx.latent))
        sections += _continuous_sections(model, result, x, labels, ctx.class_names, ctx.split, ctx.latent, level)
    if ctx.factor_info is not None or ctx.factor_note is not None:
        sections.append(_disentanglement_section(ctx, result))
    sections.append(_settings_section(ctx.cfg, mc))
    return sections


def _evaluation_section(ctx: _Report, result: Any) -> str:
    """The evaluation table, its notes, a word on K and the KL per unit."""
    from vaekit.pages import viz

    k = ctx.k
    one_bound = getattr(result, "vq_elbo", None) is not None  # a point mass on one-hot codes: no draws to count
    how = "one bound per example, no importance sampling" if one_bound else f"K = {k} importance samples"
    block = [f"<h2>Evaluation on the {html.escape(ctx.split)} set ({how})</h2>", _eval_table(result)]
    block += [f"<p class='note'>Note: {html.escape(note)}.</p>" for note in result.notes]
    if k < 5000 and not one_bound:
        block.append(f"<p class='sub'>K = {k} here for speed; the literature's protocol is K = 5000 "
                     f"(<code>vaekit evaluate {html.escape(str(ctx.run))} --k 5000</code>). log p(x) estimates "
                     "grow with K towards the true value.</p>")
    if result.kl_per_dim:
        block.append(page_figure(viz.kl_per_unit_figure(result.kl_per_dim, result.latent_variance, unit=result.unit),
                             "KL per unit", ("Closed-form KL(q(z<sub>j</sub>|x) || p(z<sub>j</sub>)) per group "
                                             "of the code (a categorical group or a binary unit), "
                                             if ctx.discrete else "Closed-form KL(q(z<sub>j</sub>|x) || N(0, 1)) "
                                             "per latent unit, ") + "averaged over the evaluated examples."))
    return "".join(block)


def _training_sections(metrics: list[dict[str, Any]], result: Any) -> list[str]:
    """The training curves of metrics.jsonl and, unless the run trained an autoencoder, the run in the
    rate-distortion plane (with the evaluation's rate and distortion, nats, when there is one)."""
    from vaekit.pages import viz

    out = ["<h2>Training curves</h2>" + page_figure(
        viz.training_curves_figure(metrics), "training curves",
        f"Per-epoch averages over the training set (solid) and the validation set (dashed), nats per example; "
        f"{len(metrics)} epochs from metrics.jsonl.")]
    autoencoder = any(isinstance(r, dict) and r.get("objective") == "autoencoder" for r in metrics)
    rd = None if autoencoder else viz.rate_distortion_figure(
        metrics, getattr(result, "rate", None), getattr(result, "distortion", None))
    if rd is not None:
        out.append("<h2>Rate and distortion</h2>" + page_figure(
            rd, "rate and distortion",
            "The run in the rate-distortion plane (Alemi et al., 2018): each epoch's validation rate R (the KL "
            "term) and distortion D (minus the reconstruction term), nats per example; dashed lines have "
            "constant R + D = -ELBO."))
    return out


def _data_sections(ctx: _Report) -> list[str]:
    """Reconstructions of the loaded images and interpolations between them (left out, with a word, for
    discrete codes)."""
    from vaekit.pages import viz

    model, x, labels, split = ctx.model, ctx.x, ctx.labels, ctx.split
    one_hot = getattr(model, "one_hot_codes", False)
    out = ["<h2>Reconstructions</h2>" + page_figure(
        viz.reconstructions_figure(model, x, 32, split, labels), "reconstructions",
        f"{min(32, len(x))} {html.escape(split)} images "
        f"({'every class in turn' if labels is not None else 'at random'}) and the decoded means at their "
        + ("quantized codes (the nearest codebook vectors)." if one_hot else "most probable codes (argmax of q(z|x))."
           if ctx.discrete else "posterior means."))]
    if ctx.discrete or one_hot:
        out.append("<h2>Interpolations</h2><p class='sub'>Left out: straight lines between codes leave "
                   "the discrete codes this model decodes.</p>")
    elif len(x) >= 2:
        out.append("<h2>Interpolations</h2>" + page_figure(
            viz.interpolations_figure(model, x, 6, 10, labels), "interpolations",
            f"Each row: a {html.escape(split)} image, the decoded means along the straight line between the "
            f"posterior means of two {html.escape(split)} images, and the second image."))
    return out


def _codebook_section(ctx: _Report) -> str:
    """A VQ-VAE's latent space: which codebook vectors the evaluated images use (counts over every grid position),
    their perplexity exp(H) and the codes never used; traversals and the manifold, which move z along straight
    lines, do not apply to a grid of codebook choices."""
    from vaekit.pages import viz

    text = ("<h2>The latent space</h2><p class='sub'>Each image is a grid of choices among the codebook's vectors, "
            "so latent traversals, interpolations and the decoded manifold, which move z along straight lines, are "
            "left out; the samples from the prior above show what the code prior has learned.</p>")
    if ctx.x is None:
        return text
    codes = int(ctx.model.codes)
    counts = torch.zeros(codes, dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(ctx.x), 256):
            _, q = ctx.model.quantize(ctx.x[start : start + 256])
            counts += torch.bincount(q.indices.reshape(-1).cpu(), minlength=codes).double()
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * share[share > 0].log()).sum())
    unused = int((counts == 0).sum())
    return text + page_figure(
        viz.codebook_usage_figure(counts.numpy()), "codebook usage",
        f"How often each of the K = {codes} codebook vectors is chosen, over every grid position of the "
        f"{len(ctx.x)} evaluated {html.escape(ctx.split)} images, most used first: perplexity exp(H) = "
        f"{math.exp(entropy):.1f} of {codes} (the number of equally used codes with the same entropy); "
        f"{unused} never used.")


def _settings_section(cfg: dict[str, Any], mc: dict[str, Any]) -> str:
    """The training settings that apply to the run (:func:`run_settings`) and the model's, side by side."""
    settings = "<h2>Settings</h2><div class='cols'>"
    shown, hidden = run_settings(cfg) if cfg else ({}, [])
    if cfg:
        settings += settings_table("training (config.json)", shown)
    settings += settings_table("model (model.json)", {k: v for k, v in mc.items()
                                                       if k != "format" and not (k == "condition" and not v)})
    settings += "</div>"
    if hidden:
        settings += (f"<p class='sub'>Shown: the settings that apply to this run and differ from vaekit's defaults, "
                     f"and always {', '.join(k for k in CORE_SETTINGS if k in shown)}. Left out: {len(hidden)} at "
                     "their defaults or not used by this run (config.json holds them all).</p>")
    return settings


def _write_page(path: Path, page: str, own: bool) -> None:
    """Write ``page`` to ``path`` atomically, after checking again that it may take a report."""
    from vaekit.io.checkpoint import atomic_write_text

    try:
        check_report_path(path, own=own)  # nothing else has appeared there meanwhile
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, page)
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}") from None


def _continuous_sections(model: LatentVariableModel, result: Any, x: torch.Tensor | None, labels: torch.Tensor | None,
                         class_names: Any, split: str, latent: int, level: int) -> list[str]:
    """Traversals of the most active units, for a 2-D latent space the manifold and the scatter, and the
    interactive explorer (:mod:`vaekit.pages.explorer`)."""
    from vaekit.pages import explorer, viz

    out: list[str] = []
    activity = result.latent_variance if result is not None else None
    units = sorted(range(latent), key=lambda j: -activity[j])[:10] if activity else list(range(min(latent, 10)))
    base = _first_code(model, x, labels)
    unit_labels = [viz.unit_name(j) + (f" ({activity[j]:.2f})" if activity else "") for j in units]
    out.append("<h2>Latent traversals</h2>" + page_figure(
        viz.traversals_figure(model, units, base, 9, unit_labels), "traversals",
        "One row per latent unit"
        + (", the most active first (in brackets: Cov<sub>x</sub> E<sub>q</sub>[z<sub>j</sub>])" if activity else "")
        + ("; the unit sweeps the 5%..95% quantiles of N(0, 1) (not of the mixture prior) while the others stay at "
           if getattr(getattr(model, "prior", None), "name", "") == "mixture"
           else "; the unit sweeps the prior's 5%..95% quantiles while the others stay at ")
        + ("the posterior mean of the first test image." if base is not None else "0.")
        + (f" The code is z = [z1, z2] of the two levels: units z_1..z_{level} are z1, z_{level + 1}..z_{latent} "
           "z2." if latent != level else "")))

    if latent == 2:
        parts = [page_figure(viz.manifold_figure(model, 20), "manifold",
                         "Decoded means over a 20 x 20 grid of prior quantiles (Kingma &amp; Welling, 2014).")]
        if x is not None:
            scatter = viz.latent_scatter_figure(model, x, labels, class_names, split)
            parts.append(page_figure(scatter, "scatter",
                                 "Posterior means of the evaluated examples" + (", coloured by label." if labels
                                                                                is not None else ".")))
        out.append("<h2>The 2-D latent space</h2><div class='cols'>" + "".join(parts) + "</div>")
    else:
        out.append(f"<h2>The latent space</h2><p class='sub'>The manifold and scatter plots need a 2-D latent "
                   f"space; this model has {latent} dimensions (the explorer below shows the two most active).</p>")
    out.append(explorer.explorer_section(model, x, labels, class_names, activity, split))
    return out


def _first_code(model: LatentVariableModel, x: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | None:
    """The posterior mean of the first loaded image (the code traversals hold the other units at), or None."""
    from vaekit.pages import viz

    if x is None:
        return None
    with torch.inference_mode():
        return model.code(x[:1].to(next(model.parameters()).device), viz._labels_for(model, 1, labels))[0]


def _latent_text(prior: Any, latent: int, level: int) -> str:
    """The latent space in a few words: "3 x 10-way categorical", "16 binary units", "2 + 2 (two levels)";
    ``prior`` is p(z) for discrete codes (:func:`vaekit.pages.viz.discrete_prior`), else None."""
    if hasattr(prior, "classes"):
        return f"{prior.groups} x {prior.classes}-way categorical (one-hot code of {latent})"
    if prior is not None:
        return f"{prior.units} binary units"
    return f"{level} + {level} (two levels)" if latent != level else str(latent)


def _categories_section(model: LatentVariableModel, x: torch.Tensor | None, labels: torch.Tensor | None,
                        seed: int) -> str:
    """The decoded mean of every category of the first groups (:func:`vaekit.pages.viz.category_figure`)."""
    from vaekit.pages import viz

    base, held = None, f"a draw z ~ p(z) (seed {seed})"
    if x is not None:
        with torch.inference_mode():
            dev = next(model.parameters()).device
            base = viz.mode_code(model, x[:1].to(dev), viz._labels_for(model, 1, labels))[0]
        held = "the most probable code of the first evaluated image"
    prior = viz.discrete_prior(model)
    groups = getattr(prior, "groups", None) or getattr(prior, "units", 1)
    shown = min(groups, viz.MAX_GROUPS)
    what = "class" if hasattr(prior, "classes") else "value (0, then 1)"
    caption = (f"Each row: the decoded means E[x|z] as one group of the code takes each {what} in turn"
               + (f"; the first {shown} of {groups} groups, the other groups held at {held}." if groups > 1
                  else "."))
    fig = viz.category_figure(model, None, base, seed, held)
    return "<h2>Categories</h2>" + page_figure(fig, "categories", html.escape(caption))


def _clusters_section(model: LatentVariableModel, clusters: int, x: torch.Tensor | None, labels: torch.Tensor | None,
                      split: str, class_names: Any) -> str:
    """The cluster means of a Gaussian-mixture VAE and the clustering accuracy against the labels."""
    from vaekit.analysis import clustering
    from vaekit.pages import viz

    block = ["<h2>Clusters</h2>"]
    if clustering.is_gaussian_mixture(model):
        draws = 7 if clusters <= 20 else 0
        block.append(page_figure(viz.cluster_means_figure(model, draws), "cluster means",
                             f"The {clusters} components of the mixture prior: the decoded mean E[x | z = m<sub>c"
                             "</sub>] of each" + (f", then {draws} decoded draws z ~ N(m<sub>c</sub>, "
                                                  "v<sub>c</sub>); in brackets the weight &pi;<sub>c</sub>."
                                                  if draws else ".")))
    if x is None or labels is None:
        why = "the data set could not be loaded" if x is None else f"the {split} split has no labels"
        block.append(f"<p class='sub'>No clustering accuracy: {html.escape(why)}.</p>")
        return "".join(block)
    rep = clustering.clustering_report(model, x, labels, y=labels if getattr(model, "condition", 0) else None)
    rows = [
        ("accuracy", f"{rep['accuracy']:.4f}", f"{rep['matching']} matching of clusters to labels"),
        ("Hungarian (one-to-one) accuracy", f"{rep['hungarian_accuracy']:.4f}",
         "best one-to-one matching (linear_sum_assignment); unmatched clusters count as wrong"),
        ("many-to-one accuracy", f"{rep['many_to_one_accuracy']:.4f}", "each cluster takes its majority label"),
        ("clusters used", f"{rep['clusters_used']} of {rep['clusters']}", f"{rep['classes']} labels"),
        ("assignment", html.escape(rep["rule"]), f"{rep['n']} {html.escape(split)} examples"
         + ("; q(z|x, y) of this conditional model is given the labels themselves" if getattr(model, "condition", 0)
            else "")),
    ]
    body = "".join(f'<tr><td>{a}</td><td class="num">{b}</td><td>{c}</td></tr>' for a, b, c in rows)
    block.append(f"<table><tr><th>quantity</th><th>value</th><th>notes</th></tr>{body}</table>")
    names = [class_names[int(v)] if class_names is not None and isinstance(v, int) and 0 <= v < len(class_names)
             else v for v in rep["labels"]]
    fig = viz.contingency_figure(rep["table"], names, f"{split} examples per cluster (rows) and label (columns)")
    block.append(page_figure(fig, "contingency table",
                         "Examples of each label assigned to each cluster."))
    return "".join(block)


#: The most rows of the disentanglement section's traversals (one per active unit, the most informative first).
MAX_FACTOR_TRAVERSALS = 16


def _factor_information(ctx: _Report) -> None:
    """For a data set with factors: ``ctx.saved`` (``RUN/disentanglement.json``, when there is one) and
    ``ctx.factor_info`` = I(z_j; v_k) (nats), the saved matrix when the file is newer than the model and fits it, else
    :func:`~vaekit.evaluation.disentanglement.unit_factor_information` over at most
    :data:`~vaekit.evaluation.disentanglement.INFORMATION_POINTS` images of the training split when it is loaded,
    else of the evaluated split, drawn with ``ctx.seed``; a failure sets ``ctx.factor_note``. Nothing without
    factors."""
    from vaekit.evaluation import disentanglement as ed

    factors = getattr(ctx.ds, "factors", None)
    if factors is None or ctx.x is None:
        return
    try:
        ctx.saved = ed.read_scores(ctx.run)
    except VaekitError as exc:
        ctx.saved_note = str(exc)
    ctx.saved_stale = ctx.saved is not None and _older_than_model(ctx.run / ed.SCORES_FILE, ctx.run)
    kept = ed.UnitFactorInformation.from_summary(ctx.saved) if ctx.saved is not None and not ctx.saved_stale else None
    if kept is not None and kept.matrix.shape[0] == ctx.latent and kept.factor_names == tuple(factors.names):
        ctx.factor_info, ctx.factor_kept = kept, True
        return
    split = "train" if len(factors.split("train")) >= 2 else ctx.split
    try:
        ctx.say(f"mutual information of the units with the factors ({split} images) ...")
        ctx.factor_info = ed.unit_factor_information(ctx.model, ctx.ds, split=split, seed=ctx.seed)
    except VaekitError as exc:
        ctx.factor_note = f"I(z_j; v_k) could not be computed: {exc}"
        ctx.say(f"warning: {exc}")


def _active_units(ctx: _Report, result: Any, latent: int) -> tuple[list[int], str]:
    """(the active units, Cov_x E_q[z_j] > ACTIVE_THRESHOLD over the evaluated images as in the evaluation table,
    the rule in words); every unit where the evaluation has no per-unit figure or none is active."""
    from vaekit.evaluation.evaluator import ACTIVE_THRESHOLD

    activity = getattr(result, "latent_variance", None)
    if not activity or len(activity) != latent or getattr(result, "unit", "unit") != "unit":
        return list(range(latent)), f"all {latent} units"
    units = [j for j in range(latent) if activity[j] > ACTIVE_THRESHOLD]
    if not units:
        return list(range(latent)), (f"all {latent} units (none is active: Cov<sub>x</sub> E<sub>q</sub>"
                                     f"[z<sub>j</sub>] &le; {ACTIVE_THRESHOLD} for every one)")
    return units, (f"the {len(units)} active units of {latent} (Cov<sub>x</sub> E<sub>q</sub>[z<sub>j</sub>] &gt; "
                   f"{ACTIVE_THRESHOLD} over the evaluated {html.escape(ctx.split)} images)")


def _disentanglement_section(ctx: _Report, result: Any) -> str:
    """The heat map of I(z_j; v_k) over the active units, their traversals labelled with the factor each informs
    most, and the scores of ``RUN/disentanglement.json`` (or how to get them)."""
    from vaekit.pages import viz

    block = ["<h2>Disentanglement</h2>"]
    info = ctx.factor_info
    if info is None:
        block.append(f"<p class='note'>{html.escape(str(ctx.factor_note))}</p>")
        return "".join(block + [_saved_scores(ctx)])
    mi = info.matrix
    units, rule = _active_units(ctx, result, mi.shape[0])
    order = sorted(units, key=lambda j: (int(mi[j].argmax()), -float(mi[j].max())))  # grouped by their top factor
    columns = [f"{name} (H {h:.2f})" for name, h in zip(info.factor_names, info.factor_entropy)]
    block.append(page_figure(
        viz.information_figure(mi[order], [viz.unit_name(j) for j in order], columns,
                               "I(z_j; v_k), nats (not normalised)"), "mutual information of units and factors",
        f"I(z<sub>j</sub>; v<sub>k</sub>) in nats, not normalised: the plug-in mutual information between unit j's "
        f"posterior mean E<sub>q</sub>[z<sub>j</sub>|x], cut into {info.bins} equal-width bins, and the class of "
        f"factor k, over {info.points:,} {html.escape(info.split)} images (a uniform random subset, seed {info.seed}"
        + ("; as vaekit evaluate --disentanglement kept it in disentanglement.json" if ctx.factor_kept else "")
        + "). A column is at most the factor's entropy H(v<sub>k</sub>), in brackets after its name. Columns: "
        + html.escape(", ".join(columns))
        + f". Rows: {rule}, grouped by the factor each informs most, the most informative first."))
    block.append(_factor_traversals(ctx, order, info))
    block.append(_saved_scores(ctx))
    return "".join(block)


def _factor_traversals(ctx: _Report, order: list[int], info: Any) -> str:
    """A traversal of each unit of ``order`` (at most :data:`MAX_FACTOR_TRAVERSALS`), labelled with the factor of
    highest I(z_j; v_k) and that information in nats; a word instead for discrete codes."""
    from vaekit.pages import viz

    if ctx.discrete:
        return "<p class='sub'>No traversals: they move z continuously, and this model's codes are discrete.</p>"
    shown = order[:MAX_FACTOR_TRAVERSALS]
    top = [int(info.matrix[j].argmax()) for j in shown]
    labels = [f"{viz.unit_name(j)}: {info.factor_names[k]} ({info.matrix[j, k]:.2f} nats)"
              for j, k in zip(shown, top)]
    base = _first_code(ctx.model, ctx.x, ctx.labels)
    more = f" The first {len(shown)} of {len(order)} units." if len(order) > len(shown) else ""
    return page_figure(
        viz.traversals_figure(ctx.model, shown, base, 9, labels), "traversals by factor",
        "One row per unit of the heat map, in its order, labelled with the factor v<sub>k</sub> of highest "
        "I(z<sub>j</sub>; v<sub>k</sub>) and that information (nats); the unit sweeps the prior's 5%..95% quantiles "
        f"while the others stay at the posterior mean of the first {html.escape(ctx.split)} image.{more} Rows: "
        + "; ".join(html.escape(label) for label in labels) + ".")


def _saved_scores(ctx: _Report) -> str:
    """The scores of ``RUN/disentanglement.json`` (value &plusmn; one standard error), or one line saying how to get
    them; a word when the file is older than the kept model."""
    from vaekit.evaluation.disentanglement import SCORES, SCORES_FILE

    command = f"<code>vaekit evaluate {html.escape(str(ctx.run))} --disentanglement</code>"
    saved = ctx.saved
    if ctx.saved_note is not None:
        return f"<p class='note'>{html.escape(ctx.saved_note)}</p>"
    if saved is None:
        return (f"<p class='sub'>No scores yet: {command} computes MIG, SAP, DCI, modularity, explicitness and the "
                f"beta-VAE and FactorVAE scores and keeps them in {SCORES_FILE}, which this page then shows.</p>")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    rows = "".join(f"<tr><td>{name}</td><td class='num'>"
                   + (_pm(saved[name], saved.get(f"{name}_stderr") if number(saved.get(f"{name}_stderr")) else None)
                      if number(saved.get(name)) else "n/a") + "</td></tr>" for name in SCORES)
    split = html.escape(str(saved.get("split", "?")))
    note = f"From {SCORES_FILE} ({command}), on the {split} split; &plusmn; is one standard error; n/a: not computed."
    if ctx.saved_stale:
        note += " It was written before the current model.safetensors: run the command again to score this model."
    return f"<table><tr><th>score</th><th>value</th></tr>{rows}</table><p class='sub'>{note}</p>"


def _older_than_model(path: Path, run: Path) -> bool:
    """``path`` was modified before ``RUN/model.safetensors`` (False when either cannot be looked at)."""
    try:
        return os.lstat(path).st_mtime < os.lstat(run / "model.safetensors").st_mtime
    except OSError:
        return False


#: What marks a page as a vaekit report (an existing file is replaced only when it carries it).
GENERATOR = "<meta name='generator' content='vaekit report'>"
_OLD_REPORT = b"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>"


def _looks_like_report(head: bytes) -> bool:
    return GENERATOR.encode() in head or (head.startswith(_OLD_REPORT) and b"vaekit" in head)


def check_report_path(path: Path, own: bool = False) -> Path:
    """``path`` may take a report: a ``.html`` name, not a run's own file, no link, no other existing file
    (``own``: the run's default ``RUN/report.html``, replaced whatever it holds)."""
    from vaekit.io.files import check_output

    return check_output(path, ".html", None if own else _looks_like_report, "an HTML report")


