"""A docs page's code blocks, and its ``vaekit`` command lines run in this process (the docs tests of the guides)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_run import run_cli

DOCS = Path(__file__).resolve().parents[1] / "docs"


def code_blocks(page: str, kind: str) -> list[str]:
    """The ```kind fenced blocks of ``docs/page``, in order."""
    return re.findall(rf"```{kind}\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), re.S)


def run_commands(block: str, capsys: pytest.CaptureFixture[str],
                 quiet: tuple[str, ...] = ("train",)) -> Iterator[tuple[list[str], str]]:
    """Run each line of ``block`` (``vaekit ...``; ``--quiet`` added to the commands in ``quiet``), asserting exit 0;
    yields (argv, stdout) of each."""
    for line in block.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "vaekit"
        code, out, err = run_cli([*argv[1:], *(["--quiet"] if argv[1] in quiet else [])], capsys)
        assert code == 0, f"{line}: {err}"
        yield argv, out
