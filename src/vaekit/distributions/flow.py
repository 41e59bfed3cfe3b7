"""q(z|x) through a normalizing flow: z_0 ~ q_0(z_0|x), z = f_T(... f_1(z_0)), by the change of variables

    log q(z|x) = log q_0(z_0|x) - sum_{t=1..T} log |det dz_t / dz_{t-1}|        (nats)

The flows of :mod:`vaekit.components.flows` (IAF, planar) are cheap forward but not in reverse, so, as with
``torch.distributions.TransformedDistribution`` and a cached transform, :meth:`FlowDistribution.log_prob`
knows the density of the samples this distribution drew (the last ones, by identity); the objectives use
:meth:`FlowDistribution.rsample_and_log_prob`, which gives both in one pass.

:meth:`FlowDistribution.stopped_log_prob` gives log q(z|x) of its last draw z at a stopped-gradient copy of every
parameter (the base's, the context's and the flow's weights, through ``torch.func.functional_call`` with detached
weights), differentiable in z: its gradient is the score of the density in z,

    grad_z log q(z) = J^-T grad_z0 [log q_0(z_0) - sum_t log |det dz_t / dz_{t-1}|],   J = dz / dz_0 (L x L),

since log q(f(z_0)) = log q_0(z_0) - sum_t log|det| as functions of z_0. J is taken by L vector-Jacobian products
through the flow and the system solved per draw, O(L^3) each: what the STL and DReG estimators need
(:mod:`vaekit.objectives.reparameterized`) without inverting the flow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Distribution, constraints

from vaekit.distributions.sampled import SampledWithLogProb

Flow = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
#: The most numbers (draws x L x L) of the flow's Jacobians held at once by :meth:`FlowDistribution.stopped_log_prob`.
JACOBIAN_CHUNK = 2**24


class FlowDistribution(SampledWithLogProb):
    """z = flow(z_0, context), z_0 ~ ``base``; ``flow(z0, h) -> (z, sum_t log|det|)``."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    #: log q at stopped-gradient parameters is available for this distribution's own draws (a flow module's).
    has_stopped_log_prob = True

    def __init__(self, base: Distribution, flow: Flow, context: torch.Tensor | None = None):
        self.base, self.flow, self.context = base, flow, context
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (z, log q, z_0) of the last draw
        super().__init__(batch_shape=base.batch_shape, event_shape=base.event_shape, validate_args=False)

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple = (),
                             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, log q(z|x)) for z = f(z_0), z_0 ~ q_0 by reparameterization."""
        z0 = self.base.rsample(sample_shape, generator=generator) if generator is not None \
            else self.base.rsample(sample_shape)
        log_q0 = self.base.log_prob(z0)
        z, log_det = self.flow(z0, self.context)
        log_q = log_q0 - log_det
        self._cache = (z, log_q, z0)
        return z, log_q

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._cache is not None and value is self._cache[0]:
            return self._cache[1]
        raise NotImplementedError("log q(z|x) of a flow is known for its own samples only (the flow is not inverted); "
                                  "use rsample_and_log_prob")

    def stopped_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log q(value|x) with every parameter a stopped-gradient constant, nats, for ``value`` equal to this
        distribution's last draw (the flow is not inverted); differentiable in ``value``, with the gradient
        grad_z log q(z) of the module docstring (first order: what the STL and DReG estimators take)."""
        cache = self._cache
        if cache is None or value.shape != cache[0].shape or not torch.equal(value.detach(), cache[0].detach()):
            raise NotImplementedError("log q(z|x) of a flow is known at its own last draw only (the flow is not "
                                      "inverted); draw z with rsample first")
        if not isinstance(self.flow, nn.Module):
            raise NotImplementedError("the stopped-gradient density of a flow needs the flow as a torch module "
                                      "(its weights are detached through torch.func.functional_call)")
        score = _score_in_z(self.base, self.flow, self.context, cache[2])
        return cache[1].detach() + (score * (value - value.detach())).sum(-1)

    def point(self) -> torch.Tensor:
        """The flow's image of the base distribution's point code, f(mu): the code pictures decode."""
        base = self.base.point() if hasattr(self.base, "point") else self.base.mean
        return self.flow(base, self.context)[0]


def _score_in_z(base: Distribution, flow: nn.Module, context: torch.Tensor | None, z0: torch.Tensor) -> torch.Tensor:
    """grad_z log q(z) at z = f(z_0), every parameter stopped: J^-T grad_z0 [log q_0(z_0) - log|det|] for each
    draw z_0 (..., N, L) -> (..., N, L); in chunks of at most :data:`JACOBIAN_CHUNK` Jacobian entries."""
    if not hasattr(base, "stopped_log_prob"):
        raise NotImplementedError(f"the flow's base {type(base).__name__} has no stopped_log_prob")
    weights = {name: p.detach() for name, p in flow.named_parameters()}
    weights.update(dict(flow.named_buffers()))
    h = None if context is None else context.detach()
    flat = z0.detach().reshape(-1, *z0.shape[-2:])  # (S, N, L): the context h (N, C) broadcasts over S
    latent = flat.shape[-1]
    rows = max(1, JACOBIAN_CHUNK // (flat.shape[1] * latent * latent))
    eye = torch.eye(latent, dtype=flat.dtype, device=flat.device).reshape(latent, 1, 1, latent)
    parts = []
    with torch.enable_grad():
        for start in range(0, flat.shape[0], rows):
            chunk = flat[start:start + rows].clone().requires_grad_(True)
            z, log_det = torch.func.functional_call(flow, weights, (chunk, h))
            log_q = base.stopped_log_prob(chunk) - log_det  # log q(f(z_0)) as a function of z_0
            grad_z0 = torch.autograd.grad(log_q.sum(), chunk, retain_graph=True)[0]
            rows_of_j = torch.autograd.grad(z, chunk, grad_outputs=eye.expand(latent, *z.shape).contiguous(),
                                            is_grads_batched=True)[0]  # (L, S, N, L): entry i is dz_i / dz_0
            jacobian = rows_of_j.movedim(0, -2)  # (S, N, L, L): [i, j] = dz_i / dz0_j
            parts.append(torch.linalg.solve(jacobian.transpose(-1, -2), grad_z0.unsqueeze(-1)).squeeze(-1))
    return torch.cat(parts, 0).reshape(z0.shape).detach()
