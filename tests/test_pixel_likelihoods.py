"""Probabilities of integer grey levels (vaekit.distributions.pixel and the three likelihoods built on them):
each sums to 1 over every value, the mixture of logistics matches direct implementations (a loop, and the
formula of PixelCNN++ with its fallback), samples follow the probabilities, and models with these likelihoods
build, train, evaluate (a uniform model scores exactly 8 bits/dim) and load again."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

import vaekit
from vaekit.components import LIKELIHOODS
from vaekit.distributions.pixel import (
    DiscretizedLogistic,
    DiscretizedLogisticMixture,
    PixelCategorical,
    coupling_pairs,
    discretized_logistic_log_mass,
    discretized_logistic_mean,
)
from vaekit.evaluation import LOG_PROBABILITY, evaluate_model
from vaekit.models import VAE, HierarchicalVAE

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64


def _grid(levels: int, dtype=F64) -> torch.Tensor:
    return torch.arange(levels, dtype=dtype) / (levels - 1)


def _extreme_logistic_params(n: int, seed: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random loc / log-scale pairs plus the corners: scales from e^-7 (the likelihood's clamp) and below to
    e^6, locations at bin centres, bin edges and far outside [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    loc = torch.rand(n, generator=g, dtype=dtype) * 6 - 3
    log_scale = torch.rand(n, generator=g, dtype=dtype) * 13 - 7
    corners_loc = torch.tensor([0.0, 1 / 255, 1.0, -1.0, 1 - 1 / 255, 40.0, -40.0, 0.5, 3e-3], dtype=dtype)
    corners_ls = torch.tensor([-7.0, -7.0, -7.0, -9.0, -12.0, -7.0, 6.0, 6.0, 1.0], dtype=dtype)
    return torch.cat([loc, corners_loc]), torch.cat([log_scale, corners_ls])


# -- every distribution sums to 1 over every value -----------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 3, 17, 256])
def test_discretized_logistic_sums_to_one_exhaustively_in_float64(levels):
    loc, log_scale = _extreme_logistic_params(400, seed=levels)
    d = DiscretizedLogistic(loc, log_scale, levels, event_dims=0)
    log_p = d.log_prob(_grid(levels)[:, None])  # (L, P): every value of every sub-pixel
    assert torch.isfinite(log_p).all()
    total = torch.logsumexp(log_p, 0)
    # float64 rounding: 1e-12 for the sum of L masses, plus the rounding of mu - t amplified by 1/s (below the
    # likelihood's clamp s >= e^-7, the corners' s = e^-9, e^-12 make 1/s large)
    tol = 1e-12 + 8 * torch.finfo(F64).eps * torch.exp(-log_scale)
    assert (total.abs() <= tol).all(), (total.abs() - tol).max()


@pytest.mark.parametrize("levels", [2, 256])
def test_discretized_logistic_sums_to_one_in_float32(levels):
    loc, log_scale = _extreme_logistic_params(400, seed=3, dtype=torch.float32)
    log_p = DiscretizedLogistic(loc, log_scale, levels, event_dims=0).log_prob(_grid(levels, torch.float32)[:, None])
    assert torch.isfinite(log_p).all()
    # float32: a few eps of relative rounding per mass, plus the rounding of mu - t amplified by 1/s
    tol = 2e-5 + 8 * torch.finfo(torch.float32).eps * torch.exp(-log_scale.double())
    assert (torch.logsumexp(log_p.double(), 0).abs() <= tol).all()


def _mp_log_mass(k: int, loc: float, log_scale: float, levels: int) -> float:
    """log P(k) in 60-digit arithmetic, from the definition (differences of the logistic CDF)."""
    mpmath.mp.dps = 60
    h = mpmath.mpf(1) / (levels - 1)
    t = 2 * k * h - 1
    s = mpmath.exp(mpmath.mpf(log_scale))

    def cdf(v):  # F(v), or the survival function 1 - F(v) above mu: tiny values keep their digits
        return 1 / (1 + mpmath.exp(-(v - mpmath.mpf(loc)) / s))

    def survival(v):
        return 1 / (1 + mpmath.exp((v - mpmath.mpf(loc)) / s))

    if t > loc:  # P(k) = S(t - h) - S(t + h)
        upper = mpmath.mpf(1) if k == 0 else survival(t - h)
        lower = mpmath.mpf(0) if k == levels - 1 else survival(t + h)
    else:  # P(k) = F(t + h) - F(t - h)
        upper = mpmath.mpf(1) if k == levels - 1 else cdf(t + h)
        lower = mpmath.mpf(0) if k == 0 else cdf(t - h)
    return float(mpmath.log(upper - lower))


@pytest.mark.parametrize("dtype, rtol", [(F64, 1e-11), (torch.float32, 2e-5)])
def test_bin_masses_match_exact_arithmetic_where_they_underflow(dtype, rtol):
    """Bins far in the tails (masses down to e^-2000, where PixelCNN++'s difference of sigmoids underflows and
    its mid-bin approximation takes over) against 60-digit arithmetic: the log-space identity is exact."""
    cases = [(128, -0.9, -7.0), (200, 0.0, -5.0), (3, 0.99, -6.5), (254, -1.0, -3.0), (0, 1.0, -7.0),
             (255, -1.0, -7.0), (100, 0.2, 4.0), (130, 0.0196, -7.0), (60, 0.5, -4.0), (1, 0.0, 2.0)]
    k = torch.tensor([c[0] for c in cases], dtype=dtype)
    loc = torch.tensor([c[1] for c in cases], dtype=dtype)
    ls = torch.tensor([c[2] for c in cases], dtype=dtype)
    ours = discretized_logistic_log_mass(k, loc, ls, 256).double()
    exact = torch.tensor([_mp_log_mass(*c, 256) for c in cases], dtype=F64)
    assert exact.min() < -1000  # the cases do reach deep underflow of the bin masses themselves
    torch.testing.assert_close(ours, exact, rtol=rtol, atol=rtol)


def test_gradients_are_finite_at_the_corners():
    loc, log_scale = _extreme_logistic_params(50, seed=5)
    loc.requires_grad_(True)
    log_scale.requires_grad_(True)
    d = DiscretizedLogistic(loc, log_scale, 256, event_dims=0)
    d.log_prob(_grid(256)[:, None]).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()


def _mixture_params(n: int, m: int, c: int, seed: int, dtype=F64, h: int = 1, w: int = 1, extreme: bool = True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, m, h, w, generator=g, dtype=dtype) * (3 if extreme else 1)
    loc = torch.randn(n, m, c, h, w, generator=g, dtype=dtype) * (1.5 if extreme else 0.5)
    lo, hi = (-7.0, 3.0) if extreme else (-3.0, 0.5)
    log_scale = lo + (hi - lo) * torch.rand(n, m, c, h, w, generator=g, dtype=dtype)
    coeffs = torch.randn(n, m, c * (c - 1) // 2, h, w, generator=g, dtype=dtype) * 2
    return logits, loc, log_scale, coeffs


@pytest.mark.parametrize("channels, levels", [(1, 256), (3, 16), (2, 32)])
def test_mixture_sums_to_one_over_every_colour(channels, levels):
    """Every value of a pixel, over all its channels jointly (L^C colours), through log_prob itself."""
    logits, loc, log_scale, coeffs = _mixture_params(20, 4, channels, seed=channels)
    d = DiscretizedLogisticMixture(logits, loc, log_scale, coeffs, levels)
    values = torch.cartesian_prod(*[_grid(levels)] * channels).reshape(-1, 1, channels, 1, 1)  # (L^C, 1, C, 1, 1)
    log_p = d.log_prob(values)  # (L^C, 20)
    assert torch.isfinite(log_p).all()
    assert torch.logsumexp(log_p, 0).abs().max() < 1e-12


def test_coupled_rgb_mixture_sums_to_one_channel_by_channel_at_256_levels():
    """256^3 colours are summed exhaustively through the factorisation P(r, g, b) = sum_m pi_m P_m(r) P_m(g|r)
    P_m(b|r, g): every conditional sums to 1 for every prefix (all 256 reds, all 65,536 red-green pairs), and
    log_prob equals the factorisation built here from the coupling's definition at random colours."""
    L, M = 256, 3
    logits, loc, log_scale, coeffs = (p[0, :, :, 0, 0] if p.dim() == 5 else p[0, :, 0, 0]
                                      for p in _mixture_params(1, M, 3, seed=11))
    alpha = torch.tanh(coeffs)  # (M, 3): green on red, blue on red, blue on green
    t = 2 * torch.arange(L, dtype=F64) / (L - 1) - 1
    k = torch.arange(L, dtype=F64)

    def log_mass(mu, c):  # (..., M) -> (..., M, L): log P_m(k | mu) of channel c for every k
        return discretized_logistic_log_mass(k, mu[..., None], log_scale[:, c, None], L)

    red = log_mass(loc[:, 0], 0)  # (M, L)
    assert torch.logsumexp(red, -1).abs().max() < 1e-12
    green = log_mass(loc[None, :, 1] + alpha[None, :, 0] * t[:, None], 1)  # (r, M, g)
    assert torch.logsumexp(green, -1).abs().max() < 1e-12
    worst = 0.0
    for r in range(L):  # every (r, g) prefix: blue sums to 1
        mu_b = loc[None, :, 2] + alpha[None, :, 1] * t[r] + alpha[None, :, 2] * t[:, None]  # (g, M)
        worst = max(worst, float(torch.logsumexp(log_mass(mu_b, 2), -1).abs().max()))
    assert worst < 1e-12
    # the distribution's log_prob is that factorisation
    g = torch.Generator().manual_seed(12)
    rgb = torch.randint(0, L, (500, 3), generator=g)
    r, gg, b = rgb.unbind(1)
    mu_b = loc[None, :, 2] + alpha[None, :, 1] * t[r, None] + alpha[None, :, 2] * t[gg, None]
    blue = discretized_logistic_log_mass(b[:, None].double(), mu_b, log_scale[None, :, 2], L)
    joint = torch.logsumexp(torch.log_softmax(logits, 0) + red[:, r].t() + green[r, :, gg] + blue, -1)
    d = DiscretizedLogisticMixture(logits[:, None, None], loc[..., None, None], log_scale[..., None, None],
                                   coeffs[..., None, None], L)
    torch.testing.assert_close(d.log_prob(rgb.double().reshape(500, 3, 1, 1) / (L - 1)), joint, rtol=0, atol=1e-12)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_categorical_sums_to_one_exhaustively(levels):
    g = torch.Generator().manual_seed(levels)
    logits = torch.randn(30, levels, generator=g, dtype=F64) * torch.tensor([0.1, 10.0, 300.0]).repeat(10)[:, None]
    d = PixelCategorical(logits[None].expand(levels, -1, -1), event_dims=0)  # batch (L, 30)
    log_p = d.log_prob(_grid(levels)[:, None].expand(levels, 30))
    assert torch.isfinite(log_p).all()
    assert torch.logsumexp(log_p, 0).abs().max() < 1e-12


