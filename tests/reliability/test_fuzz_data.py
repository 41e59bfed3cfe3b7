"""Fuzzing the data-file parsers (vaekit.data): random and randomly damaged .amat, IDX (plain and gzip),
.npy, .npz, PNG and HDF5 (shapes3d's 3dshapes.h5) bytes give either the right array or a DataError naming the
file - never another exception, a hang, or an array that differs from what the bytes say.

"The right array" is checked by a round trip: what vaekit parsed, written back in the format, must give
the input bytes again (amat, IDX), or equal an independent decoding of the same bytes (npy), or - where
the format has checksums (gzip, zip, PNG, HDF5 with checksummed metadata and Fletcher-32) - the undamaged
original.
"""

from __future__ import annotations

import gzip
import io
import struct
import time
import zipfile
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from reliability_helpers import assert_one_line_error, run_cli

from vaekit.data import load_dataset, shapes3d
from vaekit.data.amat import parse_amat, read_amat, write_amat
from vaekit.data.files import read_images_dir
from vaekit.data.idx import IDX_TYPES, parse_idx, read_idx
from vaekit.errors import ConfigError, DataError

SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=120,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SECONDS = 5  # no input may make a parser of these tiny files think for long


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """``data`` with 0 to 4 random edits: flip a bit, set a byte, cut the tail, insert or delete a byte."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "append"]))
        i = draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "append" or not buf:
            buf += draw(st.binary(min_size=1, max_size=8))
        elif kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            buf[i] = draw(st.integers(0, 255))
        elif kind == "cut":
            del buf[i:]
        elif kind == "insert":
            buf.insert(i, draw(st.integers(0, 255)))
        else:
            del buf[i]
    return bytes(buf)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        assert time.perf_counter() - start < SECONDS, f"{fn.__name__} took too long"


# -- .amat ---------------------------------------------------------------------------------------

WIDTH = 6


@st.composite
def amat_bytes(draw):
    x = draw(hnp.arrays(np.uint8, st.tuples(st.integers(1, 4), st.just(WIDTH)), elements=st.integers(0, 1)))
    rows = b"".join(b" ".join(b"1" if v else b"0" for v in row) + b"\n" for row in x)
    if draw(st.booleans()):
        rows = rows.replace(b"\n", b"\r\n")
    return draw(damaged(rows)) if draw(st.booleans()) else rows


@settings(SETTINGS, max_examples=600)
@given(st.one_of(amat_bytes(), st.binary(max_size=40)))
@example(b"0 1 0 1 0 1")  # no final newline: tolerated
@example(b"0 1 0 1 0 1\r\n0 1 0 1 0 1\n")  # mixed line ends
@example(b"0 1 0 1 0 2\n")
@example(b"0 1 0 1 0  1\n")
def test_amat_parses_exactly_or_raises_data_error(data):
    try:
        x = timed(parse_amat, data, "fuzz.amat", width=WIDTH)
    except DataError as exc:
        assert "fuzz.amat" in str(exc) and "\n" not in str(exc)
        return
    assert x.dtype == np.uint8 and x.ndim == 2 and x.shape[1] == WIDTH and set(np.unique(x)) <= {0, 1}
    # round trip: the parsed values written back are the input (modulo the two tolerated variants)
    canonical = data if data.endswith(b"\n") else data + b"\n"
    canonical = canonical.replace(b"\r\n", b"\n")
    written = b"".join(b" ".join(b"%d" % v for v in row) + b"\n" for row in x)
    assert written == canonical


def test_write_amat_reads_back(tmp_path):
    x = np.random.default_rng(0).integers(0, 2, size=(7, WIDTH), dtype=np.uint8)
    for name in ("a.amat", "a.amat.gz"):
        write_amat(tmp_path / name, x)
        np.testing.assert_array_equal(read_amat(tmp_path / name, width=WIDTH, cache=False), x)


# -- IDX -----------------------------------------------------------------------------------------


@st.composite
def idx_bytes(draw):
    code = draw(st.sampled_from(sorted(IDX_TYPES)))
    dims = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    n = int(np.prod(dims)) * IDX_TYPES[code].itemsize
    data = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + draw(st.binary(min_size=n,
                                                                                                max_size=n))
    return draw(damaged(data)) if draw(st.booleans()) else data


def idx_serialize(arr: np.ndarray, code: int) -> bytes:
    return (bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            + np.ascontiguousarray(arr, dtype=IDX_TYPES[code]).tobytes())


@settings(SETTINGS, max_examples=600)
@given(st.one_of(idx_bytes(), st.binary(max_size=40)))
@example(bytes([0, 0, 8, 65]) + struct.pack(">65I", 0, *([1] * 64)))  # more dimensions than numpy has
@example(bytes([0, 0, 8, 4]) + struct.pack(">4I", 0, 2**32 - 1, 2**32 - 1, 2**32 - 1))  # size overflows
@example(bytes([0, 0, 8, 2]) + struct.pack(">2I", 2**32 - 1, 2**32 - 1))  # 16 EiB declared
@example(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + struct.pack(">f", float("nan")))
def test_idx_parses_exactly_or_raises_data_error(data):
    try:
        arr = timed(parse_idx, data, "fuzz-idx")
    except DataError as exc:
        assert "fuzz-idx" in str(exc) and "\n" not in str(exc)
        return
    assert idx_serialize(arr, data[2]) == data
    assert arr.flags.writeable and arr.dtype.isnative


@settings(SETTINGS, max_examples=200)
@given(st.data())
def test_gzipped_idx_is_the_original_or_a_data_error(tmp_path, data):
    arr = data.draw(hnp.arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(4), st.just(4))))
    original = gzip.compress(idx_serialize(arr, 0x08), mtime=0)
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(data.draw(damaged(original)))
    try:
        got = timed(read_idx, path)
    except DataError as exc:
        assert str(path) in str(exc)
        return
    np.testing.assert_array_equal(got, arr)  # gzip's CRC-32: a damaged stream cannot pass as another array


# -- .npy / .npz -----------------------------------------------------------------------------------

image_arrays = st.one_of(
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 6), st.just(3), st.just(3))),
    hnp.arrays(np.float32, st.tuples(st.integers(1, 6), st.just(1), st.just(2), st.just(2)),
               elements=st.floats(0, 1, width=32)),
    hnp.arrays(np.bool_, st.tuples(st.integers(1, 6), st.just(4))),
)


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def rows(x) -> list[bytes]:
    """The images as a sorted list of their bytes (the splits are carved at random)."""
    x = np.asarray(x, dtype=np.float32)
    return sorted(r.tobytes() for r in x.reshape(len(x), -1))


def check_dataset(spec: str, expected: np.ndarray | None, label: str):
    """Load ``spec``; it must fail with DataError/ConfigError naming the file, or hold ``expected``."""
    try:
        ds = timed(load_dataset, spec)
    except (DataError, ConfigError) as exc:
        assert label in str(exc) and "\n" not in str(exc), str(exc)
        return None
    images = np.concatenate([ds.train.numpy(), ds.valid.numpy(), ds.test.numpy()])
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    if expected is not None:
        x = expected.astype(np.float32) / 255 if expected.dtype == np.uint8 else expected.astype(np.float32)
        assert rows(images) == rows(x)
    return ds


@settings(SETTINGS, max_examples=300)
@given(image_arrays, st.data())
def test_npy_loads_what_the_bytes_say_or_raises_data_error(tmp_path, arr, data):
    raw = data.draw(damaged(npy_bytes(arr))) if data.draw(st.booleans()) else npy_bytes(arr)
    path = tmp_path / "x.npy"
    path.write_bytes(raw)
    try:  # an independent decoding of the same bytes (numpy from memory; vaekit reads the file)
        expected = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception:  # numpy refuses it: vaekit must refuse it too
        expected = None
    ds = check_dataset(f"npy:{path}", expected, str(path))
    if ds is not None:
        assert expected is not None, "vaekit loaded bytes that numpy itself cannot read"


@settings(SETTINGS, max_examples=200)
@given(image_arrays, st.data())
def test_npz_is_the_original_or_a_data_error(tmp_path, arr, data):
    buf = io.BytesIO()
    np.savez_compressed(buf, images=arr) if data.draw(st.booleans()) else np.savez(buf, images=arr)
    path = tmp_path / "x.npz"
    path.write_bytes(data.draw(damaged(buf.getvalue())))
    check_dataset(f"npz:{path}", arr, str(path))  # zip's CRC-32 guards the arrays


def test_npy_headers_that_declare_impossible_sizes(tmp_path):
    raw = npy_bytes(np.zeros((4, 8, 8), np.uint8))
    huge = raw.replace(b"'shape': (4, 8, 8), ", b"'shape': (99999999999999, 8, 8),")
    assert len(huge) == len(raw) + 12 or b"99999999999999" in huge
    (tmp_path / "huge.npy").write_bytes(huge)
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("train.npy", huge)
    for spec in (f"npy:{tmp_path / 'huge.npy'}", f"npz:{tmp_path / 'huge.npz'}"):
        code, _, err = run_cli(["data", "--dataset", spec])
        assert_one_line_error(code, err, "huge.np")


# -- images ----------------------------------------------------------------------------------------


@settings(SETTINGS, max_examples=150)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 5), st.integers(1, 5))), st.data())
def test_png_is_the_original_or_a_data_error(tmp_path, pixels, data):
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    (folder / "a.png").write_bytes(data.draw(damaged(buf.getvalue())))
    try:
        x, labels, classes, ignored = timed(read_images_dir, folder)
    except DataError as exc:
        assert "a.png" in str(exc) and "\n" not in str(exc)
        return
    np.testing.assert_array_equal(x[0, 0], pixels)  # PNG's CRCs and zlib's Adler-32 guard the pixels


@settings(SETTINGS, max_examples=100)
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8), st.just(3))), st.data())
def test_damaged_jpeg_gives_an_image_or_a_data_error(tmp_path, pixels, data):
    """JPEG has no checksum, so a damaged file may decode to other pixels; but never to anything but an
    8-bit image of its declared size, and never with another exception."""
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="JPEG")
    folder = tmp_path / "jpegs"
    folder.mkdir(exist_ok=True)
    (folder / "a.jpg").write_bytes(data.draw(damaged(buf.getvalue())))
    try:
        x, _, _, _ = timed(read_images_dir, folder)
    except DataError as exc:
        assert "a.jpg" in str(exc) and "\n" not in str(exc)
        return
    assert x.dtype == np.uint8 and x.ndim == 4 and x.shape[0] == 1 and x.shape[1] in (1, 3)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_a_decompression_bomb_png_is_refused_before_decoding(tmp_path):
    """A 100 kB file declaring 40000 x 40000 pixels (1.6 GB decoded) is refused from its header."""
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 100_000)) \
        + png_chunk(b"IEND", b"")
    (tmp_path / "bomb").mkdir()
    (tmp_path / "bomb" / "a.png").write_bytes(bomb)
    code, _, err = run_cli(["data", "--dataset", f"images:{tmp_path / 'bomb'}"])
    assert_one_line_error(code, err, "a.png")


# -- HDF5 (shapes3d's 3dshapes.h5) ---------------------------------------------------------------

#: A grid of 6 images in 3dshapes.h5's layout (a 75 kB file).
TINY_SHAPES = shapes3d.Shapes3DGrid((1, 1, 1, 1, 2, 3))


def shapes3d_bytes(checksums: bool) -> tuple[bytes, np.ndarray]:
    """(a 3dshapes.h5 of TINY_SHAPES, its images). ``checksums``: HDF5's checksummed metadata (libver latest)
    and Fletcher-32 on every chunk; else the plain layout, as DeepMind's file has no checksums."""
    h5py = pytest.importorskip("h5py", reason="h5py is not installed (pip install 'vaekit[shapes3d]')")
    images = np.random.default_rng(0).integers(0, 256, size=(TINY_SHAPES.count, 64, 64, 3), dtype=np.uint8)
    labels = TINY_SHAPES.classes(np.arange(TINY_SHAPES.count)) * 0.5
    buf = io.BytesIO()
    extra = {"fletcher32": True} if checksums else {}
    with h5py.File(buf, "w", **({"libver": "latest"} if checksums else {})) as f:
        f.create_dataset("images", data=images, **({"chunks": (1, 64, 64, 3)} if checksums else {}), **extra)
        f.create_dataset("labels", data=labels, **({"chunks": labels.shape} if checksums else {}), **extra)
    return buf.getvalue(), images


