"""The matrix (issue 32): every command on every kind of run.

The kinds of run come from the registries: each model family with each of its fitters and each kind of posterior
(latent type) it accepts, then each prior, likelihood and objective that makes a kind of run not yet among those
(components alike in the class flags of :data:`FLAGS` make the same kind: the two flows, the importance-weighted
bounds), and the two structural switches (two levels, a conditional model), each on the plain VAE. A family or
component whose defaults are large gives a tiny example of itself (``example_settings``). The commands come from
the command line's parser: each command that takes a run folder, the resume of ``vaekit train`` and each command
that takes train flags (``vaekit sweep``). A tiny run of each kind is trained once (seconds), in this process,
and every command runs on it. Each cell either works (exit status 0; with ``--json`` where the command has it,
its output strict JSON: no NaN or Infinity) or refuses in one line on stderr with exit status 2, no traceback and
no usage error, naming why the command does not apply to that kind of run. The plain VAE's row must work in every
cell, so that a refusal can never stand in for a broken command. A new family, component, objective or command
joins without editing this file.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
from pathlib import Path

import pytest
from reliability_helpers import run_cli

pytestmark = pytest.mark.usefixtures("single_thread")

#: Tiny settings for every kind (unless its family implies others): 8 x 8 digits, 2 latent units, 8 hidden units,
#: one epoch of small batches; what a kind names itself (its family's defaults) wins.
TINY = {"dataset": "digits", "latent": 2, "hidden": [8], "conv_channels": [4, 8], "epochs": 1, "batch_size": 256,
        "eval_batch_size": 512, "device": "cpu", "threads": 1, "seed": 0}
#: The structural switches that are settings, not registered components: one kind each, on the plain VAE.
SWITCHES = {"levels-2": {"levels": 2}, "conditional": {"conditional": True}}
#: The plain VAE, whose every cell must work.
BASE = "vae-gaussian"
#: Cheap values of the flags a command may have, applied where its parser has the flag.
CHEAP = {"--k": "2", "--limit": "10", "--n": "2", "-n": "4", "--trials": "3", "--samples": "1,2", "--n-samples": "4",
         "--grid": "20", "--baseline-steps": "2", "--seeds": "0,1"}
#: Flags without a value, given where the parser has them.
SWITCH_FLAGS = ("--json", "--quiet")


# -- the kinds, from the registries ----------------------------------------------------------------------------


@functools.cache
def _data() -> tuple[bool, int | None, int, tuple[int, ...]]:
    """Whether the tiny data set is binary, its grey levels, its classes and its shape."""
    from vaekit.data import load_dataset

    ds = load_dataset(TINY["dataset"], splits=("train",))
    return bool(ds.binary), getattr(ds, "levels", None), len(set(ds.train_labels.tolist())), tuple(ds.shape)


def _fit_data(settings: dict) -> dict:
    """``settings`` with what the data need for the chosen likelihood: binarized pixels for a likelihood of binary
    pixels, its levels set to the data's grey levels for a likelihood of grey levels."""
    from vaekit.components import LIKELIHOODS
    from vaekit.training.build import likelihood_levels

    binary, levels, _, _ = _data()
    name = settings.get("likelihood")
    if name is None:
        return settings
    entry = LIKELIHOODS.entry(name)
    if likelihood_levels({"name": name}) == 2 and not binary:
        return {**settings, "binarize": "threshold"}
    if "levels" in entry.fields() and levels is not None:
        return {**settings, entry.flat_name("levels"): levels}
    return settings


def _settings(family: str, extra: dict) -> dict:
    from vaekit.config import registries

    reg = registries()
    cls = reg["family"].entry(family).cls
    implied = {"family": family, **extra}
    cls.defaults(implied)  # what the family sets itself keeps its value
    tiny = {k: v for k, v in TINY.items() if k not in implied}
    examples = [reg[kind].entry(name).cls for kind, name in extra.items() if kind in reg and name in reg[kind]]
    for component in examples:  # a component whose defaults are large names a tiny example of itself
        tiny.update(getattr(component, "example_settings", dict)())
    return _fit_data({**tiny, **cls.example_settings(), "family": family, **extra})


def _default_likelihood() -> str:
    """The likelihood a run of the tiny data gets when it names none (vaekit train's default)."""
    return "bernoulli" if _data()[0] else "gaussian"


def reg_family(name: str) -> type:
    from vaekit.config import registries

    return registries()["family"].entry(name).cls


