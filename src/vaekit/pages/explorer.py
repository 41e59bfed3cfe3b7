"""The report's interactive latent explorer: the decoder runs in the page itself.

A plane of two latent units (for a 2-D latent space both units; otherwise the two most active ones, the
other units held at the prior mean or at the posterior mean of a chosen image) shows the posterior means
E_q[z|x] of encoded images, coloured by label. Moving the pointer over the plane decodes the point under
it, live: the decoded mean E[x|z] is drawn on a canvas beside the plane.

The decoder's weights are embedded in the page (base64, little-endian float32, or float16 when float32
would take more than :data:`FLOAT32_BYTES`) and run by a few lines of plain JavaScript: no network, no
library. The page can run vaekit's MLP decoders (:class:`vaekit.nn.MLP`: Linear layers with relu, tanh,
elu, gelu, softplus or gated activations, also conditional ones) followed by the mean of the Bernoulli,
Gaussian or continuous Bernoulli likelihood; for other decoders (convolutional, PixelCNN) and likelihoods
:func:`export_decoder` raises :class:`Unsupported` and the report says so in one line.

:func:`run_program` runs an exported decoder in numpy exactly as the page does (float64 arithmetic on the
stored weights), so the page's pictures can be checked against the model without a browser.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Weights are embedded as float32 while they take at most this many bytes, as float16 beyond.
FLOAT32_BYTES = 1 << 20
#: The most bytes of weights a page embeds (a larger decoder gets a note instead of the explorer).
MAX_BYTES = 8 << 20
#: The most encoded images the plane shows.
MAX_POINTS = 2000
#: The images whose posterior means the other units can be held at.
MAX_BASES = 10
#: Largest magnitude a float16 holds.
FLOAT16_MAX = 65504.0

_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.ELU: "elu", nn.GELU: "gelu", nn.Softplus: "softplus"}
#: Colours of the labels (matplotlib's tab10, then tab20's light shades).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7",
           "#dbdb8d", "#9edae5")


class Unsupported(Exception):
    """The page cannot run this model's decoder; the message says why in a few words."""


# -- the decoder as a program --------------------------------------------------------------------------


def _linear(layer: nn.Linear, chunks: list[np.ndarray], offset: list[int]) -> dict[str, Any]:
    w = layer.weight.detach().to("cpu", torch.float64).numpy()  # (out, in), row-major
    b = (layer.bias.detach().to("cpu", torch.float64).numpy() if layer.bias is not None
         else np.zeros(w.shape[0]))
    op = {"op": "linear", "in": int(w.shape[1]), "out": int(w.shape[0]), "w": offset[0], "b": offset[0] + w.size}
    chunks += [w.reshape(-1), b]
    offset[0] += w.size + b.size
    return op


def _layers(decoder: nn.Module, chunks: list[np.ndarray], offset: list[int]) -> list[dict[str, Any]]:
    from vaekit.nn import GatedDense

    ops: list[dict[str, Any]] = []
    for layer in decoder:
        kind = type(layer)
        if kind is nn.Linear:
            ops.append(_linear(layer, chunks, offset))
        elif kind is GatedDense:
            ops.append({"op": "gated", "h": _linear(layer.h, chunks, offset), "g": _linear(layer.g, chunks, offset)})
        elif kind in _ACTIVATIONS:
            op: dict[str, Any] = {"op": _ACTIVATIONS[kind]}
            if kind is nn.ELU:
                op["alpha"] = float(layer.alpha)
            elif kind is nn.GELU:
                op["approximate"] = str(layer.approximate)
            elif kind is nn.Softplus:
                op["beta"], op["threshold"] = float(layer.beta), float(layer.threshold)
            ops.append(op)
        else:
            raise Unsupported(f"its decoder has a {kind.__name__} layer, which the page cannot run")
    return ops


def _mean_op(likelihood: Any) -> str:
    from vaekit.components.likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood, GaussianLikelihood

    kind = type(likelihood)
    if kind is BernoulliLikelihood or kind is GaussianLikelihood:
        return "sigmoid"  # E[x|z] = sigmoid of the first block of parameters (the Gaussian's mean)
    if kind is ContinuousBernoulliLikelihood:
        return "continuous-bernoulli"
    name = getattr(likelihood, "name", kind.__name__)
    raise Unsupported(f"the page has no JavaScript for the mean of the {name} likelihood")


