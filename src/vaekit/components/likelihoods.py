"""Observation models p(x|z): the decoder's output -> a distribution over images (C, H, W).

Every likelihood takes the decoder output ``params`` (..., *param_shape), (..., P*C, H, W) for P parameters per
pixel, and returns p(x|z) as a ``torch.distributions`` object whose ``log_prob`` sums over the pixels (nats).

* probabilities (``levels`` = L): the Bernoulli of binary pixels (L = 2), and for integer grey levels
  x = k / (L - 1) the discretized logistic, the discretized mixture of logistics and the L-way categorical
  (:mod:`vaekit.distributions.pixel`); their bits/dim are -log2 p(x|z) / D with no correction;
* densities (``levels`` = None): the continuous Bernoulli on [0, 1] and the Gaussian, whose log p(x|z) is a
  density on [0, 1]^D (it can exceed 0), no probability of discrete pixel values; on real-valued tables the
  Gaussian with an unbounded mean (``mean = "identity"``) and the Student-t, densities on R^D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.components.base import LIKELIHOODS, Likelihood
from vaekit.distributions import DiagonalNormal, IndependentBernoulli, IndependentContinuousBernoulli
from vaekit.distributions.normal import sum_event
from vaekit.distributions.pixel import DiscretizedLogistic, DiscretizedLogisticMixture, PixelCategorical


@LIKELIHOODS.register("bernoulli", help="binary pixels, x_d ~ Bernoulli(sigmoid(l_d))")
class BernoulliLikelihood(Likelihood):
    """x_d ~ Bernoulli(sigmoid(l_d)); log p(x|z) = sum_d [x_d l_d - softplus(l_d)] = -BCE(l, x)."""

    levels = 2  # a probability of binary pixels (on grey targets the same sum is a cross-entropy, not log p)

    def forward(self, logits: torch.Tensor) -> IndependentBernoulli:
        return IndependentBernoulli(logits, self.event_dims)

    def log_prob(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """-sum_d BCE(l_d, x_d), the same as ``self(logits).log_prob(x)`` without building the distribution."""
        if x.shape != logits.shape:  # x (N, ...) against logits (..., N, ...) or (S, 1, ...) of codes shared by x
            logits, x = torch.broadcast_tensors(logits, x)
        return -sum_event(F.binary_cross_entropy_with_logits(logits, x, reduction="none"), self.event_dims)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


@LIKELIHOODS.register("continuous-bernoulli", prefix="cb",
                      help="continuous Bernoulli density on [0, 1] (Loaiza-Ganem & Cunningham, 2019)")
class ContinuousBernoulliLikelihood(Likelihood):
    """x_d in [0, 1] ~ ContinuousBernoulli(sigmoid(l_d)) (Loaiza-Ganem & Cunningham, 2019):
    the Bernoulli density with its normalising constant C(lambda), a proper density on [0, 1]."""

    def forward(self, logits: torch.Tensor) -> IndependentContinuousBernoulli:
        return IndependentContinuousBernoulli(logits, self.event_dims)


#: The standard deviations the Gaussian likelihood's ``sigma`` may be set to (sigma^2 and 1 / sigma^2 stay normal
#: float32 numbers).
SIGMA_RANGE = (1e-4, 1e4)


#: How a Gaussian's mean comes from the decoder output m: sigmoid(m) in (0, 1) (images), or m itself (tables);
#: ``auto``: identity on a table of real values, sigmoid otherwise (decided when the model is built for its data).
GAUSSIAN_MEANS = ("auto", "sigmoid", "identity")


@dataclass
class GaussianLikelihoodConfig:
    variance: str = "learned"  # fixed | learned | per-pixel
    sigma: float = 0.1  # the fixed sigma, or the learned one's start
    mean: str = "auto"  # sigmoid (values in [0, 1]) | identity (real values, a table) | auto (by the data)

    def __post_init__(self) -> None:
        if self.variance not in ("fixed", "learned", "per-pixel"):
            raise ValueError(f"variance must be fixed, learned or per-pixel, got {self.variance!r}")
        if self.mean not in GAUSSIAN_MEANS:
            raise ValueError(f"mean must be one of {', '.join(GAUSSIAN_MEANS)}, got {self.mean!r}")
        low, high = SIGMA_RANGE
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, (int, float)) or not low <= self.sigma <= high:
            raise ValueError(f"sigma must be a number from {low:g} to {high:g}, got {self.sigma!r}")


@LIKELIHOODS.register("gaussian", GaussianLikelihoodConfig,
                      help="Gaussian density, mean sigmoid(m) in [0, 1] (or m itself: mean identity, for tables)")
class GaussianLikelihood(Likelihood):
    """x_d ~ N(mu_d, sigma_d^2), mu_d = sigmoid(m_d) in [0, 1] (``mean = "sigmoid"``) or m_d (``"identity"``).

    ``variance``: ``"fixed"`` (sigma = ``sigma``, one decoder output per pixel), ``"learned"`` (one learned
    sigma shared by all pixels) or ``"per-pixel"`` (the decoder outputs log sigma_d^2 too).
    log p = -1/2 sum_d [log 2 pi + log sigma_d^2 + (x_d - mu_d)^2 / sigma_d^2]. Densities of continuous data
    can be positive: log p(x|z) may exceed 0.
    """

    real_support = True  # a density on all of R^D (with mean identity; sigmoid keeps its mean in (0, 1))

    def __init__(self, shape: tuple[int, ...], variance: str = "learned", sigma: float = 0.1,
                 min_log_var: float = -9.0, mean: str = "auto"):
        super().__init__(shape)
        GaussianLikelihoodConfig(variance, sigma, mean)  # the same checks for direct construction
        self.variance, self.mean_map = variance, "sigmoid" if mean == "auto" else mean
        self.sigma = float(sigma)
        self.min_log_var = float(min_log_var)
        self.params_per_pixel = 2 if variance == "per-pixel" else 1
        init = torch.tensor(2 * math.log(sigma))
        if variance == "learned":
            self.log_var = nn.Parameter(init)
        else:
            self.register_buffer("log_var", init)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        link = torch.sigmoid if self.mean_map == "sigmoid" else (lambda m: m)
        if self.variance == "per-pixel":
            m, lv = self.split(params)
            return link(m), lv.clamp(min=self.min_log_var)
        return link(params), self.log_var.clamp(min=self.min_log_var).expand_as(params)

    def config(self) -> dict:
        """The settings, ``mean`` included (held as ``mean_map``: ``mean`` is E[x|z])."""
        return {**super().config(), "mean": self.mean_map}

    def forward(self, params: torch.Tensor) -> DiagonalNormal:
        mu, log_var = self._split(params)
        return DiagonalNormal(mu, log_var, self.event_dims)

    def floor_fraction(self, params: torch.Tensor) -> float | None:
        """The fraction of the pixels whose log sigma^2 sits at ``min_log_var`` (the clamp): for
        ``per-pixel`` the decoder's outputs, for ``learned`` the shared variance (0 or 1); None when fixed."""
        if self.variance == "fixed":
            return None
        if self.variance == "per-pixel":
            raw = self.split(params)[1]
            return float((raw <= self.min_log_var).double().mean()) if raw.numel() else None
        return float(float(self.log_var) <= self.min_log_var)


