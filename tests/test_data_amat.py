"""vaekit.data.amat: the .amat text format, its cache, and static binarized MNIST."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import pytest
import torch

from vaekit.data import MissingFilesError, load_dataset, parse_amat, read_amat, write_amat
from vaekit.data import amat as amat_mod
from vaekit.errors import ConfigError, DataError

# SHA-256 of the decoded uint8 arrays (N x 784, C order), from ../shared/data/README.md
REFERENCE_SHA256 = {
    "train": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
    "valid": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
    "test": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
}
SMALL_ROWS = {"train": 30, "valid": 10, "test": 12}


pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py


def random_bits(n: int, width: int = 784, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, width)) < 0.3).astype(np.uint8)


@pytest.fixture
def small_set(tmp_path, monkeypatch):
    """A folder of small binarized_mnist_*.amat files (train gzipped), row counts patched."""
    monkeypatch.setattr(amat_mod, "EXPECTED_ROWS", dict(SMALL_ROWS))
    d = tmp_path / "binarized_mnist"
    d.mkdir()
    arrays = {s: random_bits(n, seed=i) for i, (s, n) in enumerate(SMALL_ROWS.items())}
    for s, x in arrays.items():
        write_amat(d / f"binarized_mnist_{s}.amat{'.gz' if s == 'train' else ''}", x)
    return d, arrays


# --------------------------------------------------------------------------- the format


def test_parse_hand_written_text():
    x = parse_amat(b"0 1 1 0\n1 1 1 1\n0 0 0 0\n", "t.amat", width=4)
    assert x.dtype == np.uint8 and x.tolist() == [[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]


def test_missing_final_newline_and_crlf_are_tolerated():
    want = [[0, 1, 1, 0], [1, 0, 0, 1]]
    assert parse_amat(b"0 1 1 0\n1 0 0 1", "t", width=4).tolist() == want
    assert parse_amat(b"0 1 1 0\r\n1 0 0 1\r\n", "t", width=4).tolist() == want
    assert parse_amat(b"0 1 1 0\r\n1 0 0 1", "t", width=4).tolist() == want


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"", "empty"),
        (b"0 1 1 0\n1 0 0\n", r"line 2 is 6 bytes with 3 values, expected 8 bytes.*truncated"),
        (b"0 1 1 0 1\n1 0 0 1\n", r"line 1 is 10 bytes with 5 values"),
        (b"0 1 1 0\n1 0 2 1\n", r"line 2, value 3: expected '0' or '1'.*b'2'"),
        (b"0 1 1 0\n1 0 0 1\n0 1 0 1\n0 x 0 1\n", r"line 4, value 2"),
        (b"0 1 1 0\n1 0\t0 1\n", r"line 2, byte 4: expected a single space.*b'\\t'"),
        (b"0 1  1 0\n1 0 0 1\n", r"line 1 is 9 bytes"),
        (b"0 1 1 0 \n1 0 0 1 \n", r"line 1 is 9 bytes"),
        (b"0 1 1 0\r\n1 0 0 1\n", r"every line ending in \\r\\n"),
        (b"0 1 1 0\n1 0 0 1\r\n", r"line 2 is 9 bytes"),
        (b"0,1,1,0\n1,0,0,1\n", r"line 1, byte 2: expected a single space"),
    ],
)
def test_malformed_text_is_a_data_error_naming_file_and_line(text, match):
    with pytest.raises(DataError, match=match) as info:
        parse_amat(text, "some/file.amat", width=4)
    assert str(info.value).startswith("some/file.amat: ")


def test_row_count_is_checked():
    with pytest.raises(DataError, match="has 2 images, expected 3"):
        parse_amat(b"0 1 1 0\n1 0 0 1\n", "f.amat", width=4, expected_rows=3)


def test_gz_and_plain_read_the_same(tmp_path):
    x = random_bits(7)
    write_amat(tmp_path / "a.amat", x)
    write_amat(tmp_path / "b.amat.gz", x)
    assert len((tmp_path / "a.amat").read_bytes()) == 7 * 1568
    assert np.array_equal(read_amat(tmp_path / "a.amat", cache=False), x)
    assert np.array_equal(read_amat(tmp_path / "b.amat.gz", cache=False), x)


def test_truncated_gzip_is_a_data_error(tmp_path):
    data = gzip.compress(b"0 1 " * 2000)
    p = tmp_path / "t.amat.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.amat\.gz: corrupt or truncated gzip"):
        read_amat(p)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_amat(tmp_path / "nope.amat")


# --------------------------------------------------------------------------- the cache


def test_cache_is_written_in_the_user_cache_and_used(tmp_path, monkeypatch):
    x = random_bits(9)
    src = tmp_path / "data" / "d.amat"
    src.parent.mkdir()
    write_amat(src, x)
    assert np.array_equal(read_amat(src), x)
    cache = amat_mod._cache_candidates(src)[0]
    assert cache.is_file() and cache.parent == tmp_path / "xdg-cache" / "vaekit" / "parsed"
    assert sorted(p.name for p in src.parent.iterdir()) == ["d.amat"]  # nothing beside the source, writable or not

    def boom(*args, **kwargs):
        raise AssertionError("parsed although the cache is valid")

    monkeypatch.setattr(amat_mod, "parse_amat", boom)
    assert np.array_equal(read_amat(src), x)


def test_changed_source_invalidates_the_cache(tmp_path):
    src = tmp_path / "d.amat"
    write_amat(src, random_bits(9, seed=1))
    read_amat(src)
    y = random_bits(9, seed=2)  # same size, new content, new mtime
    write_amat(src, y)
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert np.array_equal(read_amat(src), y)


def test_corrupt_cache_is_ignored_and_rewritten(tmp_path):
    x = random_bits(5)
    src = tmp_path / "d.amat"
    write_amat(src, x)
    read_amat(src)
    cache = amat_mod._cache_candidates(src)[0]
    cache.write_bytes(b"garbage")
    assert np.array_equal(read_amat(src), x)
    assert cache.read_bytes()[:2] == b"PK"  # a valid npz again


def test_read_only_folder_caches_in_the_user_cache(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    x = random_bits(6)
    write_amat(d / "r.amat", x)
    d.chmod(0o555)  # read-only by its mode bits; respected even when running as root
    try:
        assert np.array_equal(read_amat(d / "r.amat"), x)
        assert sorted(p.name for p in d.iterdir()) == ["r.amat"]
        cached = list((tmp_path / "xdg-cache" / "vaekit" / "parsed").glob("*-r.amat.npz"))
        assert len(cached) == 1
        assert np.array_equal(read_amat(d / "r.amat"), x)
    finally:
        d.chmod(0o755)


def test_unwritable_everywhere_skips_the_cache(tmp_path, monkeypatch):
    d = tmp_path / "ro"
    d.mkdir()
    x = random_bits(4)
    write_amat(d / "r.amat", x)
    d.chmod(0o555)
    monkeypatch.setenv("XDG_CACHE_HOME", str(d / "cannot-create"))
    try:
        assert np.array_equal(read_amat(d / "r.amat"), x)
        assert sorted(p.name for p in d.iterdir()) == ["r.amat"]
    finally:
        d.chmod(0o755)


def test_cache_false_writes_nothing(tmp_path):
    src = tmp_path / "d.amat"
    write_amat(src, random_bits(3))
    read_amat(src, cache=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.amat"]


# --------------------------------------------------------------------------- the data set


def test_binarized_mnist_from_small_files(small_set):
    d, arrays = small_set
    ds = load_dataset("binarized-mnist", data_dir=d, download=False)
    assert ds.shape == (1, 28, 28) and ds.binary and not ds.dynamic and ds.binarize == "static"
    assert ds.info()["splits"] == SMALL_ROWS and ds.info()["labels"] is False
    for s, x in arrays.items():
        assert torch.equal(ds.split(s).reshape(len(x), 784), torch.from_numpy(x).float())
        assert ds.labels(s) is None
    x = ds.train[:4]
    assert ds.binarize_batch(x) is x
    # the folder may also be given as the root holding binarized_mnist/
    assert len(load_dataset("binarized_mnist", data_dir=d.parent, download=False).valid) == 10


def test_binarized_mnist_options(small_set):
    d, _ = small_set
    for kwargs in (
        {"valid_size": 5},
        {"test_size": 5},
        {"binarize": "dynamic"},
        {"image_size": 32},
    ):
        with pytest.raises(ConfigError):
            load_dataset("binarized-mnist", data_dir=d, download=False, **kwargs)
    assert load_dataset("binarized-mnist", data_dir=d, download=False, binarize="static").binary


def test_wrong_row_count_is_reported(small_set, monkeypatch):
    d, _ = small_set
    monkeypatch.setitem(amat_mod.EXPECTED_ROWS, "valid", 11)
    with pytest.raises(DataError, match=r"binarized_mnist_valid\.amat: has 10 images, expected 11"):
        load_dataset("binarized-mnist", data_dir=d, download=False, cache=False)


def test_missing_files_say_what_where_and_how(small_set):
    d, _ = small_set
    (d / "binarized_mnist_train.amat.gz").unlink()
    with pytest.raises(MissingFilesError) as info:
        load_dataset("binarized-mnist", data_dir=d, download=False)
    msg = str(info.value)
    assert "binarized_mnist_train.amat" in msg and str(d) in msg
    assert "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/" in msg
    assert info.value.available == ("valid", "test")
    ds = load_dataset("binarized-mnist", data_dir=d, download=False, splits=info.value.available)
    assert len(ds.train) == 0 and len(ds.test) == SMALL_ROWS["test"]


def listing(folder):
    """Each entry of ``folder``: its name, size and modification time (links followed, as the loader reads them)."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


def test_reference_binarized_mnist(shared_data, tmp_path):
    """Acceptance: ../shared/data/binarized_mnist decodes to the README's SHA-256 values, the
    folder is left alone (whatever its permissions, whether its files are copies or links) and the
    cache goes to the user cache."""
    folder = shared_data / "binarized_mnist"
    before = listing(folder)
    for attempt in ("parse", "cache"):
        ds = load_dataset("binarized-mnist", data_dir=folder, download=False)
        assert ds.shape == (1, 28, 28) and ds.binary
        assert ds.info()["splits"] == {"train": 50000, "valid": 10000, "test": 10000}
        for s in ("train", "valid", "test"):
            x = ds.split(s)
            flat = x.reshape(len(x), 784).to(torch.uint8).numpy()
            assert (
                hashlib.sha256(np.ascontiguousarray(flat).tobytes()).hexdigest()
                == REFERENCE_SHA256[s]
            ), (s, attempt)
        cached = list((tmp_path / "xdg-cache" / "vaekit" / "parsed").glob("*.npz"))
        assert len(cached) == 3
    assert listing(folder) == before
