"""q(z|x) through a normalizing flow: z_0 ~ q_0(z_0|x), z = f_T(... f_1(z_0)), by the change of variables

    log q(z|x) = log q_0(z_0|x) - sum_{t=1..T} log |det dz_t / dz_{t-1}|        (nats)

The flows of :mod:`vaekit.components.flows` (IAF, planar) are cheap forward but not in reverse, so, as with
``torch.distributions.TransformedDistribution`` and a cached transform, :meth:`FlowDistribution.log_prob`
knows the density of the samples this distribution drew (the last ones, by identity); the objectives use
:meth:`FlowDistribution.rsample_and_log_prob`, which gives both in one pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributions import Distribution, constraints

from vaekit.distributions.sampled import SampledWithLogProb

Flow = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


class FlowDistribution(SampledWithLogProb):
    """z = flow(z_0, context), z_0 ~ ``base``; ``flow(z0, h) -> (z, sum_t log|det|)``."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    def __init__(self, base: Distribution, flow: Flow, context: torch.Tensor | None = None):
        self.base, self.flow, self.context = base, flow, context
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        super().__init__(batch_shape=base.batch_shape, event_shape=base.event_shape, validate_args=False)

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple = (),
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, log q(z|x)) for z = f(z_0), z_0 ~ q_0 by reparameterization."""
        z0 = self.base.rsample(sample_shape, generator=generator) if generator is not None \
            else self.base.rsample(sample_shape)
        log_q0 = self.base.log_prob(z0)
        z, log_det = self.flow(z0, self.context)
        log_q = log_q0 - log_det
        self._cache = (z, log_q)
        return z, log_q

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._cache is not None and value is self._cache[0]:
            return self._cache[1]
        raise NotImplementedError("log q(z|x) of a flow is known for its own samples only (the flow is not inverted); "
                                  "use rsample_and_log_prob")

    def point(self) -> torch.Tensor:
        """The flow's image of the base distribution's point code, f(mu): the code pictures decode."""
        base = self.base.point() if hasattr(self.base, "point") else self.base.mean
        return self.flow(base, self.context)[0]
