"""A point mass q(z|x) = delta(z - f(x)): the code of a deterministic autoencoder.

It has no density (log q is +infinity at f(x)), so it enters no ELBO and no importance-sampled log p(x).
The autoencoder's objective is the reconstruction log p(x | f(x)) minus an optional latent penalty
(lambda / 2) ||f(x)||^2 (the regularised autoencoder of Ghosh et al., 2020). A density on z fitted after
training (:mod:`vaekit.analysis.posthoc`) makes "decoder + fitted density" a latent-variable model with a log p(x); its
importance sampling then uses the :meth:`PointMass.proposal` N(f(x), diag s^2), with s set by that fit.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, constraints

from vaekit.distributions.normal import DiagonalNormal


class PointMass(Distribution):
    """delta(z - loc); ``loc`` (..., L). ``penalty`` is the latent penalty's weight lambda; ``log_scale`` (L,)
    the log-width of the importance-sampling proposal, None until a density has been fitted."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = True
    is_point_mass = True

    def __init__(self, loc: torch.Tensor, penalty: float = 0.0, log_scale: torch.Tensor | None = None):
        self.loc, self.penalty, self.log_scale = loc, float(penalty), log_scale
        super().__init__(batch_shape=loc.shape[:-1], event_shape=loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def point(self) -> torch.Tensor:
        return self.loc

    def rsample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        return self.loc.expand(torch.Size(sample_shape) + self.loc.shape)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rsample(sample_shape).detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise ValueError("a point mass q(z|x) = delta(z - f(x)) has no density; an autoencoder defines no "
                         "ELBO or log p(x) unless a density on z is fitted after training")

    def latent_penalty(self) -> torch.Tensor:
        """(lambda / 2) ||f(x)||^2 per example, nats-like units of the objective (0 without a penalty)."""
        return 0.5 * self.penalty * self.loc.pow(2).sum(-1)

    @property
    def has_proposal(self) -> bool:
        return self.log_scale is not None

    def proposal(self) -> DiagonalNormal:
        """N(f(x), diag s^2): the importance-sampling proposal of "decoder + fitted density"."""
        if not self.has_proposal:
            raise ValueError("no density has been fitted to this autoencoder's codes, so it has no proposal")
        return DiagonalNormal(self.loc, (2 * self.log_scale).expand_as(self.loc))
