"""Loggers: where a training run reports its per-epoch metrics and sample grids, besides ``RUN/metrics.jsonl``.

A :class:`Logger` gets, once per epoch, the row ``metrics.jsonl`` gets (``train_elbo``, ``valid_elbo``, their
reconstruction and KL terms in nats per example, ``beta``, ``lr``, ``seconds``, ...) and, every
``log_images_every`` epochs, an image: the decoded means E[x|z] of fixed codes z ~ p(z) tiled into a grid.
Selected by name (``vaekit train --log tensorboard,csv``, ``fit(..., loggers="tensorboard,csv")``):

- ``csv``: ``RUN/metrics.csv``, one row per epoch. The header is the keys of the rows in the order they first
  appear (``epoch`` first); a row that brings a new key rewrites the file (atomically) with the wider header, the
  earlier rows leaving that column empty. Flags are ``true``/``false``, numbers are written in full precision
  (they read back as the same floats as ``metrics.jsonl``).
- ``tensorboard``: event files in ``RUN/tensorboard/`` (the ``tensorboard`` package's writer, through
  ``torch.utils.tensorboard``): the scalars ``train/elbo``, ``valid/kl``, ... (``train_X`` -> ``train/X``,
  ``valid_X`` -> ``valid/X``, other numbers under ``run/``) at step = epoch, and the image ``samples``.
- ``mlflow`` and ``wandb``: the same scalars (and images) to MLflow (its own tracking settings, e.g.
  ``MLFLOW_TRACKING_URI``) or Weights & Biases (``WANDB_PROJECT``, default ``vaekit``; local files in
  ``RUN/wandb/``); optional packages, imported only when chosen.

On ``--resume`` every logger starts from the run's metrics so far (:meth:`Logger.start`): the CSV is rewritten
from them and TensorBoard drops what an interrupted run logged after its checkpoint (``purge_step``), so that
every epoch appears once. ``--overwrite`` removes ``metrics.csv`` and ``tensorboard/`` with the run's other files.
"""

from __future__ import annotations

import csv
import io
import math
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vaekit.errors import CheckpointError, ConfigError
from vaekit.io.checkpoint import atomic_write_text, write_failed
from vaekit.io.files import METRICS_CAP, exists_or_link, open_regular

CSV_FILE = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


class Logger:
    """The interface: ``start`` once, ``log_scalars`` once per epoch, ``log_image`` when asked, ``close`` at the end.

    ``wants_images`` says whether the trainer should draw sample grids for this logger at all.
    """

    wants_images: bool = False

    def start(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Called before the first epoch with the run's metrics rows so far (empty for a new run)."""

    def log_scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        """One epoch's metrics row (numbers in nats per example, flags, short names)."""

    def log_image(self, epoch: int, name: str, image: np.ndarray | bytes) -> None:
        """An image (H, W) or (H, W, 3), uint8 or floats in [0, 1], or PNG bytes."""

    def close(self) -> None:
        """Flush and release what the logger holds."""


class MultiLogger(Logger):
    """Several loggers as one (in order); closing closes every one, even when one of them fails."""

    def __init__(self, loggers: Iterable[Logger] = ()):
        self.loggers = list(loggers)

    @property
    def wants_images(self) -> bool:  # type: ignore[override]
        return any(lg.wants_images for lg in self.loggers)

    def start(self, history: Sequence[Mapping[str, Any]]) -> None:
        for lg in self.loggers:
            lg.start(history)

    def log_scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        for lg in self.loggers:
            lg.log_scalars(epoch, values)

    def log_image(self, epoch: int, name: str, image: np.ndarray | bytes) -> None:
        for lg in self.loggers:
            if lg.wants_images:
                lg.log_image(epoch, name, image)

    def close(self) -> None:
        error: BaseException | None = None
        for lg in self.loggers:
            try:
                lg.close()
            except BaseException as exc:  # noqa: BLE001 - the others still close; the first error is raised
                error = error or exc
        if error is not None:
            raise error


# -- values and images ------------------------------------------------------------------------


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a metrics row (flags as 0/1), without ``epoch`` and without names."""
    out = {}
    for key, v in values.items():
        if key == "epoch" or v is None or isinstance(v, str):
            continue
        if isinstance(v, (bool, int, float, np.integer, np.floating)):
            out[key] = float(v)
    return out


def scalar_tag(key: str) -> str:
    """``train_elbo`` -> ``train/elbo``, ``valid_kl`` -> ``valid/kl``, ``lr`` -> ``run/lr``."""
    for split in ("train", "valid"):
        if key.startswith(split + "_"):
            return f"{split}/{key[len(split) + 1:]}"
    return f"run/{key}"


def image_array(image: np.ndarray | bytes) -> np.ndarray:
    """``image`` as a uint8 array (H, W) or (H, W, 3): floats are taken in [0, 1], PNG bytes are decoded."""
    if isinstance(image, (bytes, bytearray)):
        from PIL import Image

        with Image.open(io.BytesIO(bytes(image))) as img:
            arr = np.asarray(img.convert("L" if img.mode in ("1", "L", "I", "F") else "RGB"))
        return arr
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(f"an image is (H, W) or (H, W, 3); got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(np.nan_to_num(arr.astype(np.float64)), 0.0, 1.0) * 255).astype(np.uint8)
    return arr


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images (N, C, H, W) (C = 1 or 3, values in [0, 1]) into one uint8 image (H', W') or (H', W', 3),
    ``nrow`` per row (default ceil(sqrt(N))), white lines of ``pad`` pixels between them."""
    arr = np.clip(np.nan_to_num(np.asarray(images, dtype=np.float64)), 0.0, 1.0)
    if arr.ndim == 3:
        arr = arr[:, None]
    n, c, h, w = arr.shape
    nrow = max(1, min(n, nrow or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / nrow)
    out = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad))
    for i in range(n):
        r, col = divmod(i, nrow)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = arr[i]
    out = out[0] if c == 1 else np.transpose(out[:3], (1, 2, 0))
    return np.round(out * 255).astype(np.uint8)


