"""Safe, atomic persistence: model weights and training state in safetensors.

Nothing here unpickles: weights, optimizer moments and RNG states are tensors in a
safetensors file, everything else is JSON in its metadata or next to it. Each file is
written to a temporary name in the same directory, flushed to disk and renamed over the
old one, so a crash at any moment leaves either the old or the new file, never half of one.

Run directory layout::

    RUN/config.json             resolved training config
    RUN/metrics.jsonl           one JSON object per epoch
    RUN/model.json              model config (rebuilds the architecture)
    RUN/model.safetensors       best weights so far (by validation ELBO)
    RUN/checkpoint.safetensors  last epoch: weights + optimizer + RNG + progress (for --resume)
    RUN/metrics.csv, RUN/tensorboard/  with --log csv / tensorboard (vaekit.loggers)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vaekit.errors import CheckpointError
from vaekit.io.files import SAFETENSORS_CAP, exists_or_link, read_capped

FORMAT = "vaekit-checkpoint-1"
MODEL_FILE = "model.safetensors"
MODEL_CONFIG = "model.json"
STATE_FILE = "checkpoint.safetensors"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename + fsync of the dir).

    A symbolic link or a special file (FIFO, device, directory) at ``path`` is never replaced (``OSError``
    ELOOP / EEXIST); the temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (``mkstemp``), so a
    link planted under its name is never written through.
    """
    path = Path(path)
    _check_destination(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # persist the rename itself
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _check_destination(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, "it is a symbolic link (vaekit never writes through a link)", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EEXIST, "it is not a regular file (vaekit replaces only regular files)", str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_failed(path: Path, exc: OSError) -> CheckpointError:
    """A clear error for a failed write (disk full, read-only directory, ...)."""
    reason = exc.strerror or str(exc)
    return CheckpointError(f"could not write {path}: {reason}; the previous files there are unchanged "
                           "(free some space or choose another --out)")


def state_dict_tensors(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


#: The metadata a file without a checksum may hold: what vaekit wrote before it wrote checksums (or nothing).
_UNCHECKED_METADATA = {"format", "kind", "progress", "optimizer"}


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not exists_or_link(path) or (path.is_dir() and not path.is_symlink()):
        raise CheckpointError(f"{path} not found; is this a vaekit run directory (made by 'vaekit train')?")
    try:
        raw = read_capped(path, SAFETENSORS_CAP, "safetensors file")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        tensors = st_load(raw)
        # the header: 8-byte little-endian length, then JSON with an optional "__metadata__"
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({str(exc).splitlines()[0][:120]}); "
            "vaekit loads only safetensors checkpoints and never unpickles files"
        ) from None
    odd = sorted(k for k, t in tensors.items() if t.dtype not in _DTYPES)
    if odd:
        dtype = str(tensors[odd[0]].dtype).replace("torch.", "")
        raise CheckpointError(f"{path} holds tensor {odd[0]} of dtype {dtype}"
                              ", which vaekit never writes (it writes float16/bfloat16/float32/float64 and integers)")
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path} is corrupt: its metadata is not a JSON object of strings")
    if "sha256" not in metadata and set(metadata) - _UNCHECKED_METADATA:  # e.g. the key "sha256" itself damaged
        raise CheckpointError(f"{path} is corrupt: it has no checksum (sha256) but other metadata "
                              f"{sorted(set(metadata) - _UNCHECKED_METADATA)[:3]} (a damaged copy or disk?)")
    if "sha256" in metadata and metadata["sha256"] != _digest(tensors, metadata):
        raise CheckpointError(f"{path} is corrupt: its contents do not match the checksum written with it "
                              "(a damaged copy or disk?)")
    return tensors, metadata


#: The dtypes of the tensors vaekit writes (weights, optimizer moments, RNG states, counters).
_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.int32,
                     torch.int16, torch.int8, torch.uint8, torch.bool})


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of the metadata (but the checksum) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with a checksum in the metadata, so that a damaged file is refused, not used."""
    return st_save(tensors, metadata={**metadata, "sha256": _digest(tensors, metadata)})


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def check_tensors(path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                   what: str) -> None:
    """The names and shapes of ``tensors`` must be ``expected``; floating-point values must be finite."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                 "; ".join(f"{k} has shape {tuple(tensors[k].shape)}, expected {expected[k]}" for k in wrong[:3])]
        raise CheckpointError(f"{path} does not match {what}: " + "; ".join(p for p in parts if p))
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path} is corrupt: tensor {k} holds NaN or infinite values")


