"""MNIST at its grey levels, the train / valid / test split carved from the t10k- files, and evaluation that
needs only the split it evaluates (a folder holding only the t10k- files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cli_run import run_cli
from vaekit.data import DATASETS, Dataset, MissingFilesError, load_dataset, write_idx
from vaekit.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py

#: Images per class in the MNIST test set (LeCun et al.; the t10k- labels file).
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def t10k_folder(folder, n: int = 200, seed: int = 0):
    """A folder holding only synthetic t10k- files; image i has the pixel (0, 0) = i % 256 and (0, 1) = i // 256,
    so that each image can be found again."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    y = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", x)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", y)
    return x, y


def index_of(split) -> np.ndarray:
    k = np.rint(split.numpy()[:, 0, 0, :2] * 255).astype(int)
    return k[:, 0] + 256 * k[:, 1]


@pytest.fixture
def real_mnist(shared_data):
    folder = shared_data / "mnist"
    if not any((folder / f"t10k-images-idx3-ubyte{s}").is_file() for s in ("", ".gz")):
        pytest.skip(f"the MNIST t10k- files are not in {folder}")
    return folder


# -- the real test files -------------------------------------------------------------------------------


def test_mnist_grey_from_the_real_test_files(real_mnist):
    ds = load_dataset("mnist-grey", data_dir=real_mnist, download=False, splits=("test",))
    assert ds.name == "mnist-grey" and ds.levels == 256 and not ds.binary and ds.binarize is None
    x = ds.test.numpy()
    assert x.shape == (10_000, 1, 28, 28) and x.min() == 0.0 and x.max() == 1.0
    k = x * 255
    assert np.array_equal(k, np.rint(k))  # every value is k / 255: 8-bit grey levels, kept
    assert len(np.unique(k)) > 200  # grey levels, not binarized
    assert np.bincount(ds.test_labels.numpy()).tolist() == MNIST_TEST_CLASS_COUNTS
    same = load_dataset("mnist", data_dir=real_mnist, download=False, splits=("test",), binarize="none")
    assert np.array_equal(same.test.numpy(), x) and same.levels == 256


def test_mnist_t10k_split_of_the_real_test_files(real_mnist):
    ds = load_dataset("mnist-t10k", data_dir=real_mnist, download=False)
    assert ds.info()["splits"] == {"train": 7000, "valid": 1000, "test": 2000} and ds.levels == 256
    counts = np.bincount(ds.test_labels.numpy(), minlength=10)
    # a random 2,000 of the 10,000: each class count is hypergeometric, sd <= sqrt(2000 * 0.11 * 0.89 * 0.8) ~ 12.5
    expected = np.array(MNIST_TEST_CLASS_COUNTS) * 0.2
    assert np.all(np.abs(counts - expected) < 5 * 12.5)


# -- mnist-grey and mnist-t10k on synthetic files -------------------------------------------------------


def test_mnist_grey_refuses_binarization(tmp_path):
    t10k_folder(tmp_path)
    with pytest.raises(ConfigError, match="keeps the 8-bit grey levels"):
        load_dataset("mnist-grey", data_dir=tmp_path, download=False, splits=("test",), binarize="dynamic")
    assert load_dataset("mnist-gray", data_dir=tmp_path, download=False, splits=("test",)).name == "mnist-grey"
    binary = load_dataset("mnist", data_dir=tmp_path, download=False, splits=("test",), binarize="threshold")
    assert binary.levels == 2 and binary.binary


def test_mnist_without_train_files_points_to_the_t10k_split(tmp_path):
    t10k_folder(tmp_path)
    with pytest.raises(MissingFilesError, match="mnist-t10k"):
        load_dataset("mnist", data_dir=tmp_path, download=False)


def test_mnist_t10k_carves_disjoint_splits_fixed_by_seed(tmp_path):
    x, y = t10k_folder(tmp_path, n=200)
    ds = load_dataset("mnist-t10k", data_dir=tmp_path, download=False)
    assert ds.name == "mnist-t10k" and ds.levels == 256 and ds.classes == tuple("0123456789")
    assert ds.info()["splits"] == {"train": 140, "valid": 20, "test": 40}  # defaults scale down: n/5, then 1/8
    parts = {s: index_of(ds.split(s)) for s in ("train", "valid", "test")}
    every = np.concatenate(list(parts.values()))
    assert sorted(every.tolist()) == list(range(200))  # disjoint, and together all of the file
    for s, idx in parts.items():
        assert np.array_equal(ds.labels(s).numpy(), y[idx])
        assert np.array_equal(np.rint(ds.split(s).numpy()[:, 0] * 255).astype(np.uint8), x[idx])
    other = load_dataset("mnist-t10k", data_dir=tmp_path, download=False, seed=5)
    assert np.array_equal(index_of(other.test), parts["test"])  # the test part never depends on seed
    assert not np.array_equal(index_of(other.valid), parts["valid"])  # the validation part does
    again = load_dataset("mnist-t10k", data_dir=tmp_path, download=False)
    assert np.array_equal(index_of(again.valid), parts["valid"])
    sized = load_dataset("mnist-t10k", data_dir=tmp_path, download=False, valid_size=10, test_size=0.5)
    assert sized.info()["splits"] == {"train": 90, "valid": 10, "test": 100}
    dyn = load_dataset("mnist-t10k", data_dir=tmp_path, download=False, binarize="dynamic")
    assert dyn.levels == 2 and dyn.dynamic
    assert DATASETS["mnist-t10k"].shape == (1, 28, 28) and "fashion-mnist-t10k" in DATASETS


