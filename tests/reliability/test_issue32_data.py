"""Issue 32, data and sizes: a CIFAR-10 archive or download that declares or streams far more than the data set
has, flags and Python arguments that size work (``compare --n-samples``, ``k``, ``--surgery-samples``), component
settings out of range, and caches that must stay in the user cache, never beside the user's data."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import math
import os
import shutil
import tarfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from reliability_helpers import TINY, assert_one_line_error, bounded, changed_entries, run_cli, snapshot_tree

import vaekit
from vaekit.components import LIKELIHOODS, POSTERIORS
from vaekit.data import amat, cifar, load_dataset, write_amat, write_cifar_archive, write_idx
from vaekit.data import dsprites as dsp
from vaekit.data.download import cache_root
from vaekit.errors import ConfigError, DataError, VaekitError
from vaekit.models import VAE

pytestmark = pytest.mark.usefixtures("single_thread")

TERABYTE = 2**40
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"


# -- a CIFAR-10 archive whose member declares 2^40 bytes ------------------------------------------------------


def huge_member_archive(path: Path, name: str) -> Path:
    """A gzipped tar whose first member ``name`` declares 2^40 bytes (and holds none)."""
    info = tarfile.TarInfo(name)
    info.size = TERABYTE
    header = info.tobuf(format=tarfile.GNU_FORMAT)  # base-256 size field: 2^40 does not fit the octal one
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + bytes(1024), mtime=0))
    return path


@pytest.mark.parametrize("member", ["cifar-10-batches-bin/readme.html", "cifar-10-batches-bin/data_batch_1.bin",
                                    "cifar-10-batches-bin/other.bin"])
def test_a_member_declaring_a_terabyte_is_refused_at_once(tmp_path, member):
    folder = tmp_path / "data" / "cifar10"
    huge_member_archive(folder / CIFAR_ARCHIVE, member)
    with bounded(20):
        with pytest.raises(DataError, match=str(TERABYTE)):
            cifar.read_cifar_archive(folder / CIFAR_ARCHIVE)
        code, _, err = run_cli(["data", "--dataset", "cifar10", "--data-dir", str(folder)])
    assert_one_line_error(code, err, str(TERABYTE))


# -- a CIFAR-10 download capped at the archive's known size -----------------------------------------------------


class EndlessHandler(BaseHTTPRequestHandler):
    """Serves ``server.body`` then zeros up to ``server.total`` bytes; ``server.length``: the Content-Length sent
    (None: none, the body ends when the connection closes)."""

    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response(200)
        if self.server.length is not None:
            self.send_header("Content-Length", str(self.server.length))
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(self.server.body)
            sent = len(self.server.body)
            zeros = bytes(1 << 16)
            while sent < self.server.total:
                self.wfile.write(zeros)
                sent += len(zeros)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.server.sent.append(sent)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def endless(monkeypatch, tmp_path):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EndlessHandler)
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    names = (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH)
    write_cifar_archive(src / CIFAR_ARCHIVE, {b: (rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8),
                                                  rng.integers(0, 10, 2)) for b in names})
    httpd.body = (src / CIFAR_ARCHIVE).read_bytes()
    httpd.total, httpd.length, httpd.sent = 64 * 2**20, None, []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("VAEKIT_MIRROR_CIFAR10", f"http://127.0.0.1:{httpd.server_address[1]}/")
    known = dataclasses.replace(cifar.ARCHIVE, md5=hashlib.md5(httpd.body).hexdigest(), size=len(httpd.body))
    monkeypatch.setattr(cifar, "ARCHIVE", known)
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", 2)  # the structure a download must have: 2 records a batch
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_the_archive_has_its_published_size():
    assert cifar.ARCHIVE.size == 170_052_171 and cifar.ARCHIVE.max_bytes < 180_000_000


@pytest.mark.parametrize("declared", [None, "huge"])
def test_a_mirror_streaming_endless_bytes_is_cut_at_the_known_size(tmp_path, endless, declared):
    endless.length = None if declared is None else endless.total
    folder = tmp_path / "dl"
    with bounded(30):
        with pytest.raises(DataError, match="more than") as info:
            load_dataset("cifar10", data_dir=folder)
    message = str(info.value)
    deadline = time.monotonic() + 10
    while not endless.sent and time.monotonic() < deadline:  # the server notices the hang-up
        time.sleep(0.05)
    assert "\n" not in message and str(cifar.ARCHIVE.max_bytes) in message
    assert list(folder.iterdir()) == []  # no archive, no partial file
    assert endless.sent and endless.sent[0] < endless.total  # the client hung up: it did not take it all


def test_a_download_of_the_right_size_still_passes(tmp_path, endless):
    endless.total = len(endless.body)  # the archive alone, then the connection closes
    ds = load_dataset("cifar10", data_dir=tmp_path / "ok")
    assert len(ds.test) == 2


# -- runs for the commands ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue32")
    out = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        for name in ("a", "b"):
            code, _, err = run_cli(["train", *TINY, "--epochs", "1", "--out", str(root / name)])
            assert code == 0, err
            out.append(root / name)
    return out


def test_compare_caps_the_samples_of_its_pictures(runs, tmp_path):
    page = tmp_path / "page.html"
    with bounded(60):
        code, _, err = run_cli(["compare", *map(str, runs), "--n-samples", "1000000", "--out", str(page), "--k", "2"])
    assert_one_line_error(code, err, "--n-samples", "4096")
    assert not page.exists()


def test_sweep_caps_the_samples_of_its_comparison_before_anything_trains(tmp_path):
    out = tmp_path / "sweep"
    with bounded(60):
        code, _, err = run_cli(["sweep", "--beta", "1,2", "--n-samples", "1000000", "--out", str(out), "--", *TINY,
                                "--epochs", "1"])
    assert_one_line_error(code, err, "--n-samples", "4096")
    assert not out.exists()


def test_evaluate_refuses_surgery_samples_beyond_the_memory_budget(runs):
    with bounded(60):
        code, _, err = run_cli(["evaluate", str(runs[0]), "--k", "2", "--surgery-samples", "99999999999"])
    assert_one_line_error(code, err, "--surgery-samples", "memory budget")


# -- the Python API runs the command line's checks of the work's size ----------------------------------------------


@pytest.fixture
def model_and_data():
    torch.manual_seed(0)
    return VAE(latent=2, shape=(1, 8, 8), hidden=[16]), (torch.rand(32, 1, 8, 8) > 0.5).float()


def test_evaluate_refuses_an_endless_k_naming_it(model_and_data):
    model, x = model_and_data
    with bounded(30):
        for k in (10**12, 0, True, 2.5):
            with pytest.raises(VaekitError, match=r"\bk\b") as info:
                vaekit.evaluate(model, x, k=k)
            assert "--k" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name, values, good", [("seed", (-1, 2**32, 2**70, 1.5, "1", True), 2**32 - 1),
                                                ("batch_size", (0, -3, 2.0, True, "64"), 7),
                                                ("exact_limit", (-1, 2**24 + 1, 1.5), 0),
                                                ("memory_budget", (0, -5, 1e9), 2**24),
                                                ("levels", (0, 1, 2.0), 2)])
def test_evaluate_refuses_the_numbers_the_command_line_refuses(model_and_data, name, values, good):
    """--seed takes 0 to 2^32 - 1, --batch-size a positive integer, --exact-limit 0 to 2^24; evaluate(seed=-1),
    batch_size=0, exact_limit=-1, memory_budget=0 and levels=1 passed silently (a negative seed even gave a figure,
    seeded by what torch made of it)."""
    model, x = model_and_data
    for value in values:
        with pytest.raises(VaekitError, match=rf"^{name} must be a whole number") as info:
            vaekit.evaluate(model, x, k=2, surgery_samples=0, **{name: value})
        assert "--" not in str(info.value) and "\n" not in str(info.value)
    result = vaekit.evaluate(model, x, k=2, surgery_samples=0, **{name: good})
    assert math.isfinite(result.nll)


def test_evaluate_refuses_surgery_samples_beyond_the_budget_naming_them(model_and_data):
    model, x = model_and_data
    with bounded(30), pytest.raises(VaekitError, match="surgery_samples") as info:
        vaekit.evaluate(model, x, k=2, surgery_samples=99_999_999_999)
    assert "--surgery-samples" not in str(info.value) and "memory budget" in str(info.value)


@pytest.mark.parametrize("k", [10**9, 10**6])
def test_fit_runs_the_memory_check_of_vaekit_train(model_and_data, tmp_path, k):
    """k = 10^9 is past the most samples a run may take; k = 10^6 x 100 decoder rows are past the memory budget."""
    model, x = model_and_data
    out = tmp_path / "run"
    with bounded(30), pytest.raises(VaekitError, match=r"\bk\b") as info:
        vaekit.fit(model, x, out=out, objective="iwae", k=k, epochs=1, progress=False)
    assert "--k" not in str(info.value) and "\n" not in str(info.value)
    assert not out.exists()  # refused before the run folder is made


def test_fit_within_the_budget_still_trains(model_and_data, tmp_path):
    model, x = model_and_data
    result = vaekit.fit(model, x, out=tmp_path / "run", objective="iwae", k=4, epochs=1, batch_size=16,
                        progress=False)
    assert result.epochs == 1


# -- component settings out of range -----------------------------------------------------------------------------


def test_a_config_file_with_an_absurd_posterior_floor_names_the_setting(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: {posterior: {name: gaussian, min_logvar: 1e300}}\n")
    out = tmp_path / "run"
    with bounded(60):
        code, _, err = run_cli(["train", *TINY, "--epochs", "1", "--config", str(config), "--out", str(out)])
    assert_one_line_error(code, err, "min_logvar")


@pytest.mark.parametrize("registry, spec, key", [
    (POSTERIORS, {"name": "gaussian", "min_logvar": 1e300}, "min_logvar"),
    (POSTERIORS, {"name": "gaussian", "min_logvar": -1e300}, "min_logvar"),
    (POSTERIORS, {"name": "iaf", "min_logvar": 1e300}, "min_logvar"),
    (POSTERIORS, {"name": "planar", "min_logvar": -1e300}, "min_logvar"),
    (POSTERIORS, {"name": "delta", "latent_penalty": 1e300}, "latent_penalty"),
    (LIKELIHOODS, {"name": "gaussian", "sigma": 1e300}, "sigma"),
    (LIKELIHOODS, {"name": "gaussian", "sigma": 1e-300}, "sigma"),
])
def test_float_settings_of_components_are_range_checked(registry, spec, key):
    with pytest.raises(ConfigError, match=key):
        registry.settings(spec)
    if registry is POSTERIORS:
        with pytest.raises(ConfigError, match=key):
            VAE(latent=2, shape=(1, 8, 8), hidden=[8], posterior=spec)
    else:
        with pytest.raises(ConfigError, match=key):
            VAE(latent=2, shape=(1, 8, 8), hidden=[8], likelihood=spec)


def test_sensible_component_settings_still_build():
    for spec in ({"name": "gaussian", "min_logvar": -20.0}, {"name": "gaussian", "min_logvar": 0.0},
                 {"name": "delta", "latent_penalty": 0.5}):
        VAE(latent=2, shape=(1, 8, 8), hidden=[8], posterior=spec)
    for sigma in (1e-3, 10.0):
        VAE(latent=2, shape=(1, 8, 8), hidden=[8], likelihood={"name": "gaussian", "sigma": sigma})


# -- caches in the user cache, never beside the data --------------------------------------------------------------


SMALL_ROWS = {"train": 30, "valid": 10, "test": 12}
SMALL_GRID = dsp.DSpritesGrid(scales=2, orientations=4, positions=4)


def small_data_root(root: Path) -> Path:
    """A data root with small binarized MNIST (.amat, train gzipped), MNIST (IDX), CIFAR-10 and dsprites folders."""
    rng = np.random.default_rng(0)
    (root / "binarized_mnist").mkdir(parents=True)
    for s, n in SMALL_ROWS.items():
        gz = ".gz" if s == "train" else ""
        write_amat(root / "binarized_mnist" / f"binarized_mnist_{s}.amat{gz}", rng.integers(0, 2, (n, 784)))
    (root / "mnist").mkdir()
    for prefix, n in (("train", 24), ("t10k", 12)):
        write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    (root / "cifar10").mkdir()
    names = (*cifar.TRAIN_BATCHES, cifar.TEST_BATCH)
    write_cifar_archive(root / "cifar10" / CIFAR_ARCHIVE, {b: (rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8),
                                                                rng.integers(0, 10, 2)) for b in names})
    (root / "dsprites").mkdir()
    (root / "dsprites" / "README").write_text("the user's own notes\n")
    return root


def linked_copy(src: Path, dest: Path) -> Path:
    """The folders of ``src`` made afresh, each file a symbolic link to the original."""
    for dirpath, _, filenames in os.walk(src):
        target = dest / Path(dirpath).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in filenames:
            (target / name).symlink_to(Path(dirpath) / name)
    return dest


def set_writable(root: Path, writable: bool) -> None:
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o755 if writable else 0o555)


def load_everything(root: Path) -> None:
    for name, n_test in (("binarized-mnist", 12), ("mnist", 12), ("cifar10", 2)):
        for _ in range(2):  # the second load finds the caches of the first
            assert len(load_dataset(name, data_dir=root, download=False).test) == n_test
    for _ in range(2):
        ds = dsp.load_dsprites(data_dir=root, grid=SMALL_GRID)
        assert ds.info()["splits"]["train"] > 0


@pytest.mark.parametrize("copy", ["writable", "read-only", "linked"])
def test_the_loaders_write_nothing_into_a_data_folder(tmp_path, monkeypatch, copy):
    monkeypatch.setattr(amat, "EXPECTED_ROWS", dict(SMALL_ROWS))
    original = small_data_root(tmp_path / "original")
    copied = tmp_path / "copy"
    root = linked_copy(original, copied) if copy == "linked" else shutil.copytree(original, copied)
    before, before_original = snapshot_tree(root), snapshot_tree(original)
    if copy == "read-only":
        set_writable(root, False)
    try:
        load_everything(root)
    finally:
        set_writable(root, True)
    assert changed_entries(before, snapshot_tree(root)) == []
    assert changed_entries(before_original, snapshot_tree(original)) == []
    parsed = list((cache_root() / "parsed").glob("*.npz"))
    assert len(parsed) == 3  # the three .amat files, parsed once, in the user cache
    assert list((cache_root() / "dsprites").glob("dsprites-vaekit-*.bits"))


def test_the_parse_cache_follows_the_source_and_is_used(tmp_path, monkeypatch):
    src = tmp_path / "data" / "d.amat"
    src.parent.mkdir()
    x = np.random.default_rng(1).integers(0, 2, (5, 784), dtype=np.uint8)
    write_amat(src, x)
    assert np.array_equal(amat.read_amat(src), x)
    assert sorted(p.name for p in src.parent.iterdir()) == ["d.amat"]
    monkeypatch.setattr(amat, "parse_amat", lambda *a, **k: pytest.fail("parsed again despite a valid cache"))
    assert np.array_equal(amat.read_amat(src), x)
    monkeypatch.undo()
    y = 1 - x
    write_amat(src, y)  # new content: parsed afresh
    assert np.array_equal(amat.read_amat(src), y)
    assert sorted(p.name for p in src.parent.iterdir()) == ["d.amat"]


def test_a_planted_cache_beside_the_source_is_never_read(tmp_path):
    src = tmp_path / "d.amat"
    x = np.zeros((4, 784), dtype=np.uint8)
    write_amat(src, x)
    fake = io.BytesIO()
    digest = hashlib.sha256(src.read_bytes()).digest()
    ones = np.packbits(np.ones((4, 784), dtype=np.uint8), axis=1)
    meta = np.array([amat._CACHE_VERSION, 784, 4, zlib.crc32(ones)], dtype=np.int64)  # valid but for its place
    np.savez(fake, bits=ones, meta=meta, source_sha256=np.frombuffer(digest, np.uint8))
    (tmp_path / "d.amat.vaekit.npz").write_bytes(fake.getvalue())
    assert np.array_equal(amat.read_amat(src), x)


# -- the ELBO surgery of a categorical VAE within the memory budget ------------------------------------------------


_SURGERY_PEAK = """
import json, resource, sys, torch, vaekit
from vaekit.models import VAE

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