# -- training state -----------------------------------------------------------------------


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_training_state(
    run: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: dict[str, Any],
    rng: dict[str, torch.Tensor],
    extra: torch.nn.Module | None = None,
    auxiliary: dict[str, torch.optim.Optimizer] | None = None,
) -> None:
    """Write ``checkpoint.safetensors``: weights, optimizer state, RNG states, progress (JSON); ``extra`` (a
    discrete estimator's baseline and statistics) under ``estimator.``; the model's ``auxiliary`` optimizers
    (by name) under ``aux.NAME.``."""
    tensors = state_dict_tensors(model, "model.")
    if extra is not None:
        tensors.update(state_dict_tensors(extra, "estimator."))
    optim_tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    tensors.update({f"rng.{k}": v.detach().cpu().contiguous().clone() for k, v in rng.items()})
    metadata = {"format": FORMAT, "kind": "training-state",
                "progress": json.dumps(progress), "optimizer": json.dumps(optim_meta)}
    for name, other in (auxiliary or {}).items():
        aux_tensors, aux_meta = _flatten_optimizer(other.state_dict())
        tensors.update({f"aux.{name}.{key}": value for key, value in aux_tensors.items()})
        metadata[f"optimizer.{name}"] = json.dumps(aux_meta)
    data = safetensors_bytes(tensors, metadata)
    try:
        atomic_write_bytes(run / STATE_FILE, data)
    except OSError as exc:
        raise write_failed(run / STATE_FILE, exc) from None


def _load_auxiliary(tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                    auxiliary: dict[str, torch.optim.Optimizer]) -> None:
    """Restore the auxiliary optimizers' states saved under ``aux.NAME.`` (KeyError: one is missing)."""
    for name, other in auxiliary.items():
        meta = json.loads(metadata[f"optimizer.{name}"])
        _check_optimizer_meta(meta)
        prefix = f"aux.{name}."
        part = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        built = _settings(other)
        other.load_state_dict(_unflatten_optimizer(part, meta))
        _check_settings(built, other, f"optimizer {name}")
        _check_optimizer(other)