def test_mnist_t10k_full_size_defaults_and_the_train_files_are_never_read(tmp_path):
    t10k_folder(tmp_path, n=10_000)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"corrupt")  # present but broken: never opened
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"corrupt")
    ds = load_dataset("mnist-t10k", data_dir=tmp_path, download=False)
    assert ds.info()["splits"] == {"train": 7000, "valid": 1000, "test": 2000}
    assert "7000 / 1000 / 2000" in ds.source


# -- evaluation from a folder holding only the t10k- files -----------------------------------------------


def test_train_on_t10k_and_evaluate_with_only_the_test_files(tmp_path, capsys, monkeypatch):
    data = tmp_path / "mnist"
    t10k_folder(data, n=200)
    monkeypatch.setenv("VAEKIT_MIRROR_MNIST", "http://127.0.0.1:9/")  # a download attempt would fail loudly
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--dataset", "mnist-t10k", "--data-dir", str(data), "--epochs", "1",
                              "--hidden", "16", "--latent", "2", "--batch-size", "70", "--device", "cpu",
                              "--out", str(run), "--json"], capsys)
    assert code == 0, err
    # the run's own data set, then the standard test set (all 200 t10k- images) of mnist with only the t10k- files
    code, out, err = run_cli(["evaluate", str(run), "--k", "3", "--surgery-samples", "0", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["n"] == 40
    for name in ("mnist", "mnist-grey"):
        code, out, err = run_cli(["evaluate", str(run), "--dataset", name, "--data-dir", str(data), "--k", "3",
                                  "--surgery-samples", "0", "--json"], capsys)
        assert code == 0, err
        assert json.loads(out.strip().splitlines()[-1])["n"] == 200
    assert sorted(p.name for p in data.iterdir()) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    code, out, err = run_cli(["report", str(run), "--dataset", "mnist", "--data-dir", str(data), "--k", "2",
                              "--limit", "30", "--out", str(tmp_path / "r.html")], capsys)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "Evaluation on the test set" in page and "could not be loaded" not in page
    # the validation split does need the train- files: one line, exit 2, saying which
    code, out, err = run_cli(["evaluate", str(run), "--dataset", "mnist", "--data-dir", str(data), "--split",
                              "valid", "--k", "3"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "train-images-idx3-ubyte" in err


# -- Dataset.levels, set by every loader ------------------------------------------------------------------


def test_levels_of_the_container():
    x = torch.zeros(2, 1, 2, 2)
    assert Dataset("t", (1, 2, 2), False, False, x, x, x).levels is None  # the default: real-valued
    assert Dataset("t", (1, 2, 2), True, False, x, x, x).levels == 2  # binary data has two levels
    ds = Dataset("t", (1, 2, 2), False, False, x, x, x, levels=256)
    assert ds.info()["levels"] == 256 and "256 levels" in repr(ds)
    for bad in (1, 2.5, True, "256"):
        with pytest.raises(DataError, match="levels"):
            Dataset("t", (1, 2, 2), False, False, x, x, x, levels=bad)
    with pytest.raises(DataError, match="binary data has 2 levels"):
        Dataset("t", (1, 2, 2), True, False, x, x, x, levels=256)


def test_levels_of_digits_and_idx(tmp_path):
    assert load_dataset("digits").levels == 17
    assert load_dataset("digits", binarize="dynamic").levels == 2
    t10k_folder(tmp_path)
    assert load_dataset("mnist", data_dir=tmp_path, download=False, splits=("test",)).levels == 256


def test_levels_of_the_users_files(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    folder = tmp_path / "colour"
    folder.mkdir()
    for i, im in enumerate(rgb):
        Image.fromarray(im, "RGB").save(folder / f"{i}.png")
    ds = load_dataset(f"images:{folder}", valid_size=1, test_size=1)
    assert ds.shape == (3, 5, 7) and ds.levels == 256 and not ds.binary
    pool = np.concatenate([ds.train.numpy(), ds.valid.numpy(), ds.test.numpy()]) * 255
    assert np.array_equal(pool, np.rint(pool))  # the stored 8-bit values, every channel kept
    assert sorted(map(bytes, np.rint(pool).astype(np.uint8).transpose(0, 2, 3, 1))) == sorted(map(bytes, rgb))
    cases = {
        "u8.npy": (rng.integers(0, 256, (10, 4, 4), dtype=np.uint8), 256),
        "f32.npy": (rng.random((10, 4, 4), dtype=np.float32), None),  # real-valued
        "k255.npy": (rng.integers(0, 256, (10, 4, 4)).astype(np.float32) / 255, None),  # floats stay real-valued
        "bits.npy": (rng.integers(0, 2, (10, 4, 4)).astype(np.float32), 2),
        "bool.npy": (rng.integers(0, 2, (10, 4, 4)).astype(bool), 2),
    }
    for name, (arr, levels) in cases.items():
        np.save(tmp_path / name, arr)
        assert load_dataset(f"npy:{tmp_path / name}", valid_size=2, test_size=2).levels == levels, name
    np.savez(tmp_path / "mixed.npz", train=cases["u8.npy"][0], test=cases["f32.npy"][0][:3])
    assert load_dataset(f"npz:{tmp_path / 'mixed.npz'}", valid_size=2).levels is None
    np.savez(tmp_path / "u8.npz", images=cases["u8.npy"][0])
    assert load_dataset(f"npz:{tmp_path / 'u8.npz'}", valid_size=2, test_size=2).levels == 256
    assert load_dataset(f"npy:{tmp_path / 'u8.npy'}", valid_size=2, test_size=2, binarize="threshold").levels == 2
