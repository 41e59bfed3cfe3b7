"""MkDocs hook: pages that include a Markdown file of the repository (``RESULTS.md``, ``BENCHMARKS.md``, ...).

A line ``<!-- include PATH -->`` in a page (PATH relative to the repository root) is replaced by that file at
build time, so the site shows the file as it is in the repository, never a copy. A line ``<!-- recipes DIR -->``
is replaced by every recipe (``*.toml``) of the folder DIR and its subfolders: each file's opening comment as
text and the file itself, and a subfolder's ``README.md`` before its recipes. The file's relative links
are rewritten for the page: a link into ``docs/`` points at the same file from the page, a link to an included
file points at the page that includes it, and a link to any other file of the repository (a script, a
recipe) becomes its path as code, since the site does not carry it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- include (?P<path>\S+) -->[ \t]*$", re.M)
RECIPES = re.compile(r"^<!-- recipes (?P<path>\S+) -->[ \t]*$", re.M)
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def _pages_including(docs: Path) -> dict[str, str]:
    """Repository path of each included file -> the docs page (relative to docs/) that includes it."""
    found = {}
    for page in docs.rglob("*.md"):
        for m in MARKER.finditer(page.read_text(encoding="utf-8")):
            found[m["path"]] = page.relative_to(docs).as_posix()
    return found


def _rewrite(content: str, source: str, page: str, docs: str, included: dict[str, str]) -> str:
    """``content`` of repository file ``source`` with its relative links made to work from docs page ``page``."""
    page_dir = posixpath.dirname(page)

    def link(m: re.Match[str]) -> str:
        target = m["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return m[0]
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        if repo_path in included:
            new = posixpath.relpath(included[repo_path], page_dir or ".")
        elif repo_path.startswith(f"{docs}/"):
            new = posixpath.relpath(repo_path[len(docs) + 1:], page_dir or ".")
        else:
            return f"{m['text']} (`{repo_path}`)" if m["text"] and not m["bang"] else f"`{repo_path}`"
        return f"{m['bang']}[{m['text']}]({new}{'#' + anchor if anchor else ''})"

    return LINK.sub(link, content)


def _comment(toml: str) -> str:
    """The opening comment of a recipe as Markdown: its prose as a paragraph, its ``vaekit ...`` lines as code."""
    prose: list[str] = []
    commands: list[str] = []
    for line in toml.splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        (commands if text.startswith("vaekit ") else prose).append(text)
    out = " ".join(prose)
    if commands:
        out += "\n\n```sh\n" + "\n".join(commands) + "\n```"
    return out


def _demote(markdown: str, levels: int) -> str:
    """``markdown`` with every heading ``levels`` levels lower (code blocks left alone)."""
    parts = re.split(r"(^```.*?^```)", markdown, flags=re.M | re.S)
    for n in range(0, len(parts), 2):
        parts[n] = re.sub(r"^(#+) ", lambda m: "#" * (len(m[1]) + levels) + " ", parts[n], flags=re.M)
    return "".join(parts)


def recipes(folder: str, page: str, docs: str, included: dict[str, str]) -> str:
    """Every recipe under ``folder`` (repository path), grouped by subfolder, as Markdown."""
    out: list[str] = []
    base = ROOT / folder
    for sub in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
        files = sorted(sub.glob("*.toml"))
        if not files:
            continue
        rel = sub.relative_to(ROOT).as_posix()
        out += ["", f"## `{rel}/`", ""]
        readme = sub / "README.md"
        if readme.is_file():
            text = _rewrite(readme.read_text(encoding="utf-8"), f"{rel}/README.md", page, docs, included)
            out += [_demote(text, 2), ""]  # its headings below this section's
        for path in files:
            toml = path.read_text(encoding="utf-8")
            name = path.relative_to(ROOT).as_posix()
            out += [f"### `{name}`", "", _comment(toml) or "(no description)", "",
                    f'??? example "{path.name}"', "", "    ```toml",
                    *[f"    {line}" if line else "" for line in toml.rstrip("\n").splitlines()], "    ```", ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    docs = docs_dir.relative_to(ROOT).as_posix()
    if not MARKER.search(markdown) and not RECIPES.search(markdown):
        return markdown
    included = _pages_including(docs_dir)

    def include(m: re.Match[str]) -> str:
        path = m["path"]
        content = (ROOT / path).read_text(encoding="utf-8")
        return _rewrite(content, path, page.file.src_uri, docs, included)

    markdown = RECIPES.sub(lambda m: recipes(m["path"], page.file.src_uri, docs, included), markdown)
    return MARKER.sub(include, markdown)
