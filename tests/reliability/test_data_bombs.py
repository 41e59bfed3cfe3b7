"""Data files that ask for far more than they hold: gzip bombs (the decompressed size is capped by the shape
the file declares or is expected to have, while streaming), npz archives whose members are not arrays, and
the ``.amat`` parse cache, which must follow the source's content, not its size and mtime."""

from __future__ import annotations

import gzip
import os
import time
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaekit.data import load_dataset, read_amat, read_idx, write_amat, write_idx
from vaekit.data.amat import _cache_candidates, amat_size
from vaekit.data.download import read_bytes
from vaekit.errors import DataError

ROW = b" ".join([b"0"] * 784) + b"\n"


def _amat_bomb(path, total=3 * 2**30, member=64 * 2**20):
    one = gzip.compress(ROW * (member // len(ROW)), compresslevel=9, mtime=0)
    path.write_bytes(one * (total // member))


def _timed(fn, *args, **kwargs):
    start = time.process_time()
    try:
        fn(*args, **kwargs)
    except DataError as exc:
        return str(exc), time.process_time() - start
    raise AssertionError("no DataError")


def test_amat_gzip_bomb_is_refused_while_streaming(tmp_path):
    path = tmp_path / "binarized_mnist_train.amat"
    _amat_bomb(path)
    assert path.stat().st_size < 8 * 2**20
    message, cpu = _timed(read_amat, path, expected_rows=50_000)
    assert str(path) in message and "gzip" in message and "\n" not in message
    assert cpu < 5, cpu


def test_amat_bomb_through_the_loader(tmp_path):
    folder = tmp_path / "bm"
    folder.mkdir()
    _amat_bomb(folder / "binarized_mnist_valid.amat", total=2**30)
    write_amat(folder / "binarized_mnist_test.amat", np.zeros((3, 784), dtype=np.uint8))
    message, cpu = _timed(load_dataset, "binarized-mnist", data_dir=folder, splits=("valid",), download=False)
    assert "binarized_mnist_valid.amat" in message and "gzip" in message and cpu < 5


def test_idx_gzip_bomb_is_refused_from_its_header(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + (10_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    path.write_bytes(gzip.compress(header, mtime=0) + gzip.compress(bytes(64 * 2**20), 9, mtime=0) * 40)
    message, cpu = _timed(read_idx, path)
    assert str(path) in message and "gzip" in message and cpu < 5


def test_idx_header_declaring_little_with_a_long_tail(tmp_path):
    """A header of 1 value followed by 100 MB of zeros: refused after a few kB, not after 100 MB."""
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 1, 7]) + bytes(100 * 2**20), 9, mtime=0))
    message, cpu = _timed(read_idx, path)
    assert "gzip" in message and cpu < 1


def test_small_trailing_garbage_is_still_named_exactly(tmp_path):
    path = tmp_path / "y-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 9, 9, 9]), mtime=0))
    with pytest.raises(DataError, match="3 unexpected bytes"):
        read_idx(path)


def test_plain_amat_larger_than_expected_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.amat"
    path.write_bytes(ROW * 20)
    with pytest.raises(DataError, match="big.amat"):
        read_amat(path, expected_rows=10, cache=False)
    assert amat_size(10) == 10 * 1569


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=4), st.integers(0, 9), st.integers(0, 3))
def test_gzip_members_and_padding_read_as_gzip_does(tmp_path_factory, parts, level, padding):
    """Several gzip members, and zero padding after them, expand exactly as ``gzip.decompress`` does."""
    raw = b"".join(gzip.compress(p, compresslevel=level, mtime=0) for p in parts) + bytes(padding)
    path = tmp_path_factory.mktemp("gz") / "f.gz"
    path.write_bytes(raw)
    assert read_bytes(path) == gzip.decompress(raw) == b"".join(parts)
    assert read_bytes(path, limit=len(b"".join(parts))) == b"".join(parts)
    if parts[0]:
        with pytest.raises(DataError, match="expands past"):
            read_bytes(path, limit=len(b"".join(parts)) - 1)


def test_gzip_with_trailing_garbage_or_cut_is_a_data_error(tmp_path):
    good = gzip.compress(b"hello" * 100, mtime=0)
    for name, raw in (("garbage", good + b"junk"), ("cut", good[:-5]), ("bad-crc", good[:-8] + bytes(8))):
        path = tmp_path / f"{name}.gz"
        path.write_bytes(raw)
        with pytest.raises(DataError, match="gzip"):
            read_bytes(path)


# -- npz members that are not arrays ---------------------------------------------------------------


@pytest.mark.parametrize("member, payload", [
    ("train.npy", b"hello world\n" * 10),  # a text file in a zip renamed .npz
    ("train.npy", b"PK\x03\x04 not really a zip"),
    ("images", b"\x93NUMPX broken magic"),
])
def test_npz_member_that_is_not_npy_is_one_line(tmp_path, member, payload):
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, payload)
    with pytest.raises(DataError) as info:
        load_dataset(f"npz:{path}")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_npz_with_an_array_and_a_text_member(tmp_path):
    path = tmp_path / "mixed.npz"
    np.savez(path, train=np.zeros((20, 4, 4), dtype=np.uint8))
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("train_labels.npy", "0 1 2 3")
    with pytest.raises(DataError, match="train_labels"):
        load_dataset(f"npz:{path}")


# -- the .amat parse cache follows the content ---------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_amat_cache_is_keyed_by_content_not_size_and_mtime(tmp_path, gz):
    path = tmp_path / ("d.amat.gz" if gz else "d.amat")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, (30, 784), dtype=np.uint8)
    write_amat(path, a)
    size = path.stat().st_size
    for i in range(784):  # one pixel changed: the same size plain, and for some pixel gzipped too
        b = a.copy()
        b[7, i] ^= 1
        write_amat(path, b)
        if path.stat().st_size == size:
            break
    assert path.stat().st_size == size
    write_amat(path, a)
    assert np.array_equal(read_amat(path), a)  # parsed, cache written
    assert any(c.exists() for c in _cache_candidates(path))
    st = path.stat()
    write_amat(path, b)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as before: only the content changed
    assert path.stat().st_mtime_ns == st.st_mtime_ns
    assert np.array_equal(read_amat(path), b)
    assert np.array_equal(read_amat(path), b)  # and the cache, rewritten, now serves b


def test_amat_cache_is_still_used_when_valid(tmp_path, monkeypatch):
    path = tmp_path / "e.amat"
    a = np.random.default_rng(1).integers(0, 2, (10, 784), dtype=np.uint8)
    write_amat(path, a)
    read_amat(path)
    import vaekit.data.amat as amat

    monkeypatch.setattr(amat, "parse_amat", lambda *a, **k: pytest.fail("parsed again despite a valid cache"))
    assert np.array_equal(read_amat(path), a)


def test_idx_roundtrip_through_the_capped_reader(tmp_path):
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        write_idx(tmp_path / name, x)
        assert np.array_equal(read_idx(tmp_path / name), x)