def export_decoder(model: LatentVariableModel, float32_bytes: int = FLOAT32_BYTES,
                   max_bytes: int = MAX_BYTES) -> tuple[dict[str, Any], np.ndarray]:
    """The decoder of ``model`` as a program for the page, and the weights as stored there (float64 copies of
    the float32 or float16 values). Raises :class:`Unsupported` for what the page cannot run."""
    from vaekit.models import VAE
    from vaekit.nn import MLP

    if type(model) is not VAE:
        raise Unsupported(f"the page runs the decoders of VAEs, and this model is a {type(model).__name__}")
    if type(model.decoder) is not MLP:
        raise Unsupported(f"the page runs vaekit's MLP decoders, and this model's decoder is a "
                          f"{type(model.decoder).__name__}")
    shape = tuple(int(s) for s in model.shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise Unsupported(f"the page draws grey or colour images (1 or 3 channels), not data of shape {shape}")
    mean = _mean_op(model.likelihood)
    chunks: list[np.ndarray] = []
    offset = [0]
    layers = _layers(model.decoder, chunks, offset)
    latent, condition = int(model.latent_size), int(model.decoder.condition)
    dense = [op if op["op"] == "linear" else op["h"] for op in layers if op["op"] in ("linear", "gated")]
    if not dense or layers[0]["op"] not in ("linear", "gated"):
        raise Unsupported("its decoder does not start with a Linear layer")
    if dense[0]["in"] != latent + condition or dense[-1]["out"] != math.prod(model.likelihood.param_shape):
        raise Unsupported("its decoder's sizes do not match the code and the likelihood")
    flat = np.concatenate(chunks) if chunks else np.zeros(0)
    if not np.isfinite(flat).all():
        raise Unsupported("its decoder has weights that are not finite numbers")
    dtype = "float32" if 4 * flat.size <= float32_bytes or np.abs(flat).max(initial=0.0) > FLOAT16_MAX else "float16"
    stored = flat.astype("<f4" if dtype == "float32" else "<f2")
    if stored.nbytes > max_bytes:
        raise Unsupported(f"its decoder has {flat.size:,} parameters ({stored.nbytes / 2**20:.1f} MiB as {dtype}), "
                          f"more than the {max_bytes / 2**20:.0f} MiB a page embeds")
    program = {"dtype": dtype, "size": int(flat.size), "weights": base64.b64encode(stored.tobytes()).decode("ascii"),
               "latent": latent, "condition": condition, "inputs": latent + condition, "layers": layers,
               "mean": {"op": mean, "count": math.prod(shape)}, "shape": list(shape)}
    return program, stored.astype(np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _continuous_bernoulli_mean(p: np.ndarray) -> np.ndarray:
    """E[x] of ContinuousBernoulli(p), as torch computes it: p / (2p - 1) + 1 / (log(1 - p) - log p) outside
    (0.499, 0.501], a Taylor expansion 1/2 + (1/3 + 16/45 t^2) t, t = p - 1/2, inside."""
    outside = (p <= 0.499) | (p > 0.501)
    cut = np.where(outside, p, 0.499)
    with np.errstate(divide="ignore", invalid="ignore"):
        mus = cut / (2.0 * cut - 1.0) + 1.0 / (np.log1p(-cut) - np.log(cut))
    t = p - 0.5
    return np.where(outside, mus, 0.5 + (1.0 / 3.0 + 16.0 / 45.0 * t * t) * t)


def _apply(op: dict[str, Any], x: np.ndarray, w: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    kind = op["op"]
    if kind == "linear":
        weight = w[op["w"]:op["w"] + op["in"] * op["out"]].reshape(op["out"], op["in"])
        return x @ weight.T + w[op["b"]:op["b"] + op["out"]]
    if kind == "gated":
        return _apply(op["h"], x, w) * _sigmoid(_apply(op["g"], x, w))
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "tanh":
        return np.tanh(x)
    if kind == "elu":
        return np.where(x > 0, x, op["alpha"] * np.expm1(np.minimum(x, 0.0)))
    if kind == "gelu":
        if op["approximate"] == "tanh":
            return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if kind == "softplus":
        bx = op["beta"] * x
        return np.where(bx > op["threshold"], x, np.log1p(np.exp(np.minimum(bx, op["threshold"]))) / op["beta"])
    raise ValueError(f"unknown operation {kind!r}")


def run_program(program: dict[str, Any], weights: np.ndarray, z: np.ndarray,
                labels: Sequence[int] | None = None) -> np.ndarray:
    """E[x|z] (N, C*H*W) in [0, 1] for codes ``z`` (N, L) as the page computes it (float64 arithmetic on the
    stored ``weights``); ``labels`` (N,) for a conditional decoder (one-hot appended to z)."""
    x = np.asarray(z, dtype=np.float64).reshape(-1, program["latent"])
    if program["condition"]:
        onehot = np.zeros((len(x), program["condition"]))
        onehot[np.arange(len(x)), np.asarray(labels if labels is not None else np.zeros(len(x)), dtype=int)] = 1.0
        x = np.concatenate([x, onehot], 1)
    for op in program["layers"]:
        x = _apply(op, x, weights)
    p = _sigmoid(x[:, :program["mean"]["count"]])
    if program["mean"]["op"] == "continuous-bernoulli":
        p = _continuous_bernoulli_mean(p)
    return np.clip(p, 0.0, 1.0)


# -- the data of the page ------------------------------------------------------------------------------


def _device(model: LatentVariableModel) -> torch.device:
    return next(model.parameters()).device


def _condition_labels(model: LatentVariableModel, n: int, labels: torch.Tensor | None) -> torch.Tensor | None:
    if not getattr(model, "condition", 0):
        return None
    if labels is not None:
        return labels[:n].to(_device(model))
    return torch.arange(n, device=_device(model)) % model.condition


@torch.inference_mode()
def _codes(model: LatentVariableModel, x: torch.Tensor, labels: torch.Tensor | None, batch: int = 500) -> np.ndarray:
    """Posterior means (the codes pictures use) of the images ``x``, (N, L) float64."""
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].to(_device(model))
        y = None if labels is None else labels[i:i + batch]
        out.append(model.code(xb, _condition_labels(model, len(xb), y)).to("cpu", torch.float64).numpy())
    return np.concatenate(out) if out else np.zeros((0, int(model.latent_size)))


@torch.inference_mode()
def _prior_stats(model: LatentVariableModel, seed: int, n: int = 4000) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mean of p(z) (L,), n draws (n, L), whether the mean is estimated from the draws)."""
    from vaekit import distributions as vd

    prior = model.prior_distribution()
    gen = torch.Generator(device=_device(model)).manual_seed(seed)
    draws = vd.sample(prior, (n,), gen).to("cpu", torch.float64).reshape(n, -1).numpy()
    try:
        mean = prior.mean.detach().to("cpu", torch.float64).reshape(-1).numpy()
        estimated = False
    except (NotImplementedError, AttributeError):
        mean, estimated = draws.mean(0), True
    if mean.shape != (draws.shape[1],) or not np.isfinite(mean).all():
        mean, estimated = draws.mean(0), True
    return mean, draws, estimated


def _extent(values: list[np.ndarray]) -> list[float]:
    """[lo, hi] covering the central 99% of each set of values, padded by 5%."""
    parts = [v[np.isfinite(v)] for v in values]
    parts = [v for v in parts if v.size]
    lo = min(float(np.percentile(v, 0.5)) for v in parts)
    hi = max(float(np.percentile(v, 99.5)) for v in parts)
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.05 * (hi - lo)
    return [round(lo - pad, 4), round(hi + pad, 4)]


@torch.inference_mode()
def _torch_means(model: LatentVariableModel, z: np.ndarray, labels: Sequence[int] | None = None) -> np.ndarray:
    """E[x|z] of the model itself, (N, C*H*W), clamped to [0, 1] as the report's pictures are."""
    param = next(model.parameters())
    zt = torch.as_tensor(z, dtype=param.dtype, device=param.device)
    y = None
    if getattr(model, "condition", 0):
        y = torch.as_tensor(np.zeros(len(z), dtype=int) if labels is None else np.asarray(labels), device=param.device)
    out = model.likelihood.mean(model.decode(zt, y)).clamp(0, 1)
    return out.reshape(len(z), -1).to("cpu", torch.float64).numpy()


def explorer_data(model: LatentVariableModel, x: torch.Tensor | None, labels: torch.Tensor | None, class_names: Any,
                  activity: Sequence[float] | None, split: str = "test", seed: int = 0,
                  max_points: int = MAX_POINTS, float32_bytes: int = FLOAT32_BYTES) -> dict[str, Any]:
    """Everything the page's explorer reads: the decoder program, the plane (units, extent, encoded images),
    the codes the other units can be held at. Raises :class:`Unsupported`."""
    from vaekit.pages.viz import unit_name

    program, weights = export_decoder(model, float32_bytes)
    latent = program["latent"]
    if latent < 2:
        raise Unsupported("the plane needs at least two latent units")
    if activity is not None and len(activity) == latent:
        units = sorted(range(latent), key=lambda j: (-float(activity[j]), j))[:2]
    else:
        units = [0, 1]
    units = sorted(units)
    prior_mean, draws, estimated = _prior_stats(model, seed)
    bases = [{"name": "the prior mean" + (" (estimated from 4000 draws)" if estimated else ""),
              "z": [round(float(v), 6) for v in prior_mean]}]
    points: dict[str, Any] = {"u": [], "v": [], "label": []}
    names = [str(c) for c in class_names] if class_names is not None else None
    codes = np.zeros((0, latent))
    if x is not None and len(x):
        n = min(len(x), max_points)
        lab = labels[:n] if labels is not None else None
        codes = _codes(model, x[:n], lab)
        keep = np.isfinite(codes).all(1)
        points["u"] = [round(float(v), 4) for v in codes[keep, units[0]]]
        points["v"] = [round(float(v), 4) for v in codes[keep, units[1]]]
        if lab is not None:
            points["label"] = [int(v) for v in lab.cpu().numpy()[keep]]
        for i in range(min(MAX_BASES, n) if latent > 2 else 0):
            if not keep[i]:
                continue
            tag = ""
            if lab is not None:
                y = int(lab[i])
                tag = f" (label {names[y] if names is not None and 0 <= y < len(names) else y})"
            bases.append({"name": f"the posterior mean of {split} image {i + 1}{tag}",
                          "z": [round(float(v), 6) for v in codes[i]]})
    extent = [_extent([draws[:, j], codes[:, j]]) for j in units]
    # how far the page's decoder (stored weights, float64) is from the model's own, on the encoded images
    check = np.concatenate([np.asarray([b["z"] for b in bases]), codes[np.isfinite(codes).all(1)][:200]])
    check_labels = None
    if program["condition"]:
        check_labels = [0] * len(bases) + ([int(v) for v in labels[:len(check) - len(bases)]] if labels is not None
                                           else [0] * (len(check) - len(bases)))
    error = float(np.abs(run_program(program, weights, check, check_labels) - _torch_means(model, check,
                                                                                           check_labels)).max())
    shape = program["shape"]
    condition = program["condition"]
    cond_names = [names[c] if names is not None and c < len(names) else str(c) for c in range(condition)]
    return {"program": program, "units": units, "unitNames": [unit_name(j) for j in units], "extent": extent,
            "bases": bases, "points": points, "classes": names, "colours": list(COLOURS),
            "conditionNames": cond_names, "scale": int(max(1, min(40, 320 // max(shape[1], shape[2])))),
            "error": error, "checked": int(len(check))}


# -- the page's section --------------------------------------------------------------------------------

CSS = """
.vx { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; margin: 8px 0 4px; }
.vx canvas { display: block; image-rendering: pixelated; }
.vx .plane { touch-action: none; cursor: crosshair; outline: 1px solid #ddd; }
.vx .plane:focus { outline: 2px solid #4a90d9; }
.vx .image { outline: 1px solid #ddd; }
.vx-controls { font-size: 14px; margin: 4px 0 8px; }
.vx-controls label { margin-right: 18px; }
.vx-legend { font-size: 12px; max-width: 440px; margin-top: 6px; }
.vx-legend span { display: inline-block; margin-right: 10px; white-space: nowrap; }
.vx-legend i { display: inline-block; width: 9px; height: 9px; border-radius: 50%; margin-right: 4px; }
.vx-caption { color: #555; font-size: 13px; margin-top: 4px; max-width: 1000px; }
.vx-readout { font-family: ui-monospace, Menlo, monospace; font-size: 13px; margin: 6px 0; max-width: 340px; }
"""

#: The page's program (package data ``explorer.js``): it decodes z -> image in the browser, with the weights inlined.
JS = (resources.files("vaekit.pages") / "explorer.js").read_text(encoding="utf-8")


def _json(data: Any) -> str:
    """JSON that is safe inside a <script> element (no '<', '>' or '&' characters)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def explorer_html(data: dict[str, Any], split: str = "test") -> str:
    """The explorer's part of the page for :func:`explorer_data`'s ``data``: hidden until its script runs
    (without JavaScript the page shows a line saying so; the static figures stay)."""
    program, names = data["program"], data["unitNames"]
    latent = program["latent"]
    controls = []
    if latent > 2:
        options = "".join(f"<option value='{i}'>{html.escape(b['name'])}</option>" for i, b in enumerate(data["bases"]))
        controls.append(f"<label>other units at <select class='base'>{options}</select></label>")
    if program["condition"]:
        options = "".join(f"<option value='{i}'>{html.escape(n)}</option>"
                          for i, n in enumerate(data["conditionNames"]))
        controls.append(f"<label>label y <select class='label'>{options}</select></label>")
    legend = ""
    if data["points"]["label"]:
        used = sorted(set(data["points"]["label"]))
        classes = data["classes"]
        legend = "<div class='vx-legend'>" + "".join(
            f"<span><i style='background:{data['colours'][c % len(data['colours'])]}'></i>"
            f"{html.escape(classes[c] if classes is not None and 0 <= c < len(classes) else str(c))}</span>"
            for c in used) + "</div>"
    n = len(data["points"]["u"])
    which = ("the two latent units" if latent == 2 else
             f"{html.escape(names[0])} and {html.escape(names[1])}, the two most active of {latent} units")
    stored = ("float16 (half the size; " if program["dtype"] == "float16" else "float32 (")
    caption = (f"Move the pointer over the plane of {which} (or focus it and use the arrow keys): the page decodes "
               f"the point under the pointer, E[x|z], and draws it on the right, {data['scale']}x enlarged. "
               + (f"The dots are the posterior means of {n} {html.escape(split)} images"
                  + (", coloured by label" if data["points"]["label"] else "")
                  + (" (for more than two units: their coordinates on these two)" if latent > 2 else "") + ". "
                  if n else "")
               + f"The decoder's {program['size']:,} weights are in the page as {stored}its pictures differ "
               f"from vaekit's by at most {data['error']:.1e} on {data['checked']} codes), run by plain JavaScript.")
    return (f"<div id='vaekit-explorer' hidden><div class='vx-controls'>{''.join(controls)}</div>"
            f"<div class='vx'><div><canvas class='plane' tabindex='0' aria-label='latent plane: "
            f"{html.escape(names[0])} across, {html.escape(names[1])} up'></canvas>{legend}</div>"
            f"<div><canvas class='image' aria-label='decoded image'></canvas><p class='vx-readout'></p></div></div>"
            f"<p class='vx-caption'>{caption}</p></div>"
            "<noscript><p class='sub'>The interactive explorer needs JavaScript; the figures above show the same "
            "latent space.</p></noscript>"
            f"<script type='application/json' id='vaekit-explorer-data'>{_json(data)}</script>"
            f"<script>{JS}</script>")


def explorer_section(model: LatentVariableModel, x: torch.Tensor | None, labels: torch.Tensor | None, class_names: Any,
                     activity: Sequence[float] | None, split: str = "test", seed: int = 0) -> str:
    """The report's section "Latent explorer": the explorer, or one line saying why this model has none."""
    head = "<h2>Latent explorer</h2>"
    try:
        data = explorer_data(model, x, labels, class_names, activity, split, seed)
    except Unsupported as exc:
        return head + f"<p class='sub'>No interactive explorer for this model: {html.escape(str(exc))}.</p>"
    return head + explorer_html(data, split)