#: The degrees of freedom nu a Student-t likelihood may have (fixed, or learned within these bounds).
DF_RANGE = (0.2, 1000.0)
#: The lower bound on the Student-t's log-scale log s_d.
MIN_LOG_SCALE_T = -7.0


@dataclass
class StudentTLikelihoodConfig:
    degrees: str = "learned"  # fixed | learned (one nu for all values) | per-feature (one nu per value)
    df: float = 5.0  # the fixed nu, or the learned ones' start

    def __post_init__(self) -> None:
        if self.degrees not in ("fixed", "learned", "per-feature"):
            raise ValueError(f"degrees must be fixed, learned or per-feature, got {self.degrees!r}")
        low, high = DF_RANGE
        if isinstance(self.df, bool) or not isinstance(self.df, (int, float)) or not low <= self.df <= high:
            raise ValueError(f"df must be a number from {low:g} to {high:g}, got {self.df!r}")


class _StudentT(torch.distributions.StudentT):
    """torch's Student-t, whose draws follow a ``generator`` (torch's gamma sampler takes none: the global
    stream is forked and seeded from the generator, so the same generator gives the same draws)."""

    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None):
        if generator is None:
            return super().sample(sample_shape)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        with torch.random.fork_rng(devices=[] if self.loc.device.type == "cpu" else [self.loc.device]):
            torch.manual_seed(seed)
            return super().sample(sample_shape)


class _IndependentT(torch.distributions.Independent):
    def sample(self, sample_shape: torch.Size | tuple = (), generator: torch.Generator | None = None):
        return self.base_dist.sample(sample_shape, generator=generator)


@LIKELIHOODS.register("student-t", StudentTLikelihoodConfig, prefix="student",
                      help="Student-t density on real values, location and scale per value from the decoder")
