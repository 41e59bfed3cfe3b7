"""MkDocs hook: the API reference, one page per public module of vaekit, found in the source tree.

Every module under ``src/vaekit`` whose name does not start with an underscore gets a page (the command-line
modules excepted: the CLI reference documents them). A page documents the names the module defines itself and
makes public (its ``__all__`` where it has one), so that a name re-exported by a package is documented once, where
it is defined, and a new module is documented without editing this site. The ``API reference`` entry of the nav
in ``mkdocs.yml`` is replaced by the pages, grouped as below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
NAV_TITLE = "API reference"
PREFIX = "reference"

#: Nav sections and the top-level modules (or packages) each holds, in reading order. A module not named here is
#: listed under the last section.
GROUPS: dict[str, tuple[str, ...]] = {
    "Information and gradients": ("analysis",),
    "Distributions and networks": ("distributions", "nn"),
    "Models": ("components", "models", "registry"),
    "Objectives and training": ("objectives", "training", "train", "config"),
    "Evaluation and bounds": ("evaluation", "bounds"),
    "Data": ("data",),
    "Pictures and pages": ("pages",),
    "Runs, devices and files": ("runtime", "loggers", "progress", "io", "resources", "errors"),
}
OTHER = "More modules"
SKIP = {"cli", "commands", "__main__"}


def _public_members(module: griffe.Module) -> list[str]:
    """The names ``module`` defines (not imports) and makes public, in source order."""
    exports = module.exports
    names = []
    for name, member in module.members.items():
        if member.is_alias or member.is_module or name.startswith("_"):
            continue
        if exports is not None and name not in exports:
            continue
        names.append(name)
    return names


def _page(module: griffe.Module) -> str:
    members = _public_members(module)
    lines = [f"# {module.path}", "", f"::: {module.path}", "    options:", "      show_root_heading: false"]
    if members:
        lines.append("      members:")
        lines += [f"        - {name}" for name in members]
    else:
        lines.append("      members: false")
    subs = [m for name, m in module.members.items() if not m.is_alias and m.is_module and not name.startswith("_")]
    if subs:
        lines += ["", "## Modules", ""]
        lines += [f"- [`{m.path}`]({m.path}.md): {_summary(m)}" for m in subs]
    return "\n".join(lines) + "\n"


def _summary(module: griffe.Module) -> str:
    doc = module.docstring.value if module.docstring else ""
    first = doc.strip().split("\n\n", 1)[0].replace("\n", " ").strip().removesuffix("::")
    first = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", first)  # reST roles, as code
    return first.replace("``", "`")


def _modules() -> dict[str, griffe.Module]:
    """Every documented module by dotted path, packages before their submodules."""
    package = griffe.load("vaekit", search_paths=[str(SRC)], resolve_aliases=False, docstring_parser=None)
    found: dict[str, griffe.Module] = {}

    def walk(module: griffe.Module) -> None:
        for name, member in sorted(module.members.items()):
            if member.is_alias or not member.is_module or name.startswith("_"):
                continue
            if module.path == "vaekit" and name in SKIP:
                continue
            found[member.path] = member
            walk(member)

    walk(package)
    return found


_MODULES: dict[str, griffe.Module] = {}


def _nav_entry(path: str) -> Any:
    page = f"{PREFIX}/{path}.md"
    subs = sorted(p for p in _MODULES if p.rsplit(".", 1)[0] == path)
    if not subs:
        return {path: page}
    return {path: [page, *[_nav_entry(s) for s in subs]]}


def on_config(config: Any) -> Any:
    _MODULES.clear()
    _MODULES.update(_modules())
    tops = [p for p in _MODULES if p.count(".") == 1]
    sections: dict[str, list[Any]] = {title: [] for title in GROUPS}
    placed = set()
    for title, names in GROUPS.items():
        for name in names:
            if f"vaekit.{name}" in _MODULES:
                sections[title].append(_nav_entry(f"vaekit.{name}"))
                placed.add(f"vaekit.{name}")
    rest = [p for p in tops if p not in placed]
    if rest:
        sections[OTHER] = [_nav_entry(p) for p in rest]
    reference = [f"{PREFIX}/index.md", *[{title: entries} for title, entries in sections.items() if entries]]
    nav = config.get("nav") or []
    for i, item in enumerate(nav):
        if isinstance(item, dict) and NAV_TITLE in item:
            nav[i] = {NAV_TITLE: reference}
    return config


def on_files(files: Files, config: Any) -> Files:
    for path, module in _MODULES.items():
        files.append(File.generated(config, f"{PREFIX}/{path}.md", content=_page(module)))
    index = ["# API reference", "", "::: vaekit", "    options:", "      show_root_heading: false",
             "      members: false", "", "## Modules", ""]
    for title, names in [*GROUPS.items(), (OTHER, ())]:
        paths = [f"vaekit.{n}" for n in names if f"vaekit.{n}" in _MODULES] if title != OTHER else [
            p for p in _MODULES if p.count(".") == 1 and p.split(".")[1] not in {n for g in GROUPS.values() for n in g}]
        if not paths:
            continue
        index += ["", f"### {title}", ""]
        index += [f"- [`{p}`]({p}.md): {_summary(_MODULES[p])}" for p in paths]
    files.append(File.generated(config, f"{PREFIX}/index.md", content="\n".join(index) + "\n"))
    return files
