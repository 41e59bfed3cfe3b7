"""Issue 32, commands on every kind of run: each failure an outside probe found, as a regression test.

bound on an autoencoder, sample --label of a conditional model, strict JSON from every --json, a missing
optional logger, a closed stdout, a checkpoint whose optimizer settings were altered, a run folder that is a
symbolic link, a first checkpoint killed mid-write, and compare / report errors that are the only line.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from reliability_helpers import (
    PYTHON,
    assert_one_line_error,
    assert_same_tensors,
    bounded,
    disk_full,
    rewrite_checkpoint,
    run_cli,
    subprocess_env,
    tensors,
    tree_state,
)

#: A run of a few seconds: 1257 digits, one epoch of a 2-D latent space and 8 hidden units.
FLAGS = ["--dataset", "digits", "--latent", "2", "--hidden", "8", "--epochs", "1", "--threads", "1", "--device", "cpu",
         "--seed", "0", "--quiet"]
#: The exact EM of a mixture of Bernoullis on binarized digits (a fraction of a second).
EM = ["--dataset", "digits", "--binarize", "threshold", "--family", "bernoulli-mixture", "--fit", "em",
      "--em-iterations", "5", "--threads", "1", "--device", "cpu", "--quiet"]
EVAL = ["--k", "2", "--limit", "10"]


def _train(path, *extra) -> object:
    code, _, err = run_cli(["train", *FLAGS, *extra, "--out", str(path)])
    assert code == 0, err
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A plain run, an autoencoder run (posterior delta) and a conditional run, trained once for the module."""
    root = tmp_path_factory.mktemp("issue32")
    return {"plain": _train(root / "plain"), "autoencoder": _train(root / "ae", "--posterior", "delta"),
            "conditional": _train(root / "cond", "--conditional")}


