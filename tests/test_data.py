"""vaekit.data: the Dataset container, the registry, load_dataset, and the digits data set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vaekit.data import DATASETS, SPLITS, Dataset, load_dataset
from vaekit.errors import ConfigError, DataError, VaekitError

pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target


def rows(x: torch.Tensor) -> np.ndarray:
    """Images as sorted rows of bytes, to compare multisets of images."""
    a = np.ascontiguousarray(x.reshape(len(x), -1).numpy())
    return np.sort(a.view(np.dtype((np.void, a.shape[1] * a.itemsize))).ravel())


def test_registry_lists_the_named_data_sets():
    assert set(DATASETS) == {"binarized-mnist", "mnist", "fashion-mnist", "kmnist", "digits", "mnist-grey",
                             "mnist-t10k", "fashion-mnist-t10k", "kmnist-t10k", "cifar10", "dsprites",
                             "shapes3d", "wine", "breast-cancer"}
    for name, entry in DATASETS.items():
        assert entry.name == name and entry.description and callable(entry.loader)
        assert len(entry.shape) == 3
    assert DATASETS["digits"].shape == (1, 8, 8) and DATASETS["digits"].labels
    assert not DATASETS["binarized-mnist"].labels


def test_digits_default_splits_shape_values_labels(sk_digits):
    images, target = sk_digits
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert ds.name == "digits" and ds.shape == (1, 8, 8)
    assert not ds.binary and not ds.dynamic and ds.binarize is None
    assert [len(ds.split(s)) for s in SPLITS] == [1257, 270, 270]
    for s in SPLITS:
        x, y = ds.split(s), ds.labels(s)
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert y.dtype == torch.int64 and len(y) == len(x)
    assert ds.train.max() == 1.0  # 16 / 16
    # the three splits are a partition of the 1,797 images, labels travelling with them
    together = torch.cat([ds.train, ds.valid, ds.test])
    assert np.array_equal(rows(together), rows(torch.from_numpy(images[:, None])))
    labels = torch.cat([ds.train_labels, ds.valid_labels, ds.test_labels])
    assert torch.equal(torch.bincount(labels), torch.bincount(torch.from_numpy(target)))


def test_digits_info_is_json_ready():
    info = load_dataset("digits").info()
    assert json.loads(json.dumps(info)) == info
    assert info["dataset"] == "digits" and info["shape"] == [1, 8, 8]
    assert info["binary"] is False and info["labels"] is True
    assert info["splits"] == {"train": 1257, "valid": 270, "test": 270}
    assert {"binarize", "source", "classes"} <= set(info)


def test_seed_moves_the_validation_split_but_never_the_test_split():
    a, b, c = load_dataset("digits"), load_dataset("digits"), load_dataset("digits", seed=1)
    for s in SPLITS:
        assert torch.equal(a.split(s), b.split(s))  # deterministic
    assert torch.equal(a.test, c.test) and torch.equal(a.test_labels, c.test_labels)
    assert not torch.equal(a.valid, c.valid)


def test_split_sizes_are_counts_or_fractions():
    ds = load_dataset("digits", valid_size=100, test_size=0.2)
    assert [len(ds.split(s)) for s in SPLITS] == [1797 - 100 - 359, 100, 359]
    ds = load_dataset("digits", valid_size=0)
    assert len(ds.valid) == 0 and ds.valid.shape == (0, 1, 8, 8) and len(ds.valid_labels) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"valid_size": 1600},  # nothing left to train on
        {"test_size": 1797},
        {"valid_size": -1},
        {"valid_size": 1.5},
        {"valid_size": True},
        {"binarize": "otsu"},
        {"binarize": "static"},
        {"image_size": 28},
        {"seed": -1},
        {"splits": ("train", "validation")},
    ],
)
def test_bad_options_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        load_dataset("digits", **kwargs)


def test_native_image_size_is_accepted():
    assert load_dataset("digits", image_size=8).shape == (1, 8, 8)
    assert load_dataset("digits", image_size=(8, 8)).shape == (1, 8, 8)


def test_unknown_data_set_names_the_choices(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'mnits'.*did you mean 'mnist'"):
        load_dataset("mnits")
    with pytest.raises(DataError, match="images:"):
        load_dataset(str(tmp_path))  # a folder without the images: prefix
    with pytest.raises(DataError):
        load_dataset("")


def test_aliases():
    assert load_dataset("DIGITS").name == "digits"


def test_threshold_binarization(sk_digits):
    ds = load_dataset("digits", binarize="threshold")
    grey = load_dataset("digits")
    assert ds.binary and not ds.dynamic and ds.binarize == "threshold"
    for s in SPLITS:
        assert torch.equal(ds.split(s), (grey.split(s) > 0.5).float())
    x = ds.train[:5]
    assert ds.binarize_batch(x) is x


def test_dynamic_binarization():
    grey = load_dataset("digits")
    ds = load_dataset("digits", binarize="dynamic")
    assert ds.binary and ds.dynamic and ds.binarize == "dynamic"
    assert torch.equal(ds.train, grey.train)  # grey levels kept for per-batch sampling
    for s in ("valid", "test"):
        x = ds.split(s)
        assert ((x == 0) | (x == 1)).all()
        assert (x[grey.split(s) == 0] == 0).all() and (x[grey.split(s) == 1] == 1).all()
    again = load_dataset("digits", binarize="dynamic")
    other_seed = load_dataset("digits", binarize="dynamic", seed=3)
    assert torch.equal(ds.valid, again.valid) and torch.equal(ds.test, again.test)
    assert torch.equal(ds.test, other_seed.test)  # evaluation data do not depend on the seed

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    b1, b2 = ds.binarize_batch(ds.train, g1), ds.binarize_batch(ds.train, g2)
    assert torch.equal(b1, b2) and ((b1 == 0) | (b1 == 1)).all()
    # E[x] = p: the mean of n = 1257 * 64 Bernoulli draws has standard error
    # sqrt(mean p(1-p) / n) <= 0.5 / sqrt(n) = 0.0018; allow 5 standard errors.
    n = ds.train.numel()
    se = float((ds.train * (1 - ds.train)).mean().sqrt()) / n**0.5
    assert abs(float(b1.mean()) - float(ds.train.mean())) < 5 * se
    assert not torch.equal(b1, ds.binarize_batch(ds.train, torch.Generator().manual_seed(6)))


def test_splits_subset_leaves_the_others_empty():
    ds = load_dataset("digits", splits=("test",))
    assert len(ds.train) == 0 and len(ds.valid) == 0 and len(ds.test) == 270
    assert ds.train.shape == (0, 1, 8, 8) and ds.train_labels.shape == (0,)
    assert ds.not_loaded == ("train", "valid")
    assert ds.info()["not_loaded"] == ["train", "valid"]
    full = load_dataset("digits")
    assert torch.equal(ds.test, full.test)


def test_dataset_checks_its_fields():
    x = torch.zeros(3, 1, 4, 4)
    ok = Dataset("t", (1, 4, 4), False, False, x, x[:1], x[:1])
    assert ok.labels("train") is None and not ok.info()["labels"]
    assert "t" in repr(ok) and "3/1/1" in repr(ok)
    with pytest.raises(DataError, match="shape"):
        Dataset("t", (1, 5, 4), False, False, x, x[:1], x[:1])
    with pytest.raises(DataError, match="float32"):
        Dataset("t", (1, 4, 4), False, False, x.double(), x[:1], x[:1])
    with pytest.raises(DataError, match="labels"):
        Dataset(
            "t",
            (1, 4, 4),
            False,
            False,
            x,
            x[:1],
            x[:1],
            train_labels=torch.zeros(3, dtype=torch.int64),
        )
    with pytest.raises(DataError, match="dynamic"):
        Dataset("t", (1, 4, 4), False, True, x, x[:1], x[:1])
    with pytest.raises(ConfigError):
        ok.split("validation")
    assert issubclass(DataError, VaekitError)
