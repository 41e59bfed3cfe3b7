"""One run folder's lifecycle, shared by every fitter (gradient training, exact EM): claim it (the run-folder
contract, then the exclusive lock), open it under the lock (again the contract, stale temporary files of killed
writes removed, the marker written), then start it afresh (config.json written, old metrics and, with overwrite, the
run's own files removed) or resume it (the settings read back, metrics of epochs not checkpointed dropped).

Files: ``config.json`` (the settings), ``metrics.jsonl`` (a row per epoch), ``checkpoint.safetensors`` (the fitter's
state), ``model.safetensors`` + ``model.json`` (the kept model); see :mod:`vaekit.io.contract`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaekit.errors import CheckpointError, ConfigError, option, switch
from vaekit.io import checkpoint as ckpt
from vaekit.io import contract
from vaekit.io.files import JSON_CAP, exists_or_link, read_text_capped
from vaekit.io.runs import METRICS_FILE, append_metrics, run_lock, trim_metrics

CONFIG_FILE = "config.json"


class RunFolder:
    """A run folder (``path``) and the steps of its life; see the module docstring."""

    def __init__(self, out: str | Path):
        if not isinstance(out, (str, Path)) or not str(out).strip():
            raise ConfigError(f"the run folder ({option('out')}) must be a folder name, got {out!r}; to use the "
                              f"current folder say so with {option('out', '.')}")
        self.path = Path(out)
        self.lock: contextlib.AbstractContextManager | None = None
        self.restarted: str | None = None  # why a resume starts the run again (said by :meth:`open`)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / ckpt.STATE_FILE).exists()

    def claim(self, resume: bool, overwrite: bool,
              check: Callable[[contract.RunState], None] | None = None) -> None:
        """Check the folder against the contract before any write (and with ``check``, the caller's own look at
        its state), create it, and take its lock (held until :meth:`release`); a folder in use, or one that is not
        a run, is refused in one line."""
        state = contract.check_out(self.path, resume=resume, overwrite=overwrite, locked=False)
        if check is not None:
            check(state)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the run directory {self.path}: {exc.strerror}") from None
        lock = run_lock(self.path)
        lock.__enter__()
        self.lock = lock

    def release(self) -> None:
        if self.lock is not None:
            lock, self.lock = self.lock, None
            lock.__exit__(None, None, None)

    def open(self, resume: bool, overwrite: bool) -> bool:
        """Under the lock: the contract again, stale temporary files removed, the marker written before any other
        file. Returns whether the run is resumed (``resume`` and a checkpoint exists); a checkpoint without
        ``resume`` or ``overwrite`` is refused."""
        state = contract.check_out(self.path, resume=resume, overwrite=overwrite)
        ckpt.remove_stale_temp_files(self.path)  # we hold the lock: a temp file here is the leftover of a killed write
        if not state.marked or overwrite:
            contract.write_marker(self.path)  # before any other file of the run (a pre-marker run gets it now)
        if resume and state.first_checkpoint_killed:
            self._restart()
        return self.resumable(resume, overwrite)

    def _restart(self) -> None:
        """A resume of a run killed while writing its first checkpoint: nothing can be continued (no optimizer
        state), so its files (those of the one epoch no checkpoint recorded) go and the run starts again."""
        removed = contract.clear_run(self.path)
        self.restarted = (f"{self.path}: the write of its first checkpoint was interrupted (a killed run), so there is "
                          f"nothing to resume; starting it again from the first epoch (removed {', '.join(removed)} "
                          "and the unfinished checkpoint)")

    def resumable(self, resume: bool, overwrite: bool) -> bool:
        """Whether a checkpoint is resumed; one without ``resume`` or ``overwrite`` is refused."""
        if self.has_checkpoint and not resume and not overwrite:
            raise CheckpointError(f"{self.path} already holds a training run; pass {switch('resume')} to "
                                  f"continue it or choose another {option('out')}")
        return resume and self.has_checkpoint

    def read_config(self, resuming: bool = True) -> dict[str, Any]:
        """The run's settings (config.json) as a dict: for a resume a missing or corrupt file is one line saying
        the run cannot be resumed; otherwise (``resuming`` False: evaluate, report, compare) a missing file is {}
        and a corrupt one is one line."""
        path = self.path / CONFIG_FILE
        if not resuming and not exists_or_link(path):
            return {}
        try:
            saved = json.loads(read_text_capped(path, JSON_CAP, "config file"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else ckpt.one_line(exc)[:160]
            if resuming:
                raise CheckpointError(f"{path} is missing or corrupt ({reason}); cannot resume") from None
            if isinstance(exc, OSError):
                raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
            raise CheckpointError(f"{path} is corrupt ({' '.join(str(exc).split())[:200]}); "
                                  "it should be the JSON written by 'vaekit train'") from None
        if not isinstance(saved, dict):
            raise CheckpointError(f"{path} is corrupt: expected a JSON object of settings")
        return saved

    def update_config(self, changed: dict[str, Any]) -> None:
        """Write ``changed`` settings into the run's config.json (the loggers a resume chose, say)."""
        self.write_config({**self.read_config(), **changed})

    def write_config(self, settings: dict[str, Any]) -> None:
        path = self.path / CONFIG_FILE
        try:
            ckpt.atomic_write_text(path, json.dumps(settings, indent=2) + "\n")
        except OSError as exc:
            raise ckpt.write_failed(path, exc) from None

    def start(self, settings: dict[str, Any], overwrite: bool, say: Callable[[str], None]) -> None:
        """A new run: with ``overwrite`` the run's own files go (nothing else), old metrics are cleared, and the
        settings are written to config.json."""
        if overwrite:
            removed = contract.clear_run(self.path)
            if removed:
                say(f"{switch('overwrite')}: removed {', '.join(removed)} from {self.path}")
        trim_metrics(self.path / METRICS_FILE, 0)
        self.write_config(settings)

    def resume_at(self, epochs_done: int) -> None:
        """A resumed run: the metrics of epochs after the checkpoint's are dropped."""
        trim_metrics(self.path / METRICS_FILE, epochs_done)

    def append(self, row: dict[str, Any]) -> None:
        """One epoch's row to ``metrics.jsonl``."""
        append_metrics(self.path / METRICS_FILE, row)
