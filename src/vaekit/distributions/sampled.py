"""Distributions whose density comes with their draws: a flow's log q(z) = log q_0(z_0) - sum log|det|, or a
chain of conditionals q(z2|x) q(z1|x, z2). Subclasses implement ``rsample_and_log_prob``; ``rsample`` and
``sample`` follow from it."""

from __future__ import annotations

import torch
from torch.distributions import Distribution


class SampledWithLogProb(Distribution):
    """Base class: draws by reparameterization, and log q of each draw computed with it (nats)."""

    has_rsample = True

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple = (),
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def rsample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape, generator)[0]

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape, generator)
