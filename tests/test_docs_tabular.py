"""docs/tabular.md: its command lines and its Python example run as they are and print what the page shows."""

from __future__ import annotations

import numpy as np
import pytest

from doc_pages import code_blocks, run_commands

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_pages_command_lines_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (commands,) = code_blocks("tabular.md", "sh")
    for argv, out in run_commands(commands, capsys):
        if argv[1] == "evaluate":
            assert "standardised table" in out  # the note saying the figures are in the original units
    drawn = np.loadtxt(tmp_path / "runs" / "wine-t-samples.csv", delimiter=",", skiprows=1)
    assert drawn.shape == (100, 13) and np.median(drawn[:, 12]) > 100  # proline in mg/l again, not standardised
    assert (tmp_path / "runs" / "wine-t" / "report.html").is_file()


def test_the_pages_python_example_prints_what_the_page_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (code,) = code_blocks("tabular.md", "python")
    (shown,) = code_blocks("tabular.md", "text")
    exec(compile(code, "tabular.md", "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip() == shown.strip()
