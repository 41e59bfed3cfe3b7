"""Checkpoints, model descriptions, data and config files from other people are loaded without executing
code, and a damaged or crafted file is refused with one clear line, never used silently or with a
traceback.

The pickles here would create a marker file when unpickled (their ``__reduce__`` calls ``open(marker,
'w')``); every test asserts the marker does not exist afterwards.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import TINY, assert_one_line_error, copy_run, metadata, run_cli, tensors, train_tiny_run
from safetensors.torch import save as st_save

from vaekit.config import read_config_file
from vaekit.data import load_dataset
from vaekit.data.amat import _cache_candidates, read_amat, write_amat
from vaekit.errors import CheckpointError, ConfigError, DataError
from vaekit.io import checkpoint as ckpt
from vaekit.models import VAE


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory, "untrusted")


@pytest.fixture
def run(tmp_path, good_run):
    return copy_run(good_run, tmp_path)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "PWNED"
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(live)))  # the payload is live: unpickling it does create the file
    assert live.exists()
    yield path
    assert not path.exists(), "a pickle was executed"


def pickle_bytes(marker) -> bytes:
    return pickle.dumps({"state_dict": Payload(marker)})


def torch_save_bytes(marker) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": Payload(marker)}, buf)
    return buf.getvalue()


# -- pickles where a checkpoint is expected ------------------------------------------------------


@pytest.mark.parametrize("make", [pickle_bytes, torch_save_bytes], ids=["pickle", "torch.save"])
def test_pickled_model_is_refused_by_every_command(run, marker, make):
    (run / ckpt.MODEL_FILE).write_bytes(make(marker))
    with pytest.raises(CheckpointError, match="never unpickles"):
        VAE.load(run)
    for argv in (["evaluate", str(run), "--k", "2", "--limit", "5"], ["sample", str(run), "-n", "4"],
                 ["report", str(run), "--k", "2", "--limit", "5"], ["bound", str(run), "--n", "2", "--k", "2"]):
        code, _, err = run_cli(argv)
        assert_one_line_error(code, err, "not a valid safetensors file", status_lines=True)


@pytest.mark.parametrize("make", [pickle_bytes, torch_save_bytes], ids=["pickle", "torch.save"])
def test_pickled_training_checkpoint_is_refused(run, marker, make):
    (run / ckpt.STATE_FILE).write_bytes(make(marker))
    code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--out", str(run), "--resume"])
    assert_one_line_error(code, err, "not a valid safetensors file")


def test_pt_file_given_as_a_run_is_refused(tmp_path, marker):
    pt = tmp_path / "model.pt"
    pt.write_bytes(torch_save_bytes(marker))
    with pytest.raises(CheckpointError):
        VAE.load(pt)
    for argv in (["evaluate", str(pt)], ["sample", str(pt)], ["report", str(pt)]):
        code, _, err = run_cli(argv)
        assert_one_line_error(code, err, str(pt), status_lines=True)


def test_pickled_model_json_and_config_files_are_refused(run, tmp_path, marker):
    (run / ckpt.MODEL_CONFIG).write_bytes(pickle_bytes(marker))
    with pytest.raises(CheckpointError, match="model.json is corrupt"):
        VAE.load(run)
    evil_yaml = tmp_path / "evil.yaml"
    evil_yaml.write_text(f"latent: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_config_file(evil_yaml)
    code, _, err = run_cli(["train", "--config", str(evil_yaml), "--out", str(tmp_path / "r")])
    assert_one_line_error(code, err, "not valid YAML")


def test_pickles_in_data_files_are_refused(tmp_path, marker):
    images = np.empty(3, dtype=object)
    images[:] = [Payload(marker)] * 3
    np.save(tmp_path / "evil.npy", images, allow_pickle=True)
    np.savez(tmp_path / "evil.npz", train=images)
    for spec in (f"npy:{tmp_path / 'evil.npy'}", f"npz:{tmp_path / 'evil.npz'}"):
        with pytest.raises(DataError, match="object arrays are refused"):
            load_dataset(spec)
        code, _, err = run_cli(["data", "--dataset", spec])
        assert_one_line_error(code, err, "object arrays are refused")


def test_a_pickled_amat_parse_cache_is_ignored(tmp_path, marker):
    x = np.random.default_rng(0).integers(0, 2, size=(5, 16), dtype=np.uint8)
    src = tmp_path / "tiny.amat"
    write_amat(src, x)
    poisoned = np.empty(2, dtype=object)
    poisoned[:] = [Payload(marker)] * 2
    planted = _cache_candidates(src)[0]  # where the parse cache of src would be, in the user cache
    planted.parent.mkdir(parents=True, exist_ok=True)
    with open(planted, "wb") as fh:
        np.savez(fh, bits=poisoned, meta=poisoned)
    np.testing.assert_array_equal(read_amat(src, width=16), x)


# -- damaged or crafted safetensors files ----------------------------------------------------


def header_and_data(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return raw, n, json.loads(raw[8 : 8 + n])


def crafted_model_files(run):
    """name -> bytes of a model.safetensors that must be refused."""
    raw, n, header = header_and_data(run / ckpt.MODEL_FILE)
    good = tensors(run / ckpt.MODEL_FILE)
    renamed = {("x" + k): v for k, v in good.items()}
    reshaped = {k: (v.reshape(-1) if v.dim() > 1 else v) for k, v in good.items()}
    extra = {**good, "encoder.extra": torch.zeros(3)}
    nan = {k: v.clone() for k, v in good.items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    offsets = json.loads(json.dumps(header))
    first = next(k for k in offsets if k != "__metadata__")
    offsets[first]["data_offsets"][1] += 10**6
    hdr = json.dumps(offsets).encode()
    unchecked = raw.replace(b'"sha256"', b'"sha257"', 1)  # the checksum's own name damaged: no checksum left
    cases = {
        "empty": b"",
        "7 bytes": raw[:7],
        "header cut": raw[: 8 + n // 2],
        "data cut": raw[: 8 + n + (len(raw) - 8 - n) // 2],
        "last byte cut": raw[:-1],
        "huge header length": (2**63 - 1).to_bytes(8, "little") + raw[8:],
        "header length past the end": (len(raw)).to_bytes(8, "little") + raw[8:],
        "header not JSON": n.to_bytes(8, "little") + b"\xff" * n + raw[8 + n :],
        "header a JSON list": (2).to_bytes(8, "little") + b"[]",
        "offsets past the data": len(hdr).to_bytes(8, "little") + hdr + raw[8 + n :],
        "wrong tensor names": st_save(renamed),
        "wrong tensor shapes": st_save(reshaped),
        "an extra tensor": st_save(extra),
        "NaN weights": st_save(nan),
        "a flipped data byte": raw[:-5] + bytes([raw[-5] ^ 0x40]) + raw[-4:],
        "a damaged checksum name": unchecked,
        "a damaged checksum name and a flipped data byte": unchecked[:-5] + bytes([raw[-5] ^ 0x40]) + raw[-4:],
        "a JSON file": b'{"encoder.0.weight": [1, 2, 3]}',
        "an npz file": _npz_bytes(),
    }
    return cases


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(3))
    return buf.getvalue()


def test_damaged_or_crafted_model_files_are_refused(run):
    for name, data in crafted_model_files(run).items():
        (run / ckpt.MODEL_FILE).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            VAE.load(run)
        assert "\n" not in str(info.value), name
    code, _, err = run_cli(["sample", str(run), "-n", "4"])
    assert_one_line_error(code, err, "model.safetensors")


def test_a_directory_in_place_of_the_weights(run):
    (run / ckpt.MODEL_FILE).unlink()
    (run / ckpt.MODEL_FILE).mkdir()
    with pytest.raises(CheckpointError, match="not found"):
        VAE.load(run)


def legacy(spec: dict) -> dict:
    """The first-format (flat ``ModelConfig``) model.json of the same model as ``spec``."""
    return {"shape": spec["shape"], "latent": spec["latent"], "arch": "mlp", "hidden": spec["encoder"]["hidden"],
            "activation": spec["encoder"]["activation"], "likelihood": spec["likelihood"], "prior": spec["prior"],
            "conv_channels": [32, 64], "levels": 1, "min_logvar": spec["posterior"]["min_logvar"], "flow": None,
            "flow_steps": 2, "flow_hidden": 320, "flow_layers": 2, "flow_context": 32}


def top(**values):
    """An edit of model.json's top level (format vaekit-model-2)."""
    return lambda spec: {**spec, **values}