class StudentTLikelihood(Likelihood):
    """x_d ~ t_nu(mu_d, s_d): location mu_d = m_d and log-scale log s_d (clamped at :data:`MIN_LOG_SCALE_T`), two
    decoder outputs per value; nu fixed (``degrees = "fixed"``), learned and shared by all values (``"learned"``)
    or learned per value (``"per-feature"``), held as log nu within :data:`DF_RANGE`.

    log p = sum_d [lgamma((nu + 1) / 2) - lgamma(nu / 2) - 1/2 log(nu pi) - log s_d
                   - (nu + 1) / 2 log(1 + ((x_d - mu_d) / s_d)^2 / nu)]   (nats; a density on R^D).
    E[x|z] = mu for nu > 1. Heavier tails than the Gaussian (nu -> infinity gives it back).
    """

    params_per_pixel = 2
    real_support = True  # a density on all of R^D

    def __init__(self, shape: tuple[int, ...], degrees: str = "learned", df: float = 5.0):
        super().__init__(shape)
        StudentTLikelihoodConfig(degrees, df)  # the same checks for direct construction
        self.degrees, self.df = degrees, float(df)
        init = torch.full(self.shape if degrees == "per-feature" else (), math.log(df))
        if degrees == "fixed":
            self.register_buffer("log_df", init)
        else:
            self.log_df = nn.Parameter(init)

    def degrees_of_freedom(self) -> torch.Tensor:
        """nu (a scalar, or one per value), within :data:`DF_RANGE`."""
        return self.log_df.clamp(math.log(DF_RANGE[0]), math.log(DF_RANGE[1])).exp()

    def forward(self, params: torch.Tensor) -> torch.distributions.Independent:
        loc, log_scale = self.split(params)
        nu = self.degrees_of_freedom().to(loc.dtype)
        base = _StudentT(nu.expand_as(loc), loc, log_scale.clamp(min=MIN_LOG_SCALE_T).exp(), validate_args=False)
        return _IndependentT(base, self.event_dims, validate_args=False)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """E[x|z] = mu (the location; the mean of a t with nu > 1, its median and mode always)."""
        return self.split(params)[0]


# -- probabilities of integer grey levels x = k / (L - 1) -----------------------------------------------------

#: The largest number of grey levels (16-bit images).
MAX_LEVELS = 2**16