@pytest.fixture
def plain(runs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(runs["plain"], copy, symlinks=True)
    return copy


def strict_json(text: str) -> dict:
    """The last line of ``text`` parsed as strict JSON (RFC 8259: no NaN, Infinity or -Infinity)."""
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON: {text.strip().splitlines()[-1][:300]}")

    return json.loads(text.strip().splitlines()[-1], parse_constant=refuse)


# -- 1. bound on an autoencoder ------------------------------------------------------------------------------


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
def test_bound_refuses_an_autoencoder_in_one_line(runs, json_flag):
    code, out, err = run_cli(["bound", str(runs["autoencoder"]), "--n", "2", "--k", "2", *json_flag])
    assert_one_line_error(code, err, "autoencoder", "vaekit evaluate")
    assert out == ""


# -- 2. sample --label ----------------------------------------------------------------------------------------


def test_sample_draws_the_chosen_class_of_a_conditional_model(runs, tmp_path):
    pictures = {}
    for label in ("3", "7"):
        out = tmp_path / f"s{label}.png"
        code, _, err = run_cli(["sample", str(runs["conditional"]), "-n", "4", "--label", label, "--out", str(out)])
        assert code == 0, err
        pictures[label] = out.read_bytes()
    assert pictures["3"] != pictures["7"]  # the same seed and codes z: only the class differs


@pytest.mark.parametrize("run, label, needle", [("plain", "1", "not conditional"),
                                                ("conditional", "10", "0..9"),
                                                ("conditional", "-1", "--label")])
def test_sample_label_out_of_place_is_one_line(runs, tmp_path, run, label, needle):
    out = tmp_path / "s.png"
    code, _, err = run_cli(["sample", str(runs[run]), "-n", "4", "--label", label, "--out", str(out)])
    assert_one_line_error(code, err, needle)
    assert not out.exists()


# -- 3. strict JSON ------------------------------------------------------------------------------------------


def test_train_json_of_an_em_run_is_strict_json(tmp_path):
    code, out, err = run_cli(["train", *EM, "--out", str(tmp_path / "em"), "--json"])
    assert code == 0, err
    result = strict_json(out)
    assert result["selected_by"] == "valid ELBO" and result["best_score"] == result["best_valid_elbo"]


def test_info_json_with_an_infinite_divergence_is_strict_json(capsys):
    code, out, err = run_cli(["info", "--p", "0.5,0.5", "--q", "1,0", "--json"])
    assert code == 0, err
    result = strict_json(out)
    assert result["kl_pq"] is None and any("kl_pq" in note for note in result["notes"])


def test_the_json_printer_writes_null_and_says_so(capsys):
    from vaekit.commands._json import print_json

    print_json({"a": math.nan, "b": [1.0, -math.inf], "c": {"d": math.inf}, "notes": ["kept"]})
    result = strict_json(capsys.readouterr().out)
    assert result["a"] is None and result["b"] == [1.0, None] and result["c"] == {"d": None}
    assert result["notes"][0] == "kept" and len(result["notes"]) == 2
    assert all(name in result["notes"][1] for name in ("a", "b[1]", "c.d"))


# -- 4. a missing optional logger ----------------------------------------------------------------------------


@pytest.mark.parametrize("logger", ["tensorboard", "wandb"])
def test_a_missing_logger_is_refused_before_the_run_folder_is_written(tmp_path, monkeypatch, logger):
    monkeypatch.setitem(sys.modules, {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}[logger], None)
    out = tmp_path / "run"
    code, _, err = run_cli(["train", *FLAGS, "--log", logger, "--out", str(out)])
    assert_one_line_error(code, err, logger, "not installed")
    assert not out.exists() or [p.name for p in out.iterdir() if p.name != ".lock"] == []
    code, _, err = run_cli(["train", *FLAGS, "--log", "csv", "--out", str(out)])  # no --overwrite needed
    assert code == 0, err


# -- 5. a closed stdout --------------------------------------------------------------------------------------


def test_info_with_stdout_closed_is_one_line_not_a_traceback():
    cmd = f"exec {PYTHON} -m vaekit info --p 0.5,0.5 --q 0.1,0.9 >&-"
    proc = subprocess.run(["bash", "-c", cmd], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "standard output" in proc.stderr, proc.stderr


# -- 6. altered optimizer settings ---------------------------------------------------------------------------


def test_a_checkpoint_with_altered_optimizer_settings_is_one_line(plain):
    def amsgrad(ts, meta):
        m = json.loads(meta["optimizer"])
        m["param_groups"][0]["amsgrad"] = True
        meta["optimizer"] = json.dumps(m)

    rewrite_checkpoint(plain / "checkpoint.safetensors", amsgrad)
    before = tree_state(plain)
    code, _, err = run_cli(["train", *FLAGS, "--epochs", "2", "--out", str(plain), "--resume"])
    assert_one_line_error(code, err, "optimizer", "amsgrad")
    assert tree_state(plain) == before


# -- 7. a run folder that is a link --------------------------------------------------------------------------


@pytest.mark.parametrize("resume", [["--resume"], []], ids=["resume", "new"])
def test_a_run_folder_that_is_a_symbolic_link_is_refused(plain, tmp_path, resume):
    link = tmp_path / "link"
    link.symlink_to(plain if resume else tmp_path / "empty", target_is_directory=True)
    (tmp_path / "empty").mkdir()
    before = tree_state(tmp_path)
    code, _, err = run_cli(["train", *FLAGS, "--epochs", "2", "--out", str(link), *resume])
    assert_one_line_error(code, err, str(link), "symbolic link")
    assert tree_state(tmp_path) == before


# -- 8. the first checkpoint killed mid-write ----------------------------------------------------------------


def _kill_first_checkpoint(run) -> object:
    """The run as a SIGKILL inside the first write of checkpoint.safetensors leaves it: the kept model written,
    no checkpoint, the atomic writer's temporary file (``.NAME.XXXXXXXX.tmp``) half written."""
    data = (run / "checkpoint.safetensors").read_bytes()
    (run / "checkpoint.safetensors").unlink()
    temp = run / ".checkpoint.safetensors.k1ll3d_x.tmp"
    temp.write_bytes(data[: len(data) // 2])
    return temp


def test_a_sweep_run_folder_that_is_a_symbolic_link_is_refused(plain, tmp_path):
    """OUT/beta-1 a link to a run of the same settings: the sweep resumed it, training into the link's target."""
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "beta-1").symlink_to(plain, target_is_directory=True)
    before = tree_state(plain)
    code, _, err = run_cli(["sweep", "--beta", "1,2", "--k", "2", "--n-samples", "4", "--out", str(out), "--",
                            *FLAGS, "--epochs", "2"])
    assert_one_line_error(code, err, str(out / "beta-1"), "symbolic link")
    assert tree_state(plain) == before
    assert sorted(p.name for p in out.iterdir()) == ["beta-1"]  # refused before anything trained


@pytest.mark.parametrize("kind", ["mlp", "mlp-csv", "em"])
def test_resume_after_the_first_checkpoint_was_killed_starts_again(tmp_path, kind):
    argv = {"mlp": ["train", *FLAGS], "mlp-csv": ["train", *FLAGS, "--log", "csv"], "em": ["train", *EM]}[kind]
    run = tmp_path / "run"
    code, _, err = run_cli([*argv, "--out", str(run)])
    assert code == 0, err
    fresh = {name: tensors(run / name) for name in ("model.safetensors", "checkpoint.safetensors")}
    temp = _kill_first_checkpoint(run)
    code, out, err = run_cli([*argv, "--out", str(run), "--resume"])
    assert code == 0, err
    assert len(err.strip().splitlines()) == 1 and "starting" in err and "checkpoint" in err, err
    assert not temp.exists() and sorted(run.glob(".*.tmp")) == []
    for name, before in fresh.items():  # the same seed: the same first epoch, bit for bit
        assert_same_tensors(tensors(run / name), before, name)
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == list(range(1, len(rows) + 1))


def test_a_run_with_a_model_and_no_checkpoint_and_no_temp_file_is_still_refused(plain):
    (plain / "checkpoint.safetensors").unlink()
    code, _, err = run_cli(["train", *FLAGS, "--out", str(plain), "--resume"])
    assert_one_line_error(code, err, "no checkpoint")


# -- 9. compare and report: the error is the only line; compare --out ---------------------------------------


def test_compare_error_after_an_evaluation_is_the_only_line(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs["plain"], other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "dataset": "mnist"}))  # not there, no network
    out = tmp_path / "c.html"
    code, stdout, err = run_cli(["compare", str(runs["plain"]), str(other), "--k", "2", "--out", str(out)])
    assert_one_line_error(code, err, "mnist")
    assert stdout == "" and not out.exists()


def test_compare_quiet_says_nothing_but_the_page(runs, tmp_path):
    out = tmp_path / "c.html"
    code, stdout, err = run_cli(["compare", str(runs["plain"]), str(runs["conditional"]), "--k", "2",
                                 "--n-samples", "4", "--out", str(out), "--quiet"])
    assert code == 0 and err == "", err
    assert stdout.strip() == str(out) and out.exists()


def test_report_error_after_the_evaluation_is_the_only_line(plain, tmp_path, monkeypatch):
    out = tmp_path / "pages" / "r.html"
    out.parent.mkdir()
    with disk_full(monkeypatch, out.parent):
        code, _, err = run_cli(["report", str(plain), *EVAL, "--out", str(out)])
    assert_one_line_error(code, err, "No space left on device")


def test_compare_out_keeps_the_rule_of_report_and_sample(runs, tmp_path):
    foreign = tmp_path / "passwd.html"
    foreign.write_text("root:x:0:0:root:/root:/bin/bash\n")
    victim = tmp_path / "victim.html"
    victim.write_text("not vaekit's")
    link = tmp_path / "link.html"
    link.symlink_to(victim)
    before = tree_state(tmp_path)
    for out, needle in ((foreign, "not a comparison page"), (link, "symbolic link"),
                        (runs["plain"] / "config.json", "--out")):
        code, _, err = run_cli(["compare", str(runs["plain"]), str(runs["conditional"]), "--k", "2",
                                "--out", str(out)])
        assert_one_line_error(code, err, needle)
    assert tree_state(tmp_path) == before


def test_no_command_writes_non_json_numbers(runs, tmp_path):
    """Every --json of the commands above prints strict JSON (NaN and infinities as null)."""
    for argv in (["evaluate", str(runs["autoencoder"]), *EVAL, "--json"],
                 ["bound", str(runs["plain"]), "--n", "2", "--k", "2", "--grid", "5", "--json"],
                 ["compare", str(runs["plain"]), str(runs["autoencoder"]), "--k", "2", "--n-samples", "4",
                  "--out", str(tmp_path / "c.html"), "--json"]):
        code, out, err = run_cli(argv)
        assert code == 0, err
        strict_json(out)
    assert os.path.exists(tmp_path / "c.html")


# -- 10. messages of the objectives name Python arguments in a Python call ----------------------------------------


_NAMED = [  # (the model's posterior, fit's settings, the command line's flags, the setting in Python, on the CLI)
    ("bernoulli", {"estimator": "vimco"}, ["--binarize", "threshold", "--posterior", "bernoulli", "--estimator",
                                           "vimco"], "objective='iwae' and k=2", "--objective iwae and --k 2"),
    ("gaussian", {"objective": "beta-tcvae", "encoder_noise": 0.1}, ["--objective", "beta-tcvae",
                                                                      "--encoder-noise", "0.1"],
     "encoder_noise=", "--encoder-noise"),
    ({"name": "delta", "latent_penalty": 0.5}, {"objective": "wae-mmd"},
     ["--posterior", "delta", "--latent-penalty", "0.5", "--objective", "wae-mmd"], "latent_penalty=",
     "--latent-penalty"),
]


@pytest.mark.parametrize("posterior, settings, flags, python, cli", _NAMED, ids=["vimco", "beta-tcvae", "wae-mmd"])
def test_objective_refusals_name_python_arguments_in_fit_and_flags_on_the_command_line(
        tmp_path, posterior, settings, flags, python, cli):
    """vimco's 'give --objective iwae --k K' was raised from vaekit.fit too, and so were beta-TCVAE's refusal of
    --encoder-noise (at the first step, after config.json was written) and WAE-MMD's of --latent-penalty."""
    import torch

    import vaekit
    from vaekit.errors import ConfigError
    from vaekit.models import VAE

    model = VAE(latent=2, shape=(1, 8, 8), hidden=[8], posterior=posterior)
    x = (torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    with pytest.raises(ConfigError) as info:
        vaekit.fit(model, x, out=tmp_path / "py", epochs=1, progress=False, **settings)
    assert python in str(info.value) and "--" not in str(info.value), info.value
    assert not (tmp_path / "py" / "config.json").exists()  # refused before the run: no --overwrite needed after
    code, _, err = run_cli(["train", *FLAGS, *flags, "--out", str(tmp_path / "cli")])
    assert_one_line_error(code, err, cli)


# -- 11. gradients --baseline-steps 999999999999 ------------------------------------------------------------------


def test_an_endless_baseline_fit_is_refused_from_its_first_second(tmp_path):
    """NVIL's baseline fit ran its 10^12 Adam steps past 200 s without a word; its progress is projected after a
    second of work and refused past $VAEKIT_MAX_HOURS (6 h by default) in one line naming the flag."""
    run = _train(tmp_path / "bern", "--binarize", "threshold", "--posterior", "bernoulli")
    with bounded(60):
        code, out, err = run_cli(["gradients", str(run), "--n", "3", "--trials", "3", "--samples", "2",
                                  "--estimators", "nvil", "--baseline-steps", "999999999999"])
    assert_one_line_error(code, err, "NVIL's baseline fit would take", "lower --baseline-steps")
    assert out == ""


# -- 12. --exact-limit on a large discrete latent space says how long -----------------------------------------------


@pytest.fixture(scope="module")
def bernoulli_14(tmp_path_factory):
    """A run with 14 binary units: 16,384 codes, summed in 4 chunks of 4,096."""
    return _train(tmp_path_factory.mktemp("b14") / "run", "--binarize", "threshold", "--posterior", "bernoulli",
                  "--latent", "14")


def test_the_exact_sum_of_evaluate_says_how_long_and_is_refused_past_the_limit(bernoulli_14, monkeypatch):
    """--exact-limit 16777216 on a 24-bit model ran past 400 s with no estimate and no progress: the sum over every
    code is a phase of evaluate's bar, projected from its first chunks (said, and refused naming --exact-limit)."""
    from vaekit import progress

    monkeypatch.setattr(progress, "PILOT_SECONDS", 0.0)
    monkeypatch.setattr(progress, "ANNOUNCE_SECONDS", 0.0)
    argv = ["evaluate", str(bernoulli_14), "--k", "1", "--limit", "5", "--exact-limit", "16384", "--surgery-samples",
            "0"]  # the K draws in one batch: only the exact sum has chunks to project from
    code, _, err = run_cli([*argv, "--progress"])
    assert code == 0, err
    assert "the exact sum over every code: about" in err and "of 16,384 codes done" in err, err
    monkeypatch.setenv("VAEKIT_MAX_HOURS", "1e-9")
    code, out, err = run_cli(argv)
    assert_one_line_error(code, err, "the exact sum over every code would take", "lower --exact-limit")
    assert out == ""


# -- 13. gradients --plot on a discrete run and in the worked example ------------------------------------------------


@pytest.mark.parametrize("mode", ["discrete run", "worked example"])
def test_gradients_plot_never_replaces_a_foreign_file_nor_writes_through_a_link(bernoulli_14, tmp_path, mode):
    """--plot overwrote a file that was no PNG and followed a link named as the plot (the rule of sample --out)."""
    argv = (["gradients", str(bernoulli_14), "--estimators", "score", "--samples", "2", "--trials", "3", "--n", "3"]
            if mode == "discrete run" else ["gradients", "--samples", "2", "--trials", "3"])
    notes = tmp_path / "notes.png"
    notes.write_text("my notes")
    (tmp_path / "link.png").symlink_to(tmp_path / "elsewhere.png")
    before = tree_state(tmp_path)
    for target, needle in ((notes, "not a PNG picture written by vaekit"), (tmp_path / "link.png", "symbolic link")):
        code, out, err = run_cli([*argv, "--plot", str(target)])
        assert_one_line_error(code, err, "--plot", needle)
        assert out == ""
    assert tree_state(tmp_path) == before
