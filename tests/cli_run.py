"""Run the ``vaekit`` command line in this process, for tests that read what it prints."""

from __future__ import annotations

import pytest

from vaekit.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``vaekit.cli.main(argv)``: (exit status, stdout, stderr); an argparse SystemExit is a status."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