def _at_least_float32(params: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 decoder outputs (autocast) in float32: bf16 cannot tell apart neighbouring bins of 8-bit
    values (its spacing near 1 is 1/128), so the probabilities are computed in float32 at least."""
    return params.float() if params.dtype in (torch.float16, torch.bfloat16) else params


def _check_levels(levels: int) -> None:
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= MAX_LEVELS:
        raise ValueError(f"levels must be an integer from 2 to {MAX_LEVELS} (the data's grey levels: 256 for "
                         f"8-bit images), got {levels!r}")


@dataclass
class PixelLevelsConfig:
    levels: int = 256  # grey levels L of the data: x = k / (L - 1), k = 0..L-1 (256 for 8-bit images)

    def __post_init__(self) -> None:
        _check_levels(self.levels)


#: The lower bound on log s of the discretized logistics (PixelCNN++'s): s >= e^-7, about 1/9 of a bin of
#: 8-bit data in the [-1, 1] units of the grid; a probability needs no more (each bin's mass is at most 1).
MIN_LOG_SCALE = -7.0


@LIKELIHOODS.register("discretized-logistic", PixelLevelsConfig, prefix="pixel",
                      help="discretized logistic: a probability of integer grey levels (PixelCNN++ bins)")
class DiscretizedLogisticLikelihood(Likelihood):
    """P(x|z) = prod_d DLogistic(k_d; mu_d, s_d), x_d = k_d / (L - 1) (:class:`~vaekit.distributions.pixel.
    DiscretizedLogistic`): the logistic CDF over the PixelCNN++ bins of width 2 / (L - 1) in [-1, 1].

    The decoder gives mu (in [-1, 1] units; 0 is mid-grey) and log s per sub-pixel (P = 2), log s clamped at
    :data:`MIN_LOG_SCALE`. A decoder output of 0 is mu = 0, s = 1, a broad start (about 9 bits on a mid-grey
    value, a quarter of the mass on each edge value), from which training narrows the scales.
    """

    params_per_pixel = 2

    def __init__(self, shape: tuple[int, ...], levels: int = 256):
        super().__init__(shape)
        _check_levels(levels)
        self.levels = int(levels)

    def forward(self, params: torch.Tensor) -> DiscretizedLogistic:
        loc, log_scale = self.split(_at_least_float32(params))
        return DiscretizedLogistic(loc, log_scale.clamp(min=MIN_LOG_SCALE), self.levels, self.event_dims)


@dataclass
class MixtureLogisticsConfig:
    mixtures: int = 5  # M logistic components per pixel, shared by its channels
    levels: int = 256  # grey levels L of the data: x = k / (L - 1), k = 0..L-1

    def __post_init__(self) -> None:
        if isinstance(self.mixtures, bool) or not isinstance(self.mixtures, int) or not 1 <= self.mixtures <= 1024:
            raise ValueError(f"mixtures must be an integer from 1 to 1024, got {self.mixtures!r}")
        _check_levels(self.levels)


@LIKELIHOODS.register("discretized-logistic-mixture", MixtureLogisticsConfig, prefix="pixel",
                      flags={"mixtures": "mixtures"},
                      help="discretized mixture of logistics with PixelCNN++'s colour coupling (probabilities)")
class MixtureLogisticsLikelihood(Likelihood):
    """P(x|z) = prod_ij sum_m pi_m prod_c DLogistic(k_c; mu_mc, s_mc) with PixelCNN++'s coupling of the
    channel means (:class:`~vaekit.distributions.pixel.DiscretizedLogisticMixture`, Salimans et al. 2017).

    The decoder gives M (1 + 2C + C (C - 1) / 2) channels per pixel (10 M for RGB, 3 M for grey), in blocks:
    the M mixture logits, the M * C locations (channel m * C + c), the M * C log-scales (clamped at
    :data:`MIN_LOG_SCALE`) and the M * C (C - 1) / 2 coupling coefficients (tanh-squashed). The locations
    start at mid-grey plus a spread over [-1, 1] by component (loc_m + (2 m + 1) / M - 1), so that the
    components begin apart; decoder outputs of 0 give s = 1.
    """

    def __init__(self, shape: tuple[int, ...], mixtures: int = 5, levels: int = 256):
        super().__init__(shape)
        MixtureLogisticsConfig(mixtures, levels)  # the same checks for direct construction
        if len(self.shape) != 3:
            raise ValueError(f"the discretized-logistic-mixture likelihood needs images (C, H, W), got {self.shape}")
        self.mixtures, self.levels = int(mixtures), int(levels)
        c = self.shape[0]
        self._sizes = (self.mixtures, self.mixtures * c, self.mixtures * c, self.mixtures * (c * (c - 1) // 2))
        spread = torch.tensor([(2 * m + 1) / self.mixtures - 1.0 for m in range(self.mixtures)])
        self.register_buffer("_spread", spread.reshape(self.mixtures, 1, 1, 1), persistent=False)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """(M (1 + 2C + C (C - 1) / 2), H, W): logits, locations, log-scales and coupling coefficients."""
        return (sum(self._sizes), *self.shape[1:])

    def split(self, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(logits (..., M, H, W), loc (..., M, C, H, W), log_scale (..., M, C, H, W), coeffs (..., M, P, H, W))."""
        m, (c, h, w) = self.mixtures, self.shape
        logits, loc, log_scale, coeffs = params.split(list(self._sizes), dim=-3)
        lead = params.shape[:-3]
        return (logits, loc.reshape(*lead, m, c, h, w), log_scale.reshape(*lead, m, c, h, w),
                coeffs.reshape(*lead, m, c * (c - 1) // 2, h, w))

    @property
    def mean_is_estimate(self) -> bool:  # type: ignore[override]
        """The mean of coupled channels is an approximation (see DiscretizedLogisticMixture.mean)."""
        return self.shape[0] > 1

    def forward(self, params: torch.Tensor) -> DiscretizedLogisticMixture:
        logits, loc, log_scale, coeffs = self.split(_at_least_float32(params))
        return DiscretizedLogisticMixture(logits, loc + self._spread.to(loc.dtype), log_scale.clamp(min=MIN_LOG_SCALE),
                                          coeffs, self.levels)


@LIKELIHOODS.register("categorical-256", PixelLevelsConfig, prefix="pixel",
                      help="an independent L-way categorical per sub-pixel (L = levels, 256 for 8-bit images)")
class CategoricalPixelLikelihood(Likelihood):
    """P(x|z) = prod_d softmax(l_d)_{k_d}, x_d = k_d / (L - 1) (:class:`~vaekit.distributions.pixel.
    PixelCategorical`): L logits per sub-pixel, channel p * C + c holding the logit of value p of channel c.
    Decoder outputs of 0 are the uniform distribution, log2 L bits per dimension."""

    def __init__(self, shape: tuple[int, ...], levels: int = 256):
        super().__init__(shape)
        _check_levels(levels)
        self.levels = int(levels)
        self.params_per_pixel = self.levels

    def forward(self, params: torch.Tensor) -> PixelCategorical:
        blocks = _at_least_float32(params).unflatten(-self.event_dims, (self.levels, self.shape[0]))  # (.., L, C, ..)
        logits = blocks.movedim(-self.event_dims - 1, -1)  # (..., C, H, W, L)
        return PixelCategorical(logits, self.event_dims)