# -- the mixture against direct implementations ------------------------------------------------------------------


def _direct_mixture_log_prob(x, logits, loc, log_scale, coeffs, levels):
    """An obviously-correct loop: every image, pixel, component and channel by itself, with the bin masses as
    differences of the logistic CDF (edges: the tails) and the coupling mu_c = loc_c + sum_j tanh(a_cj) t_j."""
    n, c, h, w = x.shape
    m = logits.shape[1]
    pairs = coupling_pairs(c)
    out = torch.zeros(n, dtype=F64)
    sig = torch.sigmoid
    for i in range(n):
        for a in range(h):
            for b in range(w):
                log_pi = torch.log_softmax(logits[i, :, a, b], 0)
                terms = []
                for mm in range(m):
                    total = log_pi[mm]
                    values = [round(float(x[i, cc, a, b]) * (levels - 1)) for cc in range(c)]
                    ts = [2 * v / (levels - 1) - 1 for v in values]
                    for cc in range(c):
                        mu = loc[i, mm, cc, a, b]
                        for p, (c1, j) in enumerate(pairs):
                            if c1 == cc:
                                mu = mu + torch.tanh(coeffs[i, mm, p, a, b]) * ts[j]
                        s = torch.exp(log_scale[i, mm, cc, a, b])
                        hw = 1.0 / (levels - 1)
                        upper = 1.0 if values[cc] == levels - 1 else sig((ts[cc] + hw - mu) / s)
                        lower = 0.0 if values[cc] == 0 else sig((ts[cc] - hw - mu) / s)
                        total = total + torch.log(torch.as_tensor(upper - lower, dtype=F64))
                    terms.append(total)
                out[i] += torch.logsumexp(torch.stack(terms), 0)
    return out


