"""The runtime: devices, arithmetic precision, and running under ``torchrun`` (one process per device, DDP).

``--device auto|cpu|cuda|cuda:N|mps`` (:func:`resolve_device`) and ``--precision fp32|tf32|bf16``
(:func:`set_precision`, :func:`autocast_context`) choose the hardware and the arithmetic.

``torchrun --nproc_per_node=N -m vaekit train ...`` sets RANK, LOCAL_RANK and WORLD_SIZE;
:func:`setup` then joins the process group (NCCL on GPUs, gloo on CPUs). Each rank draws its
share of every shuffled epoch, DDP averages the gradients, metrics are summed across ranks,
and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vaekit.errors import VaekitError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; an unavailable device is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaekitError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise VaekitError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise VaekitError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VaekitError(f"--device {name} was asked for but no CUDA GPU is available; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VaekitError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for the forward pass where asked; tf32 is a global matmul setting."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_precision(device: torch.device, precision: str) -> None:
    """TF32 matrix products on CUDA for ``tf32``, full fp32 otherwise."""
    if device.type == "cuda":
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow


# -- torchrun ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistContext:
    """The rank layout torchrun describes in the environment (a single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(rank=int(os.environ.get("RANK", "0")), world_size=world,
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def setup(ctx: DistContext, device: torch.device) -> None:
    """Join the process group if several processes run and none was joined yet."""
    if ctx.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)


def teardown() -> None:
    """Leave the process group cleanly: drop DDP's references first (a DistributedDataParallel
    wrapper sits in reference cycles), wait for every rank, then destroy the group. A group left
    for the interpreter's exit can abort the process (gloo's worker threads still joinable)."""
    if dist.is_initialized():
        gc.collect()
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``t`` over all ranks (in place; identity for one process)."""
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_tensors(t: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """Every rank's copy of ``t`` (same shape on all ranks), in rank order."""
    if not ctx.enabled:
        return [t]
    out = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(out, t)
    return out


def broadcast_object(obj, ctx: DistContext):
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shard(perm: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's share of an epoch's permutation: perm[rank::world], all shares equal length."""
    if not ctx.enabled:
        return perm
    per_rank = perm.shape[0] // ctx.world_size
    return perm[ctx.rank : per_rank * ctx.world_size : ctx.world_size]
