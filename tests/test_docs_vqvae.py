"""docs/vq-vae.md: its command lines, its config file and its Python example run as they are, and its claims hold
(the page's numbers are the example's output)."""

from __future__ import annotations

import math

import pytest
import torch

import vaekit
from cli_run import run_cli
from doc_pages import DOCS, code_blocks, run_commands

pytestmark = pytest.mark.usefixtures("single_thread")


def test_the_pages_command_lines_and_config_file_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (commands,) = code_blocks("vq-vae.md", "sh")
    for argv, out in run_commands(commands, capsys, quiet=("train", "compare")):
        if argv[1] == "evaluate":
            prior = "pixelcnn" if "prior" in argv[2] else "uniform"
            assert f"vq_elbo ({prior} prior)" in out  # the bound, named with its prior
    assert (tmp_path / "runs" / "vq-samples.png").is_file() and (tmp_path / "runs" / "vq-compare.html").is_file()
    (toml,) = code_blocks("vq-vae.md", "toml")
    (tmp_path / "vq.toml").write_text(toml)
    code, _, err = run_cli(["train", "--config", "vq.toml", "--epochs", "1", "--out", "runs/cfg", "--quiet"], capsys)
    assert code == 0, err
    assert vaekit.load(tmp_path / "runs" / "cfg").quantizer.ema


def test_the_pages_python_example_prints_what_the_page_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (code,) = code_blocks("vq-vae.md", "python")
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "vq-vae.md", "exec"), scope)
    printed = capsys.readouterr().out
    assert printed.strip() and printed.strip() in (DOCS / "vq-vae.md").read_text(encoding="utf-8")
    uniform, fitted = scope["uniform"], scope["fitted"]
    assert (uniform.vq_prior, fitted.vq_prior) == ("uniform", "pixelcnn")
    # the autoencoder is fixed: the same reconstruction; the uniform prior's log p(z) is -G log K = -4 log 16
    assert fitted.reconstruction == pytest.approx(uniform.reconstruction, abs=1e-9)
    assert uniform.kl == pytest.approx(4 * math.log(16), rel=1e-6)
    # the fitted prior's bound is higher, by more than three standard errors of the paired difference
    ds = scope["ds"]
    a, b = (vaekit.evaluate(vaekit.load(run), ds.test, per_example=True).per_example["vq_elbo"]
            for run in ("runs/vq-py", "runs/vq-py-prior"))
    diff = b - a
    assert diff.mean() > 3 * diff.std() / math.sqrt(len(diff))
    assert torch.get_num_threads() == 1
