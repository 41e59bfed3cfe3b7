"""Seeing the model: samples, reconstructions, interpolations, traversals, the 2-D manifold and
latent scatter, and training curves, as matplotlib figures and PNG files.

Discrete latent codes (categorical, binary) have pictures of their own: the decoded mean of every
category of a group (:func:`category_figure`); the Gaussian-mixture VAE's decoded cluster means
(:func:`cluster_means_figure`); the contingency table of clusters against labels (:func:`contingency_figure`).
Interpolations, traversals and the 2-D manifold move z continuously and refuse discrete codes (ValueError).
For data with known factors, :func:`information_figure` draws the mutual information of each unit with each factor.

Images are tensors (N, C, H, W) with values in [0, 1] (C = 1 grey, C = 3 colour). Every figure
function returns a ``matplotlib.figure.Figure`` made with matplotlib's object API: importing this module
leaves the matplotlib backend alone (a notebook keeps its own), and a returned figure shows inline in
Jupyter. :func:`figure_png` turns one into PNG bytes, :func:`save_figure` writes it to a file.

Pictures of images are laid out to the pixel (:class:`PixelFigure`): each image is enlarged by a whole
factor, every pixel becoming an s x s block (nearest neighbour, never a fractional resampling), and the
PNG is written at the figure's own resolution. Latent units are named ``z_1`` ... ``z_L``, numbered from 1
(:func:`unit_name`), here and on every page; for a two-level model the code is [z1, z2] and units
1..L are z1's.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.transforms import Bbox, IdentityTransform

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The width (pixels) that the images of one picture may fill together when enlarged; and the largest factor.
IMAGE_WIDTH = 1000
MAX_SCALE = 8
#: The resolution of pictures of images (pixels per inch); their PNG is written at it.
PIXEL_DPI = 100


class NotebookFigure(Figure):
    """A figure that shows itself as a PNG where no matplotlib display hook is set up (``_repr_png_``)."""

    def _repr_png_(self) -> bytes:
        return figure_png(self)


class PixelFigure(NotebookFigure):
    """A figure laid out in whole pixels at :data:`PIXEL_DPI`: its images are placed 1:1 (already enlarged by
    whole factors), so it is saved at its own resolution and never cropped (a "tight" box is the whole figure)."""

    #: the whole factor its images are enlarged by
    image_scale: int = 1

    def get_tightbbox(self, renderer: Any = None, *args: Any, **kwargs: Any) -> Bbox:
        w, h = self.get_size_inches()
        return Bbox.from_bounds(0, 0, w, h)


class PixelImage(AxesImage):
    """An image of a :class:`PixelFigure`: already enlarged, and drawn as it is where its axes hold exactly its
    pixels (a raster backend at the figure's resolution), instead of resampled 1:1 by matplotlib at a cost (a tenth
    of a second of CPU for a 600 x 600 picture) for the same pixels. Anywhere else (a vector backend, another
    resolution) it is drawn as any image."""

    def make_image(self, renderer: Any, magnification: float = 1.0, unsampled: bool = False) -> Any:
        rgb = self.get_array()
        box = self.get_window_extent(renderer)
        x0, y0 = box.xmin * magnification, box.ymin * magnification
        h, w = rgb.shape[:2]
        exact = (not unsampled and rgb.dtype == np.uint8 and rgb.ndim == 3
                 and abs(box.width * magnification - w) < 1e-6 and abs(box.height * magnification - h) < 1e-6
                 and abs(x0 - round(x0)) < 1e-6 and abs(y0 - round(y0)) < 1e-6)
        if not exact:
            return super().make_image(renderer, magnification, unsampled)
        rgba = np.empty((h, w, 4), np.uint8)
        rgba[..., :3] = rgb[::-1, :, :3]  # the renderer's rows run from the bottom up
        rgba[..., 3] = 255
        return rgba, round(x0) / magnification, round(y0) / magnification, IdentityTransform()


def new_figure(width: float, height: float) -> Figure:
    """An empty figure of ``width`` x ``height`` inches, not registered with pyplot (no backend involved)."""
    return NotebookFigure(figsize=(width, height))


def unit_name(j: int) -> str:
    """The name of latent unit ``j`` (a 0-based index into the code) on figures and pages: ``z_{j+1}``."""
    return f"z_{int(j) + 1}"


def group_name(g: int) -> str:
    """The name of group ``g`` (0-based) of a categorical code: ``group {g+1}``."""
    return f"group {int(g) + 1}"


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


def pixel_scale(width: int, budget: int = IMAGE_WIDTH) -> int:
    """The whole enlargement factor s = floor(budget / width), between 1 and :data:`MAX_SCALE`."""
    return int(max(1, min(MAX_SCALE, budget // max(1, int(width)))))


def enlarge(grid: np.ndarray, scale: int) -> np.ndarray:
    """``grid`` (H, W) or (H, W, 3) in [0, 1] as 8-bit RGB (H*s, W*s, 3): each pixel an s x s block."""
    rgb = np.round(np.clip(np.asarray(grid, dtype=np.float64), 0.0, 1.0) * 255).astype(np.uint8)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    return np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


@dataclass
class Panel:
    """One image grid of a :func:`pixel_figure`, with its title and labels; tick positions are in the grid's
    own (unenlarged) pixels, measured from the top left corner (pixel centres are at 0, 1, 2, ...)."""

    grid: np.ndarray
    title: str | None = None
    yticks: list[tuple[float, str]] = field(default_factory=list)
    xticks: list[tuple[float, str]] = field(default_factory=list)
    xlabel: str | None = None
    ylabel: str | None = None


_TITLE, _SUPTITLE, _TICK = 10, 11, 8  # font sizes (points)


def _text_size(text: str, size: float) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` at ``size`` points and :data:`PIXEL_DPI`."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    if not text:
        return 0, 0
    w, h, _ = RendererAgg(1, 1, PIXEL_DPI).get_text_width_height_descent(text, FontProperties(size=size), False)
    return int(math.ceil(w)), int(math.ceil(h))


def pixel_figure(items: Sequence[Panel], suptitle: str | None = None, scale: int | None = None) -> PixelFigure:
    """Image grids side by side, each enlarged by the same whole factor ``scale`` (default
    :func:`pixel_scale` of their total width) and placed pixel for pixel; titles above, labels beside."""
    items = list(items)
    s = scale or pixel_scale(sum(p.grid.shape[1] for p in items))
    pad, gap, tick_pad = 6, 18, 5
    sup_h = _text_size(suptitle, _SUPTITLE)[1] + 8 if suptitle else 0
    cols, x = [], pad
    for p in items:
        h, w = p.grid.shape[0] * s, p.grid.shape[1] * s
        left = max([_text_size(t, _TICK)[0] for _, t in p.yticks], default=0)
        left += tick_pad if p.yticks else 0
        left += _text_size(p.ylabel, _TICK + 1)[1] + 6 if p.ylabel else 0
        bottom = _text_size("0", _TICK)[1] + tick_pad + 2 if p.xticks else 0
        bottom += _text_size(p.xlabel, _TICK + 1)[1] + 6 if p.xlabel else 0
        tw, th = _text_size(p.title, _TITLE) if p.title else (0, 0)
        top = th + 8 if p.title else 0
        x_img = x + left + max(0, (tw - w) // 2 - left)  # a title wider than the image stays in the figure
        right = max(x_img + w, x_img + w // 2 + (tw + 1) // 2)
        cols.append((p, x_img, w, h, top, bottom))
        x = right + gap
    width = x - gap + pad
    body = max(top + h + bottom for _, _, _, h, top, bottom in cols)
    sup_w = _text_size(suptitle, _SUPTITLE)[0] + 2 * pad if suptitle else 0
    width = max(width, sup_w)
    height = pad + sup_h + body + pad
    fig = PixelFigure(figsize=(width / PIXEL_DPI, height / PIXEL_DPI), dpi=PIXEL_DPI)
    fig.patch.set_facecolor("white")
    if suptitle:
        fig.text(0.5, 1 - (pad + 2) / height, suptitle, ha="center", va="top", fontsize=_SUPTITLE)
    for p, x_img, w, h, top, _ in cols:
        y_img = pad + sup_h + top  # from the top
        ax = fig.add_axes((x_img / width, 1 - (y_img + h) / height, w / width, h / height))
        image = PixelImage(ax, interpolation="nearest", origin="upper")
        image.set_data(enlarge(p.grid, s))
        image.set_clip_path(ax.patch)
        image.set_extent(image.get_extent())  # the axes' limits, as imshow sets them
        ax.add_image(image)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(length=0, pad=3, labelsize=_TICK)  # no tick marks: they would touch the image
        ax.set_yticks([(v + 0.5) * s - 0.5 for v, _ in p.yticks], [t for _, t in p.yticks])
        ax.set_xticks([(v + 0.5) * s - 0.5 for v, _ in p.xticks], [t for _, t in p.xticks])
        if p.xlabel:
            ax.set_xlabel(p.xlabel, fontsize=_TICK + 1, labelpad=2)
        if p.ylabel:
            ax.set_ylabel(p.ylabel, fontsize=_TICK + 1, labelpad=2)
        if p.title:
            fig.text((x_img + w / 2) / width, 1 - (y_img - 4) / height, p.title, ha="center", va="bottom",
                     fontsize=_TITLE)
    fig.image_scale = s
    return fig


def panels(grids: Sequence[np.ndarray], titles: Sequence[str], suptitle: str | None = None,
           scale: int | None = None) -> PixelFigure:
    """Image grids side by side, each with a title, enlarged by one whole factor (see :func:`pixel_figure`)."""
    return pixel_figure([Panel(g, t) for g, t in zip(grids, titles)], suptitle, scale)


def _row_ticks(rows: int, image_height: int, labels: Sequence[str], pad: int = 1) -> list[tuple[float, str]]:
    """Labels at the middle of each row of a grid of images ``image_height`` high, ``pad`` pixels apart."""
    return [(pad + r * (image_height + pad) + (image_height - 1) / 2, t) for r, t in zip(range(rows), labels)]


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (cropped to its contents at ``dpi``; a :class:`PixelFigure` whole, at its own
    resolution). Nothing global changes: no backend is chosen and no pyplot state is touched."""
    buf = io.BytesIO()
    if isinstance(fig, PixelFigure):
        fig.savefig(buf, format="png", dpi=fig.dpi, facecolor="white")
    else:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        raise ValueError("not a PNG")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as a PNG file, atomically; a link at ``path`` is refused (OSError)."""
    path = Path(path)
    data = figure_png(fig, dpi)
    path.parent.mkdir(parents=True, exist_ok=True)
    from vaekit.io.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, data)  # a full disk mid-write leaves the previous file, not half a PNG
    return path


# -- the model's pictures -------------------------------------------------------------------------


def _shape(model: LatentVariableModel) -> tuple[int, int, int]:
    return tuple(model.shape)  # type: ignore[return-value]


def latent_size(model: LatentVariableModel) -> int:
    """The size of the codes the model decodes: ``model.latent_size`` (2L for a two-level model)."""
    return int(model.latent_size)


def _labels_for(model: LatentVariableModel, n: int, labels: torch.Tensor | None = None) -> torch.Tensor | None:
    """Labels for a conditional model's pictures: the given ones, else classes 0, 1, 2, ... in turn."""
    if not getattr(model, "condition", 0):
        return None
    if labels is not None:
        return labels[:n].to(_device(model))
    return torch.arange(n, device=_device(model)) % model.condition


