"""``vaekit data``: splits, shape, value type and labels; one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaekit.cli import COMMANDS, main
from vaekit.data import write_idx

pytestmark = pytest.mark.usefixtures("isolated_env")  # see tests/conftest.py


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["data", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_registered():
    assert "data" in COMMANDS


def test_digits_text(capsys):
    code, out, err = run(capsys, "--dataset", "digits")
    assert code == 0 and err == ""
    assert "1x8x8" in out and "grey levels in [0,1]" in out and "17 grey levels" in out and "10 classes" in out
    assert "train       1257 images" in out and "test         270 images" in out


def test_digits_json(capsys):
    code, out, _ = run(
        capsys, "--dataset", "digits", "--binarize", "dynamic", "--valid-size", "100", "--json"
    )
    info = json.loads(out.strip().splitlines()[-1])
    assert code == 0
    assert info["dataset"] == "digits" and info["shape"] == [1, 8, 8]
    assert info["binary"] is True and info["dynamic"] is True
    assert info["splits"] == {"train": 1427, "valid": 100, "test": 270}


def test_own_files(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((20, 3, 4, 4), dtype=np.uint8))
    code, out, _ = run(
        capsys, "--dataset", f"npy:{tmp_path / 'x.npy'}", "--test-size", "5", "--json"
    )
    info = json.loads(out.strip().splitlines()[-1])
    assert (
        code == 0
        and info["shape"] == [3, 4, 4]
        and info["splits"] == {"train": 13, "valid": 2, "test": 5}
    )
    assert info["binary"] is True  # all zeros: {0, 1}-valued


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--dataset", "mnits"], "unknown data set 'mnits'"),
        (
            ["--dataset", "digits", "--valid-size", "5000"],
            "valid_size=5000 leaves no training images",
        ),
        (["--dataset", "npy:/nonexistent/x.npy"], "not found"),
        (["--dataset", "binarized-mnist", "--binarize", "dynamic"], "already binarized"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, match):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vaekit data: error: ") and match in err


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "--dataset", "digits", "--valid-size", "-1"])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_missing_files_are_an_error_with_the_url(capsys, tmp_path):
    code, out, err = run(capsys, "--dataset", "kmnist", "--data-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1
    assert "http://codh.rois.ac.jp/kmnist/dataset/kmnist/train-images-idx3-ubyte.gz" in err
    assert "--download" in err and list(tmp_path.iterdir()) == []  # nothing downloaded


def test_test_files_only_reports_the_test_split(capsys, tmp_path):
    rng = np.random.default_rng(0)
    write_idx(
        tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    )
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 7, dtype=np.uint8))
    code, out, err = run(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert code == 0
    assert "test           7 images" in out and "train          0 images  (not available" in out
    assert "note: mnist: missing train-images-idx3-ubyte" in out
    code, out, err = run(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path), "--json")
    info = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and info["splits"] == {"train": 0, "valid": 0, "test": 7}
    assert info["not_loaded"] == ["train", "valid"] and "train-images-idx3-ubyte" in err


def test_reference_data(capsys, shared_data, tmp_path):
    code, out, _ = run(
        capsys,
        "--dataset",
        "binarized-mnist",
        "--data-dir",
        str(shared_data / "binarized_mnist"),
        "--json",
    )
    info = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and info["shape"] == [1, 28, 28] and info["binary"] is True
    assert info["splits"] == {"train": 50000, "valid": 10000, "test": 10000}
    assert not (tmp_path / "xdg-cache").exists()  # saves nothing, not even the parse cache

    code, out, _ = run(capsys, "--dataset", "mnist", "--data-dir", str(shared_data / "mnist"))
    assert code == 0 and "test       10000 images" in out and "10 classes" in out
    assert "missing train-images-idx3-ubyte" in out
