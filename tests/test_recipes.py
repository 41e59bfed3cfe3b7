"""Every recipe in configs/ parses, builds its model and takes a training step."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from vaekit.config import read_config_file, resolve
from vaekit.models import VAE, HierarchicalVAE
from vaekit.models.families import FAMILIES
from vaekit.nn import MLP, GatedDense
from vaekit.train import model_for, train

PIXEL_LIKELIHOODS = ("discretized-logistic", "discretized-logistic-mixture", "categorical-256")
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.toml"))


def test_gated_dense_is_a_gated_linear_unit():
    torch.manual_seed(0)
    layer = GatedDense(5, 3)
    x = torch.randn(4, 5)
    expected = layer.h(x) * torch.sigmoid(layer.g(x))
    torch.testing.assert_close(layer(x), expected)
    mlp = MLP(5, [7, 6], 2, activation="gated")
    assert isinstance(mlp[0], GatedDense) and mlp(x).shape == (4, 2)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_recipe_builds_and_trains_one_epoch(tmp_path, path):
    values = read_config_file(path)
    cfg = resolve(values, {"epochs": 1, "data_dir": None})
    g = torch.Generator().manual_seed(0)
    from vaekit.data import DATASETS

    shape = DATASETS[cfg.dataset].shape
    levels = cfg.likelihood_settings.get("levels", 256) if cfg.likelihood in PIXEL_LIKELIHOODS else 2
    if levels == 2:
        x = torch.bernoulli(torch.full((60, *shape), 0.3), generator=g)
    else:  # 8-bit images, the data of the discrete pixel likelihoods
        x = torch.randint(0, levels, (60, *shape), generator=g).float() / (levels - 1)
    ds = types.SimpleNamespace(train=x[:40], valid=x[40:], test=x[:0], shape=shape, binary=levels == 2,
                               dynamic=False, levels=levels)
    condition = 0
    if getattr(FAMILIES.entry(cfg.family).cls, "needs_labels", False):  # e.g. semi-supervised M2: 10 classes
        y = torch.arange(60) % 10
        ds.labels, ds.classes = {"train": y[:40], "valid": y[40:], "test": y[:0]}.get, tuple("0123456789")
        ds.name, condition = cfg.dataset, 10
        cfg.family_settings["labels"] = 20
    if cfg.prior == "vamp":
        cfg.prior_settings["components"] = 5  # the model's shape, not the recipe's size, is what is checked here
    if cfg.likelihood == "pixelcnn":  # pixel-*.toml: an autoregressive decoder, kept small here
        cfg.likelihood_settings["channels"] = 8
        assert model_for(cfg, shape, True).likelihood.config()["layers"] == cfg.likelihood_settings["layers"]
    if cfg.fit == "em":  # the mixture of Bernoullis by exact EM: its own loop, the same kind of run folder
        from vaekit.training.em import train_em

        cfg.em_iterations = 1
        result = train_em(cfg, tmp_path / "run", dataset=ds, log=None, progress=False)
        assert result.epochs == 1 and type(VAE.load(tmp_path / "run")).__name__ == "BernoulliMixture"
        return
    model = model_for(cfg, shape, levels == 2, condition, levels=levels)
    assert model.latent == cfg.latent and isinstance(model, HierarchicalVAE) == (cfg.levels == 2)
    result = train(cfg, tmp_path / "run", dataset=ds, progress=False)
    assert result.epochs == 1
    assert type(VAE.load(tmp_path / "run")) is type(model)


def test_the_two_level_recipes_are_smoke_trained():
    names = {p.name: p for p in CONFIGS}
    for name, arch in (("hvae-vamp.toml", "mlp"), ("conv-hvae-vamp.toml", "conv")):
        cfg = resolve(read_config_file(names[name]), {})
        assert (cfg.levels, cfg.model, cfg.prior, cfg.latent) == (2, arch, "vamp", 40)
