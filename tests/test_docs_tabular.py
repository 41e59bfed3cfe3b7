"""docs/tabular.md: its command lines and its Python example run as they are and print what the page shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from cli_run import run_cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "tabular.md"

pytestmark = pytest.mark.usefixtures("single_thread")


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_pages_command_lines_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (commands,) = _blocks("sh")
    for line in commands.strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "vaekit"
        code, out, err = run_cli([*argv[1:], *(["--quiet"] if argv[1] == "train" else [])], capsys)
        assert code == 0, f"{line}: {err}"
        if argv[1] == "evaluate":
            assert "standardised table" in out  # the note saying the figures are in the original units
    drawn = np.loadtxt(tmp_path / "runs" / "wine-t-samples.csv", delimiter=",", skiprows=1)
    assert drawn.shape == (100, 13) and np.median(drawn[:, 12]) > 100  # proline in mg/l again, not standardised
    assert (tmp_path / "runs" / "wine-t" / "report.html").is_file()


def test_the_pages_python_example_prints_what_the_page_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (code,) = _blocks("python")
    (shown,) = _blocks("text")
    exec(compile(code, "tabular.md", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip() == shown.strip()
