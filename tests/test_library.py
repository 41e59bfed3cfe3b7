"""vaekit as a library: models composed from the user's modules, vaekit.fit, vaekit.evaluate, save and load."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import vaekit
from vaekit import VAE
from vaekit.errors import CheckpointError, ConfigError, VaekitError
from vaekit.models import ShapeError
from vaekit.train import read_metrics

SHAPE, L = (1, 4, 4), 2


class Encoder(nn.Module):
    def __init__(self, out: int = 2 * L, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.Tanh(), nn.Linear(width, out))

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, width: int = 16, pixels: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(L, width), nn.Tanh(), nn.Linear(width, pixels))

    def forward(self, z):
        return self.net(z).reshape(-1, 1, 4, 4) if self.net[-1].out_features == 16 else self.net(z)


def data(n: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    proto = torch.rand(4, *SHAPE, generator=g)
    return torch.bernoulli(proto[torch.randint(4, (n,), generator=g)], generator=g)


def test_user_networks_train_evaluate_save_and_reload_to_the_same_nll(tmp_path):
    torch.manual_seed(0)
    model = VAE(Encoder(), Decoder(), latent=L)  # no shape: the data gives it
    assert model.shape is None
    result = vaekit.fit(model, data(), out=tmp_path / "run", epochs=3, batch_size=50, lr=1e-2, progress=False)
    assert model.shape == SHAPE and result.epochs == 3 and len(read_metrics(tmp_path / "run")) == 3
    test = data(60, seed=1)
    before = vaekit.evaluate(model, test, k=200, seed=3)  # no valid split: the saved weights are the last epoch's
    again = VAE.load(tmp_path / "run", encoder=Encoder(), decoder=Decoder())
    after = vaekit.evaluate(again, test, k=200, seed=3)
    assert after.nll == before.nll and after.elbo == before.elbo and math.isfinite(after.nll_stderr)
    spec = json.loads((tmp_path / "run" / "model.json").read_text())
    assert spec["encoder"] == {"name": "custom", "class": "Encoder"}
    # without the user's networks, or with networks of other shapes: one clear error
    with pytest.raises(ShapeError, match="encoder of your own .*Encoder"):
        VAE.load(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"does not match the networks you passed.*shape \(16, 16\), expected"):
        VAE.load(tmp_path / "run", encoder=Encoder(), decoder=Decoder(width=8))
    # resume continues the same run bit for bit with the model built again
    vaekit.fit(again, data(), out=tmp_path / "run", epochs=4, batch_size=50, lr=1e-2, resume=True, progress=False)
    assert len(read_metrics(tmp_path / "run")) == 4


def test_fit_resume_is_bit_exact(tmp_path):
    def build():
        torch.manual_seed(5)
        return VAE(Encoder(), Decoder(), latent=L)

    x = data()
    straight = vaekit.fit(build(), x, out=tmp_path / "a", epochs=4, batch_size=40, progress=False)
    vaekit.fit(build(), x, out=tmp_path / "b", epochs=2, batch_size=40, progress=False)
    resumed = vaekit.fit(build(), x, out=tmp_path / "b", epochs=4, batch_size=40, resume=True, progress=False)
    assert straight.train_elbo == resumed.train_elbo
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_wrong_network_shapes_are_one_clear_error_at_the_first_call():
    x = data(5)
    bad_encoder = VAE(Encoder(out=3), Decoder(), latent=L)
    with pytest.raises(ShapeError, match=r"encoder returned \(5, 3\).*gaussian posterior needs \(5, 4\)"):
        bad_encoder.posterior(x)
    bad_decoder = VAE(Encoder(), Decoder(pixels=15), latent=L, shape=SHAPE)
    with pytest.raises(ShapeError, match=r"decoder returned \(7, 15\).*bernoulli likelihood needs \(7, 1, 4, 4\)"):
        bad_decoder.decode(torch.zeros(7, L))
    with pytest.raises(ShapeError, match="shape"):
        VAE(latent=L)  # vaekit's own networks need the data shape
    with pytest.raises(ShapeError, match=r"for data of shape \(1, 4, 4\), but got a batch of shape \(3, 1, 5, 5\)"):
        VAE(Encoder(), Decoder(), latent=L, shape=SHAPE).posterior(torch.zeros(3, 1, 5, 5))


def test_sample_dimensions_are_folded_into_the_batch_for_the_decoder():
    seen = []

    class Spy(Decoder):
        def forward(self, z):
            seen.append(tuple(z.shape))
            return super().forward(z)

    model = VAE(Encoder(), Spy(), latent=L, shape=SHAPE)
    bound = vaekit.iwae_bound(model, data(6), k=9)
    assert bound.shape == (6,) and seen == [(54, L)]


def test_fit_takes_numpy_arrays_and_refuses_unknown_settings(tmp_path):
    x = data().numpy().astype(np.float32)
    model = VAE(latent=L, shape=SHAPE, hidden=[8])
    result = vaekit.fit(model, x, x[:50], out=tmp_path / "np", epochs=1, batch_size=50, progress=False)
    assert math.isfinite(result.best_valid_elbo)
    with pytest.raises(ConfigError, match="did you mean 'weight_decay'"):
        vaekit.fit(model, x, out=tmp_path / "bad", weight_decai=0.1)
    with pytest.raises(VaekitError, match="in memory"):
        vaekit.evaluation.evaluate_run(tmp_path / "np")


def test_a_conditional_vae_on_the_digit_labels(tmp_path):
    ds = vaekit.load_dataset("digits", binarize="dynamic")
    torch.manual_seed(0)
    model = VAE(latent=2, shape=ds.shape, hidden=[64], condition=10)
    result = vaekit.fit(model, ds, out=tmp_path / "cvae", epochs=15, batch_size=64, lr=3e-3, progress=False)
    assert math.isfinite(result.best_valid_elbo)
    x, y = torch.bernoulli(ds.test, generator=torch.Generator().manual_seed(0)), ds.labels("test")
    right = vaekit.evaluate(model, x, k=100, y=y, per_example=True)
    wrong = vaekit.evaluate(model, x, k=100, y=(y + 1) % 10, per_example=True)
    # log p(x|y) with the true label beats a wrong label by many standard errors: the decoder uses y
    diff = right.per_example["log_px"] - wrong.per_example["log_px"]
    assert diff.mean() > 5 * diff.std(ddof=1) / math.sqrt(len(diff))
    with pytest.raises(ShapeError, match="conditional"):
        model.posterior(x)
    samples = model.sample(10, y=torch.arange(10))
    assert samples.means.shape == (10, *ds.shape)
    loaded = VAE.load(tmp_path / "cvae")
    assert loaded.condition == 10
    assert math.isfinite(vaekit.evaluate(loaded, x, k=20, y=y).nll)
