"""Probabilities of integer-valued images: the discretized logistic, the discretized mixture of logistics
(Salimans et al., 2017, with the colour coupling of PixelCNN++) and an independent L-way categorical per
sub-pixel.

Values. An image with L grey levels holds integers k in {0, ..., L-1} per sub-pixel; vaekit stores them as
x = k / (L - 1) in [0, 1] (:mod:`vaekit.data`). ``log_prob(x)`` takes that form, rounds k = round(x (L - 1)),
and returns log P(k) summed over the event (C, H, W), nats: a true log-probability, so that bits per
dimension are -log2 P(x) / D with no correction. ``sample()`` returns values on the same grid.

The PixelCNN++ grid. k maps to t_k = 2 k / (L - 1) - 1 in [-1, 1]; bin k is [t_k - h, t_k + h], h = 1 / (L - 1),
and the two edge bins take the tails. With F(t) = sigmoid((t - mu) / s) the logistic CDF:

    P(0) = F(t_0 + h),   P(L-1) = 1 - F(t_{L-1} - h),   P(k) = F(t_k + h) - F(t_k - h)  otherwise,

which sum to 1 over k (the CDF telescopes). In log space, with a = (t_k + h - mu) / s, b = (t_k - h - mu) / s
and delta = a - b = 2 h / s > 0, the identity sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^-delta)
gives

    log P(k) = logsigmoid(a) + logsigmoid(-b) + log(1 - exp(-delta)),   log P(0) = logsigmoid(a),
    log P(L-1) = logsigmoid(-b),

every term finite for finite parameters: the bin mass cannot underflow (a mass of e^-1000 is the exp of a finite
sum), and log(1 - e^-delta) is taken from log delta = log(2 h) - log s directly (a series for small delta).
PixelCNN++ subtracts the two sigmoids and, where that difference underflows (< 1e-5), falls back on the mid-bin
density log pdf(t_k) + log(2 h); the identity is exact where that fallback is an approximation, so no fallback
is needed, in float32 or float64 (the tests compare it with PixelCNN++'s formula and with 60-digit arithmetic).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from vaekit.distributions.normal import sum_event

#: Elements per chunk when a mean sums over the L - 1 bin edges (memory stays bounded for large L).
_MEAN_CHUNK = 2**22


def to_levels(value: torch.Tensor, levels: int) -> torch.Tensor:
    """The integer grey level k = round(x (L - 1)) in {0, ..., L - 1} of x in [0, 1], as a float tensor."""
    return torch.round(value * (levels - 1)).clamp(0, levels - 1)


def _log1mexp_of_exp(log_delta: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-delta)) for delta = exp(log_delta) > 0, accurate for every delta.

    For delta < 1e-3: log delta - delta / 2 + delta^2 / 24 (the next term, -delta^4 / 2880, is below 4e-16);
    otherwise log(-expm1(-delta)). Both branches see clamped inputs, so neither has an infinite gradient.
    """
    delta = torch.exp(log_delta)
    small = delta.clamp(max=1e-3)
    series = log_delta.clamp(max=math.log(1e-3)) + small * (small / 24.0 - 0.5)
    exact = torch.log(-torch.expm1(-delta.clamp(min=1e-3)))
    return torch.where(delta < 1e-3, series, exact)


def discretized_logistic_log_mass(k: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor,
                                  levels: int) -> torch.Tensor:
    """log P(k) of the discretized logistic per sub-pixel (broadcast), nats; see the module docstring.

    ``k`` holds integers 0..L-1 (as floats), ``loc`` mu and ``log_scale`` log s are in the [-1, 1] units
    of the PixelCNN++ grid.
    """
    h = 1.0 / (levels - 1)
    t = k * (2.0 * h) - 1.0
    inv_s = torch.exp(-log_scale)
    centred = t - loc
    upper = F.logsigmoid((centred + h) * inv_s)  # log F(t + h)
    lower = F.logsigmoid(-(centred - h) * inv_s)  # log (1 - F(t - h))
    mid = upper + lower + _log1mexp_of_exp(math.log(2.0 * h) - log_scale)
    return torch.where(k <= 0, upper, torch.where(k >= levels - 1, lower, mid))


