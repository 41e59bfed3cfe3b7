"""vaekit.data.files: the user's own data (images:DIR, npy:FILE, npz:FILE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.data import SPLITS, load_dataset
from vaekit.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py


def sizes(ds) -> list[int]:
    return [len(ds.split(s)) for s in SPLITS]


def grey(n: int, h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


# --------------------------------------------------------------------------- npy


def test_npy_uint8_default_splits(tmp_path):
    x = grey(50)
    np.save(tmp_path / "x.npy", x)
    ds = load_dataset(f"npy:{tmp_path / 'x.npy'}")
    assert ds.shape == (1, 6, 5) and not ds.binary and ds.labels("train") is None
    assert sizes(ds) == [40, 5, 5]  # 10 % test, 10 % validation by default
    together = torch.cat([ds.train, ds.valid, ds.test]).reshape(50, -1)
    assert torch.equal(
        together.sort(0).values, (torch.from_numpy(x).reshape(50, -1).float() / 255).sort(0).values
    )
    assert ds.info()["dataset"].startswith("npy:")
    ds = load_dataset(f"npy:{tmp_path / 'x.npy'}", valid_size=10, test_size=0.3)
    assert sizes(ds) == [25, 10, 15]


def test_npy_layouts(tmp_path):
    rng = np.random.default_rng(1)
    nchw = rng.random((12, 3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "nchw.npy", nchw)
    np.save(tmp_path / "nhwc.npy", nchw.transpose(0, 2, 3, 1))
    np.save(tmp_path / "flat.npy", rng.random((12, 49)))
    a = load_dataset(f"npy:{tmp_path / 'nchw.npy'}", valid_size=0, test_size=0)
    b = load_dataset(f"npy:{tmp_path / 'nhwc.npy'}", valid_size=0, test_size=0)
    assert a.shape == b.shape == (3, 4, 5)
    assert torch.equal(a.train, torch.from_numpy(nchw)) and torch.equal(b.train, a.train)
    assert load_dataset(f"npy:{tmp_path / 'flat.npy'}").shape == (1, 7, 7)


def test_binary_arrays_are_reported_binary(tmp_path):
    np.save(tmp_path / "b.npy", np.random.default_rng(0).random((20, 4, 4)) > 0.5)
    ds = load_dataset(f"npy:{tmp_path / 'b.npy'}")
    assert ds.binary and not ds.dynamic and ds.binarize is None
    dyn = load_dataset(f"npy:{tmp_path / 'b.npy'}", binarize="dynamic")
    assert dyn.dynamic


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (
            np.full((4, 3, 3), np.nan, dtype=np.float32),
            r"36 NaN or infinite values \(first at index \(0, 0, 0\)\)",
        ),
        (
            np.array([[[0.0, 1.5]]] * 3),
            r"1 values outside \[0, 1\]|3 values outside \[0, 1\].*max 1.5.*nothing is clipped",
        ),
        (-np.ones((3, 2, 2), dtype=np.float16), r"outside \[0, 1\] \(min -1"),
        (np.zeros((3, 4, 4), dtype=np.int64), "dtype int64 is not supported"),
        (np.zeros((3, 4, 4), dtype=np.uint16), "dtype uint16 is not supported"),
        (
            np.zeros((3, 5, 5, 5), dtype=np.uint8),
            r"shape \(3, 5, 5, 5\): expected \(N, C, H, W\) or \(N, H, W, C\)",
        ),
        (np.zeros((3, 50), dtype=np.uint8), "D = side \\* side"),
        (np.zeros(3, dtype=np.uint8), "shape"),
        (np.zeros((0, 4, 4), dtype=np.uint8), "0 images"),
    ],
)
def test_bad_arrays_are_data_errors_naming_the_file(tmp_path, array, match):
    p = tmp_path / "bad.npy"
    np.save(p, array)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"npy:{p}")
    assert str(p) in str(info.value)


def test_bad_npy_files(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="object arrays are refused"):
        load_dataset(f"npy:{tmp_path / 'obj.npy'}")
    np.save(tmp_path / "t.npy", grey(10))
    (tmp_path / "t.npy").write_bytes((tmp_path / "t.npy").read_bytes()[:150])
    with pytest.raises(DataError, match=r"t\.npy"):
        load_dataset(f"npy:{tmp_path / 't.npy'}")
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"npy:{tmp_path / 'missing.npy'}")
    np.savez(tmp_path / "z.npz", train=grey(10))
    with pytest.raises(DataError, match="use npz:"):
        load_dataset(f"npy:{tmp_path / 'z.npz'}")
    with pytest.raises(ConfigError):
        load_dataset("npy:")
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset(f"npz:{tmp_path / 'z.npz'}", image_size=8)


# --------------------------------------------------------------------------- npz


def test_npz_with_given_splits_and_labels(tmp_path):
    x = {s: grey(n, seed=i) for i, (s, n) in enumerate((("train", 30), ("valid", 7), ("test", 9)))}
    y = {f"{s}_labels": np.arange(len(v)) % 3 for s, v in x.items()}
    p = tmp_path / "d.npz"
    np.savez(p, **x, **y)
    ds = load_dataset(f"npz:{p}")
    assert sizes(ds) == [30, 7, 9] and ds.info()["labels"]
    for s in SPLITS:
        assert torch.equal(ds.split(s), torch.from_numpy(x[s][:, None]).float() / 255)
        assert torch.equal(ds.labels(s), torch.from_numpy(y[f"{s}_labels"]).long())
    with pytest.raises(ConfigError, match="drop valid_size"):
        load_dataset(f"npz:{p}", valid_size=3)


def test_npz_missing_splits_are_carved_from_train(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, train=grey(40), train_labels=np.arange(40), test=grey(5), test_labels=np.arange(5))
    ds = load_dataset(f"npz:{p}", valid_size=8)
    assert sizes(ds) == [32, 8, 5]
    assert sorted(torch.cat([ds.train_labels, ds.valid_labels]).tolist()) == list(range(40))


def test_npz_pool(tmp_path):
    p = tmp_path / "pool.npz"
    np.savez(p, images=grey(100), labels=np.arange(100) % 10)
    ds = load_dataset(f"npz:{p}")
    assert sizes(ds) == [80, 10, 10] and ds.info()["labels"]
    np.savez(tmp_path / "anon.npz", grey(20))  # saved as arr_0
    assert sizes(load_dataset(f"npz:{tmp_path / 'anon.npz'}")) == [16, 2, 2]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"train": grey(10), "extra": grey(2)}, "keys .*'extra'"),
        ({"valid": grey(10)}, "expected 'train'"),
        (
            {"train": grey(10), "train_labels": np.arange(10), "test": grey(3)},
            "missing test_labels",
        ),
        ({"train": grey(10), "valid_labels": np.arange(2)}, "'valid_labels' but no 'valid'"),
        ({"train": grey(10), "train_labels": np.arange(9)}, "9 labels for 10 images"),
        ({"train": grey(10), "train_labels": np.linspace(0, 1, 10)}, "1-D integer array"),
        ({"train": grey(10), "train_labels": -np.arange(10)}, ">= 0"),
        ({"train": grey(10), "test": grey(3, h=7)}, "different image shapes"),
        ({"images": grey(10), "labels": np.arange(11)}, "11 labels for 10 images"),
    ],
)
def test_bad_npz_is_a_data_error(tmp_path, arrays, match):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(f"npz:{p}")
    assert str(p) in str(info.value)


def test_corrupt_npz(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, train=grey(30))
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataError, match=r"c\.npz"):
        load_dataset(f"npz:{p}")


# --------------------------------------------------------------------------- images:DIR


def save(path, array, mode=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def test_images_with_class_folders(tmp_path):
    for c, name in enumerate(("cat", "dog")):
        for i in range(10):
            save(tmp_path / "imgs" / name / f"{i}.png", np.full((6, 5), 20 * i + c, dtype=np.uint8))
    (tmp_path / "imgs" / "README.txt").write_text("not an image")
    (tmp_path / "imgs" / ".hidden").write_text("")
    ds = load_dataset(f"images:{tmp_path / 'imgs'}", valid_size=4, test_size=4)
    assert ds.shape == (1, 6, 5) and sizes(ds) == [12, 4, 4]
    assert ds.classes == ("cat", "dog") and ds.info()["classes"] == ["cat", "dog"]
    labels = torch.cat([ds.train_labels, ds.valid_labels, ds.test_labels])
    assert sorted(labels.tolist()) == [0] * 10 + [1] * 10
    for s in SPLITS:  # the label is the parity of the grey level, as written
        x, y = ds.split(s), ds.labels(s)
        assert torch.equal((x[:, 0, 0, 0] * 255).round().long() % 2, y)
    assert "1 non-image files ignored" in ds.source


def test_images_flat_folder_rgb_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)
    for i, a in enumerate(rgb):
        save(tmp_path / "f" / f"{i}.png", a)
    save(tmp_path / "f" / "g.png", np.full((3, 3), 7, dtype=np.uint8))  # grey among colour
    Image.fromarray(rgb[0]).save(tmp_path / "f" / "j.JPG", quality=95)
    ds = load_dataset(f"images:{tmp_path / 'f'}", valid_size=0, test_size=0)
    assert ds.shape == (3, 3, 3) and ds.labels("train") is None and len(ds.train) == 6
    assert torch.equal(ds.train[0], torch.from_numpy(rgb[0]).permute(2, 0, 1).float() / 255)
    assert torch.equal(ds.train[4], torch.full((3, 3, 3), 7 / 255))


def test_images_mixed_sizes(tmp_path):
    for i in range(3):
        save(tmp_path / "m" / f"a{i}.png", np.zeros((8, 8), dtype=np.uint8))
    save(tmp_path / "m" / "odd.png", np.zeros((10, 12), dtype=np.uint8))
    with pytest.raises(
        DataError, match=r"mixed sizes: 8x8 \(3 files.*10x12 \(1 files, e.g. odd.png\).*image_size"
    ):
        load_dataset(f"images:{tmp_path / 'm'}")
    ds = load_dataset(f"images:{tmp_path / 'm'}", image_size=4, valid_size=0, test_size=0)
    assert ds.shape == (1, 4, 4) and len(ds.train) == 4
    assert load_dataset(
        f"images:{tmp_path / 'm'}", image_size=(5, 6), test_size=0, valid_size=0
    ).shape == (1, 5, 6)


def test_bad_image_folders(tmp_path):
    save(tmp_path / "c" / "ok.png", np.zeros((4, 4), dtype=np.uint8))
    good = (tmp_path / "c" / "ok.png").read_bytes()
    (tmp_path / "c" / "broken.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"broken\.png: cannot read the image"):
        load_dataset(f"images:{tmp_path / 'c'}")

    save(tmp_path / "t" / "a.png", np.zeros((4, 4, 4), dtype=np.uint8))  # RGBA, transparent
    with pytest.raises(DataError, match=r"a\.png: has transparent pixels"):
        load_dataset(f"images:{tmp_path / 't'}")

    save(tmp_path / "mix" / "top.png", np.zeros((4, 4), dtype=np.uint8))
    save(tmp_path / "mix" / "cls" / "a.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="both at the top level"):
        load_dataset(f"images:{tmp_path / 'mix'}")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG images"):
        load_dataset(f"images:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(f"images:{tmp_path / 'nowhere'}")

    save(tmp_path / "deep" / "a" / "b" / "x.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="nested folders"):
        load_dataset(f"images:{tmp_path / 'deep'}")

    save(tmp_path / "i16" / "x.png", np.zeros((4, 4), dtype=np.uint16))
    with pytest.raises(DataError, match="mode I;16 is not supported|mode I is not supported"):
        load_dataset(f"images:{tmp_path / 'i16'}")
