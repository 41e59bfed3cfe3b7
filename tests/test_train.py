"""The trainer: determinism, resume, refusals, NaN handling, checkpoints, config files."""

from __future__ import annotations

import json
import pickle
import types

import pytest
import torch
from safetensors.torch import load_file

from vaekit.config import TrainConfig
from vaekit.errors import CheckpointError
from vaekit.models import VAE
from vaekit.train import TrainingDiverged, read_metrics, run_lock, train


@pytest.fixture
def tiny():
    # four binary prototypes with 5% of the pixels flipped: structure a VAE can learn
    g = torch.Generator().manual_seed(0)
    protos = torch.bernoulli(torch.full((4, 1, 6, 6), 0.5), generator=g)
    flips = torch.bernoulli(torch.full((300, 1, 6, 6), 0.05), generator=g)
    x = (protos[torch.randint(4, (300,), generator=g)] + flips) % 2
    return types.SimpleNamespace(train=x[:200], valid=x[200:250], test=x[250:], shape=(1, 6, 6),
                                 binary=True, dynamic=False)


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=4, hidden=[16], latent=3, batch_size=32, lr=3e-3)
    base.update(kw)
    return TrainConfig(**base)


def same_state(a, b) -> bool:
    sa, sb = load_file(a / "checkpoint.safetensors"), load_file(b / "checkpoint.safetensors")
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_result_and_run_files(tmp_path, tiny):
    r1 = train(cfg(), tmp_path / "a", dataset=tiny)
    r2 = train(cfg(), tmp_path / "b", dataset=tiny)
    assert same_state(tmp_path / "a", tmp_path / "b")
    assert r1.valid_elbo == r2.valid_elbo
    for name in ("config.json", "metrics.jsonl", "model.json", "model.safetensors", "checkpoint.safetensors"):
        assert (tmp_path / "a" / name).is_file()
    assert json.loads((tmp_path / "a" / "config.json").read_text())["model"]["latent"] == 3
    rows = read_metrics(tmp_path / "a")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert {"train_elbo", "train_kl", "valid_elbo", "valid_kl", "seconds"} <= rows[0].keys()
    r3 = train(cfg(seed=1), tmp_path / "c", dataset=tiny)
    assert r3.valid_elbo != r1.valid_elbo


def test_training_improves_the_elbo(tmp_path, tiny):
    train(cfg(epochs=30), tmp_path / "a", dataset=tiny)
    rows = read_metrics(tmp_path / "a")
    # from ~25 nats (36 coin flips) towards ~7 nats (prototype choice + 5% flips)
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 5.0


def test_resume_after_interruption_gives_the_same_weights(tmp_path, tiny):
    train(cfg(epochs=5), tmp_path / "full", dataset=tiny)

    class Interrupt(Exception):
        pass

    def stop_after_2(row):
        if row["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg(epochs=5), tmp_path / "cut", dataset=tiny, on_epoch=stop_after_2)
    train(cfg(epochs=5), tmp_path / "cut", dataset=tiny, resume=True)
    assert same_state(tmp_path / "full", tmp_path / "cut")
    assert [r["epoch"] for r in read_metrics(tmp_path / "cut")] == [1, 2, 3, 4, 5]
    full, cut = VAE.load(tmp_path / "full"), VAE.load(tmp_path / "cut")
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), cut.parameters()))