def part(key: str, value=None, **values):
    """An edit of one table of model.json (encoder, decoder, posterior): replaced by ``value``, or updated."""
    return lambda spec: {**spec, key: value if value is not None else {**spec[key], **values}}


def old(**values):
    """A first-format (flat) model.json of the run's model, with ``values`` in it."""
    return lambda spec: {**legacy(spec), **values}


#: case -> (the model.json, or an edit of the run's model.json; a word the refusal must contain: what is wrong)
MODEL_JSON = {
    "garbage": ("not json at all", "corrupt"),
    "a list": ("[1, 2, 3]", "list"),
    "null": ("null", "corrupt"),
    "not UTF-8": (b"\xff\xfe\x00", "utf-8"),
    "an unknown key": (top(evil=1), "evil"),
    "latent as text": (top(latent="two"), "latent"),
    "latent as a float": (top(latent=2.5), "latent"),
    "a huge latent": (top(latent=10**12), "latent"),
    "an overflowing latent": (top(latent=10**30), "latent"),
    "a huge hidden layer": (part("encoder", hidden=[10**11]), "encoder's hidden sizes"),
    "a huge hidden layer in the decoder": (part("decoder", hidden=[10**11]), "decoder's hidden sizes"),
    "shape of two numbers": (top(shape=[8, 8]), "shape"),
    "shape as text": (top(shape="abc"), "shape"),
    "negative hidden": (part("encoder", hidden=[-1]), "hidden sizes"),
    "hidden null": (part("encoder", hidden=None), "hidden sizes"),
    "unknown likelihood": (top(likelihood={"name": "poisson"}), "poisson"),
    "likelihood a number": (top(likelihood=5), "likelihood"),
    "prior without a name": (top(prior={}), "prior"),
    "negative VampPrior components": (top(prior={"name": "vamp", "components": -1}), "components"),
    "unknown activation": (part("encoder", activation="evil"), "activation 'evil'"),
    "min_logvar text": (part("posterior", min_logvar="low"), "min_logvar"),
    "min_logvar NaN": (part("posterior", min_logvar=float("nan")), "min_logvar"),
    "conv with negative channels": (part("encoder", {"name": "conv", "channels": [-1], "hidden": 16,
                                                     "activation": "relu"}), "channels"),
    "another format": (top(format="vaekit-model-99"), "vaekit-model-99"),
    "old format: a huge hidden layer": (old(hidden=[10**11]), "hidden sizes"),
    "old format: an unknown key": (old(evil=1), "evil"),
    "old format: min_logvar NaN": (old(min_logvar=float("nan")), "min_logvar"),
    "old format: conv with negative channels": (old(arch="conv", conv_channels=[-1]), "channels"),
}