def _pixelcnnpp_terms(x, loc, log_scale, coeffs):
    """PixelCNN++'s discretized_mix_logistic_loss (Salimans et al. 2017, 8-bit RGB), transcribed to torch with
    its mid-bin fallback: (log P per image, component, channel and pixel (N, M, 3, H, W), the coupled means,
    and its cdf_delta, which picks the fallback below 1e-5)."""
    def softplus(v):  # log(1 + e^v) without torch's linear cut-off above 20 (an error of e^-20)
        return torch.logaddexp(torch.zeros_like(v), v)

    xs = (2 * x - 1).unsqueeze(1)  # (N, 1, 3, H, W) in [-1, 1]
    a = torch.tanh(coeffs)
    m0 = loc[:, :, 0]
    m1 = loc[:, :, 1] + a[:, :, 0] * xs[:, :, 0]
    m2 = loc[:, :, 2] + a[:, :, 1] * xs[:, :, 0] + a[:, :, 2] * xs[:, :, 1]
    means = torch.stack([m0, m1, m2], 2)
    log_scales = log_scale.clamp(min=-7.0)
    centered = xs - means
    inv = torch.exp(-log_scales)
    plus_in, min_in = inv * (centered + 1 / 255), inv * (centered - 1 / 255)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - softplus(plus_in)
    log_one_minus_cdf_min = -softplus(min_in)
    mid_in = inv * centered
    log_pdf_mid = mid_in - log_scales - 2 * softplus(mid_in)
    log_probs = torch.where(xs < -0.999, log_cdf_plus, torch.where(
        xs > 0.999, log_one_minus_cdf_min, torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)),
                                                       log_pdf_mid - math.log(127.5))))
    edge = (xs < -0.999) | (xs > 0.999)
    return log_probs, means, cdf_delta.masked_fill(edge.expand_as(cdf_delta), 1.0)