def load_shapes3d_bytes(tmp_path, raw: bytes):
    """Load ``raw`` as 3dshapes.h5: the data set, or None after a one-line DataError naming the file."""
    folder = tmp_path / "shapes3d-fuzz"
    folder.mkdir(exist_ok=True)
    (folder / shapes3d.FILE).write_bytes(raw)
    try:
        return timed(shapes3d.load_shapes3d, data_dir=folder, grid=TINY_SHAPES, valid_size=1, test_size=1)
    except DataError as exc:
        assert shapes3d.FILE in str(exc) and "\n" not in str(exc), str(exc)
        return None


@settings(SETTINGS, max_examples=200)
@given(st.data())
def test_checksummed_h5_is_the_original_or_a_data_error(tmp_path, data):
    raw, images = shapes3d_bytes(checksums=True)
    ds = load_shapes3d_bytes(tmp_path, data.draw(damaged(raw)))
    if ds is not None:  # HDF5's metadata checksums and Fletcher-32 guard the rest
        for s in ("train", "valid", "test"):
            rows = images[TINY_SHAPES.index(ds.factors.split(s))]
            assert torch.equal(ds.split(s), torch.from_numpy(rows / np.float32(255)).permute(0, 3, 1, 2))


@settings(SETTINGS, max_examples=100)
@given(st.data())
def test_damaged_plain_h5_gives_8_bit_images_in_grid_order_or_a_data_error(tmp_path, data):
    """Without checksums a damaged file may hold other pixels, but never anything but 8-bit images whose
    labels form the grid, and never another exception."""
    raw, _ = shapes3d_bytes(checksums=False)
    ds = load_shapes3d_bytes(tmp_path, data.draw(damaged(raw)))
    if ds is not None:
        x = torch.cat([ds.train, ds.valid, ds.test])
        assert x.shape == (TINY_SHAPES.count, 3, 64, 64) and torch.equal(torch.round(x * 255) / 255, x)
        assert sorted(TINY_SHAPES.index(np.concatenate([ds.factors.split(s) for s in ("train", "valid", "test")]))) \
            == list(range(TINY_SHAPES.count))
