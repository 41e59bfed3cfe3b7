"""A griffe extension that renders vaekit's reST-flavoured docstrings as Markdown, for mkdocstrings.

vaekit's docstrings are plain text with a little reST: roles (``:func:`fit```, ``:class:`~vaekit.models.VAE```,
``:math:`x```), literal blocks after a paragraph ending in ``::`` and ``.. math::`` blocks. Markdown would show
the roles as text and run the indented blocks into the paragraph above, so before rendering:

- a role naming code becomes a link to its page in the API reference (an optional cross-reference: plain code when
  the name is not documented there), ``~`` keeping only the last part of the name, as in Sphinx;
- ``:math:`...``` becomes inline code (the formula as written);
- ``.. math::`` and ``::`` literal blocks become fenced code blocks.
"""

from __future__ import annotations

import ast
import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")
BLOCK_START = re.compile(r"^(?P<indent>[ \t]*)(?:\.\. math::|(?P<text>.*\S)?::)[ \t]*$")


def _target(obj: griffe.Object, name: str) -> str:
    """The full dotted path ``name`` stands for in ``obj``'s scope (as written when it cannot be resolved)."""
    name = name.strip().lstrip(".")
    if name.startswith("vaekit.") or name == "vaekit":
        return name
    head, _, rest = name.partition(".")
    scope = obj if obj.is_module or obj.is_class else obj.parent
    while scope is not None:
        try:
            full = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            scope = scope.parent
            continue
        return f"{full}.{rest}" if rest else full
    return name


def _role(obj: griffe.Object, match: re.Match[str]) -> str:
    short, name = match[2] == "~", match[3].strip()
    shown = name.rsplit(".", 1)[-1] if short else name.lstrip(".")
    if match[1] in ("func", "meth"):
        shown = shown if shown.endswith(")") else f"{shown}()"
    target = _target(obj, name.rstrip("()"))
    return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'


def _is_python(code: str) -> bool:
    """Whether a literal block is Python code (highlighted as such) rather than a formula or a layout."""
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return "(" in code or "=" in code or "import" in code


def _literal_blocks(text: str) -> str:
    """``.. math::`` and ``para::`` + indented block -> the paragraph (with one colon) and a fenced block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        start = BLOCK_START.match(lines[i])
        if not start:
            out.append(lines[i])
            i += 1
            continue
        indent = len(start["indent"].expandtabs())
        if start["text"] is not None and not start["text"].strip().startswith(".."):
            out.append(f"{start['indent']}{start['text']}:")
        j = i + 1
        block: list[str] = []
        while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        body = textwrap.dedent("\n".join(b for b in block)).strip("\n")
        if not body:
            i += 1
            continue
        pad = start["indent"]
        lang = "python" if start["text"] is not None and _is_python(body) else "text"
        out += ["", f"{pad}```{lang}", *[f"{pad}{line}" if line else "" for line in body.split("\n")], f"{pad}```", ""]
        i = j
    return "\n".join(out)


def markdown(obj: griffe.Object, text: str) -> str:
    """A vaekit docstring as Markdown (see the module docstring)."""
    text = _literal_blocks(text)
    parts = re.split(r"(```(?:text|python)\n.*?```)", text, flags=re.S)  # roles in literal blocks stay as written
    for n in range(0, len(parts), 2):
        parts[n] = MATH_ROLE.sub(lambda m: f"`{m[1]}`", parts[n])
        parts[n] = ROLE.sub(lambda m: _role(obj, m), parts[n])
    return "".join(parts)


class RestToMarkdown(griffe.Extension):
    """Rewrite each docstring once the whole package is loaded (names resolve then)."""

    def __init__(self) -> None:
        super().__init__()
        self._done: set[int] = set()

    def _convert(self, obj: griffe.Object) -> None:
        if obj.docstring is not None and id(obj) not in self._done:
            self._done.add(id(obj))
            obj.docstring.value = markdown(obj, obj.docstring.value)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        self._convert(obj)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:  # the top package is no member: not above
        self._convert(pkg)
