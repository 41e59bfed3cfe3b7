"""vaekit.data.shapes3d: the loader of DeepMind's 3dshapes.h5 (on small synthetic files of the same layout), its
checks, its sampler; and ``vaekit data`` describing the factor data sets (shapes3d, dsprites) without their images.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from cli_run import run_cli
from vaekit.analysis import disentanglement as dis
from vaekit.data import DATASETS, Factors, load_dataset
from vaekit.data import base as data_base
from vaekit.data import dsprites as dsp
from vaekit.data import shapes3d as s3d
from vaekit.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py

#: A small grid of the same layout: 2 x 3 x 2 x 2 x 4 x 3 = 288 images.
SMALL = s3d.Shapes3DGrid((2, 3, 2, 2, 4, 3))


def grid_values(grid: s3d.Shapes3DGrid) -> list[np.ndarray]:
    """Factor values as in the real file: hues in [0, 1), scale in [0.75, 1.25], shape 0.., orientation in
    [-30, 30] degrees."""
    hue = [np.linspace(0, 1, n, endpoint=False) for n in grid.sizes[:3]]
    return [*hue, np.linspace(0.75, 1.25, grid.sizes[3]), np.arange(float(grid.sizes[4])),
            np.linspace(-30, 30, grid.sizes[5])]


def grid_labels(grid: s3d.Shapes3DGrid) -> np.ndarray:
    classes = grid.classes(np.arange(grid.count))
    return np.stack([v[classes[:, k]] for k, v in enumerate(grid_values(grid))], axis=1)


def write_h5(path, grid: s3d.Shapes3DGrid = SMALL, **override) -> np.ndarray:
    """A 3dshapes.h5 of ``grid``'s layout (random images, the grid's labels); ``override`` replaces a dataset
    (None leaves it out). Returns the images written. Skips the test without h5py (in the dev extra)."""
    h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install 'vaekit[shapes3d]')")
    rng = np.random.default_rng(0)
    data = {"images": rng.integers(0, 256, size=(grid.count, 64, 64, 3), dtype=np.uint8),
            "labels": grid_labels(grid)}
    data.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, arr in data.items():
            if arr is not None:
                f.create_dataset(name, data=arr)
    return data["images"]


@pytest.fixture
def small(tmp_path, monkeypatch):
    """A data folder holding a small 3dshapes.h5, with the module's grid set to it: (folder, images)."""
    monkeypatch.setattr(s3d, "GRID", SMALL)
    images = write_h5(tmp_path / "data" / "shapes3d" / s3d.FILE)
    return tmp_path / "data", images


def expected(images: np.ndarray, factors: np.ndarray) -> torch.Tensor:
    """The float32 (n, 3, 64, 64) images x = k / 255 of the grid rows of ``factors``."""
    rows = images[SMALL.index(factors)]
    return torch.from_numpy(rows.astype(np.float32) / 255).permute(0, 3, 1, 2)


# -- the grid ----------------------------------------------------------------------------------------


def test_grid_is_3d_shapes_and_mixed_radix():
    assert s3d.GRID.sizes == (10, 10, 10, 8, 4, 15) and s3d.GRID.count == 480_000
    assert s3d.GRID.classes([1, 15, 60, 480, 4800, 479_999]).tolist() == [
        [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0],
        [9, 9, 9, 7, 3, 14]]
    idx = np.random.default_rng(0).integers(480_000, size=1000)
    assert np.array_equal(s3d.GRID.index(s3d.GRID.classes(idx)), idx)
    with pytest.raises(DataError, match="scale class 8"):
        s3d.GRID.index([[0, 0, 0, 8, 0, 0]])
    with pytest.raises(ConfigError, match="6 integers"):
        s3d.Shapes3DGrid((2, 2))


def test_registry_entry():
    entry = DATASETS["shapes3d"]
    assert entry.shape == (3, 64, 64) and not entry.labels and entry.loader is s3d.load_shapes3d
    assert "3dshapes.h5" in entry.description and "480,000" in entry.description


# -- the loader --------------------------------------------------------------------------------------


