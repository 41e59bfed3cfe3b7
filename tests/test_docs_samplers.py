"""docs/samplers.md: its Python example runs as it is and prints what the page shows, its claims hold, and its
command lines are valid vaekit commands (they are run, with small fits, by tests/test_samplers.py)."""

from __future__ import annotations

import math
import re
import shlex

import pytest

from doc_pages import code_blocks
from vaekit.cli import build_parser

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_pages_python_example_prints_what_the_page_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (code,) = code_blocks("samplers.md", "python")
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "samplers.md", "exec"), scope)
    printed = capsys.readouterr().out
    (shown,) = code_blocks("samplers.md", "text")
    assert printed.strip() == shown.strip()
    # the page's claim: each fitted density gains more than thirty paired standard errors over N(0, I)
    for line in printed.strip().splitlines()[1:]:
        gain, se = map(float, re.search(r"gain (\S+) \+- (\S+)", line).groups())
        assert gain > 30 * se > 0, line
    assert math.isfinite(scope["prior"].nll)


def test_the_pages_command_lines_parse():
    parser = build_parser()
    (commands,) = code_blocks("samplers.md", "sh")
    for line in commands.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "vaekit"
        args = parser.parse_args(argv[1:])
        assert args.command == argv[1]
