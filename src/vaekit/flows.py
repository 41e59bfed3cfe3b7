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

import torch
import torch.nn.functional as F
from torch import nn

#: Initial bias of the IAF's s outputs: sigma = sigmoid(2) ~ 0.88, so each step starts close to the identity
#: (Kingma et al., 2016, section 4: "s_t sufficiently positive, such as close to +1 or +2").
IAF_FORGET_BIAS = 2.0
FLOWS = ("iaf", "planar")


class MaskedLinear(nn.Linear):
    """y = (W * M) x + b with a fixed 0/1 mask M (out, in), derived from the degrees, not saved."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """A masked autoregressive network (Germain et al., 2015) with a context input: (z, h) -> (m, s), each (..., L).

    ``order`` gives each variable's position 1..L; output i sees z_j only when order[j] < order[i]. Hidden
    units have degrees 0..L-1 (unit k: k mod L) and see the inputs of degree <= theirs; degree-0 units see
    only the context h, which enters the first hidden layer unmasked. Activation ELU (Kingma et al.).
    """

    def __init__(self, latent: int, hidden: int, layers: int, context: int, order: torch.Tensor):
        super().__init__()
        deg_in = order.long()
        deg_h = torch.arange(hidden) % latent
        widths = [latent] + [hidden] * layers
        degrees = [deg_in] + [deg_h] * layers
        self.hidden = nn.ModuleList(
            MaskedLinear(widths[i], widths[i + 1], degrees[i + 1][:, None] >= degrees[i][None, :])
            for i in range(layers)
        )
        deg_out = torch.cat([deg_in, deg_in])
        self.out = MaskedLinear(hidden, 2 * latent, deg_out[:, None] > deg_h[None, :])
        self.context = nn.Linear(context, hidden, bias=False) if context > 0 else None
        with torch.no_grad():
            self.out.bias[latent:].fill_(IAF_FORGET_BIAS)

    def forward(self, z: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.hidden[0](z)
        if self.context is not None and h is not None:
            a = a + self.context(h)
        a = F.elu(a)
        for layer in self.hidden[1:]:
            a = F.elu(layer(a))
        m, s = self.out(a).chunk(2, dim=-1)
        return m, s


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