def _device(model: LatentVariableModel) -> torch.device:
    return next(model.parameters()).device


def discrete_prior(model: LatentVariableModel) -> Any:
    """p(z) when the codes are discrete (a ``FactorizedCategorical`` or ``FactorizedBernoulli``), else None."""
    from vaekit.distributions import FactorizedBernoulli, FactorizedCategorical

    try:
        prior = model.prior_distribution()
    except (NotImplementedError, AttributeError):
        return None
    return prior if isinstance(prior, (FactorizedCategorical, FactorizedBernoulli)) else None


def _continuous_only(model: LatentVariableModel, what: str) -> None:
    if discrete_prior(model) is not None:
        raise ValueError(f"{what} moves z continuously and needs a continuous latent space; this model's codes "
                         "are discrete (see category_figure)")


def mode_code(model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
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
def decode_means(model: LatentVariableModel, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """E[x|z] as images (N, C, H, W) (for a conditional model, given labels y; default: classes in turn)."""
    z = z.to(_device(model), dtype=next(model.parameters()).dtype)
    y = _labels_for(model, z.shape[0], y)
    return model.likelihood.mean(model.decode(z, y)).reshape(z.shape[0], *_shape(model)).clamp(0, 1).cpu()


@torch.inference_mode()
def samples_figure(model: LatentVariableModel, n: int = 64, seed: int = 0, label: int | None = None,
                   source: str = "the prior") -> Figure:
    """Samples z ~ p(z): the decoded means E[x|z] and draws x ~ p(x|z), two panels. A conditional model's samples
    take the classes 0, 1, 2, ... in turn, or all the class ``label`` (p(x|z, y = label)). ``source`` names p(z) in
    the title (a post-hoc sampler standing in for the prior: "the gmm sampler")."""
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    labels = None if label is None else torch.full((n,), int(label), dtype=torch.long)
    s = model.sample(n, y=_labels_for(model, n, labels), generator=gen)
    nrow = max(1, int(math.ceil(math.sqrt(n))))
    name = getattr(model.likelihood, "name", "")
    # an autoregressive p(x|z) has no closed-form mean: its likelihood.mean is a Monte Carlo estimate
    means = "E[x|z] (estimated), z ~ p(z)" if getattr(model.likelihood, "mean_is_estimate", False) \
        else "means E[x|z], z ~ p(z)"
    return panels([image_grid(s.means.cpu(), nrow), image_grid(s.draws.clamp(0, 1).cpu(), nrow)],
                  [means, f"draws x ~ p(x|z) ({name})"],
                  f"{n} samples from {source} (seed {seed})" + ("" if label is None else f", class {label}"))


@torch.inference_mode()
def reconstructions_figure(model: LatentVariableModel, x: torch.Tensor, n: int = 32, split: str = "test",
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
def interpolations_figure(model: LatentVariableModel, x: torch.Tensor, pairs: int = 6, steps: int = 10,
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
def traversals_figure(model: LatentVariableModel, units: Sequence[int], base: torch.Tensor | None = None,
                      steps: int = 9,
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
    _, hh, _ = _shape(model)
    names = [plain_text(t) for t in labels] if labels is not None else [unit_name(j) for j in units]
    return pixel_figure([Panel(image_grid(dec, steps), f"traversals: z_j from {values[0]:.2f} to {values[-1]:.2f} "
                               "(prior quantiles 5%..95%)", yticks=_row_ticks(len(units), hh, names))])


@torch.inference_mode()
def manifold_figure(model: LatentVariableModel, n: int = 20) -> Figure:
    """For a 2-D latent space: decoded means over the grid z = (Phi^-1(u1), Phi^-1(u2)), u in [0.05, 0.95]^2
    (Kingma & Welling, 2014, Fig. 4); rows run from high z2 (top) to low z2."""
    _continuous_only(model, "the manifold plot")
    if latent_size(model) != 2:
        raise ValueError("the manifold plot needs a 2-dimensional latent space")
    q = torch.tensor(normal_quantiles(n), dtype=torch.float32)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    dec = decode_means(model, torch.stack([z1, z2], -1).reshape(-1, 2))
    grid = image_grid(dec, n, pad=0)
    _, hh, ww = _shape(model)
    ticks = [0, n // 2, n - 1]
    return pixel_figure([Panel(grid, "decoded manifold over the prior's quantiles",
                               yticks=[(hh * (i + 0.5) - 0.5, f"{q.flip(0)[i]:.2f}") for i in ticks],
                               xticks=[(ww * (i + 0.5) - 0.5, f"{q[i]:.2f}") for i in ticks],
                               xlabel=unit_name(0), ylabel=unit_name(1))])


@torch.inference_mode()
def latent_scatter_figure(model: LatentVariableModel, x: torch.Tensor, labels: torch.Tensor | None = None,
                          class_names: Sequence[str] | None = None, split: str = "test") -> Figure:
    """Posterior means mu(x) of a split's images in a 2-D latent space, coloured by label."""
    mu = model.code(x.to(_device(model)), _labels_for(model, len(x), labels)).cpu().numpy()
    fig = new_figure(5.2, 4.4)
    ax = fig.subplots()
    if labels is None:
        ax.scatter(mu[:, 0], mu[:, 1], s=6, alpha=0.6, color="tab:blue")
    else:
        y = labels.cpu().numpy()
        classes = np.unique(y)
        cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
        for i, cls in enumerate(classes):
            sel = y == cls
            name = class_names[int(cls)] if class_names is not None and 0 <= int(cls) < len(class_names) else str(cls)
            ax.scatter(mu[sel, 0], mu[sel, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=plain_text(name))
        ax.legend(markerscale=2.5, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xlabel(f"{unit_name(0)}: posterior mean mu_1(x)")
    ax.set_ylabel(f"{unit_name(1)}: posterior mean mu_2(x)")
    ax.set_title(f"posterior means of {len(mu)} {split} images", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# -- discrete codes and clusters -------------------------------------------------------------------

#: The most groups (or binary units) :func:`category_figure` shows by default.
MAX_GROUPS = 8


def _panel_labels(model: LatentVariableModel, n: int) -> torch.Tensor | None:
    """Labels for a conditional model's panels: class 0 throughout (so that only the code changes)."""
    return torch.zeros(n, dtype=torch.long) if getattr(model, "condition", 0) else None


@torch.inference_mode()
def category_images(model: LatentVariableModel, groups: Sequence[int] | None = None, base: torch.Tensor | None = None,
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


def category_figure(model: LatentVariableModel, groups: Sequence[int] | None = None, base: torch.Tensor | None = None,
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
    held = base_text or f"a draw z ~ p(z) (seed {seed})"
    if categorical and discrete_prior(model).groups == 1:
        title = f"E[x | z = k] for each class k = 0..{k - 1}" + (" in rows of 10" if wrap else "")
    elif categorical:
        title = f"E[x|z] for each class k = 0..{k - 1} of a group; other groups at {held}"
    else:
        title = f"E[x|z] with unit z_j = 0 (left) and 1 (right); other units at {held}"
    _, hh, _ = _shape(model)
    names = [group_name(g) if categorical else unit_name(g) for g in groups]
    return pixel_figure([Panel(grid, plain_text(title, 110), yticks=[] if wrap else _row_ticks(rows, hh, names))])


def _mixture_prior(model: LatentVariableModel) -> Any:
    from vaekit.components.discrete import GaussianMixturePrior

    prior = getattr(model, "prior", None)
    if not isinstance(prior, GaussianMixturePrior):
        raise ValueError("cluster means need the Gaussian-mixture prior (prior 'mixture')")
    return prior


@torch.inference_mode()
def cluster_mean_images(model: LatentVariableModel, draws: int = 0, seed: int = 0) -> torch.Tensor:
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


def cluster_means_figure(model: LatentVariableModel, draws: int = 0, seed: int = 0) -> Figure:
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
    _, hh, _ = _shape(model)
    if cols == 1:
        return pixel_figure([Panel(grid, title)])
    return pixel_figure([Panel(grid, title, yticks=_row_ticks(c, hh, [f"c{r} ({weights[r]:.2f})" for r in range(c)]),
                               ylabel="cluster (weight pi_c)")])


def contingency_figure(table: Any, labels: Sequence[Any] | None = None, title: str | None = None) -> Figure:
    """The contingency table T[c, y] of clusters (rows) against labels (columns) as a heat map, counts written
    in the cells when there are at most 20 x 20."""
    t = np.asarray(table, dtype=float)
    rows, cols = t.shape
    fig = new_figure(min(12.0, 1.6 + 0.45 * cols), min(12.0, 1.2 + 0.35 * rows))
    ax = fig.subplots()
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


def information_figure(matrix: Any, units: Sequence[str], factors: Sequence[str], title: str | None = None) -> Figure:
    """The mutual information I(z_j; v_k) (nats) of latent units (rows, named ``units``) against factors (columns,
    named ``factors``) as a heat map from 0 (white) up, the values written in the cells when there are at most
    20 x 20 of them."""
    t = np.asarray(matrix, dtype=float).reshape(len(units), len(factors))
    rows, cols = t.shape
    fig = new_figure(min(12.0, 2.6 + 0.9 * cols), min(14.0, 1.4 + 0.32 * rows))
    ax = fig.subplots()
    top = float(t.max()) if t.size and t.max() > 0 else 1.0
    im = ax.imshow(t, cmap="Blues", vmin=0.0, vmax=top, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="nats")
    ax.set_xticks(range(cols))
    ax.set_xticklabels([plain_text(v, 24) for v in factors], fontsize=8)
    ax.set_yticks(range(rows))
    ax.set_yticklabels([plain_text(v, 24) for v in units], fontsize=8 if rows <= 30 else 6)
    ax.set_xlabel("factor v_k")
    ax.set_ylabel("latent unit z_j")
    if rows <= 20 and cols <= 20:
        for r in range(rows):
            for k in range(cols):
                ax.text(k, r, f"{t[r, k]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if t[r, k] > 0.6 * top else "black")
    ax.set_title(plain_text(title or "I(z_j; v_k), nats", 90), fontsize=10)
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


def robust_limits(curves: Sequence[Sequence[float]], reach: float = 2.0) -> tuple[float, float] | None:
    """A y-range for curves over epochs that a wild first epoch cannot flatten: the range [lo, hi] of every
    value after each curve's first (all of a curve's values when it has fewer than 3), widened to take each
    first value that lies within ``reach`` * (hi - lo) of it, padded by 5%. None without values."""
    curves = [[float(v) for v in c] for c in curves if len(c)]
    if not curves:
        return None
    later = [v for c in curves for v in (c[1:] if len(c) >= 3 else c)]
    lo, hi = min(later), max(later)
    span = hi - lo if hi > lo else 0.05 * max(abs(hi), 1.0)
    for c in curves:
        if len(c) >= 3 and lo - reach * span <= c[0] <= hi + reach * span:
            lo, hi = min(lo, c[0]), max(hi, c[0])
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1.0)
    return lo - pad, hi + pad


def _mark_clipped(ax: Any, pts: Sequence[tuple[float, float]], limits: tuple[float, float], colour: Any,
                  row: int = 0) -> int:
    """Points of a curve outside ``limits``: a triangle at the edge they left by, with their value (the labels
    of curve ``row`` one line further in). Their count."""
    lo, hi = limits
    off = [(e, y) for e, y in pts if y < lo or y > hi]
    for e, y in off[:3]:
        edge = lo if y < lo else hi
        ax.plot([e], [edge], "v" if y < lo else "^", color=colour, ms=7, clip_on=False, zorder=4)
        shift = 4 + 10 * row
        ax.annotate(f"{y:.4g}", (e, edge), textcoords="offset points", xytext=(5, shift if y < lo else -6 - shift),
                    fontsize=7, color=colour)
    return len(off)


def training_curves_figure(metrics: Sequence[dict[str, Any]]) -> Figure:
    """ELBO, reconstruction and KL per epoch (train and validation), nats per example.

    The y-axes follow :func:`robust_limits` (a first epoch far below the rest, such as -2000 nats of an
    untrained colour model, does not flatten the curves); a point off the axis is a triangle at its edge,
    labelled with its value. Rows that are not objects, or whose epoch is not a whole number, are left out;
    so are values that are not finite numbers (NaN, 1e308, strings, nested objects)."""
    fig = new_figure(12, 3.4)
    axes = fig.subplots(1, 3)
    metrics = [m for m in metrics if isinstance(m, dict)]
    epochs = [m.get("epoch", i + 1) for i, m in enumerate(metrics)]
    epochs = [e if isinstance(e, int) and not isinstance(e, bool) and abs(e) < 10**9 else None for e in epochs]
    for ax, key, title in zip(axes, ("elbo", "reconstruction", "kl"),
                              ("ELBO", "reconstruction E_q[log p(x|z)]", "KL(q(z|x) || p(z))")):
        series = []
        for split, style in (("train", "-"), ("valid", "--")):
            ys = [m.get(f"{split}_{key}") for m in metrics]
            pts = [(e, float(y)) for e, y in zip(epochs, ys) if e is not None and _plottable(y)]
            if pts:
                series.append((split, style, pts))
        limits = robust_limits([[y for _, y in pts] for _, _, pts in series])
        clipped = 0
        for row, (split, style, pts) in enumerate(series):
            (line,) = ax.plot(*zip(*pts), style, marker="o" if len(pts) < 30 else None, ms=3, label=split)
            if limits is not None:
                clipped += _mark_clipped(ax, pts, limits, line.get_color(), row)
        if limits is not None and limits[1] > limits[0]:
            ax.set_ylim(*limits)
        ax.set_title(title + " (nats)" + (", off the axis: triangles" if clipped else ""), fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def kl_per_unit_figure(kl_per_dim: Sequence[float], latent_variance: Sequence[float] | None = None,
                       threshold: float = 0.01, unit: str = "unit") -> Figure:
    """Bars of the mean closed-form KL per latent unit (nats), sorted, named ``z_1`` ... (``unit="group"``:
    per group of a categorical code, ``group 1`` ...); active units (Cov_x E_q[z_j] > ``threshold``) in blue,
    inactive in grey."""
    kl = np.asarray(kl_per_dim, dtype=float)
    order = np.argsort(-kl, kind="stable")
    active = (np.asarray(latent_variance, dtype=float) > threshold) if latent_variance else np.ones(len(kl), bool)
    fig = new_figure(min(12.0, 2.0 + 0.22 * len(kl)), 3.0)
    ax = fig.subplots()
    ax.bar(range(len(kl)), kl[order], color=["tab:blue" if active[j] else "tab:gray" for j in order])
    ax.set_xticks(range(len(kl)))
    name = group_name if unit == "group" else unit_name
    ax.set_xticklabels([name(j).replace("group ", "") for j in order], fontsize=7 if len(kl) > 20 else 8,
                       rotation=90 if unit != "group" and len(kl) > 8 else 0)
    ax.set_xlabel("group (sorted by KL)" if unit == "group" else "latent unit (sorted by KL)")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"KL(q(z_j|x) || p(z_j)) per {unit}, averaged over the data: {int(active.sum())} active (blue)",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def codebook_usage_figure(counts: Sequence[float]) -> Figure:
    """Bars of how often each codebook vector is chosen (a share of all choices), sorted, most used first."""
    counts = np.asarray(counts, dtype=float)
    share = np.sort(counts / max(counts.sum(), 1.0))[::-1]
    fig = new_figure(min(12.0, 3.0 + 0.02 * len(share)), 3.0)
    ax = fig.subplots()
    ax.bar(range(len(share)), share, width=1.0, color="tab:blue")
    ax.set_xlabel("codebook vector (sorted by use)")
    ax.set_ylabel("share of the choices")
    ax.set_title(f"codebook use: {int((counts > 0).sum())} of {len(counts)} vectors chosen", fontsize=10)
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
    fig = new_figure(5.2, 4.2)
    ax = fig.subplots()
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
    star = rate is not None and distortion is not None and math.isfinite(rate) and math.isfinite(distortion)
    xlim = robust_limits([rs + ([rate] if star else [])])  # a wild first epoch does not squash the path
    ylim = robust_limits([ds + ([distortion] if star else [])])
    off = 0
    if xlim is not None and ylim is not None and len(rs) >= 3:
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        off = sum(not (xlim[0] <= r <= xlim[1] and ylim[0] <= d <= ylim[1]) for r, d in zip(rs, ds))
    ax.set_xlabel("rate R = KL(q(z|x) || p(z)), nats")
    ax.set_ylabel("distortion D = -E_q log p(x|z), nats")
    ax.set_title("validation (R, D) per epoch" + (f" ({off} off the axes)" if off else ""), fontsize=10)
    return fig
