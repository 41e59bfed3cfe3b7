"""vaekit.data.dsprites: the factor grid, the renderer, the sampler, the loader and its cache.

No test renders the whole 737,280-image grid: the loader is tried on a fixed subset (``limit``) or on a coarse
grid, and the renderer on chosen factor classes.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial

import numpy as np
import pytest
import torch

from vaekit.analysis import disentanglement as dis
from vaekit.data import DATASETS, Factors, load_dataset
from vaekit.data import dsprites as dsp
from vaekit.data.base import TEST_SEED
from vaekit.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py

GRID = dsp.GRID
#: A coarse grid (384 images) to exercise the whole-grid paths: cache, DeepMind's file.
SMALL = dsp.DSpritesGrid(scales=2, orientations=4, positions=4)
BASE = (0, 3, 5, 10, 20)  # shape, scale, orientation, x, y


def render(*rows) -> np.ndarray:
    return dsp.render_dsprites(np.array(rows))


def vary(k: int, values) -> np.ndarray:
    """Images of BASE with factor k set to each of ``values``."""
    rows = np.array([BASE] * len(values))
    rows[:, k] = values
    return dsp.render_dsprites(rows)


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    """(n, 2) mean (column, row) of the pixels on, in pixel-centre coordinates."""
    w = images.astype(np.float64)
    r, c = np.indices(images.shape[1:]) + 0.5
    total = w.sum((1, 2))
    return np.stack([(w * c).sum((1, 2)) / total, (w * r).sum((1, 2)) / total], axis=1)


# -- the grid ----------------------------------------------------------------------------------------


def test_grid_has_the_dsprites_factor_counts_and_values():
    assert GRID.sizes == (3, 6, 40, 32, 32) and GRID.count == 737_280
    shape, scale, orientation, x, y = GRID.values
    assert shape.tolist() == [1.0, 2.0, 3.0]
    assert np.allclose(scale, np.linspace(0.5, 1.0, 6))
    assert np.allclose(orientation, np.arange(40) * 2 * np.pi / 40) and orientation.max() < 2 * np.pi
    assert np.allclose(x, np.linspace(0, 1, 32)) and np.array_equal(x, y)


def test_index_and_classes_are_mixed_radix_and_round_trip():
    assert GRID.classes([0]).tolist() == [[0, 0, 0, 0, 0]]
    assert GRID.classes([GRID.count - 1]).tolist() == [[2, 5, 39, 31, 31]]
    assert GRID.index([[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]).tolist() \
        == [1, 32, 1024, 40 * 1024, 6 * 40 * 1024]
    idx = np.random.default_rng(0).integers(GRID.count, size=5000)
    assert np.array_equal(GRID.index(GRID.classes(idx)), idx)
    with pytest.raises(DataError, match="indices must be in"):
        GRID.classes([GRID.count])
    with pytest.raises(DataError, match="orientation class 40"):
        GRID.index([[0, 0, 40, 0, 0]])
    with pytest.raises(DataError, match=r"\(n, 5\) integer"):
        dsp.render_dsprites(np.zeros((2, 4), dtype=int))


# -- rendering ---------------------------------------------------------------------------------------


def test_rendering_is_deterministic_binary_and_independent_of_the_batch():
    idx = np.random.default_rng(1).integers(GRID.count, size=600)
    a = dsp.render_dsprites(GRID.classes(idx))
    assert a.shape == (600, 64, 64) and a.dtype == np.uint8 and set(np.unique(a)) <= {0, 1}
    assert np.array_equal(a, dsp.render_dsprites(GRID.classes(idx)))
    order = np.random.default_rng(2).permutation(600)
    assert np.array_equal(dsp.render_dsprites(GRID.classes(idx[order])), a[order])
    assert np.array_equal(dsp.render_dsprites(GRID.classes(idx[:1])), a[:1])  # alone, not in a batch
    assert a.sum((1, 2)).min() > 0


def test_the_largest_sprites_at_the_corners_stay_inside_the_frame():
    c = np.array([(s, 5, o, x, y) for s in range(3) for o in range(40) for x in (0, 31) for y in (0, 31)])
    im = dsp.render_dsprites(c)
    border = np.concatenate([im[:, 0], im[:, -1], im[:, :, 0], im[:, :, -1]], axis=1)
    assert border.sum() == 0
    assert im[:, 1].any() or im[:, :, 1].any()  # ... yet they come close to it


def test_every_factor_changes_the_image():
    for k, values in ((0, [0, 1, 2]), (1, range(6)), (3, [0, 1, 16, 31]), (4, [0, 1, 16, 31])):
        im = vary(k, list(values))
        flat = {a.tobytes() for a in im}
        assert len(flat) == len(im), dsp.FACTOR_NAMES[k]


def test_orientation_turns_the_heart_always_and_square_and_ellipse_where_not_symmetric():
    heart = dsp.render_dsprites([[2, 5, o, 16, 16] for o in range(40)])
    assert len({a.tobytes() for a in heart}) == 40
    square = dsp.render_dsprites([[0, 5, o, 16, 16] for o in range(40)])
    for o in range(1, 40):
        if o % 10:  # not a multiple of 90 degrees
            assert not np.array_equal(square[o], square[0]), o
    ellipse = dsp.render_dsprites([[1, 5, o, 16, 16] for o in (0, 5, 10)])
    assert not np.array_equal(ellipse[0], ellipse[1]) and not np.array_equal(ellipse[0], ellipse[2])
    # anticlockwise: at 45 degrees the long axis runs from the bottom left to the top right (centre 32.75 px)
    top, left = ellipse[1, :32], ellipse[1, :, :32]
    assert top[:, 33:].sum() > 3 * top[:, :32].sum() and left[32:].sum() > 3 * left[:32].sum()
    # the square at 90 degrees is the same square, up to the rasterisation of its edges
    assert np.abs(square[10].astype(int) - square[0]).sum() < 0.2 * square[0].sum()


def test_scale_grows_the_sprite():
    for shape in range(3):
        counts = dsp.render_dsprites([[shape, s, 7, 16, 16] for s in range(6)]).sum((1, 2))
        assert np.all(np.diff(counts) > 0), (shape, counts)


def test_x_moves_right_and_y_moves_down_from_the_stated_centres():
    steps = [0, 8, 16, 24, 31]
    com_x = centre_of_mass(vary(3, steps))
    com_y = centre_of_mass(vary(4, steps))
    assert np.all(np.diff(com_x[:, 0]) > 10) and np.ptp(com_x[:, 1]) < 0.5
    assert np.all(np.diff(com_y[:, 1]) > 10) and np.ptp(com_y[:, 0]) < 0.5
    # a square or an ellipse at orientation 0 is symmetric: its centre of mass is its centre, 8.75 + 1.5 k px
    for shape in (0, 1):
        im = dsp.render_dsprites([[shape, 5, 0, k, 31 - k] for k in steps])
        k = np.array(steps)
        expected = np.stack([8.75 + 1.5 * k, 8.75 + 1.5 * (31 - k)], axis=1)
        assert np.allclose(centre_of_mass(im), expected, atol=0.3)  # the pixel grid: within a quarter pixel


# -- the sampler -------------------------------------------------------------------------------------


def test_sampler_holds_the_fixed_factor_and_matches_sample_from_factors():
    sampler = dsp.DSpritesSampler()
    assert tuple(sampler.factor_sizes) == (3, 6, 40, 32, 32)
    for k, v in ((0, 2), (1, 0), (2, 39), (3, 5), (4, 31)):
        factors, images = sampler.sample(50, fixed=(k, v), rng=np.random.default_rng(k))
        assert factors.shape == (50, 5) and factors.dtype == np.int64 and np.all(factors[:, k] == v)
        assert images.shape == (50, 1, 64, 64) and images.dtype == torch.float32
        assert torch.equal(images, sampler.sample_from_factors(factors))
    f1, x1 = sampler.sample(40, rng=np.random.default_rng(7))
    f2, x2 = sampler.sample(40, rng=np.random.default_rng(7))
    assert np.array_equal(f1, f2) and torch.equal(x1, x2)
    assert len({tuple(r) for r in f1}) > 30 and all(len(np.unique(f1[:, k])) > 1 for k in range(5))
    for fixed in ((2, 40), (5, 0), (-1, 0), "ab"):
        with pytest.raises(ConfigError, match="fixed"):
            sampler.sample(3, fixed=fixed, rng=np.random.default_rng(0))
    with pytest.raises(DataError):
        sampler.sample_from_factors([[3, 0, 0, 0, 0]])


def test_sampler_from_given_images_and_the_intervention_scores_run():
    images = dsp.render_dsprites(SMALL.classes(np.arange(SMALL.count)), grid=SMALL)
    sampler = dsp.DSpritesSampler(SMALL, images=images)
    factors, x = sampler.sample(20, fixed=(3, 1), rng=np.random.default_rng(0))
    assert torch.equal(x, torch.from_numpy(dsp.render_dsprites(factors, grid=SMALL).astype(np.float32))[:, None])
    with pytest.raises(DataError, match="sampler images"):
        dsp.DSpritesSampler(images=images)

    def represent(batch: torch.Tensor) -> np.ndarray:  # centre of mass and size: x, y and scale are readable
        im = batch[:, 0].numpy()
        return np.concatenate([centre_of_mass(im) / 64, im.sum((1, 2))[:, None] / 200], axis=1)

    big = dsp.DSpritesSampler()
    beta = dis.beta_vae_score(big, represent, batch_size=8, train_points=30, eval_points=20, seed=0)
    factor = dis.factor_vae_score(big, represent, batch_size=8, train_points=20, eval_points=10,
                                  variance_points=100, seed=0)
    assert 0 <= beta.value <= 1 and 0 <= factor.value <= 1


# -- the loader --------------------------------------------------------------------------------------


@pytest.fixture
def small_dsprites(monkeypatch):
    """``load_dataset("dsprites")`` on a fixed subset of 3,000 grid images (the real loader, ``limit=3000``)."""
    entry = DATASETS["dsprites"]
    monkeypatch.setitem(DATASETS, "dsprites", dataclasses.replace(entry, loader=partial(dsp.load_dsprites,
                                                                                         limit=3000)))


def assert_factors_match_images(ds) -> None:
    for s in ("train", "valid", "test"):
        f = ds.factors.split(s)
        assert len(f) == len(ds.split(s))
        expected = torch.from_numpy(dsp.render_dsprites(f).astype(np.float32))[:, None]
        assert torch.equal(ds.split(s), expected), s


def test_registry_entry():
    entry = DATASETS["dsprites"]
    assert entry.shape == (1, 64, 64) and not entry.labels and entry.loader is dsp.load_dsprites
    assert "737,280" in entry.description and "not pixel-identical" in entry.description


def test_load_dataset_on_a_subset_aligns_factors_with_images(small_dsprites, tmp_path):
    ds = load_dataset("dsprites", data_dir=tmp_path, seed=1)
    assert ds.shape == (1, 64, 64) and ds.binary and not ds.dynamic and ds.levels == 2 and not ds.has_labels
    assert ds.info()["splits"] == {"train": 2400, "valid": 300, "test": 300}
    assert isinstance(ds.factors, Factors) and ds.factors.names == dsp.FACTOR_NAMES
    assert ds.factors.sizes == GRID.sizes and np.allclose(ds.factors.values[1], GRID.values[1])
    assert_factors_match_images(ds)
    assert "rendered by vaekit" in ds.source and "3000 of the 737280" in ds.source and "not cached" in ds.source
    assert not list(tmp_path.iterdir())  # a subset writes no cache
    everything = np.concatenate([GRID.index(ds.factors.split(s)) for s in ("train", "valid", "test")])
    assert len(np.unique(everything)) == 3000
    assert np.allclose(ds.factors.split_values("test")[:, 1], GRID.values[1][ds.factors.test[:, 1]])
    other = load_dataset("dsprites", data_dir=tmp_path, seed=2, splits=("valid", "test"))
    assert np.array_equal(other.factors.test, ds.factors.test)  # the test split never depends on seed
    assert not np.array_equal(other.factors.valid, ds.factors.valid)
    assert len(other.train) == 0 and other.factors.train.shape == (0, 5) and other.not_loaded == ("train",)


def test_loader_options_are_checked(small_dsprites, tmp_path):
    with pytest.raises(ConfigError, match="binary already"):
        load_dataset("dsprites", data_dir=tmp_path, binarize="dynamic")
    with pytest.raises(ConfigError, match="not resized"):
        load_dataset("dsprites", data_dir=tmp_path, image_size=32)
    with pytest.raises(ConfigError, match="leaves no training images"):
        load_dataset("dsprites", data_dir=tmp_path, test_size=3000)
    ds = load_dataset("dsprites", data_dir=tmp_path, valid_size=0.5, test_size=100)
    assert ds.info()["splits"] == {"train": 1450, "valid": 1450, "test": 100}
    with pytest.raises(ConfigError, match="limit"):
        dsp.load_dsprites(data_dir=tmp_path, limit=0)


# -- the cache ---------------------------------------------------------------------------------------


def test_the_cache_is_written_once_and_read_back_equal(tmp_path, monkeypatch):
    ds = dsp.load_dsprites(data_dir=tmp_path, grid=SMALL, valid_size=40, test_size=40)
    path = dsp.cache_path(dsp.cache_dir(), SMALL)  # in the user cache, nothing in the data folder
    assert path.is_file() and path.stat().st_size == dsp.HEADER_BYTES + SMALL.count * 512
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xdg-cache"]
    assert f"cached in {path}" in ds.source
    assert_factors_match_images_small(ds)
    bits = dsp.read_cache(path, SMALL)
    assert np.array_equal(dsp.unpack(bits), dsp.render_dsprites(SMALL.classes(np.arange(SMALL.count)), grid=SMALL))
    monkeypatch.setattr(dsp, "_render_chunk", None)  # a second load must read the cache, not render
    again = dsp.load_dsprites(data_dir=tmp_path, grid=SMALL, valid_size=40, test_size=40)
    for s in ("train", "valid", "test"):
        assert torch.equal(again.split(s), ds.split(s)) and np.array_equal(again.factors.split(s), ds.factors.split(s))


def assert_factors_match_images_small(ds) -> None:
    for s in ("train", "valid", "test"):
        expected = dsp.render_dsprites(ds.factors.split(s), grid=SMALL).astype(np.float32)
        assert torch.equal(ds.split(s), torch.from_numpy(expected)[:, None]), s


def test_cache_false_neither_reads_nor_writes(tmp_path):
    ds = dsp.load_dsprites(data_dir=tmp_path, grid=SMALL, cache=False)
    assert not list(tmp_path.iterdir()) and "not cached" in ds.source
    assert ds.info()["splits"] == {"train": 308, "valid": 38, "test": 38}  # 10 % each of 384


def _rewrite_header(path, **changes) -> None:
    raw = path.read_bytes()
    head = raw[:dsp.HEADER_BYTES]
    meta = json.loads(head[len(dsp._MAGIC):].decode())
    meta.update(changes)
    new = (dsp._MAGIC + json.dumps(meta).encode() + b"\n").ljust(dsp.HEADER_BYTES, b" ")
    path.write_bytes(new + raw[dsp.HEADER_BYTES:])


def test_a_stale_cache_is_rendered_afresh(tmp_path):
    dsp.cache_dir().mkdir(parents=True)
    path = dsp.write_cache(dsp.cache_path(dsp.cache_dir(), SMALL), SMALL)
    good = path.read_bytes()
    for change in ({"version": dsp.RENDER_VERSION - 1}, {"render": {"radius": 7.0}}):
        _rewrite_header(path, **change)
        assert dsp.read_cache(path, SMALL) is None
        dsp.load_dsprites(data_dir=tmp_path, grid=SMALL)
        assert path.read_bytes() == good


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-1], "bytes, expected"),
    (lambda raw: raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:], "checksum"),
    (lambda raw: b"nonsense" + raw[8:], "not a vaekit dSprites cache"),
    (lambda raw: raw[:len(dsp._MAGIC)] + b"]" + raw[len(dsp._MAGIC) + 1:], "unreadable header"),
])
def test_a_damaged_cache_is_a_clear_error(tmp_path, damage, message):
    dsp.cache_dir().mkdir(parents=True)
    path = dsp.write_cache(dsp.cache_path(dsp.cache_dir(), SMALL), SMALL)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=message) as info:
        dsp.load_dsprites(data_dir=tmp_path, grid=SMALL)
    assert str(path) in str(info.value) and "cache=False" in str(info.value)
    assert dsp.load_dsprites(data_dir=tmp_path, grid=SMALL, cache=False).factors is not None


# -- DeepMind's file ---------------------------------------------------------------------------------


def write_published(path, grid, rows=None, **override) -> None:
    """An npz of the published layout (colour column first) for ``grid``, or its first ``rows`` rows."""
    n = grid.count if rows is None else rows
    classes = np.concatenate([np.zeros((grid.count, 1), np.int64), grid.classes(np.arange(grid.count))], axis=1)
    values = np.concatenate([np.ones((grid.count, 1))] + [v[classes[:, k + 1]][:, None]
                                                           for k, v in enumerate(grid.values)], axis=1)
    arrays = {"imgs": dsp.render_dsprites(classes[:, 1:], grid=grid), "latents_classes": classes,
              "latents_values": values}
    arrays = {k: v[:n] for k, v in arrays.items()}
    arrays.update(override)
    np.savez_compressed(path, **arrays)


def test_the_published_file_is_loaded_instead_when_present(tmp_path):
    path = tmp_path / dsp.PUBLISHED_FILE
    write_published(path, SMALL)
    ds = dsp.load_dsprites(data_dir=tmp_path, grid=SMALL, valid_size=40, test_size=40)
    assert ds.source == f"DeepMind's dSprites file {path}"
    assert_factors_match_images_small(ds)
    assert not dsp.cache_path(dsp.cache_dir(), SMALL).exists()
    assert ds.factors.values[0].tolist() == [1.0, 2.0, 3.0]


def test_a_published_file_of_the_wrong_size_is_refused_before_any_rendering(tmp_path, monkeypatch):
    write_published(tmp_path / dsp.PUBLISHED_FILE, SMALL, rows=10)
    monkeypatch.setattr(dsp, "_render_chunk", None)
    with pytest.raises(DataError, match=r"imgs is uint8 \(10, 64, 64\), expected \(737280, 64, 64\)"):
        dsp.load_dsprites(data_dir=tmp_path)


@pytest.mark.parametrize("override, message", [
    ({"imgs": np.full((SMALL.count, 64, 64), 2, np.uint8)}, "other than 0 and 1"),
    ({"latents_classes": np.zeros((SMALL.count, 6), np.int64)}, "not in the grid order"),
    ({"latents_values": np.zeros((SMALL.count, 6), np.float32)}, "latents_values of shape do not increase"),
    ({"imgs": np.zeros((SMALL.count, 64, 64), np.float32)}, "imgs is float32"),
    ({"imgs": np.array([{"a": 1}] * 3, dtype=object)}, "cannot read the dSprites npz"),
])
def test_a_bad_published_file_is_a_clear_error(tmp_path, override, message):
    path = tmp_path / dsp.PUBLISHED_FILE
    write_published(path, SMALL, **override)
    with pytest.raises(DataError, match=message):
        dsp.load_dsprites(data_dir=tmp_path, grid=SMALL)


def test_factors_are_checked():
    ok = np.zeros((2, 2), np.int64)
    f = Factors(("a", "b"), (2, 3), [np.arange(2), np.arange(3)], ok, ok[:1], np.zeros((0, 2), np.int64))
    assert f.train.flags.writeable is False and f.values[1].tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="class 3 for a factor of 3"):
        Factors(("a", "b"), (2, 3), [np.arange(2), np.arange(3)], ok + [0, 3], ok, ok)
    with pytest.raises(DataError, match="length 3"):
        Factors(("a", "b"), (2, 3), [np.arange(2), np.arange(2)], ok, ok, ok)
    assert TEST_SEED  # the subset of ``limit`` is drawn with it
