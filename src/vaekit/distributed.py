"""Running under ``torchrun``: one process per device, DistributedDataParallel.

``torchrun --nproc_per_node=N -m vaekit train ...`` sets RANK, LOCAL_RANK and WORLD_SIZE;
:func:`setup` then joins the process group (NCCL on GPUs, gloo on CPUs). Each rank draws its
share of every shuffled epoch, DDP averages the gradients, metrics are summed across ranks,
and only rank 0 writes files.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
