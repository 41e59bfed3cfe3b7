"""docs/m2.md: its command lines, its config file and its Python example run as they are, and its claims hold
(the labels kept are class-balanced, evaluate reports test_error and a bound at least the ELBO)."""

from __future__ import annotations

import json

import pytest

import vaekit
from cli_run import run_cli
from doc_pages import DOCS, code_blocks, run_commands

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_pages_command_lines_and_config_file_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (commands,) = code_blocks("m2.md", "sh")
    for argv, out in run_commands(commands, capsys):
        if argv[1] == "evaluate":
            r = json.loads(out.strip().splitlines()[-1])
            assert 0 <= r["test_error"] <= 1 and r["k"] == 20 and -r["nll"] >= r["elbo"]
    assert (tmp_path / "runs" / "m2-samples.png").is_file()
    (toml,) = code_blocks("m2.md", "toml")
    (tmp_path / "m2.toml").write_text(toml)
    code, _, err = run_cli(["train", "--config", "m2.toml", "--epochs", "1", "--out", "runs/cfg", "--quiet"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "runs" / "cfg" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["m2_alpha"] == 100.0 and vaekit.load(tmp_path / "runs" / "cfg").labels == 50


def test_the_pages_python_example_prints_what_the_page_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (code,) = code_blocks("m2.md", "python")
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "m2.md", "exec"), scope)
    first, second = capsys.readouterr().out.strip().splitlines()
    assert first in (DOCS / "m2.md").read_text(encoding="utf-8") and second.startswith("test error ")
    assert 0 <= scope["result"].test_error <= 1