@pytest.mark.parametrize("channels", [1, 3])
def test_mixture_matches_a_direct_loop(channels):
    levels = 256
    logits, loc, log_scale, coeffs = _mixture_params(3, 4, channels, seed=20 + channels, h=2, w=3, extreme=False)
    g = torch.Generator().manual_seed(7)
    x = torch.randint(0, levels, (3, channels, 2, 3), generator=g).double() / (levels - 1)
    x[0, :, 0, 0] = 0.0  # the edge bins
    x[1, :, 1, 2] = 1.0
    d = DiscretizedLogisticMixture(logits, loc, log_scale, coeffs, levels)
    torch.testing.assert_close(d.log_prob(x), _direct_mixture_log_prob(x, logits, loc, log_scale, coeffs, levels),
                               rtol=0, atol=1e-9)


def test_bin_masses_match_pixelcnnpp_where_its_formula_is_exact():
    """PixelCNN++'s coupled means are ours, and where its bin masses are the difference of CDFs (above its 1e-5
    threshold, or edge bins) its log-masses are ours; below the threshold its mid-bin fallback is an
    approximation, and ours is the exact value there (the 60-digit test above)."""
    _, loc, log_scale, coeffs = _mixture_params(40, 5, 3, seed=31, h=2, w=2)
    x = torch.randint(0, 256, (40, 3, 2, 2), generator=torch.Generator().manual_seed(3)).double() / 255
    x[:, :, 0, 0] = torch.tensor([0.0, 1.0, 128 / 255], dtype=F64)  # edge bins too
    theirs, means, cdf_delta = _pixelcnnpp_terms(x, loc, log_scale, coeffs)
    k = (x * 255).round().unsqueeze(1)
    d = DiscretizedLogisticMixture(torch.zeros(40, 5, 2, 2, dtype=F64), loc, log_scale, coeffs, 256)
    ours_means = torch.stack(d._means(k * (2 / 255) - 1, loc, coeffs), 2)
    torch.testing.assert_close(ours_means, means, rtol=0, atol=1e-14)
    ours = discretized_logistic_log_mass(k, means, log_scale.clamp(min=-7.0), 256)
    exact = cdf_delta > 1e-5
    assert 0.2 < exact.double().mean() < 0.95  # both regimes occur
    # the difference of two sigmoids (<= 1) carries an absolute error of a few eps: eps / delta in its log
    tol = 1e-12 + 8 * torch.finfo(F64).eps / cdf_delta[exact]
    assert ((ours[exact] - theirs[exact]).abs() <= tol).all()
    assert (ours[~exact] - theirs[~exact]).abs().max() > 1e-6  # the fallback is an approximation


