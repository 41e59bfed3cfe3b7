"""The command line's fixed cost: ``vaekit --help``, ``--version`` and the commands' own help never import torch
(3 s of a fresh process on a CPU), and a training run never imports torch._dynamo (another 1.3 to 2.7 s)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vaekit.cli import COMMANDS, build_parser, invoked

#: Runs vaekit's main() with the given arguments, then prints the modules it imported on the last line of stderr.
WRAPPER = """
import json, sys
from vaekit.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n")
raise SystemExit(code)
"""


def _vaekit(*argv: str) -> tuple[int, str, set[str]]:
    """(exit status, stdout, the modules imported) of ``vaekit ARGV`` in a fresh process."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, timeout=600)
    last = done.stderr.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("MODULES "), done.stderr[-2000:]
    return done.returncode, done.stdout, set(json.loads(last[len("MODULES "):]))


@pytest.mark.parametrize("argv", [["--help"], ["--version"], [], ["info", "--help"], ["trian"]],
                         ids=["help", "version", "nothing", "info-help", "unknown-command"])
def test_help_version_and_refusals_do_not_import_torch(argv):
    code, out, modules = _vaekit(*argv)
    assert code == (0 if argv and argv[-1] in ("--help", "--version") else 2)
    assert "torch" not in modules and "numpy" not in modules
    if argv == ["--help"]:
        assert all(name in out for name in COMMANDS)
        assert "train a VAE and write a run directory" in out


def test_each_command_but_train_builds_its_flags_without_torch():
    """Heavy imports belong in a command's run(); train's flags come from the registries, which need torch."""
    for name in COMMANDS:
        if name == "train":
            continue
        code, out, modules = _vaekit(name, "--help")
        assert code == 0 and f"vaekit {name}" in out, name
        assert "torch" not in modules, name


def test_the_short_listing_is_the_full_parsers_listing():
    """``vaekit --help`` lists a command by its HELP line: the same text as with every command's flags built."""
    assert build_parser(full=set()).format_help() == build_parser().format_help()


def test_invoked_is_the_first_word_that_is_not_an_option():
    assert invoked(["train", "--out", "x"]) == {"train"}
    assert invoked(["--help"]) == set() and invoked([]) == set()
    assert invoked(["--", "info", "--p", "1"]) == {"info"}
    assert invoked(["trian"]) == set()


def test_a_training_run_does_not_import_torch_dynamo(tmp_path):
    code, out, modules = _vaekit("train", "--dataset", "digits", "--hidden", "16", "--latent", "2", "--epochs", "1",
                                 "--batch-size", "128", "--threads", "1", "--quiet", "--out", str(tmp_path / "run"))
    assert code == 0, out
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()
    assert "torch" in modules
    assert "torch._dynamo" not in modules and "sympy" not in modules


@pytest.mark.parametrize("own_process", [True, False], ids=["vaekit", "main-argv"])
def test_a_process_of_its_own_freezes_the_objects_of_its_imports(own_process):
    """``vaekit ...`` (main() reading sys.argv) pauses the garbage collector while importing and then freezes what
    it imported; main(argv) called inside another program leaves that program's collector alone."""
    call = "main()" if own_process else "main(['--help'])"
    code = ("import gc, sys\nfrom vaekit.cli import main\nsys.argv = ['vaekit', '--help']\n"
            f"try:\n    {call}\nexcept SystemExit:\n    pass\n"
            "print(gc.get_freeze_count(), gc.isenabled())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    frozen, enabled = done.stdout.split()[-2:]
    assert enabled == "True"
    assert (int(frozen) > 0) == own_process
