"""The layout shows the architecture: few modules at the top of the package, none of its functions longer than a
screen (the import contract over the folders is checked by lint-imports in make test)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "vaekit"


def test_at_most_twelve_modules_sit_directly_in_the_package():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 12, top


def test_no_function_is_longer_than_sixty_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