def test_an_undamaged_old_format_model_json_still_loads(run):
    """The old-format cases below are refused for their damage, not for their format."""
    path = run / ckpt.MODEL_CONFIG
    want = VAE.load(run).state_dict()
    path.write_text(json.dumps(legacy(json.loads(path.read_text()))))
    got = VAE.load(run).state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("case", list(MODEL_JSON))
def test_damaged_or_crafted_model_json_is_refused_without_allocating(run, case):
    value, needle = MODEL_JSON[case]
    path = run / ckpt.MODEL_CONFIG
    if callable(value):
        value = json.dumps(value(json.loads(path.read_text())))
    path.write_bytes(value if isinstance(value, bytes) else value.encode())
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        VAE.load(run)
    assert time.perf_counter() - start < 10, "a crafted model.json made vaekit allocate or compute for long"
    assert "\n" not in str(info.value) and needle in str(info.value), str(info.value)


def training_state_cases(run):
    """name -> (tensors, metadata) of a checkpoint.safetensors that --resume must refuse."""
    good = tensors(run / ckpt.STATE_FILE)
    checksum = metadata(run / ckpt.STATE_FILE)["sha256"]
    meta = {k: v for k, v in metadata(run / ckpt.STATE_FILE).items() if k != "sha256"}
    progress = json.loads(meta["progress"])
    some_optim = next(k for k in good if k.startswith("optim.") and k.endswith("exp_avg"))
    model_key = next(k for k in good if k.startswith("model."))
    return {
        "progress a list": (good, {**meta, "progress": "[]"}),
        "progress not JSON": (good, {**meta, "progress": "{"}),
        "epoch as text": (good, {**meta, "progress": json.dumps({**progress, "epoch": "3"})}),
        "negative epoch": (good, {**meta, "progress": json.dumps({**progress, "epoch": -1})}),
        "progress without epoch": (good, {**meta, "progress": json.dumps({"best_epoch": 1})}),
        "optimizer a list": (good, {**meta, "optimizer": "[]"}),
        "param_groups a number": (good, {**meta, "optimizer": json.dumps({"param_groups": 5})}),
        "no optimizer record": (good, {k: v for k, v in meta.items() if k != "optimizer"}),
        "a model file, not a training state": (good, {**meta, "kind": "model"}),
        "another format": (good, {**meta, "format": "something-else-1"}),
        "optimizer moment of the wrong shape": ({**good, some_optim: torch.zeros(3)}, meta),
        "optimizer tensor with a bad name": ({**good, "optim.x": torch.zeros(1)}, meta),
        "optimizer state for a parameter that does not exist": ({**good, "optim.99.exp_avg": torch.zeros(1)}, meta),
        "RNG state of the wrong type": ({**good, "rng.torch": torch.zeros(3)}, meta),
        "no RNG state": ({k: v for k, v in good.items() if not k.startswith("rng.")}, meta),
        "model weight of the wrong shape": ({**good, model_key: torch.zeros(1)}, meta),
        "an unknown model weight": ({**good, "model.extra": torch.zeros(1)}, meta),
        "NaN model weights": ({**good, model_key: torch.full_like(good[model_key], float("nan"))}, meta),
        "a damaged checksum name": ({**good, model_key: good[model_key] + 1}, {**meta, "sha257": checksum}),
    }