# -- CSV ----------------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # full precision: reads back as the same float
    return str(v)


class CSVLogger(Logger):
    """``RUN/metrics.csv``: one row per epoch; the header grows when a row brings a new key (see the module)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def _text(self, rows: Sequence[Mapping[str, Any]]) -> str:
        if not self.columns:
            return ""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in self.columns])
        return buf.getvalue()

    def _widen(self, row: Mapping[str, Any]) -> bool:
        new = [k for k in ("epoch", *row) if k not in self.columns]
        self.columns += list(dict.fromkeys(new))
        return bool(new)

    def _rewrite(self) -> None:
        try:
            atomic_write_text(self.path, self._text(self.rows))
        except OSError as exc:
            raise write_failed(self.path, exc) from None

    def start(self, history: Sequence[Mapping[str, Any]]) -> None:
        self.rows = [dict(r) for r in history]
        self.columns = []
        for row in self.rows:
            self._widen(row)
        if self.rows or exists_or_link(self.path):  # the run's metrics so far; a file of a run not continued goes
            self._rewrite()

    def log_scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        row = {"epoch": epoch, **{k: v for k, v in values.items() if k != "epoch"}}
        self.rows.append(row)
        if self._widen(row) or len(self.rows) == 1:
            self._rewrite()
            return
        line = self._text([row]).split("\n", 1)[1]  # the row without the header
        try:
            fd = open_regular(self.path, os.O_WRONLY | os.O_APPEND)  # no link followed
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except FileNotFoundError:
            self._rewrite()  # removed meanwhile: written again whole
        except OSError as exc:
            raise write_failed(self.path, exc) from None


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` as strings (a capped read that follows no link)."""
    from vaekit.io.files import read_text_capped

    text = read_text_capped(path, METRICS_CAP, "metrics file")
    return list(csv.DictReader(io.StringIO(text)))


# -- TensorBoard --------------------------------------------------------------------------------