def test_resume_drops_metrics_of_epochs_not_checkpointed(tmp_path, tiny):
    train(cfg(epochs=2), tmp_path / "r", dataset=tiny)
    with open(tmp_path / "r" / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3, "train_elbo": 0}\n{"epoch": 4, "tr')  # a crash mid-line
    train(cfg(epochs=3), tmp_path / "r", dataset=tiny, resume=True)
    assert [r["epoch"] for r in read_metrics(tmp_path / "r")] == [1, 2, 3]


def test_existing_run_is_not_overwritten(tmp_path, tiny):
    train(cfg(epochs=1), tmp_path / "r", dataset=tiny)
    before = (tmp_path / "r" / "checkpoint.safetensors").read_bytes()
    with pytest.raises(CheckpointError, match="--resume"):
        train(cfg(epochs=1), tmp_path / "r", dataset=tiny)
    assert (tmp_path / "r" / "checkpoint.safetensors").read_bytes() == before


def test_second_run_on_the_same_directory_is_refused(tmp_path, tiny):
    with run_lock(tmp_path / "r"):
        with pytest.raises(CheckpointError, match="in use by another vaekit run"):
            train(cfg(epochs=1), tmp_path / "r", dataset=tiny)


def test_nan_stops_with_epoch_and_step_and_keeps_the_last_checkpoint(tmp_path, tiny):
    def poison(row):
        if row["epoch"] == 2:
            VAE_params = poison.model_params
            with torch.no_grad():
                VAE_params[0].fill_(float("nan"))

    # reach the live model through the optimizer hook: patch VAE.__init__ to remember it
    original_init = VAE.__init__

    def remember(self, *a, **k):
        original_init(self, *a, **k)
        poison.model_params = list(self.parameters())

    VAE.__init__ = remember
    try:
        with pytest.raises(TrainingDiverged, match=r"epoch 3, step 1.*after epoch 2"):
            train(cfg(epochs=5), tmp_path / "r", dataset=tiny, on_epoch=poison)
    finally:
        VAE.__init__ = original_init
    state = load_file(tmp_path / "r" / "checkpoint.safetensors")
    assert all(torch.isfinite(v).all() for k, v in state.items() if k.startswith("model."))
    assert [r["epoch"] for r in read_metrics(tmp_path / "r")] == [1, 2]
    assert all(torch.isfinite(p).all() for p in VAE.load(tmp_path / "r").parameters())


def test_early_stopping_and_best_model(tmp_path, tiny):
    r = train(cfg(epochs=200, lr=0.05, patience=2), tmp_path / "r", dataset=tiny)
    rows = read_metrics(tmp_path / "r")
    assert r.stopped_early and r.epochs < 200
    best = max(rows, key=lambda row: row["valid_elbo"])
    assert r.best_epoch == best["epoch"] and r.epochs == best["epoch"] + 2


def test_pickle_in_place_of_a_checkpoint_is_refused_not_run(tmp_path, tiny):
    train(cfg(epochs=1), tmp_path / "r", dataset=tiny)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "r" / "model.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        VAE.load(tmp_path / "r")
    (tmp_path / "r" / "checkpoint.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        train(cfg(epochs=2), tmp_path / "r", dataset=tiny, resume=True)
    assert not marker.exists()


@pytest.mark.parametrize("kw", [dict(prior="vamp", prior_settings={"components": 5}), dict(objective="iwae", k=4),
                                dict(model="conv", hidden=[16]), dict(lr_schedule="cosine", warmup=2),
                                dict(lr_schedule="plateau", clip_grad=1.0, beta=0.5)])
def test_variants_train(tmp_path, tiny, kw):
    r = train(cfg(epochs=2, **kw), tmp_path / "r", dataset=tiny)
    assert r.epochs == 2 and r.valid_elbo < 0
    VAE.load(tmp_path / "r")


def test_dynamic_binarization_samples_each_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(100, 1, 4, 4, generator=g)
    seen = []

    class Recorder(types.SimpleNamespace):
        pass

    ds = Recorder(train=grey, valid=torch.bernoulli(grey[:20]), test=grey[:0], shape=(1, 4, 4),
                  binary=True, dynamic=True)
    import vaekit.train as T

    original = T.LossModule.forward

    def spy(self, x, beta, y=None):
        seen.append(x.clone())
        return original(self, x, beta, y)

    T.LossModule.forward = spy
    try:
        train(cfg(epochs=2, batch_size=100, hidden=[8], latent=2, fast_step=False),  # the spy is on autograd's step
              tmp_path / "r", dataset=ds)
    finally:
        T.LossModule.forward = original
    assert all(((x == 0) | (x == 1)).all() for x in seen)
    assert not torch.equal(seen[0].sum(0), seen[1].sum(0))  # fresh draws each epoch


@pytest.mark.parametrize("name", ["0", "xyz", "cpu:x", "tpu"])
def test_unknown_devices_are_clear_errors(name):
    from vaekit.errors import VaekitError
    from vaekit.train import resolve_device

    with pytest.raises(VaekitError, match="device"):
        resolve_device(name)


def test_known_devices():
    from vaekit.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