def test_mixture_with_one_channel_has_no_coupling_and_one_component_is_the_logistic():
    logits, loc, log_scale, _ = _mixture_params(5, 1, 1, seed=40, h=3, w=3)
    x = torch.randint(0, 256, (5, 1, 3, 3), generator=torch.Generator().manual_seed(1)).double() / 255
    mix = DiscretizedLogisticMixture(logits, loc, log_scale, None, 256).log_prob(x)
    single = DiscretizedLogistic(loc[:, 0], log_scale[:, 0], 256).log_prob(x)
    torch.testing.assert_close(mix, single, rtol=0, atol=1e-12)


# -- samples and means ---------------------------------------------------------------------------------------------


def _frequency_check(draws: torch.Tensor, probs: torch.Tensor) -> None:
    """Empirical frequencies within 5 standard errors sqrt(p (1 - p) / n) of the probabilities (+ 1e-4 for
    cells of tiny mass), cell by cell."""
    n = draws.shape[0]
    freq = torch.bincount(draws, minlength=probs.numel()).double() / n
    se = torch.sqrt(probs * (1 - probs) / n)
    assert ((freq - probs).abs() <= 5 * se + 1e-4).all(), (freq - probs).abs().max()


def test_samples_follow_the_probabilities():
    n, gen = 100_000, torch.Generator().manual_seed(0)
    # discretized logistic, 8 levels
    loc, ls = torch.tensor([0.3], dtype=F64), torch.tensor([-1.0], dtype=F64)
    d = DiscretizedLogistic(loc, ls, 8, event_dims=1)
    x = d.sample((n,), generator=gen)
    assert torch.equal(x * 7, (x * 7).round())
    probs = DiscretizedLogistic(loc, ls, 8, event_dims=0).log_prob(_grid(8)[:, None]).exp().flatten()
    _frequency_check((x[:, 0] * 7).round().long(), probs)
    # the coupled RGB mixture at 4 levels: 64 colours
    logits, loc, log_scale, coeffs = (p[:1] for p in _mixture_params(1, 3, 3, seed=50, extreme=False))
    coeffs = coeffs * 3  # strong coupling
    mix = DiscretizedLogisticMixture(logits, loc, log_scale, coeffs, 4)
    draws = mix.sample((n,), generator=gen)[:, 0]  # (n, 3, 1, 1)
    index = ((draws * 3).round().long().reshape(n, 3) * torch.tensor([16, 4, 1])).sum(1)
    colours = torch.cartesian_prod(*[_grid(4)] * 3).reshape(-1, 1, 3, 1, 1)
    _frequency_check(index, mix.log_prob(colours)[:, 0].exp())
    # categorical
    cat = PixelCategorical(torch.tensor([[0.0, 1.0, -2.0, 0.5, 3.0]], dtype=F64), event_dims=1)
    c = cat.sample((n,), generator=gen)[:, 0]
    _frequency_check((c * 4).round().long(), torch.softmax(cat.logits[0], 0))


def test_sampling_is_reproducible_with_a_generator():
    logits, loc, log_scale, coeffs = _mixture_params(2, 3, 3, seed=60, h=4, w=4)
    d = DiscretizedLogisticMixture(logits, loc, log_scale, coeffs, 256)
    a = d.sample((3,), generator=torch.Generator().manual_seed(5))
    b = d.sample((3,), generator=torch.Generator().manual_seed(5))
    assert a.shape == (3, 2, 3, 4, 4) and torch.equal(a, b)
    assert torch.equal(a * 255, (a * 255).round()) and a.min() >= 0 and a.max() <= 1


