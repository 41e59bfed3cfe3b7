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


def _state_dict_tensors(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_model(model: Any, directory: Path) -> None:
    """Write ``model.safetensors`` (weights) and ``model.json`` (architecture) atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    data = st_save(_state_dict_tensors(model), metadata={"format": FORMAT, "kind": "model"})
    try:
        atomic_write_bytes(directory / MODEL_FILE, data)
        atomic_write_text(directory / MODEL_CONFIG, json.dumps(model.config.to_dict(), indent=2) + "\n")
    except OSError as exc:
        raise write_failed(directory / MODEL_FILE, exc) from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(f"{path} not found; is this a vaekit run directory (made by 'vaekit train')?")
    raw = path.read_bytes()
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
    return tensors, metadata


def load_model(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Rebuild a VAE from ``path`` (a run or model directory) without executing any code."""
    from vaekit.model import VAE, ModelConfig

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; give the run directory written by 'vaekit train'")
    cfg_path = path / MODEL_CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} not found; is {path} a vaekit run directory?")
    try:
        cfg = json.loads(cfg_path.read_text())
        model = VAE(ModelConfig(**cfg))
    except (json.JSONDecodeError, TypeError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path} is corrupt or from another version: {exc}") from None
    tensors, _ = _read_safetensors(path / MODEL_FILE)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise CheckpointError(f"{path / MODEL_FILE} does not match {cfg_path}: {str(exc).splitlines()[0]}") from None
    return model.to(map_location)


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
    tensors = _state_dict_tensors(model, "model.")
    optim_tensors, optim_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    tensors.update({f"rng.{k}": v.detach().cpu().contiguous().clone() for k, v in rng.items()})
    metadata = {"format": FORMAT, "kind": "training-state",
                "progress": json.dumps(progress), "optimizer": json.dumps(optim_meta)}
    data = st_save(tensors, metadata=metadata)
    try:
        atomic_write_bytes(run / STATE_FILE, data)
    except OSError as exc:
        raise write_failed(run / STATE_FILE, exc) from None


def load_training_state(
    run: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore weights and optimizer from ``checkpoint.safetensors``; return (progress, rng)."""
    path = run / STATE_FILE
    tensors, metadata = _read_safetensors(path)
    if metadata.get("format") != FORMAT or metadata.get("kind") != "training-state":
        raise CheckpointError(f"{path} is not a vaekit training checkpoint (format {metadata.get('format')!r})")
    try:
        progress = json.loads(metadata["progress"])
        optim_meta = json.loads(metadata["optimizer"])
        model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        optim_t = {k: v for k, v in tensors.items() if k.startswith("optim.")}
        rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
        model.load_state_dict(model_sd)
        optimizer.load_state_dict(_unflatten_optimizer(optim_t, optim_meta))
    except (KeyError, ValueError, RuntimeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt or does not match this run's config: {exc}") from None
    return progress, rng