def test_load_gives_8_bit_colour_images_aligned_with_their_factors(small):
    folder, images = small
    ds = load_dataset("shapes3d", data_dir=folder, seed=1)
    assert ds.shape == (3, 64, 64) and not ds.binary and not ds.dynamic and ds.levels == 256
    assert not ds.has_labels and "3dshapes.h5" in ds.source and "2x3x2x2x4x3" in ds.source
    assert ds.info()["splits"] == {"train": 232, "valid": 28, "test": 28}  # 10 % each below 100,000 images
    assert isinstance(ds.factors, Factors) and ds.factors.names == s3d.FACTOR_NAMES
    assert ds.factors.sizes == SMALL.sizes
    for k, v in enumerate(grid_values(SMALL)):
        np.testing.assert_allclose(ds.factors.values[k], v, rtol=0, atol=1e-12)
    for s in ("train", "valid", "test"):
        assert ds.split(s).dtype == torch.float32
        assert torch.equal(ds.split(s), expected(images, ds.factors.split(s))), s
    everything = np.concatenate([SMALL.index(ds.factors.split(s)) for s in ("train", "valid", "test")])
    assert np.array_equal(np.sort(everything), np.arange(SMALL.count))


def test_splits_test_fixed_valid_by_seed_and_only_the_wanted_ones_read(small, monkeypatch):
    folder, _ = small
    a = load_dataset("shapes3d", data_dir=folder, seed=1)
    read = []
    original = s3d.read_images
    monkeypatch.setattr(s3d, "read_images", lambda images, i: read.append(len(i)) or original(images, i))
    b = load_dataset("shapes3d", data_dir=folder, seed=2, splits=("valid", "test"))
    assert read == [28, 28]  # the training split is never read
    assert np.array_equal(a.factors.test, b.factors.test) and torch.equal(a.test, b.test)
    assert not np.array_equal(a.factors.valid, b.factors.valid)
    assert len(b.train) == 0 and b.factors.train.shape == (0, 6) and b.not_loaded == ("train",)
    c = load_dataset("shapes3d", data_dir=folder, valid_size=0.5, test_size=8)
    assert c.info()["splits"] == {"train": 140, "valid": 140, "test": 8}


def test_limit_is_a_fixed_random_subset(small):
    folder, images = small
    ds = load_dataset("shapes3d", data_dir=folder, limit=100)
    assert ds.info()["splits"] == {"train": 80, "valid": 10, "test": 10}
    assert "100 of the 288 grid images" in ds.source
    idx = np.concatenate([SMALL.index(ds.factors.split(s)) for s in ("train", "valid", "test")])
    assert len(np.unique(idx)) == 100 and not np.array_equal(np.sort(idx), np.arange(100))
    assert torch.equal(ds.train, expected(images, ds.factors.train))
    again = s3d.load_shapes3d(data_dir=folder, limit=100, seed=5)
    assert np.array_equal(again.factors.test, ds.factors.test)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="limit"):
            s3d.load_shapes3d(data_dir=folder, limit=bad)


def test_reading_in_chunks_dense_and_sparse(small, monkeypatch):
    """CHUNK of 16: the training split's chunks are read as slices, a sparse subset as rows."""
    folder, images = small
    monkeypatch.setattr(s3d, "CHUNK", 16)
    ds = s3d.load_shapes3d(data_dir=folder)
    assert torch.equal(ds.train, expected(images, ds.factors.train))
    with s3d.open_shapes3d(folder / "shapes3d" / s3d.FILE) as (f_images, _):
        sparse = np.array([0, 7, 50, 51, 200, 287])
        x = s3d.read_images(f_images, sparse)
        assert torch.equal(x, expected(images, SMALL.classes(sparse)))
        with pytest.raises(ValueError, match="increasing"):
            s3d.read_images(f_images, np.array([3, 2]))


def test_options_are_checked(small):
    folder, _ = small
    with pytest.raises(ConfigError, match="not binarized"):
        load_dataset("shapes3d", data_dir=folder, binarize="dynamic")
    with pytest.raises(ConfigError, match="not resized"):
        load_dataset("shapes3d", data_dir=folder, image_size=32)
    with pytest.raises(ConfigError, match="leaves no training images"):
        load_dataset("shapes3d", data_dir=folder, test_size=288)


def test_memory_over_budget_is_refused_before_reading(small, monkeypatch):
    folder, _ = small
    monkeypatch.setattr(data_base, "physical_memory", lambda: 100 * s3d.IMAGE_BYTES)  # 3/4: 75 images
    monkeypatch.setattr(s3d, "read_images", lambda *a: pytest.fail("read before the memory check"))
    with pytest.raises(ConfigError, match=r"288 images take .* pass limit=N") as info:
        s3d.load_shapes3d(data_dir=folder)
    assert "\n" not in str(info.value)
    assert s3d.Shapes3DGrid().count * s3d.IMAGE_BYTES == 23_592_960_000  # the whole set: 23.6 GB as float32


# -- the sampler -------------------------------------------------------------------------------------


