"""vaekit.data.cifar: CIFAR-10 from its binary archive (synthetic archives, a loopback server, the CLI)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pickle
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cli_run import run_cli
from vaekit.data import DATASETS, cifar, load_dataset
from vaekit.data.cifar import (
    CLASSES,
    MEMBER_DIR,
    RECORD_BYTES,
    TEST_BATCH,
    TRAIN_BATCHES,
    read_cifar_archive,
    write_cifar_archive,
)
from vaekit.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py

ARCHIVE_NAME = "cifar-10-binary.tar.gz"
NAMES = (*TRAIN_BATCHES, TEST_BATCH)


def random_batches(n: int = 20, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {b: (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)) for b in NAMES}


def make_archive(folder: Path, n: int = 20, seed: int = 0, name: str = ARCHIVE_NAME):
    folder.mkdir(parents=True, exist_ok=True)
    batches = random_batches(n, seed)
    write_cifar_archive(folder / name, batches)
    return batches


def hand_tar(path: Path, members: list[tuple[str, bytes | None, bytes]], gz: bool = True) -> Path:
    """A tar built member by member: (name, type (None: a regular file), body)."""
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, kind, body in members:
            info = tarfile.TarInfo(name)
            if kind is None:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
            else:
                info.type = kind
                info.linkname = "elsewhere"
                tar.addfile(info)
    return path


def good_members(n: int = 3, label: int = 0) -> list[tuple[str, bytes | None, bytes]]:
    record = bytes([label]) + bytes(3072)
    members = [(f"{MEMBER_DIR}/{b}", None, record * n) for b in NAMES]
    return members + [(f"{MEMBER_DIR}/batches.meta.txt", None, ("\n".join(CLASSES) + "\n\n").encode())]


# -- the format ------------------------------------------------------------------------------------


def test_records_decode_to_rgb_planes_in_row_major_order(tmp_path):
    # one hand-made record: label 7; R plane = row index, G plane = column index, B plane = 200 everywhere
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    record = bytes([7]) + rows.astype(np.uint8).tobytes() + cols.astype(np.uint8).tobytes() + bytes([200]) * 1024
    assert len(record) == RECORD_BYTES == 3073
    zero = bytes([1]) + bytes(3072)
    names = [f"my class {i}" for i in range(10)]  # read from the archive, not assumed
    members = [(f"{MEMBER_DIR}/{b}", None, zero * 2) for b in TRAIN_BATCHES]
    members += [(f"{MEMBER_DIR}/{TEST_BATCH}", None, record + zero),
                (f"{MEMBER_DIR}/batches.meta.txt", None, ("\n".join(names) + "\n").encode()),
                (f"{MEMBER_DIR}/readme.html", None, b"<html>skipped</html>")]
    hand_tar(tmp_path / ARCHIVE_NAME, members)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False, splits=("test",))
    assert ds.shape == (3, 32, 32) and ds.levels == 256 and not ds.binary and ds.classes == tuple(names)
    assert ds.test_labels.tolist() == [7, 1]
    img = ds.test[0].numpy() * 255
    assert np.array_equal(img[0], rows) and np.array_equal(img[1], cols) and (img[2] == 200).all()
    assert img[0, 5, 9] == 5 and img[1, 5, 9] == 9  # (channel, row, column)
    assert ds.info()["levels"] == 256 and ds.not_loaded == ("train", "valid")


def test_synthetic_archive_loads_with_the_split_rules(tmp_path):
    batches = make_archive(tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.info()["splits"] == {"train": 90, "valid": 10, "test": 20}  # valid: one tenth of the 100
    assert ds.classes == CLASSES and ds.has_labels
    x = np.concatenate([batches[b][0] for b in TRAIN_BATCHES])
    y = np.concatenate([batches[b][1] for b in TRAIN_BATCHES])
    # every training image is in train or valid exactly once, with its label; test is test_batch.bin
    got = np.concatenate([ds.train.numpy(), ds.valid.numpy()]) * 255
    got_y = np.concatenate([ds.train_labels.numpy(), ds.valid_labels.numpy()])
    order = np.lexsort(got.reshape(len(got), -1).T)
    ref = np.lexsort(x.reshape(len(x), -1).T.astype(np.float64))
    assert np.array_equal(np.rint(got[order]).astype(np.uint8), x[ref]) and np.array_equal(got_y[order], y[ref])
    assert np.array_equal(np.rint(ds.test.numpy() * 255).astype(np.uint8), batches[TEST_BATCH][0])
    assert "20 records per batch" in ds.source and "10000" in ds.source
    other = load_dataset("cifar10", data_dir=tmp_path, download=False, seed=1, valid_size=30)
    assert len(other.valid) == 30 and not np.array_equal(other.valid[:10].numpy(), ds.valid.numpy())
    assert np.array_equal(other.test.numpy(), ds.test.numpy())  # the test split never depends on seed


def test_registered_with_its_options(tmp_path):
    assert DATASETS["cifar10"].shape == (3, 32, 32) and DATASETS["cifar10"].labels
    make_archive(tmp_path)
    assert load_dataset("CIFAR-10", data_dir=tmp_path, download=False, splits=("test",)).name == "cifar10"
    with pytest.raises(ConfigError, match="not binarized"):
        load_dataset("cifar10", data_dir=tmp_path, download=False, binarize="dynamic")
    with pytest.raises(ConfigError, match="fixed test split"):
        load_dataset("cifar10", data_dir=tmp_path, download=False, test_size=5)
    with pytest.raises(ConfigError, match="not resized"):
        load_dataset("cifar10", data_dir=tmp_path, download=False, image_size=28)


def test_pickle_is_never_used(tmp_path, monkeypatch):
    make_archive(tmp_path)

    def refuse(*_a, **_k):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    assert len(load_dataset("cifar10", data_dir=tmp_path, download=False).train) == 90


@pytest.mark.parametrize("change, match", [
    (lambda m: m[:1] + m[2:], "lacks cifar-10-batches-bin/data_batch_2.bin"),
    (lambda m: m + [m[0]], "appears twice"),
    (lambda m: m + [(f"{MEMBER_DIR}/x", tarfile.SYMTYPE, b"")], "is a link"),
    (lambda m: m + [(f"{MEMBER_DIR}/x", tarfile.LNKTYPE, b"")], "is a link"),
    (lambda m: m + [(f"{MEMBER_DIR}/x", tarfile.CHRTYPE, b"")], "not a regular file"),
    (lambda m: m + [("../evil", None, b"x")], "'..' path"),
    (lambda m: m + [("/abs", None, b"x")], "absolute"),
    (lambda m: m + [(f"extra{i}", None, b"") for i in range(70)], "more than 64 members"),
    (lambda m: [(n, k, b[:-1]) if n.endswith("data_batch_3.bin") else (n, k, b) for n, k, b in m],
     "not a whole number|whole number of 3073-byte records"),
    (lambda m: [(n, k, b"a\nb\n") if n.endswith(".txt") else (n, k, b) for n, k, b in m], "2 class names"),
])
def test_malformed_archives_are_refused(tmp_path, change, match):
    hand_tar(tmp_path / ARCHIVE_NAME, change(good_members()))
    with pytest.raises(DataError, match=match):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_bad_labels_truncation_and_other_archives(tmp_path):
    hand_tar(tmp_path / ARCHIVE_NAME, good_members(label=10))
    with pytest.raises(DataError, match="label 10, not a class 0..9"):
        load_dataset("cifar10", data_dir=tmp_path, download=False, splits=("test",))
    make_archive(tmp_path)
    body = (tmp_path / ARCHIVE_NAME).read_bytes()
    (tmp_path / ARCHIVE_NAME).write_bytes(body[: len(body) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    # the pickled python version's layout is not the binary archive
    hand_tar(tmp_path / ARCHIVE_NAME, [("cifar-10-batches-py/data_batch_1", None, b"\x80\x04...")])
    with pytest.raises(DataError, match="not the python or matlab version"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    (tmp_path / ARCHIVE_NAME).write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match="not a readable tar archive"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_the_published_structure_is_checked_strictly(tmp_path):
    # an uncompressed archive of the published sizes (10,000 records of 3,073 bytes per batch) passes
    full = tmp_path / "full.tar"
    with tarfile.open(full, "w") as tar:
        body = bytes(10_000 * RECORD_BYTES)
        for b in NAMES:
            info = tarfile.TarInfo(f"{MEMBER_DIR}/{b}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        meta = ("\n".join(CLASSES) + "\n").encode()
        info = tarfile.TarInfo(f"{MEMBER_DIR}/batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    batches, classes = read_cifar_archive(full, (), strict=True)
    assert batches == {} and classes == CLASSES
    make_archive(tmp_path / "small")
    with pytest.raises(DataError, match="expected 30730000 bytes"):
        read_cifar_archive(tmp_path / "small" / ARCHIVE_NAME, (), strict=True)


def test_missing_archive_says_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz") as info:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in str(info.value)


def test_the_publishers_md5_is_pinned():
    # as documented on the CIFAR page of its author for the binary version
    assert cifar.ARCHIVE.md5 == "c32a1d4ab5d03f1284b67883e8d87530" and cifar.ARCHIVE.remote == ARCHIVE_NAME


# -- a verified download from a loopback server --------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.server.requests.append(self.path)
        entry = self.server.routes.get(self.path)
        if entry is None:
            self.send_error(404)
            return
        body, corrupt = entry
        if corrupt:
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("VAEKIT_MIRROR_CIFAR10", f"http://127.0.0.1:{httpd.server_address[1]}/c/")
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def serve(server, monkeypatch, tmp_path, n_records: int, *, strict_records: int = 20, corrupt: bool = False):
    """Serve a synthetic archive; pin its MD5 and take ``strict_records`` as the published batch size."""
    src = tmp_path / "src"
    make_archive(src, n=n_records)
    body = (src / ARCHIVE_NAME).read_bytes()
    server.routes[f"/c/{ARCHIVE_NAME}"] = (body, corrupt)
    monkeypatch.setattr(cifar, "ARCHIVE", dataclasses.replace(cifar.ARCHIVE, md5=hashlib.md5(body).hexdigest()))
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", strict_records)
    return body


def test_download_verified_and_loaded(tmp_path, server, monkeypatch):
    body = serve(server, monkeypatch, tmp_path, 20)
    folder = tmp_path / "data" / "cifar10"
    ds = load_dataset("cifar10", data_dir=folder)
    assert sorted(p.name for p in folder.iterdir()) == [ARCHIVE_NAME]
    assert (folder / ARCHIVE_NAME).read_bytes() == body and len(ds.test) == 20
    n = len(server.requests)
    load_dataset("cifar10", data_dir=folder, download=False)
    assert len(server.requests) == n == 1


def test_bad_checksum_is_refused_and_nothing_is_left(tmp_path, server, monkeypatch):
    serve(server, monkeypatch, tmp_path, 20, corrupt=True)
    folder = tmp_path / "dl"
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset("cifar10", data_dir=folder)
    assert list(folder.iterdir()) == []  # no archive, no partial file


def test_a_wrong_structure_is_refused_even_with_the_pinned_checksum(tmp_path, server, monkeypatch):
    serve(server, monkeypatch, tmp_path, 19)  # its MD5 is pinned, but the batches hold 19 records, not 20
    folder = tmp_path / "dl"
    with pytest.raises(DataError, match="as published"):
        load_dataset("cifar10", data_dir=folder)
    assert list(folder.iterdir()) == []


# -- the command line ------------------------------------------------------------------------------------


def test_cli_data_train_and_evaluate_on_a_synthetic_archive(tmp_path, capsys):
    make_archive(tmp_path / "data", n=20)
    data = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "data")]
    code, out, err = run_cli(["data", *data, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out.strip().splitlines()[-1])
    assert info["shape"] == [3, 32, 32] and info["levels"] == 256 and info["splits"]["test"] == 20
    run = tmp_path / "run"
    code, out, err = run_cli(["train", *data, "--epochs", "1", "--hidden", "16", "--latent", "2", "--batch-size", "45",
                              "--likelihood", "gaussian", "--device", "cpu", "--out", str(run), "--json"], capsys)
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["dataset"] == "cifar10"
    code, out, err = run_cli(["evaluate", str(run), "--k", "4", "--surgery-samples", "0", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n"] == 20 and np.isfinite(res["nll"]) and np.isfinite(res["elbo"])
    code, out, err = run_cli(["data", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cifar-10-binary.tar.gz" in err