torch.manual_seed(0)
model = VAE(latent=20, shape=(1, 8, 8), hidden=[16], posterior={"name": "categorical", "classes": 10})
x = (torch.rand(1000, 1, 8, 8) > 0.5).float()
vaekit.evaluate(model, x, k=2, surgery_samples=0)
before = peak()
result = vaekit.evaluate(model, x, k=2)  # the default 10,000 draws of the surgery
print(json.dumps({"before": before, "after": peak(), "mi": result.mutual_information}))
"""


def test_the_surgery_of_a_categorical_vae_stays_within_the_memory_budget():
    """Issue 32's case: a 20 x 10 categorical VAE on 1,000 images (8 x 8 here), the default 10,000 surgery draws.
    log q(z_i | x_n) for every draw and example was a broadcast (M, N, 20, 10): 10,000 x 1,000 x 200 floats, 8 GB.
    Its peak memory over an evaluation without the surgery must stay below the 256 MB budget of evaluation work."""
    import json
    import resource
    import subprocess

    from reliability_helpers import PYTHON, subprocess_env

    from vaekit.bounds.sizing import DEFAULT_MEMORY_BUDGET

    def cap() -> None:  # the broadcast of the old code fails under it instead of eating the machine
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))

    proc = subprocess.run([PYTHON, "-c", _SURGERY_PEAK], env=subprocess_env(), capture_output=True, text=True,
                          timeout=120, preexec_fn=cap)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peaks = json.loads(proc.stdout.strip().splitlines()[-1])
    assert peaks["mi"] is not None and peaks["mi"] >= 0  # the surgery ran
    assert peaks["after"] - peaks["before"] < DEFAULT_MEMORY_BUDGET, peaks
