"""Property-based tests of the training config: random dicts and random TOML / YAML / JSON text give either
a TrainConfig whose every value is in range, or a ConfigError saying what to fix; nothing else."""

from __future__ import annotations

import dataclasses
import json
import math
import string

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reliability_helpers import assert_one_line_error, run_cli

from vaekit.config import TrainConfig, from_dict, read_config_file, resolve
from vaekit.errors import ConfigError

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
#: Fixed seeds (derandomize): the same examples on every run, so CI is reproducible.
SETTINGS = settings(deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.001, 1e-3, 1.5, -0.0, 1e308]),
    st.text(max_size=12), st.sampled_from(["400", "500,500", "1,,2", "nan", "inf", "1e-3", "digits", "none",
                                           "mlp", "conv", "vamp", "elbo", "iwae", "cpu", "auto", "bf16", "cosine"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                           max_size=2), max_leaves=6)
keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from([f.replace("_", "-") for f in FIELDS]),
                 st.text(max_size=10), st.sampled_from(["latnet", "Hidden", "train", "__class__", ""]))
configs = st.dictionaries(keys, values, max_size=6)


def assert_valid(cfg: TrainConfig) -> None:
    """Every setting of an accepted config has its documented type and range (nothing silently odd)."""
    for name, choices in TrainConfig.CHOICES.items():
        assert getattr(cfg, name) in choices, name
    for name in (*TrainConfig.POSITIVE, *TrainConfig.NONNEGATIVE):
        v = getattr(cfg, name)
        low = 1 if name in TrainConfig.POSITIVE else 0
        assert v is None or (type(v) is int and low <= v <= TrainConfig.MAXIMUM.get(name, 2**31 - 1)), (name, v)
    for name in ("lr", "beta", "weight_decay", "clip_grad"):
        v = getattr(cfg, name)
        assert v is None or (type(v) in (int, float) and math.isfinite(v) and v >= 0), (name, v)
    assert cfg.lr > 0 and (cfg.clip_grad is None or cfg.clip_grad > 0)
    assert isinstance(cfg.hidden, list) and all(type(h) is int and h >= 1 for h in cfg.hidden)
    assert cfg.hidden or cfg.model == "mlp"  # no hidden layer: linear MLP networks (a conv net needs its dense layer)
    assert isinstance(cfg.dataset, str) and cfg.dataset
    assert cfg.data_dir is None or isinstance(cfg.data_dir, str)
    assert type(cfg.compile) is bool


@settings(SETTINGS, max_examples=600)
@given(configs)
@example({"hidden": "1,,2"})
@example({"latent": True})
@example({"seed": 2**40})
@example({"lr": float("nan")})
@example({"lr": "1e-3", "hidden": 400})
@example({"objective": {"name": "miwae", "m": 0}})
@example({"objective": "piwae", "m": True})
@example({"objective": {"name": "piwae", "m": 2**40}})
@example({"objective": {"name": "ciwae", "beta": float("nan")}})
@example({"objective": "ciwae", "ciwae_beta": 0.25, "k": 3})
@example({"objective": {"name": "infovae-mmd", "alpha": 2, "weight": 1e300}})
@example({"objective": "wae-mmd", "posterior": "delta", "mmd_scales": "1e308,nan", "mmd_kernel": "imq"})
def test_random_dicts_give_a_valid_config_or_a_config_error(values):
    try:
        cfg = from_dict(values)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert_valid(cfg)
    assert from_dict(cfg.to_dict()) == cfg  # what config.json stores reads back the same


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return '""'


def render(fmt: str, values: dict) -> str:
    if fmt == "toml":
        return "".join(f"{json.dumps(str(k))} = {toml_value(v)}\n" for k, v in values.items())
    if fmt == "yaml":
        return yaml.safe_dump(values, allow_unicode=True)
    return json.dumps(values)


@st.composite
def config_texts(draw):
    fmt = draw(st.sampled_from(["toml", "yaml", "json"]))
    text = render(fmt, draw(configs))
    for _ in range(draw(st.integers(0, 3))):  # damage it a little
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.text(alphabet=string.printable, max_size=3)) + text[i + draw(st.integers(0, 2)):]
    return fmt, text


@settings(SETTINGS, max_examples=300)
@given(config_texts() | st.tuples(st.sampled_from(["toml", "yaml", "yml", "json", "txt"]), st.text(max_size=200)))
@example(("yaml", "a: &a [*a]"))
@example(("yaml", "!!python/object/apply:os.system ['true']"))
@example(("toml", "[train]\nlatent = 3\n"))
@example(("json", "[1, 2]"))
@example(("yaml", "[" * 2000))
def test_random_config_files_give_a_valid_config_or_a_config_error(tmp_path, text_and_fmt):
    fmt, text = text_and_fmt
    path = tmp_path / f"c.{fmt}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        cfg = resolve(read_config_file(path), {})
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert_valid(cfg)


def test_the_cli_reports_a_bad_config_file_in_one_line_saying_what_to_fix(tmp_path):
    cases = {
        'latnet = 3\n': "did you mean 'latent'",
        'latent = 0\n': "latent must be an integer >= 1",
        'seed = 99999999999\n': "seed must be an integer from 0 to 4294967295",
        'threads = 5000\n': "threads must be an integer from 1 to 1024",
        'hidden = [400, 0]\n': "hidden must be a non-empty list of integers >= 1",
        'lr = nan\n': "lr must be a finite number > 0",
        'lr = "fast"\n': "lr must be a finite number > 0",
        'latent = 3\n[extra]\nx = 1\n': "unknown setting 'extra'",
        'beta = -1\n': "beta must be a finite number >= 0",
        'model = "rnn"\n': "model must be one of mlp, conv",
        'compile = "yes"\n': "compile",
        'dataset = 5\n': "dataset",
        'epochs = 1.5\n': "epochs",
        '[train\n': "not valid TOML",
        'a = 1\na = 2\n': "not valid TOML",
    }
    for text, needle in cases.items():
        conf = tmp_path / "c.toml"
        conf.write_text(text)
        code, _, err = run_cli(["train", "--config", str(conf), "--out", str(tmp_path / "r")])
        assert_one_line_error(code, err, needle)
    assert not (tmp_path / "r").exists()
