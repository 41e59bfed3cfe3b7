"""A masked autoregressive network (MADE; Germain et al., 2015) with a context input, for inverse
autoregressive flows: output i sees input j only when order[j] < order[i], so dm/dz and ds/dz are triangular.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Initial bias of the IAF's s outputs: sigma = sigmoid(2) ~ 0.88, so each step starts close to the identity
#: (Kingma et al., 2016, section 4: "s_t sufficiently positive, such as close to +1 or +2").
IAF_FORGET_BIAS = 2.0


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