def test_means_are_exact_sums_over_the_values():
    loc, ls = _extreme_logistic_params(60, seed=70)
    for levels in (2, 17, 256):
        probs = DiscretizedLogistic(loc, ls, levels, event_dims=0).log_prob(_grid(levels)[:, None]).exp()
        exact = (probs * _grid(levels)[:, None]).sum(0)
        tol = 1e-12 + 8 * torch.finfo(F64).eps * torch.exp(-ls)  # as for the sums: rounding of mu - t times 1/s
        assert ((discretized_logistic_mean(loc, ls, levels) - exact).abs() <= tol).all()
    logits, mloc, mls, _ = _mixture_params(4, 3, 1, seed=71, h=2, w=2)
    mix = DiscretizedLogisticMixture(logits, mloc, mls, None, 256)
    per = [discretized_logistic_mean(mloc[:, m], mls[:, m], 256) for m in range(3)]
    expected = sum(torch.softmax(logits, 1)[:, m, None] * per[m] for m in range(3))
    torch.testing.assert_close(mix.mean, expected, rtol=0, atol=1e-12)
    cat = PixelCategorical(torch.randn(5, 3, 17, dtype=F64), event_dims=1)
    torch.testing.assert_close(cat.mean, (cat.probs * _grid(17)).sum(-1))


# -- the likelihood components ------------------------------------------------------------------------------------