def _folder(path: Path) -> Path:
    """``path`` as a real folder of the run (created if missing); a link or a file there is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        try:
            path.mkdir()
        except OSError as exc:
            raise write_failed(path, exc) from None
        return path
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise CheckpointError(f"{path} is {kind}; vaekit writes its logs only into a folder of the run itself "
                              "(remove it, or pass --overwrite)")
    return path


def _missing(package: str, logger: str, extra: str | None = None) -> ConfigError:
    how = f"pip install 'vaekit[{extra}]' (or pip install {package})" if extra else f"pip install {package}"
    return ConfigError(f"the {logger} logger needs the {package} package, which is not installed: {how}, "
                       f"or leave {logger} out of --log")


class TensorBoardLogger(Logger):
    """Event files in ``RUN/tensorboard/``: scalars at step = epoch, the sample grid as the image ``samples``."""

    wants_images = True

    def __init__(self, path: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard", "tensorboard", "tensorboard") from None
        self.path = Path(path)
        self._writer_class = SummaryWriter
        self.writer: Any = None

    def start(self, history: Sequence[Mapping[str, Any]]) -> None:
        folder = _folder(self.path)
        earlier = any(name.startswith("events.out.tfevents.") for name in os.listdir(folder))
        done = max((int(r["epoch"]) for r in history), default=0)
        # purge_step: readers drop the events of steps >= it that earlier files hold (logged after the checkpoint)
        self.writer = self._writer_class(log_dir=str(folder), purge_step=done + 1 if earlier else None)
        if not earlier:  # a logger added to a run under way: its history first
            for row in history:
                self._scalars(int(row["epoch"]), row)
        self.writer.flush()

    def _scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        for key, value in numeric(values).items():
            self.writer.add_scalar(scalar_tag(key), value, global_step=epoch)

    def log_scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        self._scalars(epoch, values)
        self.writer.flush()

    def log_image(self, epoch: int, name: str, image: np.ndarray | bytes) -> None:
        arr = image_array(image)
        if arr.ndim == 2:
            self.writer.add_image(name, arr, global_step=epoch, dataformats="HW")
        else:
            self.writer.add_image(name, arr, global_step=epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# -- MLflow and Weights & Biases (optional) -----------------------------------------------------


def _optional(module: str, logger: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise _missing(module, logger) from None


class MLflowLogger(Logger):
    """An MLflow run named after the run folder (MLflow's own tracking settings): metrics at step = epoch,
    the settings as parameters, sample grids as image artifacts ``samples/epoch-NNNN.png``."""

    wants_images = True

    def __init__(self, run: str | Path, config: Mapping[str, Any] | None = None):
        self.mlflow = _optional("mlflow", "mlflow")
        self.name, self.config = Path(run).resolve().name, dict(config or {})
        self.active: Any = None

    def start(self, history: Sequence[Mapping[str, Any]]) -> None:
        self.active = self.mlflow.start_run(run_name=self.name)
        params = {k: v for k, v in _flat(self.config).items() if v is not None}
        if params:
            self.mlflow.log_params(params)

    def log_scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics({scalar_tag(k): v for k, v in numeric(values).items() if math.isfinite(v)},
                                step=epoch)

    def log_image(self, epoch: int, name: str, image: np.ndarray | bytes) -> None:
        self.mlflow.log_image(image_array(image), f"{name}/epoch-{epoch:04d}.png")

    def close(self) -> None:
        if self.active is not None:
            self.mlflow.end_run()
            self.active = None


class WandbLogger(Logger):
    """A Weights & Biases run (project ``$WANDB_PROJECT`` or ``vaekit``, named after the run folder, local files
    in ``RUN/wandb/``): metrics at step = epoch, the settings as its config, sample grids as images."""

    wants_images = True

    def __init__(self, run: str | Path, config: Mapping[str, Any] | None = None):
        self.wandb = _optional("wandb", "wandb")
        self.run, self.config = Path(run), dict(config or {})
        self.active: Any = None

    def start(self, history: Sequence[Mapping[str, Any]]) -> None:
        self.active = self.wandb.init(project=os.environ.get("WANDB_PROJECT") or "vaekit",
                                      name=self.run.resolve().name, dir=str(_folder(self.run / WANDB_DIR)),
                                      config=self.config)

    def log_scalars(self, epoch: int, values: Mapping[str, Any]) -> None:
        self.active.log({scalar_tag(k): v for k, v in numeric(values).items()}, step=epoch)

    def log_image(self, epoch: int, name: str, image: np.ndarray | bytes) -> None:
        self.active.log({name: self.wandb.Image(image_array(image))}, step=epoch)

    def close(self) -> None:
        if self.active is not None:
            self.active.finish()
            self.active = None


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in values.items():
        if isinstance(v, Mapping):
            out |= _flat(v, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


# -- by name ----------------------------------------------------------------------------------------

#: The loggers by name: each a factory (run folder, the run's settings) -> Logger.
LOGGERS: dict[str, Callable[[Path, Mapping[str, Any]], Logger]] = {
    "csv": lambda run, config: CSVLogger(run / CSV_FILE),
    "tensorboard": lambda run, config: TensorBoardLogger(run / TENSORBOARD_DIR),
    "mlflow": lambda run, config: MLflowLogger(run, config),
    "wandb": lambda run, config: WandbLogger(run, config),
}
NAMES = tuple(LOGGERS)


def check_names(names: Any, what: str = "log") -> list[str]:
    """``names`` (a list of logger names, or one comma-separated string) checked: known names, each once, in
    order; ``none`` alone means no logger. An unknown name raises ConfigError with a suggestion."""
    import difflib

    if isinstance(names, str):
        names = names.split(",")
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{what} must be logger names ({', '.join(NAMES)}), e.g. tensorboard,csv; got {names!r}")
    clean = [n.strip() for n in names if n.strip()]
    if clean == ["none"]:
        return []
    for name in clean:
        if name not in LOGGERS:
            close = difflib.get_close_matches(name, [*NAMES, "none"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown logger {name[:40]!r} in {what}{hint}; choose from {', '.join(NAMES)} "
                              "(comma-separated), or none")
    return list(dict.fromkeys(clean))


#: The optional package each logger imports: (module, package to install, vaekit extra).
PACKAGES: dict[str, tuple[str, str, str | None]] = {
    "tensorboard": ("torch.utils.tensorboard", "tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow", None),
    "wandb": ("wandb", "wandb", None),
}


def check_available(names: Sequence[str]) -> None:
    """Import the optional package of each named logger (:data:`PACKAGES`), so that a missing one is refused
    (``ConfigError``, one line) before a run folder is made or written, not at the first epoch."""
    import importlib

    for name in check_names(list(names)):
        if name in PACKAGES:
            module, package, extra = PACKAGES[name]
            try:
                importlib.import_module(module)
            except ImportError:
                raise _missing(package, name, extra) from None


def open_loggers(names: Sequence[str], run: str | Path, config: Mapping[str, Any] | None = None,
                 extra: Sequence[Logger] = ()) -> MultiLogger:
    """The named loggers of the run folder ``run`` (plus the ``extra`` Logger objects), not yet started."""
    run = Path(run)
    made: list[Logger] = []
    try:
        for name in check_names(list(names)):
            made.append(LOGGERS[name](run, dict(config or {})))
    except BaseException:
        MultiLogger(made).close()
        raise
    return MultiLogger([*made, *extra])
