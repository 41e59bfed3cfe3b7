"""Normalizing flows for the guide q(z|x): planar flows (Rezende & Mohamed, 2015) and inverse
autoregressive flow (IAF; Kingma et al., 2016).

A flow is a chain of invertible maps z_0 -> z_1 -> ... -> z_T with z_0 ~ N(mu(x), diag sigma^2(x)) drawn
by reparameterization. By the change of variables (all in nats)

    log q(z_T|x) = log N(z_0; mu, diag sigma^2) - sum_{t=1..T} log |det dz_t / dz_{t-1}|.

Each step returns z_t and its log|det|, cheap by construction:

* planar: z' = z + u_hat tanh(w^T z + b), log|det| = log|1 + u_hat^T psi(z)| with psi(z) = tanh'(w^T z + b) w.
  u_hat = u + (m(w^T u) - w^T u) w / |w|^2 with m(a) = -1 + softplus(a) gives w^T u_hat > -1, which makes
  the map invertible (Rezende & Mohamed, appendix A.1). (u, w, b) are a learnt vector plus a linear map of
  the encoder's context h(x) (amortized; no context: the same flow for every x).
* IAF: [m, s] = MADE(z, h), sigma = sigmoid(s), z' = sigma * z + (1 - sigma) * m, log|det| = sum_i log sigma_i.
  m_i and s_i depend on z only through the variables before i in the step's order (and on the context h),
  so dz'/dz is triangular with diagonal sigma. Consecutive steps reverse the order (Kingma et al.).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.components.base import POSTERIORS, Posterior
from vaekit.components.posteriors import check_min_logvar
from vaekit.distributions import DiagonalNormal, FlowDistribution
from vaekit.nn.made import MADE

FLOWS = ("iaf", "planar")


class IAFStep(nn.Module):
    """One IAF step: z' = sigma * z + (1 - sigma) * m, sigma = sigmoid(s), [m, s] = MADE(z, h);
    log|det dz'/dz| = sum_i log sigma_i. ``reverse``: the step's variable order is L, ..., 1."""

    def __init__(self, latent: int, hidden: int = 320, layers: int = 2, context: int = 0, reverse: bool = False):
        super().__init__()
        order = torch.arange(latent, 0, -1) if reverse else torch.arange(1, latent + 1)
        self.register_buffer("order", order, persistent=False)
        self.made = MADE(latent, hidden, layers, context, order)

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z', log|det dz'/dz|): (..., L) and (...), nats."""
        m, s = self.made(z, h)
        z_new = torch.sigmoid(s) * z + torch.sigmoid(-s) * m  # 1 - sigmoid(s) = sigmoid(-s)
        return z_new, F.logsigmoid(s).sum(-1)


