"""The moving-average codebook of a VQ-VAE under DDP (torchrun, 2 CPU processes, gloo): the counts n_k and sums s_k
of the update are those of the whole batch, so that two ranks with shards A and B hold, after two steps, the
codebook of one process trained on A + B, and the same one on every rank (rank 0's checkpoint is the whole state)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from ddp_vq_step import BUFFERS, B, train
from test_distributed import ddp_steps
from vaekit import runtime as D


def test_ema_codebook_of_two_ranks_is_that_of_one_process_on_the_union():
    ranks = [load_file(ddp_steps() / f"vq.{r}.safetensors") for r in range(2)]  # torchrun, shared with test_distributed
    union = train(D.DistContext())  # one process, all 2B rows of each batch
    for name in BUFFERS:  # (b) every rank the same, bit for bit
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    for name in BUFFERS:  # (a) that of one process on A + B (float sums in another order: 1e-6)
        torch.testing.assert_close(ranks[0][name], union[name], rtol=0, atol=1e-6)
    # the shards choose codes differently: rank 0's shard alone (what DDP's buffer broadcast used to keep)
    # would give other cluster sizes, so the test above can fail
    alone = train(D.DistContext(), rows=slice(0, B))
    assert (alone["cluster_size"] - union["cluster_size"]).abs().max() > 1.0
    assert not torch.allclose(alone["codebook"], union["codebook"], atol=1e-3)