def test_sampler_holds_the_fixed_factor_and_reads_the_file(small):
    folder, images = small
    sampler = load_dataset("shapes3d", data_dir=folder, limit=50).sampler()
    assert tuple(sampler.factor_sizes) == SMALL.sizes
    for k in range(6):
        v = SMALL.sizes[k] - 1
        factors, x = sampler.sample(30, fixed=(k, v), rng=np.random.default_rng(k))
        assert factors.shape == (30, 6) and factors.dtype == np.int64 and np.all(factors[:, k] == v)
        assert x.shape == (30, 3, 64, 64) and x.dtype == torch.float32
        assert torch.equal(x, expected(images, factors))  # unsorted, repeated rows read right
    f1, x1 = sampler.sample(20, rng=np.random.default_rng(7))
    f2, x2 = sampler.sample(20, rng=np.random.default_rng(7))
    assert np.array_equal(f1, f2) and torch.equal(x1, x2)
    for fixed in ((0, 2), (6, 0), (-1, 0), "ab"):
        with pytest.raises(ConfigError, match="fixed"):
            sampler.sample(3, fixed=fixed, rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="floor_hue class 2"):
        sampler.sample_from_factors([[2, 0, 0, 0, 0, 0]])


def test_the_intervention_scores_run_on_the_sampler(small):
    folder, _ = small
    sampler = s3d.Shapes3DSampler(folder / "shapes3d" / s3d.FILE, SMALL)

    def represent(batch: torch.Tensor) -> np.ndarray:  # mean colour of each channel
        return batch.mean((2, 3)).numpy().astype(np.float64)

    beta = dis.beta_vae_score(sampler, represent, batch_size=4, train_points=12, eval_points=6, seed=0)
    assert 0 <= beta.value <= 1


# -- what the file must be ---------------------------------------------------------------------------


def swapped_rows(grid: s3d.Shapes3DGrid = SMALL) -> np.ndarray:
    labels = grid_labels(grid)
    labels[[5, 6]] = labels[[6, 5]]
    return labels


@pytest.mark.parametrize(("override", "message"), [
    ({"images": np.zeros((288, 64, 64), np.uint8)}, r"'images' is uint8 \(288, 64, 64\), expected \(288, 64, 64, 3\)"),
    ({"images": np.zeros((287, 64, 64, 3), np.uint8)}, r"expected \(288, 64, 64, 3\)"),
    ({"images": np.zeros((288, 64, 64, 3), np.float32)}, "'images' is float32"),
    ({"labels": grid_labels(SMALL).astype(np.int64)}, "'labels' is int64"),
    ({"labels": grid_labels(SMALL)[:, :5]}, r"expected \(288, 6\)"),
    ({"labels": None}, "no 'labels' dataset"),
    ({"images": None}, "no 'images' dataset"),
    ({"labels": swapped_rows()}, r"not in the grid order .* row 5 has classes \[0, 0, 0, 0, 2, 0\], expected "
                                 r"\[0, 0, 0, 0, 1, 2\]"),
    ({"labels": grid_labels(SMALL)[::-1].copy()}, "not in the grid order"),
    ({"labels": np.where(np.arange(288)[:, None] == 9, 0.123, grid_labels(SMALL))},
     r"column 0 \(floor_hue\) has 3 distinct values, expected 2"),
    ({"labels": np.where(np.arange(288)[:, None] == 9, np.nan, grid_labels(SMALL))}, "NaN"),
])
def test_a_file_of_another_layout_is_a_clear_error(tmp_path, override, message):
    write_h5(tmp_path / s3d.FILE, **override)
    with pytest.raises(DataError, match=message) as info:
        s3d.load_shapes3d(data_dir=tmp_path, grid=SMALL)
    assert "\n" not in str(info.value) and s3d.FILE in str(info.value)


def test_the_real_grid_wants_the_real_size(tmp_path):
    write_h5(tmp_path / s3d.FILE)  # a small file, the default grid
    with pytest.raises(DataError, match=r"expected \(480000, 64, 64, 3\) .* 10x10x10x8x4x15 grid"):
        s3d.load_shapes3d(data_dir=tmp_path)


def test_float_noise_in_the_labels_is_one_value(tmp_path):
    labels = grid_labels(SMALL)
    labels[::2, 3] *= 1 + 1e-13
    write_h5(tmp_path / s3d.FILE, labels=labels)
    ds = s3d.load_shapes3d(data_dir=tmp_path, grid=SMALL, limit=40)
    assert ds.factors.sizes[3] == 2


def test_a_file_that_is_not_hdf5_is_a_clear_error(tmp_path):
    (tmp_path / s3d.FILE).write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(DataError, match="cannot open as HDF5") as info:
        s3d.load_shapes3d(data_dir=tmp_path, grid=SMALL)
    assert "\n" not in str(info.value)


