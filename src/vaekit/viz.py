"""Seeing the model: samples, reconstructions, interpolations, traversals, the 2-D manifold and
latent scatter, and training curves, as matplotlib figures (Agg backend) and PNG files.

Discrete latent codes (categorical, binary) have pictures of their own: the decoded mean of every
category of a group (:func:`category_figure`); the Gaussian-mixture VAE's decoded cluster means
(:func:`cluster_means_figure`); the contingency table of clusters against labels (:func:`contingency_figure`).
Interpolations, traversals and the 2-D manifold move z continuously and refuse discrete codes (ValueError).

Images are tensors (N, C, H, W) with values in [0, 1] (C = 1 grey, C = 3 colour). Every figure
function returns a ``matplotlib.figure.Figure``; :func:`figure_png` turns one into PNG bytes and
closes it, :func:`save_figure` writes it to a file.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def normal_quantiles(n: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """Phi^-1 of n evenly spaced probabilities in [low, high]: equal prior mass between points."""
    from scipy.stats import norm

    return norm.ppf(np.linspace(low, high, n))


# -- image grids ----------------------------------------------------------------------------------


def image_grid(images: torch.Tensor | np.ndarray, nrow: int, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N, C, H, W) in [0, 1] into one (H', W') grey or (H', W', 3) colour array, ``nrow`` per row."""
    arr = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images, float)
    if arr.ndim == 3:
        arr = arr[:, None]
    n, c, h, w = arr.shape
    nrow = max(1, min(nrow, n))
    rows = math.ceil(n / nrow)
    out = np.full((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), pad_value, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[:, y : y + h, x : x + w] = arr[i]
    out = np.clip(out, 0.0, 1.0)
    return out[0] if c == 1 else np.transpose(out[:3], (1, 2, 0))


def _show(ax: Any, grid: np.ndarray, title: str | None = None) -> None:
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)


def _panel_size(grid: np.ndarray, inches_per_px: float = 0.035, min_width: float = 3.0) -> tuple[float, float]:
    h, w = grid.shape[:2]
    scale = max(inches_per_px, min_width / w)
    return w * scale, h * scale


def panels(grids: Sequence[np.ndarray], titles: Sequence[str], suptitle: str | None = None) -> Figure:
    """Image grids side by side, each with a title."""
    sizes = [_panel_size(g) for g in grids]
    width = sum(s[0] for s in sizes) + 0.3 * len(grids)
    height = max(s[1] for s in sizes) + (0.9 if suptitle else 0.5)
    fig, axes = plt.subplots(1, len(grids), figsize=(width, height), squeeze=False,
                             gridspec_kw={"width_ratios": [g.shape[1] for g in grids]})
    for ax, g, t in zip(axes[0], grids, titles):
        _show(ax, g, t)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as a PNG file (the figure is closed), atomically; a link at ``path`` is refused (OSError)."""
    path = Path(path)
    data = figure_png(fig, dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    from vaekit.io.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, data)  # a full disk mid-write leaves the previous file, not half a PNG
    return path


# -- the model's pictures -------------------------------------------------------------------------


def _shape(model: Any) -> tuple[int, int, int]:
    return tuple(model.shape)  # type: ignore[return-value]


def latent_size(model: Any) -> int:
    """The size of the codes the model decodes: ``model.latent_size`` (2L for a two-level model)."""
    return int(model.latent_size)


def _labels_for(model: Any, n: int, labels: torch.Tensor | None = None) -> torch.Tensor | None:
    """Labels for a conditional model's pictures: the given ones, else classes 0, 1, 2, ... in turn."""
    if not getattr(model, "condition", 0):
        return None
    if labels is not None:
        return labels[:n].to(_device(model))
    return torch.arange(n, device=_device(model)) % model.condition


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def discrete_prior(model: Any) -> Any:
    """p(z) when the codes are discrete (a ``FactorizedCategorical`` or ``FactorizedBernoulli``), else None."""
    from vaekit.distributions import FactorizedBernoulli, FactorizedCategorical

    try:
        prior = model.prior_distribution()
    except (NotImplementedError, AttributeError):
        return None
    return prior if isinstance(prior, (FactorizedCategorical, FactorizedBernoulli)) else None


def _continuous_only(model: Any, what: str) -> None:
    if discrete_prior(model) is not None:
        raise ValueError(f"{what} moves z continuously and needs a continuous latent space; this model's codes "
                         "are discrete (see category_figure)")