def discretized_logistic_mean(loc: torch.Tensor, log_scale: torch.Tensor, levels: int) -> torch.Tensor:
    """E[k / (L - 1)] = (1 / (L - 1)) sum_{j=1}^{L-1} P(k >= j) = (1 / (L - 1)) sum_j (1 - F(e_j)), in [0, 1],
    where e_j = (2 j - 1) / (L - 1) - 1 is the lower edge of bin j; summed in chunks of edges."""
    loc, log_scale = torch.broadcast_tensors(loc, log_scale)
    inv_s = torch.exp(-log_scale)
    total = torch.zeros_like(loc)
    chunk = max(1, _MEAN_CHUNK // max(1, loc.numel()))
    for start in range(1, levels, chunk):
        j = torch.arange(start, min(levels, start + chunk), device=loc.device, dtype=loc.dtype)
        edges = ((2.0 * j - 1.0) / (levels - 1) - 1.0).reshape(-1, *([1] * loc.dim()))
        total = total + torch.sigmoid((loc - edges) * inv_s).sum(0)  # 1 - F(e) = sigmoid((mu - e) / s)
    return total / (levels - 1)


def _logistic_levels(loc: torch.Tensor, log_scale: torch.Tensor, levels: int, u: torch.Tensor) -> torch.Tensor:
    """k drawn from the discretized logistic: y = mu + s (log u - log(1 - u)) ~ Logistic(mu, s), then the bin
    of y, k = round((y + 1) (L - 1) / 2) clamped to 0..L-1 (the edge bins take the tails): exact."""
    y = loc + torch.exp(log_scale) * (torch.log(u) - torch.log1p(-u))
    return torch.round((y + 1.0) * ((levels - 1) / 2.0)).clamp(0, levels - 1)


def _uniform(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U(0, 1) noise strictly inside (0, 1), so that log u and log(1 - u) are finite."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return u.clamp(torch.finfo(like.dtype).tiny, 1.0 - torch.finfo(like.dtype).eps)


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or int(levels) != levels or int(levels) < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
    return int(levels)


class DiscretizedLogistic(Distribution):
    """Independent discretized logistics, one per sub-pixel, over the last ``event_dims`` dimensions.

    ``loc`` mu and ``log_scale`` log s are in the [-1, 1] units of the PixelCNN++ grid; x = k / (L - 1).
    log P(x) = sum_d log P(k_d; mu_d, s_d) (nats), each term as in the module docstring.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval  # the grid k / (L - 1)
    has_rsample = False

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, levels: int = 256, event_dims: int = 3):
        if loc.shape != log_scale.shape:
            loc, log_scale = torch.broadcast_tensors(loc, log_scale)
        self.loc, self.log_scale = loc, log_scale
        self.levels, self.event_dims = _check_levels(levels), int(event_dims)
        cut = loc.dim() - self.event_dims
        super().__init__(batch_shape=loc.shape[:cut], event_shape=loc.shape[cut:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = to_levels(value, self.levels)
        return sum_event(discretized_logistic_log_mass(k, self.loc, self.log_scale, self.levels), self.event_dims)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] on the grid, exactly (a sum over the L - 1 bin edges)."""
        return discretized_logistic_mean(self.loc, self.log_scale, self.levels)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.loc.shape
        with torch.no_grad():
            u = _uniform(shape, self.loc, generator)
            return _logistic_levels(self.loc, self.log_scale, self.levels, u) / (self.levels - 1)


def coupling_pairs(channels: int) -> list[tuple[int, int]]:
    """The (channel c, earlier channel j < c) pairs of the colour coupling, in PixelCNN++'s order:
    (1, 0), (2, 0), (2, 1), ... (for RGB: green on red, blue on red, blue on green)."""
    return [(c, j) for c in range(channels) for j in range(c)]


class DiscretizedLogisticMixture(Distribution):
    """The discretized mixture of logistics of PixelCNN++ (Salimans et al., 2017) over images (C, H, W).

    Per pixel (i, j) a mixture over M components shared by its C channels:

        P(x_ij) = sum_m pi_m prod_c P(k_c; mu_mc(x), s_mc),   pi = softmax(logits),
        mu_mc(x) = loc_mc + sum_{j<c} tanh(coeffs_m,cj) t_j,

    where t_j = 2 k_j / (L - 1) - 1 is the value of the earlier channel j of the same pixel (the colour coupling:
    green depends linearly on red, blue on red and green); P(k; mu, s) is the discretized logistic of the
    module docstring. For C = 1 there is no coupling. log P(x) sums log P(x_ij) over the pixels, nats.

    Shapes: ``logits`` (..., M, H, W); ``loc`` and ``log_scale`` (..., M, C, H, W); ``coeffs`` (..., M, P, H, W)
    with P = C (C - 1) / 2 raw coefficients (tanh is applied here), ordered as :func:`coupling_pairs`.
    """

    arg_constraints = {"logits": constraints.real, "loc": constraints.real, "log_scale": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor,
                 coeffs: torch.Tensor | None = None, levels: int = 256):
        if loc.dim() < 4 or loc.shape != log_scale.shape:
            raise ValueError(f"loc and log_scale must both be (..., M, C, H, W); got {tuple(loc.shape)} and "
                             f"{tuple(log_scale.shape)}")
        m, c = loc.shape[-4], loc.shape[-3]
        if logits.shape != loc.shape[:-3] + loc.shape[-2:]:
            raise ValueError(f"logits must be (..., M, H, W) = {tuple(loc.shape[:-3] + loc.shape[-2:])}; "
                             f"got {tuple(logits.shape)}")
        pairs = c * (c - 1) // 2
        if coeffs is None:
            coeffs = loc.new_zeros(*loc.shape[:-3], pairs, *loc.shape[-2:])
        if coeffs.shape != loc.shape[:-3] + (pairs,) + loc.shape[-2:]:
            raise ValueError(f"coeffs must be (..., M, C (C - 1) / 2, H, W) = "
                             f"{tuple(loc.shape[:-3] + (pairs,) + loc.shape[-2:])}; got {tuple(coeffs.shape)}")
        self.logits, self.loc, self.log_scale, self.coeffs = logits, loc, log_scale, coeffs
        self.levels, self.mixtures, self.channels = _check_levels(levels), int(m), int(c)
        self.pairs = coupling_pairs(self.channels)
        shape = loc.shape[:-4]
        super().__init__(batch_shape=shape, event_shape=torch.Size([c, *loc.shape[-2:]]), validate_args=False)

    def _means(self, t: torch.Tensor, loc: torch.Tensor, coeffs: torch.Tensor) -> list[torch.Tensor]:
        """mu_mc = loc_mc + sum_{j<c} tanh(coeffs_m,cj) t_j for each channel c; t (..., C, H, W) broadcast over
        the component dimension of ``loc`` (..., M, C, H, W) (or without it: loc (..., C, H, W))."""
        alpha = torch.tanh(coeffs)
        means = []
        for c in range(self.channels):
            mu = loc[..., c, :, :]
            for index, (cc, j) in enumerate(self.pairs):
                if cc == c:
                    mu = mu + alpha[..., index, :, :] * t[..., j, :, :]
            means.append(mu)
        return means

    def component_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log prod_c P(k_c; mu_mc(x), s_mc) per pixel and component, (..., M, H, W), nats."""
        k = to_levels(value, self.levels).unsqueeze(-4)  # (..., 1, C, H, W): broadcast over the components
        t = k * (2.0 / (self.levels - 1)) - 1.0
        total = None
        for c, mu in enumerate(self._means(t, self.loc, self.coeffs)):
            term = discretized_logistic_log_mass(k[..., c, :, :], mu, self.log_scale[..., c, :, :], self.levels)
            total = term if total is None else total + term
        return total

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_pi = torch.log_softmax(self.logits, dim=-3)
        per_pixel = torch.logsumexp(log_pi + self.component_log_prob(value), dim=-3)  # (..., H, W)
        return per_pixel.sum((-2, -1))

    @property
    def mean(self) -> torch.Tensor:
        """sum_m pi_m E_m[x]: exact for C = 1. With the colour coupling the exact mean needs a sum over the earlier
        channels' L^(C-1) values; here each coupled channel takes its earlier channels at their component means
        (mu_mc = loc_mc + sum_j tanh(coeffs_m,cj) (2 E_m[x_j] - 1)), an approximation for pictures."""
        pi = torch.softmax(self.logits, dim=-3)
        alpha = torch.tanh(self.coeffs)
        means: list[torch.Tensor] = []
        for c in range(self.channels):
            mu = self.loc[..., c, :, :]
            for index, (cc, j) in enumerate(self.pairs):
                if cc == c:
                    mu = mu + alpha[..., index, :, :] * (2.0 * means[j] - 1.0)
            means.append(discretized_logistic_mean(mu, self.log_scale[..., c, :, :], self.levels))
        return torch.stack([(pi * e).sum(-3) for e in means], dim=-3)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """A component m per pixel (Gumbel-max on the logits), then the channels in order, each drawn exactly
        from its discretized logistic given the drawn values of the earlier channels."""
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            logits = self.logits.expand(shape + self.logits.shape)
            g = -torch.log(-torch.log(_uniform(logits.shape, logits, generator)))
            pick = (logits + g).argmax(dim=-3, keepdim=True)  # (..., 1, H, W)

            def chosen(p: torch.Tensor) -> torch.Tensor:  # (..., M, X, H, W) -> (..., X, H, W) at component pick
                p = p.expand(shape + p.shape)
                index = pick.unsqueeze(-3).expand(*p.shape[:-4], 1, *p.shape[-3:])
                return p.gather(-4, index).squeeze(-4)

            loc, log_scale, alpha = chosen(self.loc), chosen(self.log_scale), torch.tanh(chosen(self.coeffs))
            ks: list[torch.Tensor] = []
            ts: list[torch.Tensor] = []
            for c in range(self.channels):
                mu = loc[..., c, :, :]
                for index, (cc, j) in enumerate(self.pairs):
                    if cc == c:
                        mu = mu + alpha[..., index, :, :] * ts[j]
                u = _uniform(mu.shape, mu, generator)
                ks.append(_logistic_levels(mu, log_scale[..., c, :, :], self.levels, u))
                ts.append(ks[-1] * (2.0 / (self.levels - 1)) - 1.0)
            return torch.stack(ks, dim=-3) / (self.levels - 1)


class PixelCategorical(Distribution):
    """An independent L-way categorical per sub-pixel over the last ``event_dims`` dimensions of the values:
    P(x) = prod_d softmax(l_d)_{k_d}, k_d = round(x_d (L - 1)); ``logits`` (..., *event, L).

    log P(x) = sum_d [l_{d, k_d} - logsumexp_j l_{d, j}], nats. With all logits equal it is uniform: log2 L bits
    per dimension.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, logits: torch.Tensor, event_dims: int = 3):
        self.logits, self.event_dims = logits, int(event_dims)
        self.levels = _check_levels(int(logits.shape[-1]))
        cut = logits.dim() - 1 - self.event_dims
        super().__init__(batch_shape=logits.shape[:cut], event_shape=logits.shape[cut:-1], validate_args=False)

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        k = to_levels(value, self.levels).long()
        logits = self.logits
        shape = torch.broadcast_shapes(k.shape, logits.shape[:-1])
        logits = logits.expand(*shape, self.levels)
        picked = logits.gather(-1, k.expand(shape).unsqueeze(-1)).squeeze(-1)
        return sum_event(picked - torch.logsumexp(logits, dim=-1), self.event_dims)

    @property
    def mean(self) -> torch.Tensor:
        grid = torch.linspace(0.0, 1.0, self.levels, device=self.logits.device, dtype=self.logits.dtype)
        return (self.probs * grid).sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1).to(self.logits.dtype) / (self.levels - 1)

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Gumbel-max: k = argmax_j (l_j + g_j), g_j ~ Gumbel(0, 1), reproducible with ``generator``."""
        with torch.no_grad():
            logits = self.logits.expand(torch.Size(sample_shape) + self.logits.shape)
            g = -torch.log(-torch.log(_uniform(logits.shape, logits, generator)))
            return (logits + g).argmax(-1).to(self.logits.dtype) / (self.levels - 1)

    def entropy(self) -> torch.Tensor:
        log_p = torch.log_softmax(self.logits, dim=-1)
        return sum_event(-(log_p.exp() * log_p).sum(-1), self.event_dims)
