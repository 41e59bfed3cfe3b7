"""vaekit.data.idx: the IDX format and MNIST / Fashion-MNIST / KMNIST."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest
import torch

from vaekit.data import (
    MissingFilesError,
    load_dataset,
    load_idx_split,
    read_idx,
    read_idx_images,
    read_idx_labels,
    write_idx,
)
from vaekit.data.idx import IDX_SETS, parse_idx
from vaekit.errors import ConfigError, DataError

# MD5 of the shared MNIST test files, from ../shared/data/README.md
README_MD5 = {
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py


def fake_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_split(folder, prefix: str, x: np.ndarray, y: np.ndarray, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)


@pytest.fixture
def idx_folder(tmp_path):
    """mnist/ with 120 generated training images (plain files) and 30 test images (gzipped)."""
    d = tmp_path / "mnist"
    train, test = fake_split(120, 0), fake_split(30, 1)
    write_split(d, "train", *train, gz=False)
    write_split(d, "t10k", *test)
    return d, train, test


# --------------------------------------------------------------------------- the format


def test_hand_built_idx_bytes():
    data = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 2, 3) + bytes(range(12))
    x = parse_idx(data, "f")
    assert x.shape == (2, 2, 3) and x.dtype == np.uint8 and x.flags.writeable
    assert x.ravel().tolist() == list(range(12))
    data = bytes([0, 0, 0x0C, 1]) + struct.pack(">1I", 2) + struct.pack(">2i", -5, 70000)
    assert parse_idx(data, "f").tolist() == [-5, 70000]


def test_write_read_roundtrip(tmp_path):
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", x)
    write_idx(tmp_path / "b", x.astype(np.float32))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), x)
    assert np.array_equal(read_idx(tmp_path / "b"), x)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x00\x00", "too short"),
        (b"P5\n28 28\n", "not an IDX file: magic number 0x50350A32"),
        (bytes([0, 0, 0x07, 1]) + struct.pack(">I", 1) + b"x", "not an IDX file"),
        (bytes([0, 0, 0x08, 3]) + struct.pack(">I", 2), "truncated IDX header"),
        (
            bytes([0, 0, 0x08, 1]) + struct.pack(">I", 10) + bytes(7),
            r"truncated: the header declares 10 values \(10 bytes\) but the file holds 7",
        ),
        (
            bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 2, 2) + bytes(5),
            "1 unexpected bytes after the 2x2 values",
        ),
    ],
)
def test_malformed_idx_is_a_data_error(data, match):
    with pytest.raises(DataError, match=match) as info:
        parse_idx(data, "dir/file-idx")
    assert str(info.value).startswith("dir/file-idx: ")


def test_wrong_magic_names_what_the_file_is(tmp_path):
    write_idx(tmp_path / "labels", np.zeros(5, dtype=np.uint8))
    with pytest.raises(
        DataError,
        match=r"labels: wrong IDX magic number 0x00000801 \(that is a labels file\), "
        r"expected 0x00000803",
    ):
        read_idx_images(tmp_path / "labels")
    write_idx(tmp_path / "floats", np.zeros((5, 28, 28), dtype=np.float32))
    with pytest.raises(DataError, match="wrong IDX magic number 0x00000D03"):
        read_idx_images(tmp_path / "floats")


def test_image_size_labels_range_and_counts_are_checked(tmp_path):
    write_idx(tmp_path / "big", np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match="images are 32x32, expected 28x28"):
        read_idx_images(tmp_path / "big")
    write_idx(tmp_path / "lab", np.array([1, 12, 3], dtype=np.uint8))
    with pytest.raises(DataError, match="label 12 at index 1 is not a class 0..9"):
        read_idx_labels(tmp_path / "lab")
    x, y = fake_split(5, 0)
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y[:4])
    with pytest.raises(DataError, match="has 5 images but .* has 4 labels"):
        load_idx_split(tmp_path, "train")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*not found"):
        load_idx_split(tmp_path, "t10k")


def test_truncated_files_are_data_errors(idx_folder):
    d, _, _ = idx_folder
    plain = d / "train-images-idx3-ubyte"
    plain.write_bytes(plain.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: truncated"):
        load_dataset("mnist", data_dir=d, download=False)
    gz = d / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        load_dataset("mnist", data_dir=d, download=False, splits=("test",))


# --------------------------------------------------------------------------- the data sets


def test_mnist_from_generated_files(idx_folder):
    d, (xtr, ytr), (xte, yte) = idx_folder
    ds = load_dataset("mnist", data_dir=d, download=False)
    assert ds.shape == (1, 28, 28) and not ds.binary and not ds.dynamic
    assert ds.info()["splits"] == {"train": 100, "valid": 20, "test": 30}  # valid: 120 / 6
    assert ds.classes == tuple("0123456789") and ds.info()["labels"]
    assert torch.equal(ds.test, torch.from_numpy(xte[:, None]).float() / 255)
    assert torch.equal(ds.test_labels, torch.from_numpy(yte).long())
    # train + valid is a partition of the training file, labels travelling with the images
    together = torch.cat([ds.train, ds.valid]).reshape(120, -1)
    order = np.lexsort(together.numpy().T[::-1])
    ref = torch.from_numpy(xtr.reshape(120, -1)).float() / 255
    ref_order = np.lexsort(ref.numpy().T[::-1])
    assert torch.equal(together[order], ref[ref_order])
    labels = torch.cat([ds.train_labels, ds.valid_labels])
    assert torch.equal(labels[order], torch.from_numpy(ytr).long()[ref_order])


def test_mnist_valid_size_seed_and_options(idx_folder):
    d, _, _ = idx_folder
    a = load_dataset("mnist", data_dir=d, download=False, valid_size=30)
    b = load_dataset("mnist", data_dir=d, download=False, valid_size=30, seed=1)
    assert len(a.valid) == 30 and len(a.train) == 90
    assert not torch.equal(a.valid, b.valid) and torch.equal(a.test, b.test)
    assert len(load_dataset("mnist", data_dir=d, download=False, valid_size=0.25).valid) == 30
    for kwargs in (
        {"test_size": 10},
        {"valid_size": 120},
        {"binarize": "static"},
        {"image_size": 32},
    ):
        with pytest.raises(ConfigError):
            load_dataset("mnist", data_dir=d, download=False, **kwargs)


def test_mnist_binarization_protocols(idx_folder):
    d, _, _ = idx_folder
    grey = load_dataset("mnist", data_dir=d, download=False)
    th = load_dataset("mnist", data_dir=d, download=False, binarize="threshold")
    assert th.binary and not th.dynamic and torch.equal(th.test, (grey.test > 0.5).float())
    dyn = load_dataset("mnist", data_dir=d, download=False, binarize="dynamic")
    assert dyn.binary and dyn.dynamic and dyn.binarize == "dynamic"
    assert torch.equal(dyn.train, grey.train)
    assert ((dyn.test == 0) | (dyn.test == 1)).all() and ((dyn.valid == 0) | (dyn.valid == 1)).all()
    again = load_dataset("mnist", data_dir=d, download=False, binarize="dynamic")
    assert torch.equal(dyn.test, again.test) and torch.equal(dyn.valid, again.valid)


def test_test_split_alone_without_training_files(idx_folder):
    d, _, (xte, _) = idx_folder
    for p in d.glob("train-*"):
        p.unlink()
    with pytest.raises(MissingFilesError) as info:
        load_dataset("mnist", data_dir=d, download=False)
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg and str(d) in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in msg
    assert info.value.available == ("test",)
    ds = load_dataset("mnist", data_dir=d, download=False, splits=("test",))
    assert len(ds.test) == 30 and len(ds.train) == 0 and ds.not_loaded == ("train", "valid")


@pytest.mark.parametrize("name", ["fashion-mnist", "kmnist"])
def test_other_idx_sets_share_the_loader(tmp_path, name):
    folder = tmp_path / IDX_SETS[name].folder
    write_split(folder, "train", *fake_split(60, 2))
    write_split(folder, "t10k", *fake_split(10, 3))
    ds = load_dataset(name, data_dir=tmp_path, download=False)  # the root holding the folder
    assert ds.name == name and ds.info()["splits"] == {"train": 50, "valid": 10, "test": 10}
    assert ds.classes == IDX_SETS[name].classes and len(ds.classes) == 10


def test_data_dir_from_the_environment(idx_folder, monkeypatch):
    d, _, _ = idx_folder
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(d.parent))
    assert len(load_dataset("mnist", download=False).test) == 30


def test_known_md5s_are_torchvisions():
    assert (
        IDX_SETS["mnist"].md5["t10k-images-idx3-ubyte.gz"]
        == README_MD5["t10k-images-idx3-ubyte.gz"]
    )
    assert all(len(v) == 32 for spec in IDX_SETS.values() for v in spec.md5.values())
    assert all(len(spec.md5) == 4 for spec in IDX_SETS.values())


# --------------------------------------------------------------------------- the real test set


def test_reference_mnist_test_set(shared_data, tmp_path):
    """Acceptance: the real MNIST test files (only those are shared) read as 10,000 labelled
    images, alone and beside (generated) training files."""
    folder = shared_data / "mnist"
    for name, md5 in README_MD5.items():
        data = (folder / name).read_bytes()
        assert hashlib.md5(data).hexdigest() == md5 == IDX_SETS["mnist"].md5[name]

    with pytest.raises(MissingFilesError, match="train-images-idx3-ubyte") as info:
        load_dataset("mnist", data_dir=folder, download=False)  # never into the data folder, whatever its permissions
    assert info.value.available == ("test",)
    ds = load_dataset("mnist", data_dir=folder, splits=("test",))
    assert ds.test.shape == (10000, 1, 28, 28) and ds.test_labels.shape == (10000,)
    assert torch.equal(torch.unique(ds.test_labels), torch.arange(10))
    assert 0 <= ds.test.min() and ds.test.max() == 1.0 and not ds.binary
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    assert torch.equal(
        ds.test.flatten(), torch.frombuffer(bytearray(raw), dtype=torch.uint8).float() / 255
    )

    beside = tmp_path / "mnist"
    beside.mkdir()
    for name in README_MD5:
        (beside / name).symlink_to(folder / name)
    write_split(beside, "train", *fake_split(60, 4))
    full = load_dataset("mnist", data_dir=beside, download=False)
    assert full.info()["splits"] == {"train": 50, "valid": 10, "test": 10000}
    assert torch.equal(full.test, ds.test) and torch.equal(full.test_labels, ds.test_labels)