def _buildable(settings: dict):
    """The TrainConfig of ``settings`` if they make a model of the tiny data (its objective accepting it), else None."""
    from vaekit.config import from_dict
    from vaekit.errors import VaekitError

    try:
        cfg = from_dict(settings)
        if cfg.fit == "vae":
            from vaekit.training.build import model_for, objective_for

            binary, levels, classes, shape = _data()
            labelled = cfg.conditional or getattr(reg_family(cfg.family), "needs_labels", False)
            binary = binary or cfg.binarize not in (None, "none")
            model = model_for(cfg, shape, binary, classes if labelled else 0, levels)
            objective_for(cfg, model)
    except VaekitError:
        return None
    return cfg


#: The class flags that say what kind of run a component makes: posteriors alike in all of them (the two flows) make
#: the same kind of run, and so do objectives (the importance-weighted bounds; those evaluated by a density fitted to
#: the codes), and likelihoods alike in what they are a probability of (binary pixels, grey levels, or a density)
#: and in whether their mean is an estimate (an autoregressive decoder); one of them stands for the others.
FLAGS = {"posterior": ("discrete", "autoencoder", "density_anywhere", "default_prior"),
         "objective": ("fits_code_density", "importance_weighted", "auxiliary"),
         "likelihood": ("mean_is_estimate",)}


def _signature(registry, name: str) -> tuple:
    """What kind of run the component ``name`` of ``registry`` makes (:data:`FLAGS`; a prior: its own name)."""
    from vaekit.training.build import likelihood_levels

    cls = registry.entry(name).cls
    if registry.kind not in FLAGS:
        return (name,)
    flags = tuple(getattr(cls, flag, None) is True or getattr(cls, flag, None) for flag in FLAGS[registry.kind])
    flags = tuple(f if isinstance(f, (bool, str, tuple)) else False for f in flags)  # a property: not a class fact
    if registry.kind == "likelihood":
        levels = likelihood_levels({"name": name})
        flags += ("density" if levels is None else "binary" if levels == 2 else "grey",)
    return flags


def _alike(registry, name: str, seen: set) -> bool:
    """Whether ``name`` makes the same kind of run as one of ``seen`` (:func:`_signature`)."""
    return _signature(registry, name) in {_signature(registry, other) for other in seen}


@functools.cache
def kinds() -> dict[str, dict]:
    """Kind id -> the flat settings of its tiny run."""
    from vaekit.config import registries

    reg = registries()
    out: dict[str, dict] = {}
    covered: dict[str, set] = {"prior": set(), "likelihood": set(), "objective": set()}
    for family in reg["family"].entries():
        for fit in family.cls.fitters:
            taken: set = set()
            for posterior in reg["posterior"].names():
                if _alike(reg["posterior"], posterior, taken):
                    continue
                cfg = _buildable(settings := _settings(family.name, {"fit": fit, "posterior": posterior}))
                if cfg is None:
                    continue
                taken.add(cfg.posterior)
                name = "-".join([family.name, *([fit] if len(family.cls.fitters) > 1 else []), cfg.posterior])
                out.setdefault(name, settings)
                for kind in covered:
                    covered[kind].add(cfg.component(kind, _default_likelihood())["name"])
    for kind, seen in covered.items():
        for name in reg[kind].names():
            if not _alike(reg[kind], name, seen) and _buildable(settings := _settings("vae", {kind: name})):
                out[f"{BASE}+{kind}-{name}"] = settings
                seen.add(name)
    for name, switch in SWITCHES.items():
        if _buildable(settings := _settings("vae", switch)) is not None:
            out[f"{BASE}+{name}"] = settings
    return out


# -- the commands, from the parser -----------------------------------------------------------------------------


@functools.cache
def _parsers() -> dict[str, argparse.ArgumentParser]:
    from vaekit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _positionals(parser: argparse.ArgumentParser) -> list[str]:
    return [a.dest for a in parser._actions if not a.option_strings]


@functools.cache
def commands() -> tuple[str, ...]:
    """Each command that takes a run folder (``run``, ``runs``), ``resume`` (of ``vaekit train``) and each command
    that takes train flags (``train_flags``)."""
    out = []
    for name, parser in _parsers().items():
        if {"run", "runs", "train_flags"} & set(_positionals(parser)):
            out.append(name)
    return (*out, "resume")


def _options(command: str) -> dict[str, argparse.Action]:
    return {flag: a for a in _parsers()[command]._actions for flag in a.option_strings}


def _flags(command: str, tmp: Path) -> list[str]:
    """The cheap flags of ``command`` that its parser has (one value each), and an output under ``tmp`` where it
    takes one: a file of the type its help names, else a folder."""
    options = _options(command)
    argv = [x for flag, value in CHEAP.items()
            if flag in options and not isinstance(options[flag], argparse._AppendAction) for x in (flag, value)]
    argv += [flag for flag in SWITCH_FLAGS if flag in options]
    if "--out" in options:
        text = (options["--out"].help or "").lower()
        suffix = next((f".{ext}" for ext in ("png", "html", "json") if ext in text), "")
        argv += ["--out", str(tmp / f"{command}-out{suffix}")]
    return argv