class PlanarFlow(nn.Module):
    """One planar step z' = z + u_hat tanh(w^T z + b), log|det dz'/dz| = log(1 + tanh'(w^T z + b) w^T u_hat).

    (u, w, b) = ``base`` + ``amortize``(h) for a context h(x) of size ``context`` (the linear map starts at
    zero); u_hat is u constrained so that w^T u_hat > -1 (see the module docstring).
    """

    def __init__(self, latent: int, context: int = 0):
        super().__init__()
        self.latent = latent
        bound = 1.0 / math.sqrt(latent)
        self.base = nn.Parameter(torch.empty(2 * latent + 1).uniform_(-bound, bound))
        self.amortize = nn.Linear(context, 2 * latent + 1, bias=False) if context > 0 else None
        if self.amortize is not None:
            nn.init.zeros_(self.amortize.weight)

    def coefficients(self, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(u_hat, w, b) with shapes (..., L), (..., L), (..., 1) for a context (..., C), or unbatched without one."""
        p = self.base if self.amortize is None or h is None else self.base + self.amortize(h)
        n = self.latent
        u, w, b = p[..., :n], p[..., n : 2 * n], p[..., 2 * n :]
        wu = (w * u).sum(-1, keepdim=True)
        u_hat = u + (F.softplus(wu) - 1.0 - wu) * w / w.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)
        return u_hat, w, b

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z', log|det dz'/dz|): (..., L) and (...), nats."""
        u, w, b = self.coefficients(h)
        t = torch.tanh((w * z).sum(-1, keepdim=True) + b)
        log_det = torch.log1p((1.0 - t * t) * (w * u).sum(-1, keepdim=True)).squeeze(-1)
        return z + u * t, log_det


class Flow(nn.Module):
    """z_0 -> z_T = f_T(... f_1(z_0)) and sum_t log|det dz_t/dz_{t-1}| (nats), for ``kind`` iaf or planar."""

    def __init__(self, kind: str, latent: int, steps: int, hidden: int = 320, layers: int = 2, context: int = 0):
        super().__init__()
        if kind not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}; got {kind!r}")
        if steps < 1:
            raise ValueError(f"a flow needs at least one step, got {steps}")
        self.kind = kind
        made: list[nn.Module] = [IAFStep(latent, hidden, layers, context, reverse=t % 2 == 1) if kind == "iaf"
                                 else PlanarFlow(latent, context) for t in range(steps)]
        self.steps = nn.ModuleList(made)

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_T, sum_t log|det|): z (..., L) -> (..., L) and (...); the context h (B, C) broadcasts over samples."""
        total = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            z, log_det = step(z, h)
            total = total + log_det
        return z, total


@dataclass
class FlowConfig:
    steps: int = 2  # flow steps T
    hidden: int = 320  # iaf: units per MADE hidden layer
    layers: int = 2  # iaf: MADE hidden layers
    context: int = 32  # size of the context h(x) the encoder gives the flow (0: none)
    min_logvar: float = -12.0  # floor on the base Gaussian's log-variance

    def __post_init__(self) -> None:
        for name, low, high in (("steps", 1, 64), ("hidden", 1, 2**20), ("layers", 1, 16), ("context", 0, 2**20)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be an integer from {low} to {high}, got {value}")
        check_min_logvar(self.min_logvar)


class FlowPosterior(Posterior):
    """q(z|x): a diagonal Gaussian base q_0(z_0|x) followed by a flow; the encoder gives (N, 2L + context) =
    [mu, logvar, h(x)]. log q(z|x) = log q_0(z_0|x) - sum_t log|det| (see the module docstring)."""

    density_anywhere = False  # log q(z|x) comes with the flow's own draws (the inverse is not computed)

    kind_of_flow = ""

    def __init__(self, latent: int, steps: int = 2, hidden: int = 320, layers: int = 2, context: int = 32,
                 min_logvar: float = -12.0):
        super().__init__(latent)
        FlowConfig(steps, hidden, layers, context, min_logvar)  # the same checks for direct construction
        self.steps, self.hidden, self.layers, self.context = int(steps), int(hidden), int(layers), int(context)
        self.min_logvar = float(min_logvar)
        self.flow = Flow(self.kind_of_flow, latent, self.steps, self.hidden, self.layers, self.context)

    @property
    def param_size(self) -> int:
        return 2 * self.latent + self.context

    def forward(self, params: torch.Tensor) -> FlowDistribution:
        n = self.latent
        base = DiagonalNormal(params[..., :n], params[..., n : 2 * n].clamp(min=self.min_logvar))
        context = params[..., 2 * n :] if self.context > 0 else None
        return FlowDistribution(base, self.flow, context)


@POSTERIORS.register("iaf", FlowConfig, prefix="flow", help="inverse autoregressive flow on a Gaussian q(z|x)")
class IAFPosterior(FlowPosterior):
    """q(z|x) with T inverse autoregressive flow steps (Kingma et al., 2016)."""

    kind_of_flow = "iaf"


@POSTERIORS.register("planar", FlowConfig, prefix="flow", help="planar flows on a Gaussian q(z|x)")
class PlanarPosterior(FlowPosterior):
    """q(z|x) with T planar flow steps (Rezende & Mohamed, 2015)."""

    kind_of_flow = "planar"