def test_damaged_or_crafted_training_checkpoints_are_refused_and_left_alone(run):
    argv = ["train", *TINY, "--epochs", "3", "--out", str(run), "--resume"]
    for name, (t, meta) in training_state_cases(run).items():
        data = st_save(t, metadata=meta)
        (run / ckpt.STATE_FILE).write_bytes(data)
        code, _, err = run_cli(argv)
        assert_one_line_error(code, err, ckpt.STATE_FILE)
        assert "Traceback" not in err, name
        assert (run / ckpt.STATE_FILE).read_bytes() == data, f"{name}: the refused checkpoint was overwritten"


# -- random damage: refused, or loaded exactly as written -----------------------------------------


def mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        i = pos % len(buf)
        if kind == "flip":
            buf[i] ^= 1 << (value % 8)
        elif kind == "set":
            buf[i] = value
        elif kind == "cut":
            del buf[i:]
        elif kind == "insert":
            buf.insert(i, value)
        else:
            del buf[i]
    return bytes(buf)


EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
                           st.integers(0, 2**20), st.integers(0, 255)), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=EDITS, target=st.sampled_from([ckpt.STATE_FILE, ckpt.MODEL_FILE]))
def test_randomly_damaged_checkpoints_are_refused_or_identical(good_run, tmp_path_factory, edits, target):
    """Any damage is caught (safetensors structure, names and shapes, SHA-256 of the contents): the file
    either fails to load with CheckpointError or loads exactly what was written."""
    original = (good_run / target).read_bytes()
    damaged = mutate(original, edits)
    run = tmp_path_factory.mktemp("damaged")
    for name in (ckpt.MODEL_CONFIG, "config.json"):
        shutil.copy(good_run / name, run / name)
    shutil.copy(good_run / (ckpt.MODEL_FILE if target == ckpt.STATE_FILE else ckpt.STATE_FILE), run)
    (run / target).write_bytes(damaged)
    try:
        loaded, meta = ckpt.read_safetensors(run / target)
        if target == ckpt.MODEL_FILE:
            VAE.load(run)
        else:
            model = VAE.load(good_run)
            ckpt.load_training_state(run, model, torch.optim.Adam(model.parameters()))
    except CheckpointError as exc:
        assert "\n" not in str(exc)
        return
    want = tensors(good_run / target)
    assert loaded.keys() == want.keys()
    for k in want:
        assert loaded[k].dtype == want[k].dtype and torch.equal(loaded[k], want[k]), k
    assert meta == metadata(good_run / target)


RUN_FILES = {
    "config.json garbage": ("config.json", b"{garbage"),
    "config.json a list": ("config.json", b"[1]"),
    "config.json an unknown data set": ("config.json", b'{"dataset": "nope"}'),
    "config.json a number as data set": ("config.json", b'{"dataset": 5}'),
    "config.json a damaged model table": ("config.json", b'{"dataset": "digits", "model": {"latent": -1}}'),
    "config.json a model table of the wrong type": ("config.json", b'{"dataset": "digits", "model": [1]}'),
    "config.json missing": ("config.json", None),
    "metrics.jsonl garbage": ("metrics.jsonl", b'\xff\xfe garbage\n{"epoch": "x"}\n[1,2]\nnull\n{"epoch": 1}\n'),
    "metrics.jsonl a directory": ("metrics.jsonl", "DIR"),
}


@pytest.mark.parametrize("case", list(RUN_FILES))
def test_damaged_run_files_never_give_a_traceback(run, tmp_path, case):
    name, content = RUN_FILES[case]
    path = run / name
    path.unlink()
    if content == "DIR":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    for argv in (["evaluate", str(run), "--k", "2", "--limit", "3"], ["sample", str(run), "-n", "2"],
                 ["report", str(run), "--k", "2", "--limit", "3", "--out", str(tmp_path / "r.html")],
                 ["bound", str(run), "--k", "2", "--n", "2", "--grid", "5"],
                 ["train", *TINY, "--epochs", "3", "--out", str(run), "--resume"]):
        code, _, err = run_cli(argv)
        if code != 0:
            assert_one_line_error(code, err, status_lines=True)