def test_a_missing_file_says_where_to_put_it_and_where_it_comes_from(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_dataset("shapes3d")
    msg = str(info.value)
    assert str(tmp_path / "shapes3d" / s3d.FILE) in msg and "https://github.com/deepmind/3d-shapes" in msg
    assert "bucket 3d-shapes" in msg and "not downloaded" in msg and "\n" not in msg
    code, out, err = run_cli(["data", "--dataset", "shapes3d", "--data-dir", str(tmp_path / "nothing")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1 and "3dshapes.h5 not found" in err


def test_without_h5py_the_error_says_what_to_install(small, monkeypatch):
    folder, _ = small
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    with pytest.raises(DataError, match=r"needs h5py: pip install 'vaekit\[shapes3d\]'") as info:
        load_dataset("shapes3d", data_dir=folder)
    assert "\n" not in str(info.value)


# -- vaekit data -------------------------------------------------------------------------------------


def test_vaekit_data_describes_shapes3d_without_reading_images(small, monkeypatch, capsys):
    folder, _ = small
    monkeypatch.setattr(s3d, "read_images", lambda *a: pytest.fail("vaekit data read the images"))
    code, out, err = run_cli(["data", "--dataset", "shapes3d", "--data-dir", str(folder)], capsys)
    assert code == 0 and err == ""
    assert "3x64x64" in out and "256 grey levels" in out and "images   288 in all" in out
    assert "factor   floor_hue       2 values  0 .. 0.5" in out
    assert "factor   orientation     3 values  -30 .. 30" in out and "train        232 images" in out
    code, out, _ = run_cli(["data", "--dataset", "shapes3d", "--data-dir", str(folder), "--limit", "50",
                            "--json"], capsys)
    info = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and info["images"] == 50 and info["splits"] == {"train": 40, "valid": 5, "test": 5}
    assert info["levels"] == 256 and info["binary"] is False and info["not_loaded"] == []
    assert [f["name"] for f in info["factors"]] == list(s3d.FACTOR_NAMES)
    assert [f["values"] for f in info["factors"]] == list(SMALL.sizes)
    assert info["factors"][3] == {"name": "scale", "values": 2, "min": 0.75, "max": 1.25}


def test_vaekit_data_describes_the_whole_dsprites_grid_without_rendering(tmp_path, monkeypatch, capsys):
    """The 737,280 images would take 11 GiB as float32: the listing comes from the grid alone."""
    monkeypatch.setattr(dsp, "_to_tensor", lambda *a: pytest.fail("vaekit data loaded the images"))
    monkeypatch.setattr(dsp, "render_dsprites", lambda *a, **k: pytest.fail("vaekit data rendered images"))
    code, out, _ = run_cli(["data", "--dataset", "dsprites", "--data-dir", str(tmp_path), "--json"], capsys)
    info = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and info["images"] == 737_280 and info["shape"] == [1, 64, 64] and info["levels"] == 2
    assert info["splits"] == {"train": 717_280, "valid": 10_000, "test": 10_000}
    assert [(f["name"], f["values"]) for f in info["factors"]] == list(zip(dsp.FACTOR_NAMES, dsp.GRID.sizes))
    assert info["factors"][2]["min"] == 0 and info["factors"][2]["max"] == pytest.approx(2 * np.pi * 39 / 40)
    assert not list(tmp_path.iterdir())  # no cache written
    code, out, _ = run_cli(["data", "--dataset", "dsprites", "--data-dir", str(tmp_path), "--limit", "1000"], capsys)
    assert code == 0 and "factor   orientation    40 values  0 .. 6.12611" in out and "images   1000 in all" in out


def test_vaekit_data_describe_matches_the_loaded_data_set(small, capsys):
    folder, _ = small
    info, factors = s3d.describe_shapes3d(data_dir=folder, seed=3, splits=("valid", "test"))
    ds = load_dataset("shapes3d", data_dir=folder, seed=3, splits=("valid", "test"))
    assert info == ds.info() and np.array_equal(factors.valid, ds.factors.valid)
    info, factors = dsp.describe_dsprites(data_dir=folder, limit=300, seed=3)
    ds = dsp.load_dsprites(data_dir=folder, limit=300, seed=3)
    assert info == ds.info() and np.array_equal(factors.test, ds.factors.test)


def test_vaekit_data_json_of_a_data_set_without_factors(capsys):
    code, out, _ = run_cli(["data", "--dataset", "digits", "--json"], capsys)
    info = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and info["images"] == 1797 and info["factors"] is None
    code, _, err = run_cli(["data", "--dataset", "digits", "--limit", "10"], capsys)
    assert code == 2 and "limit applies to the data sets drawn from a factor grid" in err