def load_training_state(
    run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: torch.nn.Module | None = None,
    auxiliary: dict[str, torch.optim.Optimizer] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore weights and optimizers from ``checkpoint.safetensors``; return (progress, rng)."""
    path = run / STATE_FILE
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != FORMAT or metadata.get("kind") != "training-state":
        raise CheckpointError(f"{path} is not a vaekit training checkpoint (format {metadata.get('format')!r})")
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    check_tensors(path, model_sd, {k: tuple(v.shape) for k, v in model.state_dict().items()},
                   "this run's model (config.json)")
    try:
        progress = json.loads(metadata["progress"])
        optim_meta = json.loads(metadata["optimizer"])
        _check_progress(progress)
        _check_optimizer_meta(optim_meta)
        optim_t = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
        _check_rng(rng)
        model.load_state_dict(model_sd)
        if extra is not None:
            extra_sd = {k[len("estimator."):]: v for k, v in tensors.items() if k.startswith("estimator.")}
            check_tensors(path, extra_sd, {k: tuple(v.shape) for k, v in extra.state_dict().items()},
                          "this run's estimator")
            extra.load_state_dict(extra_sd)
        built = _settings(optimizer)
        optimizer.load_state_dict(_unflatten_optimizer(optim_t, optim_meta))
        _check_settings(built, optimizer)
        _check_optimizer(optimizer)
        _load_auxiliary(tensors, metadata, auxiliary or {})
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is corrupt or does not match this run's config: {one_line(exc)}") from None
    return progress, rng


def _check_progress(progress: Any) -> None:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def count(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not (isinstance(progress, dict) and all(count(progress.get(k)) for k in ("epoch", "best_epoch", "since_best"))
            and number(progress.get("best_valid_elbo")) and number(progress.get("seconds"))
            and all(isinstance(progress.get(k), (dict, type(None))) for k in ("scheduler", "last"))):
        raise ValueError("the progress record (epoch, best_epoch, since_best, best_valid_elbo, ...) is malformed")
    _check_scheduler(progress.get("scheduler"))


def _check_rng(rng: dict[str, torch.Tensor]) -> None:
    cpu = torch.get_rng_state().numel()
    if not any(k == "torch" or k.startswith("torch.") for k in rng):
        raise ValueError("no CPU random-number-generator state (rng.torch)")
    for k, v in rng.items():
        if v.dtype != torch.uint8 or v.dim() != 1 or ((k == "torch" or k.startswith("torch.")) and v.numel() != cpu):
            raise ValueError(f"rng.{k} is not a random-number-generator state")
        if k == "torch" or k.startswith("torch."):
            try:  # an impossible state (e.g. all zeros) is refused here, not by torch.set_rng_state later
                torch.Generator().set_state(v.clone())
            except RuntimeError as exc:
                raise ValueError(f"rng.{k} is not a valid random-number-generator state ({one_line(exc)})") from None


def _number(v: Any) -> bool:
    """A finite JSON number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300 and math.isfinite(v)


def _plain(v: Any) -> bool:
    """None, a bool, a finite number, or a list of those (what optimizer and scheduler settings are)."""
    if isinstance(v, (list, tuple)):
        return len(v) <= 1_000_000 and all(_plain(x) for x in v) and not any(isinstance(x, (list, tuple)) for x in v)
    return v is None or isinstance(v, bool) or _number(v)


#: Optimizer settings that must be numbers >= 0.
_NONNEG = ("lr", "initial_lr", "eps", "weight_decay", "momentum", "dampening", "alpha", "lr_decay",
           "initial_accumulator_value", "rho")


def _check_optimizer_meta(meta: Any) -> None:
    """The optimizer metadata: ``param_groups`` a list of settings objects, ``scalars`` of numbers."""
    if not isinstance(meta, dict) or not isinstance(meta.get("scalars", {}), dict):
        raise ValueError("the optimizer metadata is not a JSON object of param_groups and scalars")
    groups = meta.get("param_groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        raise ValueError("optimizer param_groups is not a list of objects")
    for i, g in enumerate(groups):
        params = g.get("params")
        if not isinstance(params, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise ValueError(f"optimizer param_groups[{i}].params is not a list of parameter numbers")
        for key, v in g.items():
            if key == "params":
                continue
            if not _plain(v):
                raise ValueError(f"optimizer param_groups[{i}].{key} is {str(v)[:40]!r}, not a number or flag")
            if key in _NONNEG and not (_number(v) and v >= 0):
                raise ValueError(f"optimizer param_groups[{i}].{key} is {str(v)[:40]!r}, not a number >= 0")
            if key == "betas" and not (isinstance(v, (list, tuple)) and len(v) == 2
                                       and all(_number(b) and 0 <= b < 1 for b in v)):
                raise ValueError(f"optimizer param_groups[{i}].betas is {str(v)[:40]!r}, not two numbers in [0, 1)")
    for pid, values in meta.get("scalars", {}).items():
        if not (str(pid).isdigit() and isinstance(values, dict) and all(_plain(v) for v in values.values())):
            raise ValueError(f"optimizer scalars of parameter {str(pid)[:20]!r} are not numbers")


def _check_scheduler(sched: Any) -> None:
    """A learning-rate scheduler's state (CosineAnnealingLR or ReduceLROnPlateau) of sound types and ranges."""
    if sched is None:
        return
    for key, v in sched.items():
        if key in ("mode", "threshold_mode"):
            ok = v in (("min", "max") if key == "mode" else ("rel", "abs"))
        elif key in ("best", "mode_worse"):  # ReduceLROnPlateau keeps +-inf here
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
        else:
            ok = _plain(v)
        if not ok:
            raise ValueError(f"the scheduler state {key} is {str(v)[:40]!r}, which is not a valid value")
    counts = {"T_max": 1, "last_epoch": -1, "_step_count": 0, "patience": 0, "cooldown": 0, "cooldown_counter": 0,
              "num_bad_epochs": 0}
    for key, low in counts.items():
        v = sched.get(key, low)
        if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
            raise ValueError(f"the scheduler state {key} is {str(v)[:40]!r}, expected a whole number >= {low}")
    if "factor" in sched and not (_number(sched["factor"]) and 0 < sched["factor"] < 1):
        raise ValueError(f"the scheduler state factor is {sched['factor']!r}, expected a number in (0, 1)")
    for key in ("base_lrs", "_last_lr", "min_lrs"):
        if key in sched and not (isinstance(sched[key], list) and all(_number(x) and x >= 0 for x in sched[key])):
            raise ValueError(f"the scheduler state {key} is not a list of learning rates")


#: Optimizer settings a checkpoint may hold other values of than the run's new optimizer: the parameters, the
#: learning rate (a schedule moves it) and how a step is implemented (foreach, fused: the hardware may change).
_FREE_SETTINGS = ("params", "param_names", "lr", "initial_lr", "foreach", "fused", "capturable", "differentiable")


def _settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The settings of each parameter group that decide what a step computes (amsgrad, betas, eps, ...)."""
    def plain(v: Any) -> Any:
        return tuple(v) if isinstance(v, (list, tuple)) else v

    return [{k: plain(v) for k, v in g.items() if k not in _FREE_SETTINGS} for g in optimizer.param_groups]


def _check_settings(built: list[dict[str, Any]], optimizer: torch.optim.Optimizer, what: str = "optimizer") -> None:
    """The settings a checkpoint loaded into ``optimizer`` are those it was built with (``built``): a checkpoint
    whose settings were altered (amsgrad switched on, say) holds no state for them, and the first step would fail
    deep inside ``torch.optim``."""
    for i, (mine, theirs) in enumerate(zip(built, _settings(optimizer))):
        for key in sorted(mine.keys() & theirs.keys()):
            if mine[key] != theirs[key]:
                raise ValueError(f"its {what} state does not match this run: param_groups[{i}].{key} is "
                                 f"{str(theirs[key])[:40]} where this run's {what} has {str(mine[key])[:40]}")


def _check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Each per-parameter state tensor has its parameter's shape (``step`` is a scalar)."""
    params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for p, state in optimizer.state.items():
        if not isinstance(p, torch.Tensor) or id(p) not in params:
            raise ValueError("the optimizer state refers to a parameter this model does not have")
        for key, v in state.items():
            if isinstance(v, torch.Tensor) and (v.numel() != 1 if key == "step" else v.shape != p.shape):
                want = "a scalar" if key == "step" else str(tuple(p.shape))
                raise ValueError(f"optimizer state {key!r} has shape {tuple(v.shape)}, expected {want}")


def remove_stale_temp_files(run: Path) -> list[Path]:
    """Delete the temporary files (``.NAME.*.tmp``) of writes into ``run`` that a crash interrupted.

    Call it only while holding the run's lock (no write of these files can be in progress then).
    """
    removed = []
    for name in (MODEL_FILE, MODEL_CONFIG, STATE_FILE, "config.json", "metrics.jsonl", "metrics.csv"):
        for tmp in Path(run).glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed
