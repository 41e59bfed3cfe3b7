"""Run by tests/test_distributed.py under torchrun: one DDP step, or the same step in one process.

usage: ddp_step.py OUT.safetensors   (world size and rank from torchrun's environment)

Both modes use the trainer's own LossModule and step function, the same initial weights and
the same reparameterization noise: rank r gets rows [r*B, (r+1)*B) of a fixed batch and of a
fixed noise tensor; a single process gets all 2B rows.
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


def main(out: str) -> None:
    ctx = D.from_env()
    D.setup(ctx, torch.device("cpu"))
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
    step = _make_step(module, model, optimizer, cfg, torch.autocast("cpu", enabled=False), ctx)
    step(x, 1.0)
    if ctx.is_main:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out)
    D.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
