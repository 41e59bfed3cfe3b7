"""Gated convolutions (Dauphin et al., 2017), h = (W * x + b) * sigmoid(V * x + c), in the conv encoder and
decoder: the layers against their formula, shapes, parameter names, and training of the conv VAE and the
conv two-level HVAE with ``activation="gated"``, from Python and from the CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from synthetic import prototype_dataset
from vaekit.cli import main
from vaekit.config import TrainConfig, resolve
from vaekit.models import VAE
from vaekit.models.hierarchical import HierarchicalVAE
from vaekit.nn import (
    ConvDecoder,
    ConvEncoder,
    GatedConv2d,
    GatedConvTranspose2d,
    GatedDense,
)
from vaekit.objectives import elbo
from vaekit.train import read_metrics, train

pytestmark = pytest.mark.usefixtures("single_thread")


def _fixed(layer: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with fixed values from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_gated_conv2d_is_its_formula():
    layer = GatedConv2d(2, 3, kernel_size=4, stride=2, padding=1)
    _fixed(layer, 0)
    W, b, V, c = layer.h.weight, layer.h.bias, layer.g.weight, layer.g.bias
    x = torch.randn(5, 2, 9, 8, generator=torch.Generator().manual_seed(1))
    expected = F.conv2d(x, W, b, stride=2, padding=1) * torch.sigmoid(F.conv2d(x, V, c, stride=2, padding=1))
    out = layer(x)
    assert out.shape == (5, 3, 4, 4)
    torch.testing.assert_close(out, expected)
    # and by hand at one output position: sum over the 4x4 window of the zero-padded input
    xp = F.pad(x, (1, 1, 1, 1))
    win = xp[1, :, 2:6, 4:8]  # output (i, j) = (1, 2) reads rows 2i..2i+3, cols 2j..2j+3 of the padded input
    a = (W[0] * win).sum() + b[0]
    gate = (V[0] * win).sum() + c[0]
    torch.testing.assert_close(out[1, 0, 1, 2], a * torch.sigmoid(gate))


def test_gated_conv_transpose2d_is_its_formula():
    layer = GatedConvTranspose2d(3, 2, kernel_size=4, stride=2, padding=1)
    _fixed(layer, 2)
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(3))
    lin = F.conv_transpose2d(x, layer.h.weight, layer.h.bias, stride=2, padding=1)
    gate = F.conv_transpose2d(x, layer.g.weight, layer.g.bias, stride=2, padding=1)
    out = layer(x)
    assert out.shape == (4, 2, 10, 10)
    torch.testing.assert_close(out, lin * torch.sigmoid(gate))


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 8, 8)])
def test_gated_conv_networks_shapes(shape):
    torch.manual_seed(0)
    enc = ConvEncoder(shape, 10, activation="gated")
    dec = ConvDecoder(4, shape, 2 * shape[0], activation="gated")
    d = shape[0] * shape[1] * shape[2]
    assert enc(torch.rand(6, d)).shape == (6, 10) and enc(torch.rand(2, 6, d)).shape == (2, 6, 10)
    # the decoder gives images of parameters, (..., P*C, H, W): 2 * d numbers per code
    params = (2 * shape[0], *shape[1:])
    assert dec(torch.randn(6, 4)).shape == (6, *params) and dec(torch.randn(3, 6, 4)).shape == (3, 6, *params)
    assert dec(torch.randn(6, 4)).flatten(1).shape == (6, 2 * d)
    # gated layers replace conv + activation; the output layers stay plain
    assert all(isinstance(m, GatedConv2d) for m in enc.convs) and isinstance(enc.head[1], GatedDense)
    assert type(enc.head[-1]) is torch.nn.Linear
    assert all(isinstance(m, GatedDense) for m in dec.fc)
    assert isinstance(dec.ups[0], GatedConvTranspose2d) and type(dec.ups[-1]) is torch.nn.ConvTranspose2d
    assert len(dec.ups) == 2 and len(enc.convs) == 2


def test_non_gated_parameter_names_are_unchanged():
    """Checkpoints of relu/elu conv models saved before gated convolutions existed still load."""
    enc = ConvEncoder((1, 8, 8), 6, activation="relu")
    dec = ConvDecoder(3, (1, 8, 8), 1, activation="elu")
    assert list(enc.state_dict()) == ["convs.0.weight", "convs.0.bias", "convs.2.weight", "convs.2.bias",
                                      "head.1.weight", "head.1.bias", "head.3.weight", "head.3.bias"]
    assert list(dec.state_dict()) == ["fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias",
                                      "ups.0.weight", "ups.0.bias", "ups.2.weight", "ups.2.bias"]


def test_config_accepts_gated_conv():
    cfg = resolve({}, {"activation": "gated", "model": "conv", "levels": 2})
    assert (cfg.activation, cfg.model) == ("gated", "conv")


@pytest.mark.parametrize("levels", [1, 2])
def test_gated_conv_models_build_and_backpropagate(levels):
    torch.manual_seed(0)
    settings = dict(shape=(1, 8, 8), latent=3, arch="conv", hidden=[16], activation="gated")
    model = HierarchicalVAE(**settings) if levels == 2 else VAE(**settings)
    assert isinstance(model, HierarchicalVAE if levels == 2 else VAE)
    assert any(isinstance(m, GatedConv2d) for m in model.encoder.modules())
    assert any(isinstance(m, GatedConvTranspose2d) for m in model.decoder.modules())
    x = torch.bernoulli(torch.full((5, 64), 0.3), generator=torch.Generator().manual_seed(0))
    terms = elbo(model, x, generator=torch.Generator().manual_seed(0))
    assert terms.elbo.shape == (5,) and torch.isfinite(terms.elbo).all()
    (-terms.elbo.mean()).backward()
    for net in (model.encoder, model.decoder) + ((model.q_z1_x,) if levels == 2 else ()):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.fixture(scope="module")
def protos():
    return prototype_dataset(240, 60, 60, seed=0)


@pytest.mark.parametrize("levels", [1, 2])
def test_gated_conv_training_improves_the_elbo(tmp_path, protos, levels):
    cfg = TrainConfig(epochs=6, hidden=[32], latent=3, batch_size=32, lr=3e-3, levels=levels, model="conv",
                      activation="gated")
    result = train(cfg, tmp_path / "run", dataset=protos, progress=False)
    rows = read_metrics(tmp_path / "run")
    assert result.epochs == 6 and len(rows) == 6
    # from ~44 nats (64 coin flips at p ~ 0.4) towards ~15 (prototype choice + 5% flips): 5 nats is well clear
    # of the epoch-to-epoch noise of a 60-image validation ELBO (a fraction of a nat)
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 5.0, rows
    loaded = VAE.load(tmp_path / "run")
    assert type(loaded).__name__ == ("HierarchicalVAE" if levels == 2 else "VAE")
    spec = loaded.describe()
    if levels == 2:
        assert spec["activation"] == "gated" and spec["arch"] == "conv"
    else:
        for net in (spec["encoder"], spec["decoder"]):
            assert net["activation"] == "gated" and net["name"] == "conv"


def test_cli_trains_a_gated_conv_vae_on_digits(tmp_path, capsys):
    run = tmp_path / "r"
    code = main(["train", "--dataset", "digits", "--model", "conv", "--activation", "gated", "--out", str(run),
                 "--epochs", "1", "--hidden", "32", "--latent", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    data = json.loads(captured.out.strip().splitlines()[-1])
    assert data["epochs"] == 1 and data["valid_elbo"] < 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["arch"] == "conv" and cfg["model"]["activation"] == "gated"
    assert any(isinstance(m, GatedConv2d) for m in VAE.load(run).encoder.modules())
