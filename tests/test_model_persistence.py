"""Saving and loading every registered model kind (vaekit.models.persistence): a tiny model of each family saved,
loaded back by its own class and by vaekit.load with the same weights and description, and saved again to the same
``model.json`` bytes and the same weights' checksum (safetensors writes its metadata in no fixed order, so the weight
file's bytes themselves may differ)."""

from __future__ import annotations

import json

import pytest
import torch

import vaekit
from vaekit.errors import CheckpointError
from vaekit.io.checkpoint import MODEL_CONFIG, MODEL_FILE, read_safetensors
from vaekit.models import M2, VAE, VQVAE, BernoulliMixture, HierarchicalVAE
from vaekit.objectives.factorvae import FactorVAE

pytestmark = pytest.mark.usefixtures("single_thread")

#: One tiny model of each kind, built with a fixed seed: (class, constructor).
KINDS = {
    "vae": (VAE, lambda: VAE(latent=2, shape=(1, 4, 4), hidden=[8])),
    "hvae": (HierarchicalVAE, lambda: HierarchicalVAE(shape=(1, 4, 4), latent=2, hidden=[8])),
    "m2": (M2, lambda: M2((1, 4, 4), 3, 2, labels=6, hidden=[8])),
    "vqvae": (VQVAE, lambda: VQVAE((1, 4, 4), 5, 3, channels=[4])),
    "bernoulli-mixture": (BernoulliMixture, lambda: BernoulliMixture(3, (1, 4, 4))),
    "factorvae": (FactorVAE, lambda: FactorVAE(latent=2, shape=(1, 4, 4), hidden=[8], discriminator_hidden=4,
                                               discriminator_layers=1)),
}


def _files(directory) -> tuple[bytes, dict[str, str]]:
    """``model.json``'s bytes and the weight file's metadata (its sha256 covers every tensor and the metadata)."""
    return (directory / MODEL_CONFIG).read_bytes(), read_safetensors(directory / MODEL_FILE)[1]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_saves_loads_and_saves_again_to_the_same_bytes(tmp_path, kind):
    cls, build = KINDS[kind]
    torch.manual_seed(0)
    model = build()
    model.save(tmp_path / "a")
    spec = json.loads((tmp_path / "a" / MODEL_CONFIG).read_text())
    assert list(spec)[:2] == ["format", "model"] and spec["format"] == "vaekit-model-2" and spec["model"] == kind
    for back in (cls.load(tmp_path / "a"), vaekit.load(tmp_path / "a")):
        assert type(back) is cls and back.describe() == model.describe()
        want = model.state_dict()
        assert set(back.state_dict()) == set(want)
        assert all(torch.equal(value, want[key]) for key, value in back.state_dict().items())
    cls.load(tmp_path / "a").save(tmp_path / "b")
    assert _files(tmp_path / "b") == _files(tmp_path / "a")


def test_vae_load_reads_any_kind(tmp_path):
    torch.manual_seed(0)
    KINDS["m2"][1]().save(tmp_path / "m2")
    assert isinstance(VAE.load(tmp_path / "m2"), M2)  # VAE.load is vaekit.load with networks of one's own


@pytest.mark.parametrize("kind", ["hvae", "m2", "vqvae", "bernoulli-mixture"])
def test_a_class_refuses_a_model_of_another_kind(tmp_path, kind):
    torch.manual_seed(0)
    KINDS["vae"][1]().save(tmp_path / "vae")
    with pytest.raises(CheckpointError, match=r"holds a VAE, not a .*; use vaekit.load"):
        KINDS[kind][0].load(tmp_path / "vae")
