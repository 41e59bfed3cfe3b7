"""beta-TCVAE (Chen et al., 2018): the ELBO's KL term split into its three parts, each with its own weight.

    E_x KL(q(z|x) || p(z)) = I_q(x; z) + TC(z) + sum_j KL(q(z_j) || p(z_j))
                            (index-code MI) (total correlation) (dimension-wise KL)

    loss = -E_x [ E_q log p(x|z) - alpha I - weight TC - gamma DWKL ],

each term estimated at one draw z ~ q(z|x) per example from the batch itself: log q(z_i) and log q(z_ij) need the
aggregate posterior q(z) = (1/N) sum_n q(z|x_n) over the N training examples, estimated on a batch of M by
minibatch-weighted sampling (``mws``: log q(z_i) ~ logsumexp_m log q(z_i|x_m) - log(N M)) or minibatch-stratified
sampling (``mss``: the importance weights of Chen et al.'s Appendix C.2). With alpha = weight = gamma = 1 the three
terms add up to log q(z|x) - log p(z), the ELBO's Monte Carlo KL (a test checks it). Needs a diagonal Gaussian
q(z|x) (its factors q(z_j|x) are evaluated at other examples' draws). The kept epoch is chosen by the validation
objective itself (``valid_tc_objective``); the TC and its parts are reported per epoch.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.distributions import Normal

from vaekit.distributions import rsample
from vaekit.errors import ConfigError, option
from vaekit.objectives.base import OBJECTIVES, Loss, Objective, Score
from vaekit.objectives.terms import ElboTerms

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel


@dataclass
class TCConfig:
    alpha: float = 1.0  # weight of the index-code mutual information I_q(x; z)
    weight: float = 6.0  # weight of the total correlation TC(z) (the paper's beta)
    gamma: float = 1.0  # weight of the dimension-wise KL sum_j KL(q(z_j) || p(z_j))
    sampling: str = "mws"  # mws (minibatch-weighted) | mss (minibatch-stratified)

    def __post_init__(self) -> None:
        for name in ("alpha", "weight", "gamma"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.sampling not in ("mws", "mss"):
            raise ValueError(f"sampling must be mws or mss, got {self.sampling!r}")


def _log_importance(m: int, n: int, stratified: bool, device: torch.device) -> torch.Tensor:
    """log of the (M, M) weights of log q(z_i) ~ logsumexp_m [log q(z_i|x_m) + log w_im]: 1/(N M) for every pair
    (mws, Chen et al.'s code), or the stratified weights (mss: 1/N on the example itself, (N - M + 1)/(N (M - 1))
    on the next one, wrapping from the last to the first, 1/(M - 1) on the others; each row sums to 1)."""
    if not stratified or m < 2:
        return torch.full((m, m), -math.log(n * m), device=device)
    w = torch.full((m, m), 1.0 / (m - 1), device=device)
    index = torch.arange(m, device=device)
    w[index, index] = 1.0 / n
    w[index, (index + 1) % m] = (n - m + 1) / (n * (m - 1))
    return w.log()


def tc_terms(model: LatentVariableModel, x: torch.Tensor, data_size: int, stratified: bool = False,
             y: Any = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-example (N,) estimates at one draw z ~ q(z|x): ``reconstruction`` log p(x|z), ``kl`` log q(z|x) - log p(z),
    ``mi`` log q(z|x) - log q(z), ``tc`` log q(z) - sum_j log q(z_j), ``dwkl`` sum_j log q(z_j) - log p(z), nats."""
    x = model.as_data(x)
    q = model.posterior(x, y)
    if not hasattr(q, "mean") or not hasattr(q, "stddev") or getattr(q, "is_point_mass", False):
        raise ConfigError("objective beta-tcvae needs a diagonal Gaussian q(z|x) (posterior gaussian)")
    z = rsample(q, (), generator)
    per_dim = Normal(q.mean.unsqueeze(0), q.stddev.unsqueeze(0)).log_prob(z.unsqueeze(1))  # (M, M, L): z_i at x_m
    log_w = _log_importance(x.shape[0], max(int(data_size), x.shape[0]), stratified, z.device)
    log_qz = torch.logsumexp(per_dim.sum(-1) + log_w, 1)
    log_prod = torch.logsumexp(per_dim + log_w.unsqueeze(-1), 1).sum(-1)
    log_qzx, log_pz = q.log_prob(z), model.log_prior(z)
    return {"reconstruction": model.log_likelihood(x, z, y), "kl": log_qzx - log_pz, "mi": log_qzx - log_qz,
            "tc": log_qz - log_prod, "dwkl": log_prod - log_pz}


@OBJECTIVES.register("beta-tcvae", TCConfig, prefix="tc",
                     help="beta-TCVAE: the KL split into I(x; z), total correlation and dimension-wise KL, weighted")
class BetaTCVAE(Objective):
    """-mean_x [E_q log p(x|z) - alpha I - weight TC - gamma DWKL]; see the module docstring."""

    estimators_refused = ("draws z itself and weighs log q(z_i|x_m) at the other examples' parameters "
                          "(its minibatch estimate of log q(z))")
    encoder_noise_refused = "weighs every draw under each example's q(z|x) of the clean x"

    def __init__(self, alpha: float = 1.0, weight: float = 6.0, gamma: float = 1.0, sampling: str = "mws",
                 k: int = 1, beta: float = 1.0, warmup: int = 0, data_size: int = 0):
        super().__init__(k, beta, warmup, data_size)
        self.alpha, self.weight, self.gamma, self.stratified = alpha, weight, gamma, sampling == "mss"

    def check(self, model: LatentVariableModel) -> None:
        super().check(model)
        if model.is_discrete:
            raise ConfigError("objective beta-tcvae needs a diagonal Gaussian q(z|x); this model's is discrete")

    def selection(self) -> tuple[str, Score]:
        return "valid beta-TCVAE objective", lambda v: v["tc_objective"]

    def _objective(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        return t["reconstruction"] - self.alpha * t["mi"] - self.weight * t["tc"] - self.gamma * t["dwkl"]

    def loss(self, model: LatentVariableModel, x: torch.Tensor, y: Any = None, *, beta: float = 1.0,
             encoder_input: torch.Tensor | None = None, estimator: Any = None) -> Loss:
        if encoder_input is not None:
            raise ConfigError(f"objective beta-tcvae does not take {option('encoder_noise')}; leave it out")
        t = tc_terms(model, x, self.data_size, self.stratified, y)
        rec, kl = t["reconstruction"], t["kl"]
        return Loss(-self._objective(t).mean(), ElboTerms(rec - kl, rec, kl))

    def validation_sums(self, model: LatentVariableModel, x: torch.Tensor, y: Any, generator: torch.Generator,
                        batch_size: int, autocast: contextlib.AbstractContextManager | None = None
                        ) -> dict[str, torch.Tensor]:
        """sum_x of the objective and of I, TC and DWKL, over batches of ``batch_size`` (the estimates need a batch
        of the aggregate posterior), drawn with ``generator`` (the same every epoch)."""
        sums = dict.fromkeys(("tc_objective", "mi", "tc", "dwkl"), torch.zeros((), dtype=torch.float64,
                                                                               device=x.device))
        for start in range(0, x.shape[0], batch_size):
            part = y[start : start + batch_size] if y is not None else None
            with autocast or contextlib.nullcontext():
                t = tc_terms(model, x[start : start + batch_size], self.data_size, self.stratified, part, generator)
            t["tc_objective"] = self._objective(t)
            sums = {key: sums[key] + t[key].double().sum() for key in sums}
        return sums