NAMES = ["discretized-logistic", "discretized-logistic-mixture", "categorical-256"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 4, 5), (3, 4, 4)])
def test_components_shapes_settings_and_layout(name, shape):
    lik = LIKELIHOODS.build({"name": name, "levels": 17}, shape=shape)
    c = shape[0]
    want = {"discretized-logistic": 2 * c, "discretized-logistic-mixture": 5 * (1 + 2 * c + c * (c - 1) // 2),
            "categorical-256": 17 * c}[name]
    assert lik.param_shape == (want, *shape[1:]) and lik.levels == 17
    assert LIKELIHOODS.build(lik.config(), shape=shape).config() == lik.config()
    params = torch.randn(2, 6, *lik.param_shape, dtype=F64)
    x = torch.randint(0, 17, (6, *shape)).double() / 16
    log_p = lik.log_prob(x, params)
    assert log_p.shape == (2, 6) and torch.isfinite(log_p).all() and (log_p <= 0).all()
    draw = lik.sample(params, generator=torch.Generator().manual_seed(0))
    assert draw.shape == (2, 6, *shape) and torch.equal(draw * 16, (draw * 16).round())
    mean = lik.mean(params)
    assert mean.shape == (2, 6, *shape) and mean.min() >= 0 and mean.max() <= 1


def test_mixture_layout_is_the_documented_blocks():
    lik = LIKELIHOODS.build({"name": "discretized-logistic-mixture", "mixtures": 2}, shape=(3, 1, 1))
    params = torch.arange(20, dtype=F64).reshape(20, 1, 1)
    logits, loc, log_scale, coeffs = lik.split(params)
    assert logits.flatten().tolist() == [0, 1]
    assert loc.flatten().tolist() == list(range(2, 8)) and loc[1, 0, 0, 0] == 5  # channel m * C + c
    assert log_scale.flatten().tolist() == list(range(8, 14)) and coeffs.flatten().tolist() == list(range(14, 20))
    assert lik.mean_is_estimate  # the coupled channels' mean is an approximation
    assert not LIKELIHOODS.build("discretized-logistic-mixture", shape=(1, 2, 2)).mean_is_estimate


def test_categorical_layout_and_uniform_start():
    lik = LIKELIHOODS.build({"name": "categorical-256", "levels": 4}, shape=(2, 1, 1))
    params = torch.zeros(8, 1, 1, dtype=F64)
    params[4 * 0 + 2 * 1 + 1] = 5.0  # channel p * C + c: the logit of value 1 for image channel 1
    d = lik(params)
    assert d.probs[1, 0, 0].argmax() == 1 and torch.allclose(d.probs[0, 0, 0], torch.full((4,), 0.25, dtype=F64))


def test_cli_flags_reach_the_settings():
    from vaekit.config import resolve

    cfg = resolve({"likelihood": "discretized-logistic-mixture", "mixtures": 3, "pixel_levels": 17}, {})
    assert cfg.likelihood_settings == {"mixtures": 3, "levels": 17}
    cfg = resolve({"likelihood": "categorical-256", "pixel_levels": 2}, {})
    assert cfg.likelihood_settings == {"levels": 2}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_models_build_decode_and_load_again(tmp_path, name, arch):
    torch.manual_seed(0)
    shape = (3, 8, 8)
    spec = {"name": name, "levels": 16, **({"mixtures": 2} if "mixture" in name else {})}
    model = VAE(shape=shape, latent=2, arch=arch, hidden=[16], conv_channels=[4, 8], likelihood=spec)
    x = torch.randint(0, 16, (4, *shape)).float() / 15
    terms = vaekit.elbo(model, x)
    (-terms.elbo.mean()).backward()
    assert torch.isfinite(terms.elbo).all() and model.decoder is not None
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.reconstruct(x).shape == x.shape and model.sample(3).draws.shape == (3, *shape)
    model.save(tmp_path / "m")
    again = VAE.load(tmp_path / "m")
    assert again.likelihood.config() == model.likelihood.config()
    torch.testing.assert_close(again.log_likelihood(x, torch.zeros(4, 2)), model.log_likelihood(x, torch.zeros(4, 2)))


def test_two_level_model_with_the_coupled_mixture():
    """The two-level model sizes its decoder by param_shape (the mixture's channels are not P per sub-pixel)."""
    torch.manual_seed(0)
    model = HierarchicalVAE(shape=(3, 4, 4), latent=2, hidden=[16],
                            likelihood={"name": "discretized-logistic-mixture", "mixtures": 2})
    x = torch.randint(0, 256, (5, 3, 4, 4)).float() / 255
    terms = vaekit.elbo(model, x)
    assert torch.isfinite(terms.elbo).all() and model.decode(torch.zeros(5, 4)).shape == (5, 20, 4, 4)


# -- bits per dimension ------------------------------------------------------------------------------------------


def test_a_uniform_model_scores_exactly_8_bits_per_dimension():
    """Categorical logits all 0 (decoder weights and biases 0) and q(z|x) = p(z) (encoder 0): every importance
    weight is P(x|z) = 256^-D, so log p(x) = -D log 256 and bits/dim = 8 with no correction."""
    torch.manual_seed(0)
    model = VAE(shape=(3, 4, 4), latent=2, hidden=[8], likelihood="categorical-256").double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.randint(0, 256, (20, 3, 4, 4), generator=torch.Generator().manual_seed(1)).double() / 255
    r = evaluate_model(model, x, k=7, seed=0, levels=256)
    assert r.log_px_kind == LOG_PROBABILITY and r.dequantization_nats == 0.0 and r.levels == 256
    assert abs(r.bits_per_dim - 8.0) < 1e-12 and abs(r.nll - 48 * math.log(256)) < 1e-9
    assert not any("density" in note for note in r.notes)


@pytest.mark.parametrize("spec", [{"name": "discretized-logistic"},
                                  {"name": "discretized-logistic-mixture", "mixtures": 3},
                                  {"name": "categorical-256"}])
def test_a_tiny_vae_trains_and_evaluates_on_8bit_data(tmp_path, spec):
    """Synthetic 8-bit colour images (four smooth prototypes + noise): a few epochs lower the bits/dim well
    below the uniform model's 8 and the evaluation reports a true log-probability."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 8), torch.linspace(0, 1, 8), indexing="ij")
    protos = torch.stack([torch.stack([yy, xx, 1 - yy]), torch.stack([xx, 1 - xx, yy]),
                          torch.stack([1 - yy, yy * xx, xx]), torch.stack([yy * 0 + 0.2, xx, 0.8 - 0.6 * yy])])
    labels = torch.randint(0, 4, (400,), generator=g)
    imgs = (protos[labels] * 255 + torch.randn(400, 3, 8, 8, generator=g) * 6).round().clamp(0, 255) / 255
    train_x, valid_x, test_x = imgs[:300], imgs[300:350], imgs[350:]
    torch.manual_seed(0)
    model = VAE(shape=(3, 8, 8), latent=4, hidden=[32], likelihood=spec)
    before = evaluate_model(model, test_x, k=10, seed=0, levels=256)
    vaekit.fit(model, train_x, valid_x, out=tmp_path / "r", epochs=12, batch_size=50, lr=3e-3, progress=False)
    after = evaluate_model(model, test_x, k=10, seed=0, levels=256)
    assert after.log_px_kind == LOG_PROBABILITY and np.isfinite(after.bits_per_dim)
    assert 0 < after.bits_per_dim < 7.0 and after.bits_per_dim < before.bits_per_dim - 1.0, (before.bits_per_dim,
                                                                                            after.bits_per_dim)
    assert after.elbo <= -after.nll + 1e-6
