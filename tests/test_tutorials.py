"""The tutorials (docs/tutorials/*.py) run, and their pages show what they printed and drew.

The site build executes every tutorial in a fresh kernel and fails on any error, including an ``assert`` of a
tutorial that does not hold (each tutorial checks its own claims that way). These tests read the pages of that
build (site_build.py: the one ``make test`` made, or one built here): every tutorial has its page, with its
outputs and its figures, and nothing on it is an error.
"""

from __future__ import annotations

import ast
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from site_build import ROOT, built_site

TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("[0-9]*.py"))

#: Lines each page must show: outputs fixed by the maths or the data (not by training), so a page that did not
#: run, or ran something else, is caught.
EXPECTED = {
    "01-information": ["D(p||q)  = 0.5108 nats", "D(q||p)  = 0.3681 nats", "H(p)     = 0.6931 nats = 1.0000 bits"],
    "02-reparameterization": ["true gradient 2 theta = 3.000", "true gradient 4 theta = 6.000"],
    "03-vae-forward-pass": ["train / valid / test: 1257 270 270 images of shape (1, 8, 8)",
                            "encoder output: (8, 4)  q(z|x): batch (8,) event (2,)"],
    "04-the-bound": ["1024 codes; mean exact log p(x)", "(the bound is tight)"],
    "05-your-own-networks-and-data": ["ShapeError: the decoder returned (4, 10)",
                                      "entropy of the data H(x) = 5.407 nats"],
    "06-colour-images": ["1200 / 150 / 150 images of shape (3, 12, 12), 256 levels", "bits per dimension:"],
}
MAX_SECONDS = 120  # a guard against a tutorial that grew heavy; each takes seconds (under 30 s on a busy 2-core CPU)


def test_every_tutorial_is_a_percent_script_with_checks():
    assert [t.stem for t in TUTORIALS] == sorted(EXPECTED), "one tutorial per part of the course, numbered"
    for script in TUTORIALS:
        source = script.read_text(encoding="utf-8")
        ast.parse(source, str(script))  # it runs as a plain script too
        assert source.startswith("# %% [markdown]\n# # "), f"{script.name}: a title cell first"
        assert source.count("\n# %%\n") >= 3, f"{script.name}: code cells in jupytext's percent format"
        assert re.search(r"^assert ", source, re.M), f"{script.name}: checks its claims with assert"


@pytest.fixture(scope="module")
def site() -> Path:
    return built_site()


def page_text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


@pytest.mark.parametrize("script", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_page_shows_its_outputs_and_figures(site, script):
    page = site / "tutorials" / f"{script.stem}.html"
    assert page.is_file(), f"no page for {script.name}"
    html = page.read_text(encoding="utf-8")
    text = page_text(html)
    title = re.search(r"^# # (.+)$", script.read_text(encoding="utf-8"), re.M)[1]
    assert title in text
    for line in EXPECTED[script.stem]:
        assert line in text, f"{script.name}: its page lacks the output {line!r}"
    assert "Traceback" not in text and "Error:" not in text.replace("ShapeError:", "")
    seconds = float(re.search(r"executed when the site was built \((\d+) s on a CPU\)", text)[1])
    assert seconds < MAX_SECONDS, f"{script.name} took {seconds} s to run"
    # a figure for each plt.show(), each a PNG beside the page with something drawn on it
    figures = re.findall(rf'<img[^>]+src="({re.escape(script.stem)}/figure-\d+\.png)"', html)
    assert len(figures) == script.read_text(encoding="utf-8").count("plt.show()")
    for src in figures:
        image = np.asarray(Image.open(page.parent / src).convert("L"), dtype=np.float64)
        assert image.shape[0] > 50 and image.shape[1] > 200, f"{src} is {image.shape}"
        assert image.std() > 10 and (image < 128).mean() > 0.005, f"{src} is blank"
    # the script itself is on the site, for download
    assert (site / "tutorials" / script.name).read_text(encoding="utf-8") == script.read_text(encoding="utf-8")
