"""Run by tests/test_distributed.py under torchrun: one DDP step of a VAE, and in the same launch the two DDP steps of
a VQ-VAE of tests/ddp_vq_step.py (one torchrun start-up serves tests/test_distributed.py and
tests/test_distributed_vq.py).

usage: ddp_step.py FOLDER   (world size and rank from torchrun's environment; rank 0 writes FOLDER/ddp.safetensors
                             with the VAE's weights after the step, rank r FOLDER/vq.r.safetensors with its codebook)

The step uses the trainer's own LossModule and step function, the same initial weights and the same
reparameterization noise in every mode: rank r gets rows [r*B, (r+1)*B) of a fixed batch and of a
fixed noise tensor; :func:`step` in one process (the test's reference) gets all 2B rows.
"""

import sys

import torch
from safetensors.torch import save_file

from vaekit import runtime as D
from vaekit.components import GaussianPosterior
from vaekit.config import TrainConfig
from vaekit.distributions import DiagonalNormal
from vaekit.models import VAE
from vaekit.train import LossModule, _make_step

B, LATENT = 8, 3


def step(ctx: D.DistContext) -> dict[str, torch.Tensor]:
    """One step on this rank's rows (all 2B in one process); the VAE's weights after it."""
    g = torch.Generator().manual_seed(0)
    x_all = torch.bernoulli(torch.rand(2 * B, 16, generator=g), generator=g)
    eps_all = torch.randn(2 * B, LATENT, generator=g)
    rows = slice(ctx.rank * B, (ctx.rank + 1) * B) if ctx.enabled else slice(0, 2 * B)
    x, eps = x_all[rows], eps_all[rows]

    class FixedNoiseNormal(DiagonalNormal):
        def rsample(self, sample_shape=(), generator=None):
            return self.loc + torch.exp(0.5 * self.logvar) * eps

    class FixedNoisePosterior(GaussianPosterior):
        def forward(self, params):
            q = super().forward(params)
            return FixedNoiseNormal(q.loc, q.logvar)

    torch.manual_seed(0)
    model = VAE(shape=(1, 4, 4), latent=LATENT, hidden=[12], posterior=FixedNoisePosterior(LATENT))
    cfg = TrainConfig(hidden=[12], latent=LATENT, clip_grad=None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    module = LossModule(model, "elbo", 1)
    if ctx.enabled:
        module = torch.nn.parallel.DistributedDataParallel(module)
    one_step = _make_step(module, model, optimizer, cfg, torch.autocast("cpu", enabled=False), ctx)
    one_step(x, 1.0)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def main(folder: str) -> None:
    from ddp_vq_step import train  # beside this file, on sys.path when it runs as a script

    ctx = D.from_env()
    D.setup(ctx, torch.device("cpu"))
    weights = step(ctx)
    if ctx.is_main:
        save_file(weights, f"{folder}/ddp.safetensors")
    save_file(train(ctx), f"{folder}/vq.{ctx.rank}.safetensors")
    D.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