def mode_code(model: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """The code that stands for q(z|x) in pictures: for discrete codes the most probable one (the argmax class
    of each group, one-hot; the units with q(z_j = 1|x) > 1/2), else ``model.code(x)`` (the mean)."""
    from vaekit.distributions import FactorizedBernoulli, FactorizedCategorical

    if discrete_prior(model) is None:
        return model.code(x, y)
    q = model.posterior(x, y)
    if isinstance(q, FactorizedCategorical):
        onehot = torch.nn.functional.one_hot(q.logits.argmax(-1), q.classes).to(q.logits.dtype)
        return onehot.flatten(-2)
    if isinstance(q, FactorizedBernoulli):
        return (q.logits > 0).to(q.logits.dtype)
    return model.code(x, y)


@torch.inference_mode()
def decode_means(model: Any, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x|z] as images (N, C, H, W) (for a conditional model, given labels y; default: classes in turn)."""
    z = z.to(_device(model), dtype=next(model.parameters()).dtype)
    y = _labels_for(model, z.shape[0], y)
    return model.likelihood.mean(model.decode(z, y)).reshape(z.shape[0], *_shape(model)).clamp(0, 1).cpu()


@torch.inference_mode()
def samples_figure(model: Any, n: int = 64, seed: int = 0) -> Figure:
    """Samples z ~ p(z): the decoded means E[x|z] and draws x ~ p(x|z), two panels."""
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    s = model.sample(n, y=_labels_for(model, n), generator=gen)
    nrow = max(1, int(math.ceil(math.sqrt(n))))
    name = getattr(model.likelihood, "name", "")
    # an autoregressive p(x|z) has no closed-form mean: its likelihood.mean is a Monte Carlo estimate
    means = "E[x|z] (estimated), z ~ p(z)" if getattr(model.likelihood, "mean_is_estimate", False) \
        else "means E[x|z], z ~ p(z)"
    return panels([image_grid(s.means.cpu(), nrow), image_grid(s.draws.clamp(0, 1).cpu(), nrow)],
                  [means, f"draws x ~ p(x|z) ({name})"],
                  f"{n} samples from the prior (seed {seed})")


@torch.inference_mode()
def reconstructions_figure(model: Any, x: torch.Tensor, n: int = 32, split: str = "test",
                           labels: torch.Tensor | None = None) -> Figure:
    """Images of a split and their reconstructions E[x | z = mu(x)], same layout side by side."""
    x = x[:n]
    y = _labels_for(model, len(x), labels)
    if discrete_prior(model) is None:
        rec, title = model.reconstruct(x.to(_device(model)), y).cpu().clamp(0, 1), "reconstructions E[x | mu(x)]"
    else:  # the mean of a discrete q (class probabilities) is no code the decoder was trained on
        rec = decode_means(model, mode_code(model, x.to(_device(model)), y), y)
        title = "reconstructions E[x | mode of q(z|x)]"
    nrow = 8 if len(x) >= 8 else len(x)
    return panels([image_grid(x, nrow), image_grid(rec, nrow)], [f"{split} images", title])


@torch.inference_mode()
def interpolations_figure(model: Any, x: torch.Tensor, pairs: int = 6, steps: int = 10,
                          labels: torch.Tensor | None = None) -> Figure:
    """Rows of decoded means along straight lines mu(x_a) -> mu(x_b) between posterior means of test
    images; the first and last columns are the two images themselves."""
    _continuous_only(model, "an interpolation")
    pairs = max(1, min(pairs, len(x) // 2))
    xa, xb = x[:pairs], x[pairs : 2 * pairs]
    ya = _labels_for(model, pairs, labels)
    mu_a = model.code(xa.to(_device(model)), ya)
    mu_b = model.code(xb.to(_device(model)), None if labels is None else _labels_for(model, pairs, labels[pairs:]))
    t = torch.linspace(0, 1, steps, device=mu_a.device, dtype=mu_a.dtype)
    z = (1 - t)[None, :, None] * mu_a[:, None] + t[None, :, None] * mu_b[:, None]  # (P, S, L)
    y_rows = ya.repeat_interleave(steps) if ya is not None else None  # decoded with the first image's label
    dec = decode_means(model, z.reshape(-1, z.shape[-1]), y_rows).reshape(pairs, steps, *_shape(model))
    rows = torch.cat([xa[:, None].cpu(), dec, xb[:, None].cpu()], 1).reshape(-1, *_shape(model))
    fig = panels([image_grid(rows, steps + 2)], [f"interpolations: image, {steps} steps from mu(a) to mu(b), image"])
    return fig


@torch.inference_mode()
def traversals_figure(model: Any, units: Sequence[int], base: torch.Tensor | None = None, steps: int = 9,
                      labels: Sequence[str] | None = None) -> Figure:
    """One row per latent unit: the decoded means as that unit sweeps the prior's quantiles
    Phi^-1(0.05..0.95), the others fixed at ``base`` (a latent code, default 0)."""
    _continuous_only(model, "a latent traversal")
    latent = latent_size(model)
    units = list(units)[:latent] or [0]
    base_z = torch.zeros(latent) if base is None else base.detach().cpu().reshape(-1).float()
    values = torch.tensor(normal_quantiles(steps), dtype=torch.float32)
    z = base_z.repeat(len(units), steps, 1)
    for r, j in enumerate(units):
        z[r, :, j] = values
    dec = decode_means(model, z.reshape(-1, latent))
    grid = image_grid(dec, steps)
    w, h = _panel_size(grid)
    fig, ax = plt.subplots(figsize=(w + 1.4, h + 0.6))
    _show(ax, grid, f"traversals: z_j from {values[0]:.2f} to {values[-1]:.2f} (prior quantiles 5%..95%)")
    _, hh, _ = _shape(model)
    ax.set_yticks([1 + r * (hh + 1) + hh / 2 for r in range(len(units))])
    ax.set_yticklabels([plain_text(t) for t in labels] if labels is not None else [f"z{j}" for j in units], fontsize=8)
    fig.tight_layout()
    return fig


@torch.inference_mode()
def manifold_figure(model: Any, n: int = 20) -> Figure:
    """For a 2-D latent space: decoded means over the grid z = (Phi^-1(u1), Phi^-1(u2)), u in [0.05, 0.95]^2
    (Kingma & Welling, 2014, Fig. 4); rows run from high z2 (top) to low z2."""
    _continuous_only(model, "the manifold plot")
    if latent_size(model) != 2:
        raise ValueError("the manifold plot needs a 2-dimensional latent space")
    q = torch.tensor(normal_quantiles(n), dtype=torch.float32)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    dec = decode_means(model, torch.stack([z1, z2], -1).reshape(-1, 2))
    grid = image_grid(dec, n, pad=0)
    w, h = _panel_size(grid, inches_per_px=0.02, min_width=3.8)
    fig, ax = plt.subplots(figsize=(w + 0.8, h + 0.8))
    _show(ax, grid, "decoded manifold over the prior's quantiles")
    size = grid.shape[1] / n
    ticks = [0, n // 2, n - 1]
    ax.set_xticks([size * (i + 0.5) for i in ticks])
    ax.set_xticklabels([f"{q[i]:.2f}" for i in ticks], fontsize=8)
    ax.set_yticks([size * (i + 0.5) for i in ticks])
    ax.set_yticklabels([f"{q.flip(0)[i]:.2f}" for i in ticks], fontsize=8)
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    fig.tight_layout()
    return fig


@torch.inference_mode()
def latent_scatter_figure(model: Any, x: torch.Tensor, labels: torch.Tensor | None = None,
                          class_names: Sequence[str] | None = None, split: str = "test") -> Figure:
    """Posterior means mu(x) of a split's images in a 2-D latent space, coloured by label."""
    mu = model.code(x.to(_device(model)), _labels_for(model, len(x), labels)).cpu().numpy()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    if labels is None:
        ax.scatter(mu[:, 0], mu[:, 1], s=6, alpha=0.6, color="tab:blue")
    else:
        y = labels.cpu().numpy()
        classes = np.unique(y)
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
        for i, cls in enumerate(classes):
            sel = y == cls
            name = class_names[int(cls)] if class_names is not None and 0 <= int(cls) < len(class_names) else str(cls)
            ax.scatter(mu[sel, 0], mu[sel, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=plain_text(name))
        ax.legend(markerscale=2.5, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xlabel("mu_1(x)")
    ax.set_ylabel("mu_2(x)")
    ax.set_title(f"posterior means of {len(mu)} {split} images", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# -- discrete codes and clusters -------------------------------------------------------------------

#: The most groups (or binary units) :func:`category_figure` shows by default.
MAX_GROUPS = 8


def _panel_labels(model: Any, n: int) -> torch.Tensor | None:
    """Labels for a conditional model's panels: class 0 throughout (so that only the code changes)."""
    return torch.zeros(n, dtype=torch.long) if getattr(model, "condition", 0) else None


@torch.inference_mode()
def category_images(model: Any, groups: Sequence[int] | None = None, base: torch.Tensor | None = None,
                    seed: int = 0) -> torch.Tensor:
    """E[x|z] for every value of each of the ``groups``: (len(groups), K, C, H, W).

    Categorical codes (G groups of K classes): row g sets group g to class k = 0..K-1. Binary codes (d units):
    K = 2, row j sets z_j = 0, then 1. The other groups keep the values of ``base`` (a code, (L,)); by default
    one draw z ~ p(z) from a generator seeded with ``seed``, the same for every row. ``groups`` defaults to
    the first :data:`MAX_GROUPS`. A conditional model decodes with label 0."""
    from vaekit import distributions as vd
    from vaekit.distributions import FactorizedCategorical

    prior = discrete_prior(model)
    if prior is None:
        raise ValueError("category panels need discrete codes (a categorical or Bernoulli latent)")
    categorical = isinstance(prior, FactorizedCategorical)
    g_all, k = (prior.groups, prior.classes) if categorical else (prior.units, 2)
    groups = list(range(min(g_all, MAX_GROUPS))) if groups is None else [int(g) for g in groups]
    if not groups or min(groups) < 0 or max(groups) >= g_all:
        raise ValueError(f"groups must be a non-empty list of indices from 0 to {g_all - 1}, got {groups}")
    if base is None:
        gen = torch.Generator(device=prior.logits.device).manual_seed(seed)
        base = vd.sample(prior, (), gen)
    base = base.detach().to("cpu", torch.float32).reshape(-1)
    if base.numel() != latent_size(model):
        raise ValueError(f"base must be a code of size {latent_size(model)}, got {base.numel()} values")
    z = base.repeat(len(groups), k, 1)  # (R, K, L)
    for r, g in enumerate(groups):
        if categorical:
            z[r, :, g * k:(g + 1) * k] = torch.eye(k)
        else:
            z[r, :, g] = torch.arange(2, dtype=z.dtype)
    n = len(groups) * k
    dec = decode_means(model, z.reshape(n, -1), _panel_labels(model, n))
    return dec.reshape(len(groups), k, *_shape(model))


def category_figure(model: Any, groups: Sequence[int] | None = None, base: torch.Tensor | None = None,
                    seed: int = 0, base_text: str | None = None) -> Figure:
    """:func:`category_images` as one grid: a row per group (K images), or for one group of many classes
    K images in rows of 10. ``base_text`` says in the title where the other groups are held."""
    from vaekit.distributions import FactorizedCategorical

    images = category_images(model, groups, base, seed)
    rows, k = images.shape[:2]
    categorical = isinstance(discrete_prior(model), FactorizedCategorical)
    groups = list(range(rows)) if groups is None else list(groups)
    wrap = rows == 1 and k > 16
    grid = image_grid(images.reshape(rows * k, *images.shape[2:]), 10 if wrap else k)
    w, h = _panel_size(grid, min_width=3.6)
    fig, ax = plt.subplots(figsize=(w + 1.4, h + 0.7))
    held = base_text or f"a draw z ~ p(z) (seed {seed})"
    if categorical and discrete_prior(model).groups == 1:
        title = f"E[x | z = k] for each class k = 0..{k - 1}" + (" in rows of 10" if wrap else "")
    elif categorical:
        title = f"E[x|z] for each class k = 0..{k - 1} of a group; other groups at {held}"
    else:
        title = f"E[x|z] with unit z_j = 0 (left) and 1 (right); other units at {held}"
    _show(ax, grid, plain_text(title, 110))
    if not wrap:
        _, hh, _ = _shape(model)
        ax.set_yticks([1 + r * (hh + 1) + hh / 2 for r in range(rows)])
        ax.set_yticklabels([f"{'group ' if categorical else 'z'}{g}" for g in groups], fontsize=8)
    fig.tight_layout()
    return fig


def _mixture_prior(model: Any) -> Any:
    from vaekit.components.discrete import GaussianMixturePrior

    prior = getattr(model, "prior", None)
    if not isinstance(prior, GaussianMixturePrior):
        raise ValueError("cluster means need the Gaussian-mixture prior (prior 'mixture')")
    return prior


@torch.inference_mode()
def cluster_mean_images(model: Any, draws: int = 0, seed: int = 0) -> torch.Tensor:
    """The Gaussian-mixture VAE's clusters as images, (C, 1 + draws, C_img, H, W): column 0 is E[x | z = m_c],
    the others E[x|z] at ``draws`` codes z ~ N(m_c, diag v_c) (generator seeded with ``seed``)."""
    prior = _mixture_prior(model)
    loc, std = prior.loc.detach().float().cpu(), torch.exp(0.5 * prior.logvar.detach().float().cpu())
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(loc.shape[0], int(draws), loc.shape[1], generator=gen)
    z = torch.cat([loc[:, None], loc[:, None] + std[:, None] * eps], 1)  # (C, 1 + draws, L)
    n = z.shape[0] * z.shape[1]
    dec = decode_means(model, z.reshape(n, -1), _panel_labels(model, n))
    return dec.reshape(z.shape[0], z.shape[1], *_shape(model))


def cluster_means_figure(model: Any, draws: int = 0, seed: int = 0) -> Figure:
    """The decoded cluster means m_c of the Gaussian-mixture prior, with the weights pi_c; with ``draws`` a
    row per cluster: the mean, then decoded draws z ~ N(m_c, v_c)."""
    images = cluster_mean_images(model, draws, seed)
    c, cols = images.shape[:2]
    weights = torch.softmax(_mixture_prior(model).logits.detach().float().cpu(), -1)
    if cols == 1:
        nrow = min(c, 10)
        grid = image_grid(images[:, 0], nrow)
        title = f"E[x | z = m_c] for the {c} clusters, c = 0..{c - 1} in rows of {nrow}"
    else:
        grid = image_grid(images.reshape(c * cols, *images.shape[2:]), cols)
        title = f"per cluster: E[x | z = m_c], then {cols - 1} draws z ~ N(m_c, v_c) (seed {seed})"
    w, h = _panel_size(grid, min_width=3.6)
    fig, ax = plt.subplots(figsize=(w + 1.6, h + 0.7))
    _show(ax, grid, title)
    if cols > 1:
        _, hh, _ = _shape(model)
        ax.set_yticks([1 + r * (hh + 1) + hh / 2 for r in range(c)])
        ax.set_yticklabels([f"c{r} ({weights[r]:.2f})" for r in range(c)], fontsize=8)
        ax.set_ylabel("cluster (weight pi_c)", fontsize=8)
    fig.tight_layout()
    return fig


def contingency_figure(table: Any, labels: Sequence[Any] | None = None, title: str | None = None) -> Figure:
    """The contingency table T[c, y] of clusters (rows) against labels (columns) as a heat map, counts written
    in the cells when there are at most 20 x 20."""
    t = np.asarray(table, dtype=float)
    rows, cols = t.shape
    fig, ax = plt.subplots(figsize=(min(12.0, 1.6 + 0.45 * cols), min(12.0, 1.2 + 0.35 * rows)))
    ax.imshow(t, cmap="Blues", aspect="auto", interpolation="nearest")
    names = [plain_text(v, 12) for v in labels] if labels is not None else [str(j) for j in range(cols)]
    ax.set_xticks(range(cols))
    ax.set_xticklabels(names, fontsize=7)
    ax.set_yticks(range(rows))
    ax.set_yticklabels([str(r) for r in range(rows)], fontsize=7)
    ax.set_xlabel("label")
    ax.set_ylabel("cluster")
    if rows <= 20 and cols <= 20:
        top = t.max() if t.size else 0.0
        for r in range(rows):
            for j in range(cols):
                if t[r, j]:
                    ax.text(j, r, f"{int(t[r, j])}", ha="center", va="center", fontsize=6,
                            color="white" if t[r, j] > 0.6 * top else "black")
    ax.set_title(plain_text(title or "examples per cluster and label", 90), fontsize=10)
    fig.tight_layout()
    return fig


def plain_text(text: Any, limit: int = 60) -> str:
    """``text`` shown as it is by matplotlib: ``$`` escaped (no mathtext), one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return text.replace("$", r"\$")


def _plottable(v: Any) -> bool:
    """A number matplotlib can place on an axis (finite, not a bool, well inside the float range)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300 and math.isfinite(v)


def training_curves_figure(metrics: Sequence[dict[str, Any]]) -> Figure:
    """ELBO, reconstruction and KL per epoch (train and validation), nats per example.

    Rows that are not objects, or whose epoch is not a whole number, are left out; so are values that are
    not finite numbers (NaN, 1e308, strings, nested objects)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    metrics = [m for m in metrics if isinstance(m, dict)]
    epochs = [m.get("epoch", i + 1) for i, m in enumerate(metrics)]
    epochs = [e if isinstance(e, int) and not isinstance(e, bool) and abs(e) < 10**9 else None for e in epochs]
    for ax, key, title in zip(axes, ("elbo", "reconstruction", "kl"),
                              ("ELBO", "reconstruction E_q[log p(x|z)]", "KL(q(z|x) || p(z))")):
        for split, style in (("train", "-"), ("valid", "--")):
            ys = [m.get(f"{split}_{key}") for m in metrics]
            pts = [(e, y) for e, y in zip(epochs, ys) if e is not None and _plottable(y)]
            if pts:
                ax.plot(*zip(*pts), style, marker="o" if len(pts) < 30 else None, ms=3, label=split)
        ax.set_title(title + " (nats)", fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def kl_per_unit_figure(kl_per_dim: Sequence[float], latent_variance: Sequence[float] | None = None,
                       threshold: float = 0.01) -> Figure:
    """Bars of the mean closed-form KL per latent unit (nats), sorted; active units (Cov_x E_q[z_j] >
    ``threshold``) in blue, inactive in grey."""
    kl = np.asarray(kl_per_dim, dtype=float)
    order = np.argsort(-kl)
    active = (np.asarray(latent_variance, dtype=float) > threshold) if latent_variance else np.ones(len(kl), bool)
    fig, ax = plt.subplots(figsize=(min(12.0, 2.0 + 0.22 * len(kl)), 2.8))
    ax.bar(range(len(kl)), kl[order], color=["tab:blue" if active[j] else "tab:gray" for j in order])
    ax.set_xticks(range(len(kl)))
    ax.set_xticklabels([str(j) for j in order], fontsize=7 if len(kl) > 20 else 8)
    ax.set_xlabel("latent unit j (sorted)")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"KL(q(z_j|x) || p(z_j)) per unit, averaged over the data: {int(active.sum())} active (blue)",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def rate_distortion_figure(metrics: Sequence[dict[str, Any]], rate: float | None = None,
                           distortion: float | None = None) -> Figure | None:
    """The run's path in the rate-distortion plane: validation (R, D) = (KL, -reconstruction) per epoch, with
    the lines R + D = -ELBO through its last point (Alemi et al., 2018); the evaluated (R, D) as a star.
    None when the metrics hold no finite validation terms."""
    points = [(r.get("epoch"), r.get("valid_kl"), r.get("valid_reconstruction")) for r in metrics
              if isinstance(r, dict)]
    points = [(e, float(k), -float(rec)) for e, k, rec in points
              if isinstance(k, (int, float)) and isinstance(rec, (int, float)) and not isinstance(k, bool)
              and math.isfinite(k) and math.isfinite(rec) and abs(k) < 1e12 and abs(rec) < 1e12]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    rs, ds = [p[1] for p in points], [p[2] for p in points]
    ax.plot(rs, ds, "-", color="0.6", lw=1)
    sc = ax.scatter(rs, ds, c=range(len(points)), cmap="viridis", s=18, zorder=3)
    fig.colorbar(sc, ax=ax, label="epoch (index)")
    last = rs[-1] + ds[-1]
    span = max(max(rs) - min(rs), max(ds) - min(ds), 1.0)
    grid = [min(rs) - 0.1 * span, max(rs) + 0.1 * span]
    for c in (last, last + 0.1 * span):
        ax.plot(grid, [c - g for g in grid], "--", color="0.8", lw=0.8)
    ax.annotate(f"R + D = {last:.1f}", (rs[-1], ds[-1]), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if rate is not None and distortion is not None and math.isfinite(rate) and math.isfinite(distortion):
        ax.scatter([rate], [distortion], marker="*", s=120, color="C3", zorder=4, label="evaluated (test)")
        ax.legend(fontsize=8)
    ax.set_xlabel("rate R = KL(q(z|x) || p(z)), nats")
    ax.set_ylabel("distortion D = -E_q log p(x|z), nats")
    ax.set_title("validation (R, D) per epoch", fontsize=10)
    return fig
