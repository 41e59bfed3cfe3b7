"""Two DDP steps of a VQ-VAE with the moving-average codebook, for tests/test_distributed_vq.py: run under torchrun by
tests/ddp_step.py (in the launch of tests/test_distributed.py's step), or alone.

usage: ddp_vq_step.py OUT_PREFIX   (world size and rank from torchrun's environment; rank r writes
                                    OUT_PREFIX.r.safetensors with its codebook, cluster sizes and sums)

At step t rank r gets rows [r*B, (r+1)*B) of a fixed batch X_t of 2B images; :func:`train` run in one process on
all 2B rows is the reference. Both use the trainer's own LossModule and step function and the same initial
weights, with the codebook started at 6 of the encoder's vectors, so that the shards choose different codes.
"""

import sys

import torch
from safetensors.torch import save_file

from vaekit import runtime as D
from vaekit.config import TrainConfig
from vaekit.models.vqvae import VQVAE
from vaekit.objectives import build_objective
from vaekit.train import LossModule, _make_step

B, STEPS, CODES = 6, 2, 6
BUFFERS = ("codebook", "cluster_size", "embedding_sum")


def batches() -> list[torch.Tensor]:
    """X_1 .. X_STEPS: 2B binary 8x8 images each, seeded."""
    g = torch.Generator().manual_seed(0)
    return [torch.bernoulli(torch.rand(2 * B, 1, 8, 8, generator=g), generator=g) for _ in range(STEPS)]


def train(ctx: D.DistContext, rows: slice | None = None) -> dict[str, torch.Tensor]:
    """STEPS steps on this rank's rows of each batch (one process: ``rows``, all 2B by default); the quantizer's
    buffers after."""
    xs = batches()
    torch.manual_seed(0)
    model = VQVAE((1, 8, 8), codes=CODES, code_dim=3, channels=[4, 8], ema=True, decay=0.8)
    with torch.no_grad():  # codebook = the encoder's vectors at 6 spread grid positions of X_1 (N_k = 1, m_k = e_k)
        flat = model.quantize(xs[0])[0].movedim(1, -1).reshape(-1, 3)
        model.quantizer.codebook.copy_(flat[torch.linspace(0, flat.shape[0] - 1, CODES).long()])
        model.quantizer.embedding_sum.copy_(model.quantizer.codebook)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    module: torch.nn.Module = LossModule(model, build_objective("vqvae").for_model(model), 1)
    if ctx.enabled:
        module = torch.nn.parallel.DistributedDataParallel(module)
    step = _make_step(module, model, optimizer, TrainConfig(clip_grad=None), torch.autocast("cpu", enabled=False),
                      ctx)
    if rows is None:
        rows = slice(ctx.rank * B, (ctx.rank + 1) * B) if ctx.enabled else slice(0, 2 * B)
    model.train()
    for x in xs:
        step(x[rows], 1.0)
    return {name: getattr(model.quantizer, name).detach().clone().contiguous() for name in BUFFERS}


def main(prefix: str) -> None:
    ctx = D.from_env()
    D.setup(ctx, torch.device("cpu"))
    save_file(train(ctx), f"{prefix}.{ctx.rank}.safetensors")
    D.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
