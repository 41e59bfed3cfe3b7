"""vaekit.data.download: fetching missing files from a loopback HTTP server (no network).

The server on 127.0.0.1 serves small generated files; it can also serve them corrupted, or
close the connection half-way through a body whose Content-Length promises more.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from vaekit.data import MissingFilesError, load_dataset, write_amat
from vaekit.data import amat as amat_mod
from vaekit.data.download import atomic_write, download, mirrors
from vaekit.data.idx import IDX_SETS
from vaekit.errors import DataError

pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.server.requests.append(self.path)
        entry = self.server.routes.get(self.path)
        if entry is None:
            self.send_error(404)
            return
        body, mode = entry
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A loopback HTTP server: ``server.routes[path] = (bytes, mode)``, mode in
    {"ok", "corrupt", "truncate"}; ``server.url`` is its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes = {}
    httpd.requests = []
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def idx_files(n_train: int = 24, n_test: int = 12) -> dict[str, bytes]:
    """Gzipped IDX files of a tiny MNIST look-alike, by remote name."""
    rng = np.random.default_rng(0)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, arr in (
            ("images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
            ("labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8)),
        ):
            header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(
                int(s).to_bytes(4, "big") for s in arr.shape
            )
            out[f"{prefix}-{kind}.gz"] = gzip.compress(header + arr.tobytes(), mtime=0)
    return out


@pytest.fixture
def mnist_mirror(server, monkeypatch):
    """Serve tiny MNIST files at /mnist/ and make their MD5s the known ones."""
    files = idx_files()
    for name, body in files.items():
        server.routes[f"/mnist/{name}"] = (body, "ok")
    md5 = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
    monkeypatch.setitem(IDX_SETS, "mnist", dataclasses.replace(IDX_SETS["mnist"], md5=md5))
    monkeypatch.setenv("VAEKIT_MIRROR_MNIST", f"{server.url}/mnist/")
    return files


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_mirror_environment_variables(monkeypatch):
    assert mirrors("mnist", "mnist", ["https://a/"]) == ["https://a/"]
    monkeypatch.setenv("VAEKIT_MIRROR", "http://m/base")
    assert mirrors("fashion-mnist", "fashion_mnist", ["https://a/"]) == [
        "http://m/base/fashion_mnist/"
    ]
    monkeypatch.setenv("VAEKIT_MIRROR_FASHION_MNIST", "http://x, http://y/")
    assert mirrors("fashion-mnist", "fashion_mnist", ["https://a/"]) == ["http://x/", "http://y/"]


def test_mnist_is_downloaded_verified_and_loaded(tmp_path, server, mnist_mirror):
    folder = tmp_path / "data" / "mnist"  # does not exist yet
    ds = load_dataset("mnist", data_dir=folder)
    assert ds.info()["splits"] == {"train": 20, "valid": 4, "test": 12}
    assert listing(folder) == sorted(mnist_mirror)  # four .gz files, no partial files
    for name, body in mnist_mirror.items():
        assert (folder / name).read_bytes() == body
    n = len(server.requests)
    again = load_dataset("mnist", data_dir=folder, download=False)
    assert len(server.requests) == n  # no second download
    assert np.array_equal(again.test.numpy(), ds.test.numpy())


def test_only_the_files_of_the_requested_splits_are_fetched(tmp_path, server, mnist_mirror):
    folder = tmp_path / "mnist"
    load_dataset("mnist", data_dir=folder, splits=("test",))
    assert listing(folder) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_default_location_is_the_user_cache(tmp_path, server, mnist_mirror):
    ds = load_dataset("mnist", splits=("test",))
    assert len(ds.test) == 12
    assert listing(tmp_path / "xdg-cache" / "vaekit" / "mnist") == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_data_dir_variable_is_a_root_with_one_folder_per_data_set(
    tmp_path, server, mnist_mirror, monkeypatch
):
    monkeypatch.setenv("VAEKIT_DATA_DIR", str(tmp_path / "root"))
    load_dataset("mnist", splits=("test",))
    assert listing(tmp_path / "root") == ["mnist"]
    assert len(listing(tmp_path / "root" / "mnist")) == 2


def test_global_mirror_variable(tmp_path, server, mnist_mirror, monkeypatch):
    monkeypatch.delenv("VAEKIT_MIRROR_MNIST")
    monkeypatch.setenv("VAEKIT_MIRROR", server.url)  # files at <mirror>/mnist/<file>
    assert len(load_dataset("mnist", data_dir=tmp_path / "m", splits=("test",)).test) == 12


def test_corrupt_download_is_rejected_and_nothing_is_left(tmp_path, server, mnist_mirror):
    server.routes["/mnist/t10k-images-idx3-ubyte.gz"] = (
        mnist_mirror["t10k-images-idx3-ubyte.gz"],
        "corrupt",
    )
    folder = tmp_path / "mnist"
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_dataset("mnist", data_dir=folder, splits=("test",))
    assert "t10k-images-idx3-ubyte" in str(info.value)
    assert "t10k-images-idx3-ubyte.gz" not in listing(folder)
    assert not [n for n in listing(folder) if n.endswith(".part")]


def test_truncated_download_is_rejected_and_nothing_is_left(tmp_path, server, mnist_mirror):
    server.routes["/mnist/t10k-labels-idx1-ubyte.gz"] = (
        mnist_mirror["t10k-labels-idx1-ubyte.gz"],
        "truncate",
    )
    folder = tmp_path / "mnist"
    with pytest.raises(DataError, match="truncated download") as info:
        load_dataset("mnist", data_dir=folder, splits=("test",))
    assert isinstance(info.value, MissingFilesError)
    assert listing(folder) == ["t10k-images-idx3-ubyte.gz"]  # the good file is kept


def test_structure_is_checked_when_no_checksum_is_known(
    tmp_path, server, mnist_mirror, monkeypatch
):
    spec = IDX_SETS["mnist"]
    monkeypatch.setitem(IDX_SETS, "mnist", dataclasses.replace(spec, md5={}))
    # the labels file served under the images name: right bytes, wrong magic number
    server.routes["/mnist/t10k-images-idx3-ubyte.gz"] = (
        mnist_mirror["t10k-labels-idx1-ubyte.gz"],
        "ok",
    )
    folder = tmp_path / "mnist"
    with pytest.raises(DataError, match="wrong IDX magic number"):
        load_dataset("mnist", data_dir=folder, splits=("test",))
    assert listing(folder) == []


def test_missing_on_the_server(tmp_path, server, mnist_mirror):
    del server.routes["/mnist/t10k-images-idx3-ubyte.gz"]
    with pytest.raises(MissingFilesError, match="404") as info:
        load_dataset("mnist", data_dir=tmp_path / "mnist", splits=("test",))
    assert f"{server.url}/mnist/t10k-images-idx3-ubyte.gz" in str(info.value)


def test_second_mirror_is_tried(tmp_path, server, mnist_mirror, monkeypatch):
    monkeypatch.setenv("VAEKIT_MIRROR_MNIST", f"{server.url}/gone/,{server.url}/mnist/")
    assert len(load_dataset("mnist", data_dir=tmp_path / "m", splits=("test",)).test) == 12
    assert any(r.startswith("/gone/") for r in server.requests)


def test_no_download_when_off_or_unwritable(tmp_path, server, mnist_mirror):
    with pytest.raises(MissingFilesError, match="downloading is off"):
        load_dataset("mnist", data_dir=tmp_path / "m", download=False)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(MissingFilesError, match="not writable") as info:
            load_dataset("mnist", data_dir=ro)
        msg = str(info.value)
        assert str(ro) in msg and f"{server.url}/mnist/train-images-idx3-ubyte.gz" in msg
        assert listing(ro) == []
    finally:
        ro.chmod(0o755)
    assert server.requests == []


def test_binarized_mnist_download(tmp_path, server, monkeypatch):
    rows = {"train": 6, "valid": 3, "test": 4}
    monkeypatch.setattr(amat_mod, "EXPECTED_ROWS", rows)
    src = tmp_path / "src"
    src.mkdir()
    for split, n in rows.items():
        x = (np.random.default_rng(n).random((n, 784)) < 0.5).astype(np.uint8)
        write_amat(src / f"binarized_mnist_{split}.amat", x)
        server.routes[f"/bm/binarized_mnist_{split}.amat"] = (
            (src / f"binarized_mnist_{split}.amat").read_bytes(),
            "ok",
        )
    monkeypatch.setenv("VAEKIT_MIRROR_BINARIZED_MNIST", f"{server.url}/bm")
    folder = tmp_path / "binarized_mnist"
    ds = load_dataset("binarized-mnist", data_dir=folder, cache=False)
    assert ds.info()["splits"] == rows and ds.binary
    assert listing(folder) == sorted(f"binarized_mnist_{s}.amat" for s in rows)

    # a corrupt file (no checksum is known: the structure check catches it) and a truncated one
    bad = tmp_path / "bad"
    good = server.routes["/bm/binarized_mnist_valid.amat"][0]
    server.routes["/bm/binarized_mnist_valid.amat"] = (good[:-2] + b"2\n", "ok")
    server.routes["/bm/binarized_mnist_test.amat"] = (
        server.routes["/bm/binarized_mnist_test.amat"][0],
        "truncate",
    )
    with pytest.raises(DataError, match=r"line 3, value 784: expected '0' or '1'"):
        load_dataset("binarized-mnist", data_dir=bad, splits=("valid",))
    with pytest.raises(DataError, match="truncated download"):
        load_dataset("binarized-mnist", data_dir=bad, splits=("test",))
    assert listing(bad) == []
    # a short file that is well-formed line by line still fails the row count
    server.routes["/bm/binarized_mnist_test.amat"] = (good[: 2 * 1568], "ok")
    with pytest.raises(DataError, match="has 2 images, expected 4"):
        load_dataset("binarized-mnist", data_dir=bad, splits=("test",))
    assert listing(bad) == []


def test_download_function_reports_every_mirror(tmp_path, server):
    server.routes["/a"] = (b"hello", "corrupt")
    with pytest.raises(DataError) as info:
        download(
            [f"{server.url}/missing", f"{server.url}/a"],
            tmp_path / "f",
            md5=hashlib.md5(b"hello").hexdigest(),
        )
    msg = str(info.value)
    assert "404" in msg and "checksum mismatch" in msg and listing(tmp_path) == []
    with pytest.raises(DataError, match="could not download f"):
        download(["http://127.0.0.1:9/unreachable"], tmp_path / "f")  # port 9: refused
    assert listing(tmp_path) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def half(f):
        f.write(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.bin", half)
    assert listing(tmp_path) == []
    atomic_write(tmp_path / "x.bin", lambda f: f.write(b"whole"))
    assert (tmp_path / "x.bin").read_bytes() == b"whole" and listing(tmp_path) == ["x.bin"]
