"""The page kit: what every HTML page of vaekit shares (the report, the comparison page, the sweep's page): its
style sheet, figures as inline PNGs with captions, number formatting, settings tables, and a run's metrics read
safely (a bad line is skipped and said)."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from vaekit.errors import VaekitError

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0;
       background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
p.sub { color: #666; margin: 6px 0 16px; font-size: 14px; }
table { border-collapse: collapse; font-size: 14px; }
td, th { padding: 4px 12px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-family: ui-monospace, Menlo, monospace; }
.cols { display: flex; flex-wrap: wrap; gap: 32px; align-items: flex-start; }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figure.px { overflow-x: auto; }
figure.px img { max-width: none; image-rendering: pixelated; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; max-width: 1000px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; font-size: 14px; }
code { font-family: ui-monospace, Menlo, monospace; font-size: 13px; }
"""


def img_tag(png: bytes, alt: str) -> str:
    """An <img> of PNG bytes, inline (base64)."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def page_figure(fig: Any, alt: str, caption: str) -> str:
    """A figure (a matplotlib Figure, or PNG bytes) and its caption. The <img> states the PNG's own size; a
    picture of images (:class:`vaekit.pages.viz.PixelFigure`, enlarged by a whole factor) is shown at exactly that
    size, pixelated, scrolling sideways where the page is narrower: the browser never resamples it."""
    from vaekit.pages import viz

    pixels = isinstance(fig, viz.PixelFigure)
    png = fig if isinstance(fig, bytes) else viz.figure_png(fig)
    w, h = viz.png_size(png)
    img = img_tag(png, alt).replace("<img ", f'<img width="{w}" height="{h}" ', 1)
    tag = "<figure class='px'>" if pixels else "<figure>"
    return f"{tag}{img}<figcaption>{caption}</figcaption></figure>"


def fmt(v: Any) -> str:
    """A setting or figure as short text: floats to 6 significant digits, lists and tables flattened."""
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt(x) for x in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={fmt(x)}" for k, x in v.items())
    return str(v)


def settings_table(title: str, values: dict[str, Any]) -> str:
    """A two-column table of settings under ``title``."""
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td><code>{html.escape(fmt(v))}</code></td></tr>"
                   for k, v in values.items())
    return f'<div><table><tr><th colspan="2">{html.escape(title)}</th></tr>{rows}</table></div>'


def read_run_metrics(run: Path) -> tuple[list[dict[str, Any]], str | None]:
    """(the sound rows of RUN/metrics.jsonl, a note for the reader when some or all could not be read, else None)."""
    from vaekit.io.files import exists_or_link
    from vaekit.io.runs import read_metrics_checked

    if not exists_or_link(run / "metrics.jsonl"):
        return [], "No metrics.jsonl in the run directory, so there are no training curves."
    try:
        rows, bad = read_metrics_checked(run)
    except VaekitError as exc:
        return [], f"{' '.join(str(exc).split())[:300]}; so there are no training curves."
    return rows, (f"{bad} unreadable lines in metrics.jsonl were skipped." if bad else None)
