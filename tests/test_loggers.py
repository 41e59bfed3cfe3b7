"""Loggers: ``--log tensorboard,csv`` writes event files and a CSV that read back with the numbers of metrics.jsonl,
sample grids every N epochs, resume without duplicate epochs, one-line errors for unknown or missing loggers."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from cli_run import run_cli
from vaekit import loggers as L

pytest.importorskip("tensorboard", reason="the tensorboard package (pip install 'vaekit[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["--dataset", "digits", "--hidden", "16", "--latent", "2", "--batch-size", "200"]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def events(run) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def csv_rows(run) -> list[dict]:
    return list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))


def check_scalars(run, rows: list[dict]) -> None:
    """Every numeric key of metrics.jsonl is a TensorBoard scalar, once per epoch, with the same value (event files
    hold float32: the same number rounded to float32, compared exactly)."""
    acc = events(run)
    for key in ("train_elbo", "train_reconstruction", "train_kl", "valid_elbo", "valid_kl", "beta", "lr"):
        got = acc.Scalars(L.scalar_tag(key))
        assert [e.step for e in got] == [r["epoch"] for r in rows], key
        assert [e.value for e in got] == [float(np.float32(r[key])) for r in rows], key


def check_csv(run, rows: list[dict]) -> None:
    """metrics.csv: the same rows as metrics.jsonl, every number the same float (written in full precision)."""
    table = csv_rows(run)
    assert [int(t["epoch"]) for t in table] == [r["epoch"] for r in rows]
    for t, r in zip(table, rows):
        assert set(t) == set(r)
        for key, value in r.items():
            if isinstance(value, bool):
                assert t[key] == ("true" if value else "false")
            elif isinstance(value, float):
                assert float(t[key]) == value or (math.isnan(value) and math.isnan(float(t[key]))), key
            else:
                assert t[key] == str(value), key


def test_cli_run_writes_tensorboard_and_csv_that_read_back(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--log", "tensorboard,csv", "--log-images-every", "2",
                            "--out", str(run)], capsys)
    assert code == 0, err
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    check_scalars(run, rows)
    check_csv(run, rows)
    images = events(run).Images("samples")
    assert [e.step for e in images] == [2, 3]  # every 2 epochs and at the last
    from PIL import Image

    grid = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)))
    assert grid.shape[:2] == (8 * 9 + 1, 8 * 9 + 1)  # 64 digits of 8 x 8 pixels, 8 a row, 1-pixel lines
    assert (images[-1].width, images[-1].height) == (73, 73) and grid.std() > 0
    assert json.loads((run / "config.json").read_text())["log"] == ["tensorboard", "csv"]


def test_resume_appends_every_epoch_once_and_keeps_the_arithmetic(tmp_path, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    logs = ["--log", "tensorboard,csv", "--log-images-every", "1"]
    assert run_cli(["train", *TINY, "--epochs", "4", *logs, "--out", str(straight)], capsys)[0] == 0
    assert run_cli(["train", *TINY, "--epochs", "2", *logs, "--out", str(run)], capsys)[0] == 0
    # a run killed after it logged epoch 3 but before that epoch's checkpoint: stale entries past epoch 2
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(run / "tensorboard")) as writer:
        writer.add_scalar("train/elbo", 12345.0, global_step=3)
    with open(run / "metrics.csv", "a") as fh:
        fh.write("3,12345.0\n")
    code, _, err = run_cli(["train", *TINY, "--epochs", "4", "--resume", "--out", str(run)], capsys)  # no --log
    assert code == 0, err
    rows = metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    check_scalars(run, rows)  # each epoch once, the stale epoch 3 gone
    check_csv(run, rows)
    assert [e.step for e in events(run).Images("samples")] == [1, 2, 3, 4]

    def without_time(rs):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rs]

    assert without_time(rows) == without_time(metrics(straight))  # drawing the grids leaves the training unchanged


def test_a_logger_added_on_resume_gets_the_history_and_none_stops_them(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", *TINY, "--epochs", "2", "--out", str(run)], capsys)[0] == 0
    code, _, err = run_cli(["train", *TINY, "--epochs", "3", "--resume", "--log", "csv,tensorboard",
                            "--out", str(run)], capsys)
    assert code == 0, err
    rows = metrics(run)
    check_csv(run, rows)
    check_scalars(run, rows)
    assert json.loads((run / "config.json").read_text())["log"] == ["csv", "tensorboard"]  # later resumes keep it
    before = (run / "metrics.csv").read_bytes()
    code, _, err = run_cli(["train", *TINY, "--epochs", "4", "--resume", "--log", "none", "--out", str(run)], capsys)
    assert code == 0, err
    assert (run / "metrics.csv").read_bytes() == before and len(metrics(run)) == 4


def test_overwrite_removes_the_logs_and_nothing_else(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", *TINY, "--epochs", "1", "--log", "tensorboard,csv", "--out", str(run)], capsys)[0] == 0
    (run / "notes.txt").write_text("mine")
    code, out, err = run_cli(["train", *TINY, "--epochs", "1", "--overwrite", "--out", str(run)], capsys)
    assert code == 0, err
    assert not (run / "metrics.csv").exists() and not (run / "tensorboard").exists()
    assert (run / "notes.txt").read_text() == "mine"
    assert "metrics.csv" in out and "tensorboard" in out  # said by the --overwrite line


def test_a_linked_log_folder_is_refused_in_one_line(tmp_path, capsys):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_cli(["train", *TINY, "--epochs", "1", "--out", str(run)], capsys)[0] == 0
    (run / "tensorboard").symlink_to(elsewhere)
    code, _, err = run_cli(["train", *TINY, "--epochs", "2", "--resume", "--log", "tensorboard", "--out", str(run)],
                           capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "symbolic link" in err, err
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("value, needle", [("tensorbord", "did you mean 'tensorboard'?"), ("csv,foo", "'foo'"),
                                           ("none,csv", "'none'")])
def test_unknown_logger_name_exits_2_with_one_line(tmp_path, capsys, value, needle):
    code, _, err = run_cli(["train", *TINY, "--epochs", "1", "--log", value, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "r").exists()


def test_a_config_file_names_the_loggers(tmp_path, capsys):
    conf = tmp_path / "c.toml"
    conf.write_text('dataset = "digits"\nhidden = [16]\nlatent = 2\nepochs = 1\nlog = ["csv"]\n')
    code, _, err = run_cli(["train", "--config", str(conf), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    assert [int(r["epoch"]) for r in csv_rows(tmp_path / "r")] == [1]


@pytest.mark.parametrize("name, module, extra", [("mlflow", "mlflow", None), ("wandb", "wandb", None),
                                                 ("tensorboard", "torch.utils.tensorboard", "tensorboard")])
def test_a_missing_optional_package_is_one_line_saying_how_to_install_it(tmp_path, capsys, monkeypatch, name,
                                                                         module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    code, _, err = run_cli(["train", *TINY, "--epochs", "1", "--log", name, "--out", str(tmp_path / "r")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"pip install {name}" in lines[0] and "Traceback" not in err
    if extra:
        assert f"vaekit[{extra}]" in lines[0]


class Recorder(L.Logger):
    wants_images = True

    def __init__(self):
        self.history, self.scalars, self.images, self.closed = None, [], [], False

    def start(self, history):
        self.history = list(history)

    def log_scalars(self, epoch, values):
        self.scalars.append((epoch, dict(values)))

    def log_image(self, epoch, name, image):
        self.images.append((epoch, name, image))

    def close(self):
        self.closed = True


class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 64))

    def forward(self, z):
        return self.net(z).reshape(*z.shape[:-1], 1, 8, 8)


def _model():
    from vaekit import VAE

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    return VAE(encoder, Decoder(), latent=2)


def test_fit_takes_logger_names_and_objects(tmp_path):
    import vaekit
    from vaekit.data import load_dataset
    from vaekit.errors import ConfigError
    from vaekit.train import sample_grid

    ds = load_dataset("digits", binarize="threshold")
    rec = Recorder()
    result = vaekit.fit(_model(), ds.train[:400], ds.valid[:100], out=tmp_path / "run", epochs=3, batch_size=100,
                        loggers=["csv", rec], log_images_every=2, progress=False)
    rows = metrics(tmp_path / "run")
    assert rec.history == [] and rec.closed
    assert [e for e, _ in rec.scalars] == [1, 2, 3] and [v for _, v in rec.scalars] == rows
    assert [(e, n) for e, n, _ in rec.images] == [(2, "samples"), (3, "samples")]
    # the grid of the last epoch is the decoded means of the same fixed codes under the final weights
    assert np.array_equal(rec.images[-1][2], sample_grid(result.model, seed=0))
    check_csv(tmp_path / "run", rows)
    with pytest.raises(ConfigError, match="did you mean"):
        vaekit.fit(_model(), ds.train[:100], out=tmp_path / "bad", epochs=1, loggers="cvs", progress=False)


def test_the_csv_header_grows_when_a_row_brings_a_new_key(tmp_path):
    lg = L.CSVLogger(tmp_path / "metrics.csv")
    lg.start([])
    lg.log_scalars(1, {"epoch": 1, "train_elbo": -10.5, "best": True})
    lg.log_scalars(2, {"epoch": 2, "train_elbo": -9.25, "best": False})
    lg.log_scalars(3, {"epoch": 3, "train_elbo": -9.0, "best": False, "valid_iwae": -8.75, "selected_by": "x"})
    rows = L.read_csv(tmp_path / "metrics.csv")
    assert list(rows[0]) == ["epoch", "train_elbo", "best", "valid_iwae", "selected_by"]
    assert [r["valid_iwae"] for r in rows] == ["", "", "-8.75"] and rows[1]["best"] == "false"
    lg.log_scalars(4, {"epoch": 4, "train_elbo": 0.1 + 0.2})
    assert float(L.read_csv(tmp_path / "metrics.csv")[-1]["train_elbo"]) == 0.1 + 0.2  # full precision


def test_mlflow_logger_reports_scalars_per_epoch(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("mlflow")
    fake.start_run = lambda **kw: calls.append(("start", kw)) or object()
    fake.log_params = lambda p: calls.append(("params", p))
    fake.log_metrics = lambda m, step: calls.append(("metrics", step, m))
    fake.log_image = lambda image, artifact_file: calls.append(("image", artifact_file, image.shape))
    fake.end_run = lambda: calls.append(("end",))
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    lg = L.open_loggers(["mlflow"], tmp_path / "myrun", {"lr": 0.001, "model": {"latent": 2}})
    lg.start([])
    lg.log_scalars(1, {"epoch": 1, "train_elbo": -3.5, "selected_by": "valid ELBO", "best": True})
    lg.log_image(1, "samples", np.zeros((5, 5)))
    lg.close()
    assert calls[0] == ("start", {"run_name": "myrun"})
    assert calls[1] == ("params", {"lr": 0.001, "model.latent": 2})
    assert calls[2] == ("metrics", 1, {"train/elbo": -3.5, "run/best": 1.0})
    assert calls[3] == ("image", "samples/epoch-0001.png", (5, 5)) and calls[4] == ("end",)


def test_image_array_and_grid():
    grid = L.image_grid(np.stack([np.full((1, 2, 3), 0.0), np.full((1, 2, 3), 1.0)]), nrow=2)
    assert grid.shape == (4, 9) and grid.dtype == np.uint8
    assert grid[1, 1] == 0 and grid[1, 5] == 255 and grid[0, 0] == 255  # black, white, the white line
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    assert np.array_equal(L.image_array(buf.getvalue()), grid)
    assert L.image_array(np.array([[0.0, 0.5, 1.0]])).tolist() == [[0, 128, 255]]