def _without(argv: list[str], flag: str) -> list[str]:
    """``argv`` less ``flag`` and its value, if it takes one."""
    i = argv.index(flag)
    return argv[:i] + argv[i + 1 + (flag in CHEAP):]


def _refused_flag(argv: list[str], err: str) -> str | None:
    """The first cheap flag of ``argv`` that a one-line refusal names (``--samples is for a discrete q(z|x)``): the
    cell then runs again without it, the command's default in its place."""
    named = [(err.find(f"{flag} "), flag) for flag in CHEAP if flag in argv and f"{flag} " in err]
    return min(named)[1] if named and len(err.strip().splitlines()) == 1 else None


def _config_file(settings: dict, path: Path) -> Path:
    path.write_text(json.dumps(settings))
    return path


def _argv(command: str, run: Path, base: Path, settings: dict, tmp: Path) -> list[str]:
    if command == "resume":
        copy = tmp / "resumed"
        shutil.copytree(run, copy, symlinks=True)
        more = {"em_iterations": settings.get("em_iterations", 100) + 2} if settings.get("fit") == "em" else \
            {"epochs": settings["epochs"] + 1}
        return ["train", "--config", str(_config_file({**settings, **more}, tmp / "more.json")), "--out", str(copy),
                "--resume", "--quiet", "--json"]
    positionals = _positionals(_parsers()[command])
    if "train_flags" in positionals:
        return [command, *_flags(command, tmp), "--config", str(_config_file(settings, tmp / "kind.json"))]
    runs = [str(run), str(base)] if "runs" in positionals else [str(run)]
    return [command, *runs, *_flags(command, tmp)]


# -- the cells -------------------------------------------------------------------------------------------------


def _strict_json(text: str) -> object:
    """``text`` as strict JSON (RFC 8259: NaN, Infinity and -Infinity refused)."""
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON: {text[:500]}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Kind id -> its tiny run folder, trained on first use (once for the module)."""
    root = tmp_path_factory.mktemp("matrix")
    done: dict[str, Path] = {}

    def run_of(kind: str) -> Path:
        if kind not in done:
            out = root / kind
            code, _, err = run_cli(["train", "--config", str(_config_file(kinds()[kind], root / f"{kind}.json")),
                                    "--out", str(out), "--quiet"])
            assert code == 0, f"training the tiny {kind} run: exit status {code}: {err}"
            done[kind] = out
        return done[kind]

    return run_of


CELLS = [pytest.param(kind, command, id=f"{kind}:{command}") for kind in kinds() for command in commands()]


def _run_cell(argv: list[str]) -> tuple[list[str], int, str, str]:
    code, out, err = run_cli(argv)
    while code == 2 and (flag := _refused_flag(argv, err)) is not None:
        argv = _without(argv, flag)
        code, out, err = run_cli(argv)
    return argv, code, out, err


@pytest.mark.parametrize("kind, command", CELLS)
def test_cell(trained, tmp_path, kind, command):
    argv, code, out, err = _run_cell(_argv(command, trained(kind), trained(BASE), kinds()[kind], tmp_path))
    where = f"vaekit {' '.join(argv)}"
    assert "Traceback" not in err, f"{where}: {err}"
    if code == 0:
        if "--json" in argv:
            _strict_json(out)
        return
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, f"{where}: exit status {code}, stderr: {err}"
    assert "error:" in lines[0] and "--help" not in lines[0], f"{where}: not a refusal of the kind: {lines[0]}"
    assert kind != BASE, f"{where}: the plain VAE must work in every cell: {lines[0]}"


def test_the_matrix_is_generated_from_the_registries():
    """Every registered family is in a kind of run, and every registered component is in one or is like one that is
    (or makes no model of the tiny data); the commands are the parser's."""
    from vaekit.config import registries

    reg = registries()
    assert BASE in kinds() and {"evaluate", "sample", "sweep", "resume"} <= set(commands())
    named = {(key, value) for s in kinds().values() for key, value in s.items() if isinstance(value, str)}
    assert {family for family in reg["family"].names() if ("family", family) not in named} == set()
    for kind in FLAGS:
        seen = {value for key, value in named if key == kind} | ({_default_likelihood()} if kind == "likelihood"
                                                                 else {"gaussian"} if kind == "posterior"
                                                                 else {"elbo"})
        for name in reg[kind].names():
            assert _alike(reg[kind], name, seen) or _buildable(_settings("vae", {kind: name})) is None, (kind, name)
