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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vaekit.errors import CheckpointError

FORMAT = "vaekit-checkpoint-1"
MODEL_FILE = "model.safetensors"
MODEL_CONFIG = "model.json"
STATE_FILE = "checkpoint.safetensors"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file + fsync + rename + fsync of the dir)."""
    path = Path(path)
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
    if not path.is_file():
        raise CheckpointError(f"{path} not found; is this a vaekit run directory (made by 'vaekit train')?")
    try:
        raw = path.read_bytes()
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
    if "sha256" not in metadata and set(metadata) - _UNCHECKED_METADATA:  # e.g. the key "sha256" itself damaged
        raise CheckpointError(f"{path} is corrupt: it has no checksum (sha256) but other metadata "
                              f"{sorted(set(metadata) - _UNCHECKED_METADATA)[:3]} (a damaged copy or disk?)")
    if "sha256" in metadata and metadata["sha256"] != _digest(tensors, metadata):
        raise CheckpointError(f"{path} is corrupt: its contents do not match the checksum written with it "
                              "(a damaged copy or disk?)")
    return tensors, metadata


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
) -> None:
    """Write ``checkpoint.safetensors``: weights, optimizer state, RNG states, progress (JSON)."""
    tensors = state_dict_tensors(model, "model.")
    optim_tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    tensors.update({f"rng.{k}": v.detach().cpu().contiguous().clone() for k, v in rng.items()})
    metadata = {"format": FORMAT, "kind": "training-state",
                "progress": json.dumps(progress), "optimizer": json.dumps(optim_meta)}
    data = safetensors_bytes(tensors, metadata)
    try:
        atomic_write_bytes(run / STATE_FILE, data)
    except OSError as exc:
        raise write_failed(run / STATE_FILE, exc) from None


def load_training_state(
    run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore weights and optimizer from ``checkpoint.safetensors``; return (progress, rng)."""
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
        if not isinstance(optim_meta, dict) or not isinstance(optim_meta.get("scalars", {}), dict):
            raise ValueError("the optimizer metadata is not a JSON object of param_groups and scalars")
        optim_t = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
        _check_rng(rng)
        model.load_state_dict(model_sd)
        optimizer.load_state_dict(_unflatten_optimizer(optim_t, optim_meta))
        _check_optimizer(optimizer)
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


def _check_rng(rng: dict[str, torch.Tensor]) -> None:
    cpu = torch.get_rng_state().numel()
    if not any(k == "torch" or k.startswith("torch.") for k in rng):
        raise ValueError("no CPU random-number-generator state (rng.torch)")
    for k, v in rng.items():
        if v.dtype != torch.uint8 or v.dim() != 1 or ((k == "torch" or k.startswith("torch.")) and v.numel() != cpu):
            raise ValueError(f"rng.{k} is not a random-number-generator state")


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
    for name in (MODEL_FILE, MODEL_CONFIG, STATE_FILE, "config.json", "metrics.jsonl"):
        for tmp in Path(run).glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed
