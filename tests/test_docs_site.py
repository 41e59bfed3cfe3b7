"""The documentation site: built offline in strict mode, complete, generated from the code, and readable in a
browser (headless-Chromium screenshots of the getting-started page and of a tutorial, when Chromium is there).

The build itself (site_build.py: the one ``make test`` made, or one built here) is ``mkdocs build --strict``: a
broken link, an unresolvable reference or a docstring that does not parse fails it.
"""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest

from headless import DevTools, blank, needs_chromium, screenshot
from site_build import ROOT, built_site

MODULES_DOCUMENTED = ["vaekit.analysis.info", "vaekit.analysis.estimators", "vaekit.distributions", "vaekit.components",
                      "vaekit.models", "vaekit.models.vae", "vaekit.objectives", "vaekit.train",
                      "vaekit.training.trainer", "vaekit.evaluation",
                      "vaekit.evaluation.exact", "vaekit.data", "vaekit.data.digits", "vaekit.pages.viz",
                      "vaekit.pages.report"]


@pytest.fixture(scope="module")
def site() -> Path:
    return built_site()


def text_of(page: Path) -> str:
    html = page.read_text(encoding="utf-8")
    html = re.sub(r"<(script|style)\b.*?</\1>", "", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_the_pages_exist(site):
    for page in ["index", "getting-started", "cli", "recipes", "results", "benchmarks", "reliability",
                 "CONVENTIONS", "your-own-networks", "discrete-latents", "bottleneck", "tutorials/index",
                 "reference/index"]:
        assert (site / f"{page}.html").is_file(), f"no {page}.html"
    assert "Getting started" in text_of(site / "getting-started.html")


def test_api_reference_documents_the_public_modules_from_their_docstrings(site):
    import vaekit.analysis.info
    import vaekit.training.trainer

    for module in MODULES_DOCUMENTED:
        assert (site / "reference" / f"{module}.html").is_file(), f"no reference page for {module}"
    info = text_of(site / "reference" / "vaekit.analysis.info.html")
    for name in ("entropy", "cross_entropy", "kl_divergence", "kl_closed_form", "kl_monte_carlo"):
        assert re.search(rf"\b{name} \(", info), f"vaekit.analysis.info.{name} is not documented"
    assert vaekit.analysis.info.kl_divergence.__doc__.splitlines()[0] in info  # the docstring itself, rendered
    fit = text_of(site / "reference" / "vaekit.training.trainer.html")  # documented where it is defined
    doc = vaekit.training.trainer.fit.__doc__
    assert re.search(r"\bfit \(", fit) and " ".join(doc.replace("``", "").split()[:8]) in fit
    # reST roles became links or code, not literal markup
    assert ":func:`" not in info and ":class:`" not in fit


def test_cli_reference_is_generated_from_the_parsers(site):
    import argparse

    from vaekit.cli import COMMANDS, build_parser

    cli = text_of(site / "cli.html")
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert list(sub.choices) == list(COMMANDS)
    for name, command in sub.choices.items():
        assert f"vaekit {name}" in cli
        for action in command._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert flag in cli, f"vaekit {name} {flag} is missing from the CLI reference"


def test_included_files_are_the_repository_files_and_every_recipe_is_listed(site):
    for page, source in [("results", "RESULTS.md"), ("benchmarks", "BENCHMARKS.md"),
                         ("reliability", "RELIABILITY.md"), ("index", "README.md")]:
        first = (ROOT / source).read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        assert first in text_of(site / f"{page}.html"), f"{page}.html does not show {source}"
    recipes = text_of(site / "recipes.html")
    for toml in sorted((ROOT / "configs").rglob("*.toml")):
        assert toml.relative_to(ROOT).as_posix() in recipes, f"{toml.name} is missing from the recipes page"


def test_pages_name_no_machine_paths(site):
    offenders = []
    for page in site.rglob("*.html"):
        text = text_of(page)
        for pattern in (r"/work/", r"/tmp/", r"/farm"):
            if re.search(pattern, text):
                offenders.append(f"{page.relative_to(site)}: {pattern}")
    assert not offenders, offenders


def test_site_opens_offline(site):
    """Pages are files (no server needed) and load nothing from the network: no web fonts, no CDN."""
    html = (site / "getting-started.html").read_text(encoding="utf-8")
    assert 'href="tutorials/index.html"' in html  # links to files, not to folders a server would resolve
    for page in [site / "index.html", site / "tutorials" / "03-vae-forward-pass.html"]:
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', page.read_text(encoding="utf-8"))
        assert not remote, f"{page.name} loads {remote}"


@needs_chromium("the documentation site")
@pytest.mark.parametrize(("page", "heading"), [("getting-started.html", "Getting started"),
                                               ("tutorials/03-vae-forward-pass.html",
                                                "3. The VAE forward pass, step by step")])
def test_screenshot_shows_the_page_and_its_heading(site, tmp_path, page, heading):
    shot = screenshot(site / page, tmp_path / "page.png", size=(1280, 1600))
    assert not blank(shot), f"{page} renders blank"
    with DevTools(size=(1280, 1600)) as tab:
        tab.open(site / page)
        box = tab.evaluate("(() => { const h = document.querySelector('article h1'); const r = "
                           "h.getBoundingClientRect(); return [h.textContent, r.left, r.top, r.right, r.bottom]; })()")
    text, left, top, right, bottom = box
    assert text.strip().rstrip("¶").strip() == heading
    assert 0 <= top < bottom < 400 and right - left > 100, f"the heading is not at the top of the page: {box}"
    # the heading's box in the screenshot holds dark text on the light page
    assert not blank(shot.crop((int(left), int(top), int(right), int(bottom)))), "the heading is not drawn"
