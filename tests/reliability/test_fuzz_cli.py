"""Fuzzing the command line: random argv lists for every sub-command make ``vaekit.cli.main`` return or
exit with 0 or 2 - never an unexpected exception or a traceback. Status 2 comes with one error line;
status 0 with ``--json`` ends stdout with one JSON object. No call may leave the process changed (autograd
switched off, for one: later in-process calls would break).

Expensive work is kept out by construction: the value pool holds only small numbers (and huge ones that
must be refused), ``train`` starts from a tiny config the random flags may override, and the commands that
take a run directory get only missing or broken ones (their work on a real run is covered elsewhere).
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reliability_helpers import assert_one_line_error, run_cli

from vaekit.cli import COMMANDS
from vaekit.commands.train import FLAGS as TRAIN_FLAGS

SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

NUMBERS = ["0", "1", "2", "3", "-1", "0.5", "1e-3", "nan", "inf", "-inf", "1e309", "-0", "0x10", "1_0",
           "99999999999999999999", "4294967296"]
JUNK = ["", " ", ",", "abc", "1,2", "0.5,0.5", "0.2,0.8", "1,,2", "0,0", "☃", "-", "--", "--json", "--help",
        "--nope", "-x"]
WORDS = ["mlp", "conv", "vamp", "standard", "iwae", "elbo", "cosine", "plateau", "none", "bf16", "tf32", "fp32",
         "cpu", "cuda", "auto", "dynamic", "threshold", "static", "gaussian", "bernoulli", "continuous-bernoulli",
         "tanh", "gelu", "train", "valid", "test"]
DATASETS = ["digits", "mnist", "binarized-mnist", "fashion-mnist", "kmnist", "shapes3d", "nope",
            "npy:/nonexistent.npy", "npz:", "images:", "digits:"]

COMMAND_FLAGS = {
    "info": ["--p", "--q", "--base", "--normalize", "--json"],
    "gradients": ["--theta", "--samples", "--trials", "--seed", "--plot", "--json", "--estimators", "--k", "--n"],
    "data": ["--dataset", "--data-dir", "--binarize", "--valid-size", "--test-size", "--image-size", "--seed",
             "--limit", "--download", "--json"],
    "train": [*TRAIN_FLAGS, "--m", "--ciwae-beta", "--config", "--resume", "--quiet", "--json"],
    "evaluate": ["--split", "--k", "--batch-size", "--seed", "--data-dir", "--dataset", "--limit", "--device",
                 "--disentanglement", "--sampler", "--refit", "--sampler-k", "--ais", "--ais-chains", "--ais-leapfrog",
                 "--gaps", "--gaps-steps", "--json"],
    "sample": ["-n", "--out", "--seed", "--sampler", "--refit", "--data-dir"],
    "report": ["--k", "--split", "--limit", "--seed", "--data-dir", "--dataset", "--out"],
    "bound": ["--n", "--k", "--grid", "--seed", "--data-dir", "--dataset", "--bdmc", "--bdmc-chains", "--bdmc-leapfrog",
              "--json"],
    "compare": ["--out", "--k", "--n-samples", "--seed", "--data-dir", "--dataset", "--device", "--json"],
    "sweep": ["--beta", "--grid", "--seeds", "--out", "--config", "--k", "--n-samples", "--eval-seed", "--quiet",
              "--json"],
}
TAKES_RUN = ("evaluate", "sample", "report", "bound")
RUN_NUMBERS = itertools.count()  # a fresh --out for every train example
#: train starts from this tiny, fast config (the random flags after it may override any of it)
TRAIN_PREFIX = ["--epochs", "1", "--hidden", "8", "--latent", "2", "--threads", "1", "--device", "cpu", "--quiet"]


def test_every_command_is_fuzzed():
    assert set(COMMAND_FLAGS) == set(COMMANDS)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Paths the random argv may name: missing, empty, garbage, a broken run, config files."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    (root / "empty").mkdir()
    (root / "garbage.bin").write_bytes(np.random.default_rng(0).bytes(64))
    broken = root / "broken-run"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"\x00" * 16)
    (root / "tiny.toml").write_text('dataset = "digits"\nepochs = 1\nhidden = [4]\nlatent = 2\n')
    (root / "bad.yaml").write_text("latent: [\n")
    (root / "null.yaml").write_text("latent: ~\n")
    return root


def paths(files) -> list[str]:
    return [str(files / n) for n in ("missing", "empty", "garbage.bin", "broken-run", "tiny.toml", "bad.yaml",
                                     "null.yaml")] + [str(files / "out.png"), "/nonexistent/x.png", "x.txt",
                                                      f"npy:{files / 'garbage.bin'}", f"images:{files / 'empty'}"]


#: A valid start that the random tokens after it modify (so that more of the examples get past parsing).
VALID_START = {"info": ["--p", "0.5,0.5", "--q", "0.2,0.8"], "gradients": ["--samples", "1,3", "--trials", "5"],
               "data": ["--dataset", "digits"]}


#: Valid values of some flags (the random values are mostly invalid; these let the examples go deeper).
GOOD = {"--base": ["2", "10", "0.5"], "--p": ["0.1,0.9", "1,0", "0.25,0.25,0.5"], "--q": ["0.5,0.5", "0,1"],
        "--theta": ["0", "-2.5", "1e3"], "--samples": ["1", "2,7", "1,1"], "--trials": ["2", "3"], "--seed": ["7", "0"],
        "--binarize": ["dynamic", "threshold", "none"], "--valid-size": ["10", "0"], "--test-size": ["5"],
        "--dataset": ["digits"], "--model": ["conv", "mlp"], "--prior": ["vamp"], "--vamp-components": ["3"],
        "--objective": ["iwae", "beta-tcvae", "dip-vae-ii", "annealed-capacity", "miwae", "ciwae", "piwae",
                        "wae-mmd", "infovae-mmd"], "--mmd-kernel": ["rbf", "imq"], "--mmd-weight": ["0", "100"],
        "--mmd-alpha": ["0", "1"], "--mmd-scales": ["1", "0.5,2"], "--posterior": ["delta"],
        "--family": ["factorvae", "gmvae", "vqvae", "m2"], "--m": ["2", "1"], "--ciwae-beta": ["0", "0.5", "1"],
        "--codes": ["2", "4"], "--code-dim": ["2"], "--vq-ema": ["true"], "--prior-of": ["missing"],
        "--labels": ["20", "0"], "--m2-alpha": ["0", "5"],
        "--discriminator-hidden": ["4"], "--discriminator-layers": ["1"], "--k": ["2"], "--beta": ["0", "2.5"],
        "--warmup": ["2"], "--batch-size": ["500"],
        "--lr": ["0.01"], "--lr-schedule": ["cosine", "plateau"], "--weight-decay": ["0.1"], "--clip-grad": ["1"],
        "--patience": ["0"], "--eval-batch-size": ["7"], "--precision": ["bf16"], "--likelihood": ["gaussian",
        "continuous-bernoulli", "bernoulli"], "--activation": ["tanh", "elu"], "--hidden": ["4,4"],
        "--latent": ["1", "3"], "--grid": ["latent=1,2", "beta=0;1", "objective=elbo,iwae", "nope=1,2"],
        "--seeds": ["0,1", "3"], "--estimator": ["pathwise", "stl", "dreg", "score"],
        "--estimators": ["pathwise,stl,dreg", "score,nvil", "dreg"], "--sampler": ["gmm", "flow", "two-stage", "prior"],
        "--sampler-k": ["1", "4"], "--ais": ["2", "3"], "--ais-chains": ["2"], "--ais-leapfrog": ["1", "2"],
        "--gaps-steps": ["2"], "--bdmc": ["2", "2,3"], "--bdmc-chains": ["2"], "--bdmc-leapfrog": ["1"]}


@st.composite
def argvs(draw, command: str, files):
    values = st.sampled_from(NUMBERS + JUNK + WORDS + DATASETS + paths(files)) | st.text(max_size=6)
    random_tokens = st.lists(st.sampled_from(COMMAND_FLAGS[command]) | values, max_size=8)
    if draw(st.booleans()):  # a valid start, then one or two flags with random values
        tokens = list(VALID_START.get(command, []))
        for _ in range(draw(st.integers(1, 2))):
            flag = draw(st.sampled_from(COMMAND_FLAGS[command]))
            takes_value = not flag.startswith("--json") and flag not in ("--normalize", "--download", "--resume",
                                                                          "--quiet", "--disentanglement", "--refit")
            good = st.sampled_from(GOOD[flag]) if flag in GOOD else values
            value = draw(st.integers(0, 2).flatmap(lambda i, good=good: good if i else values))
            tokens += [flag, value] if takes_value else [flag]
    else:
        tokens = draw(random_tokens)
    if command in TAKES_RUN:
        run = draw(st.sampled_from([str(files / "missing"), str(files / "empty"), str(files / "garbage.bin"),
                                    str(files / "broken-run")]))
        tokens.insert(draw(st.integers(0, len(tokens))), run)
    if command == "train":
        tokens = [*TRAIN_PREFIX, *tokens, "--out", str(files / "runs" / f"r{next(RUN_NUMBERS)}")]
    return [command, *tokens]


def check(argv: list[str]) -> None:
    code, out, err = run_cli(argv)
    event(f"exit status {code}")
    assert torch.is_grad_enabled(), f"{argv} left autograd switched off"
    assert "Traceback" not in err and "Traceback" not in out, argv
    assert code in (0, 2), f"{argv}: exit status {code}\n{err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert lines and "error" in lines[-1], f"{argv}: status 2 without an error line: {err!r}"
        assert_one_line_error(code, err, status_lines=True)
    elif "--json" in argv and "--help" not in argv and out.strip():
        assert isinstance(json.loads(out.strip().splitlines()[-1]), dict), f"{argv}: last line is not JSON"


@pytest.mark.parametrize("command", [c for c in COMMAND_FLAGS if c != "train"])
def test_random_argv_never_gives_a_traceback(command, files):
    @settings(SETTINGS, max_examples=120)
    @given(argvs(command, files))
    def fuzz(argv):
        check(argv)

    fuzz()


def test_random_train_argv_never_gives_a_traceback(files):
    @settings(SETTINGS, max_examples=100)
    @given(argvs("train", files))
    def fuzz(argv):
        check(argv)

    fuzz()


def test_a_model_too_large_for_memory_is_a_one_line_error(tmp_path, monkeypatch):
    """--latent 2**31 - 1 asks for a 137 GB weight matrix. Where the kernel refuses allocations beyond RAM +
    swap (vm.overcommit_memory 0 or 2) this is real; elsewhere allocating could succeed lazily and bring the
    OOM killer, so the allocator's failure is simulated."""
    argv = ["train", "--latent", "2147483647", "--hidden", "8", "--epochs", "1", "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "r")]
    try:
        real = open("/proc/sys/vm/overcommit_memory").read().strip() in ("0", "2")
    except OSError:
        real = False
    if not real:
        import vaekit.train

        def no_memory(*args, **kwargs):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 137438953408 bytes. Error code 12 (Cannot allocate memory)")

        monkeypatch.setattr(vaekit.train, "VAE", no_memory)
    code, _, err = run_cli(argv)
    assert_one_line_error(code, err, "out of memory", "--latent")


@pytest.mark.parametrize("argv, needle", [
    (["train", "--latent", "99999999999999999999"], "latent must be an integer from 1 to 2147483647"),
    (["train", "--k", "99999999999999999999"], "k must be an integer from 1 to 2147483647"),
    (["train", "--objective", "miwae", "--m", "99999999999999999999"], "m must be an integer from 1 to 2147483647"),
    (["train", "--objective", "piwae", "--m", "100000", "--k", "100000"], "draws per example (objective piwae"),
    (["train", "--seed", "99999999999999999999"], "expected a seed from 0 to 4294967295"),
    (["train", "--threads", "100000"], "threads must be an integer from 1 to 1024"),
    (["train", "--hidden", "8,99999999999999999999"], "hidden must be a non-empty list"),
    (["train", "--config", "NULL"], "latent cannot be null"),
    (["gradients", "--trials", "99999999999999999999"], "--trials must be at most"),
    (["gradients", "--theta", "1e308"], "--theta must be between"),
    (["gradients", "--seed", "99999999999999999999"], "expected a seed"),
    (["sample", "RUN", "--seed", "99999999999999999999"], "expected a seed"),
    (["data", "--dataset", "digits", "--seed", "99999999999999999999"], "expected a seed"),
    (["info", "--p", "1e308,1e308", "--q", "0.5,0.5"], "does not sum to 1"),
])
def test_absurd_sizes_and_seeds_are_one_line_errors(files, tmp_path, argv, needle):
    argv = [str(files / "null.yaml") if a == "NULL" else str(files / "missing") if a == "RUN" else a for a in argv]
    if argv[0] == "train":
        argv += ["--device", "cpu", "--quiet", "--out", str(tmp_path / "r")]
    code, _, err = run_cli(argv)
    assert_one_line_error(code, err, needle)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli-run") / "run"
    code, _, err = run_cli(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "8", "--latent", "2",
                            "--device", "cpu", "--quiet", "--out", str(run)])
    assert code == 0, err
    return run


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "RUN", "--k", "2", "--limit", "5", "--json"], None),
    (["bound", "RUN", "--n", "2", "--k", "2", "--grid", "10", "--json"], None),
    (["sample", "RUN", "-n", "4", "--out", "OUT/s.png"], None),
    (["report", "RUN", "--k", "2", "--limit", "5", "--out", "OUT/r.html"], None),
    (["evaluate", "RUN", "--k", "2", "--dataset", "npz:/nonexistent.npz"], "/nonexistent.npz"),
    (["evaluate", "RUN", "--k", "2", "--device", "cuda" if not torch.cuda.is_available() else "tpu"], "device"),
    (["evaluate", "RUN", "--limit", "0"], "positive integer"),
    (["sample", "RUN", "-n", "5000"], "at most 4096"),
    (["sample", "RUN", "--out", "OUT/s.txt"], ".png"),
    (["bound", "RUN", "--grid", "99999999999999999999", "--k", "2", "--n", "1"], "grid points per axis"),
    (["bound", "RUN", "--k", "99999999999999999999", "--n", "1", "--grid", "5"], "at most 10,000,000 samples"),
    (["evaluate", "RUN", "--k", "99999999999999999999", "--limit", "2"], "at most 10,000,000 samples"),
    (["report", "RUN", "--k", "99999999999999999999", "--limit", "2"], "at most 10,000,000 samples"),
])
def test_commands_on_a_real_run_succeed_or_fail_in_one_line(tiny_run, tmp_path, argv, needle):
    argv = [str(tiny_run) if a == "RUN" else a.replace("OUT", str(tmp_path)) for a in argv]
    code, out, err = run_cli(argv)
    assert torch.is_grad_enabled()
    if needle is None:
        assert code == 0, err
        if "--json" in argv:
            assert isinstance(json.loads(out.strip().splitlines()[-1]), dict)
    else:
        assert_one_line_error(code, err, needle, status_lines=True)
