"""The signal-to-noise ratio of a reparameterized model's gradients, at its fixed weights, for each estimator of
the encoder's gradient (:mod:`vaekit.objectives.reparameterized`) and each number of draws K.

For a batch x of N examples, T independent estimates g_1..g_T of the gradient of the mean IWAE_K bound
(-(1/N) times the loss of :class:`vaekit.objectives.importance.IWAE`; IWAE_1 is the ELBO with a Monte Carlo KL) are
taken with respect to the encoder's parameters phi (``inference_parameters()``) and the generative model's theta
(the decoder's and the prior's: every other parameter). Per coordinate j, with the mean m_j and the unbiased standard
deviation s_j over the T repeats (Rainforth et al., 2018, "Tighter variational bounds are not necessarily better"):

    SNR      = (1/P') sum_j |m_j| / s_j        over the P' coordinates that vary (s_j > 0)
    variance = (1/P) sum_j s_j^2               over all P coordinates

Each comes with a jackknife standard error over the T repeats (each left out in turn; it holds whatever the
correlations between coordinates). The SNR of a coordinate whose true mean is 0 is not 0 but about
E|t_{T-1}| / sqrt(T) ~ sqrt(2 / (pi T)) (:func:`snr_floor`): an SNR near that floor is noise. Units: the gradients
are of nats per example, the SNR has none, the variance is in nats^2 per unit of parameter squared.

What each estimator's rows estimate: ``pathwise`` and ``dreg`` the gradient of IWAE_K (both unbiased); ``stl`` the
gradient of the same log weights with the score term dropped, unbiased for the ELBO (K = 1) and biased for IWAE_K at
K > 1 (Tucker et al., 2019). The three give the generative model the same gradient: the rows of one K share their
draws (common random numbers), so their decoder figures agree.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from vaekit.errors import VaekitError
from vaekit.objectives import build_objective
from vaekit.objectives.reparameterized import build_estimator, check_reparameterized_estimator, objective_loss

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: The most numbers (repeats x coordinates) summarised at once.
SUMMARY_CHUNK = 2**24


def snr_floor(trials: int) -> float:
    """E|m| / s for a coordinate of true mean 0 and Gaussian noise, T = ``trials`` repeats: E|t_{T-1}| / sqrt(T)
    with E|t_nu| = 2 sqrt(nu) Gamma((nu + 1)/2) / (sqrt(pi) (nu - 1) Gamma(nu/2)); about sqrt(2 / (pi T))."""
    nu = trials - 1
    if nu < 2:
        return math.inf
    log_e = math.log(2 * math.sqrt(nu)) + math.lgamma((nu + 1) / 2) - 0.5 * math.log(math.pi) - math.log(nu - 1) \
        - math.lgamma(nu / 2)
    return math.exp(log_e) / math.sqrt(trials)


def _jackknife(values: torch.Tensor) -> float:
    """The jackknife standard error from T leave-one-out values (NaNs left out)."""
    values = values[torch.isfinite(values)].double()
    t = values.shape[0]
    if t < 2:
        return math.nan
    return float(math.sqrt((t - 1) / t * float(((values - values.mean()) ** 2).sum())))


def summarize(grads: torch.Tensor) -> dict[str, float | int | None]:
    """SNR and variance of T estimates ``grads`` (T, P), with jackknife standard errors (see the module docstring).

    Returns ``snr`` (None when no coordinate varies), ``snr_stderr``, ``variance``, ``variance_stderr`` and
    ``constant``: the coordinates left out of the SNR, the same in every repeat (a unit that is never used, or an
    estimator with no noise there). Needs T >= 3."""
    t, p = grads.shape
    if t < 3:
        raise VaekitError(f"an SNR with its standard error needs at least 3 repeats, got {t}")
    if p == 0:  # no parameters in this part (q(z|x) fixed at the exact posterior)
        return {"variance": math.nan, "variance_stderr": math.nan, "constant": 0, "snr": None, "snr_stderr": None}
    snr_sum, var_sum = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    snr_o, var_o = torch.zeros(t, dtype=torch.float64), torch.zeros(t, dtype=torch.float64)
    varying = 0
    step = max(1, SUMMARY_CHUNK // t)
    for start in range(0, p, step):
        g = grads[:, start:start + step].double().cpu()
        mean = g.mean(0)
        dev = g - mean
        ss = (dev * dev).sum(0)
        live = ss > 0
        var_sum += ss.sum() / (t - 1)
        ss_o = (ss - dev * dev * t / (t - 1)).clamp_min(0.0)  # leave repeat i out: (T, P)
        var_o += ss_o.sum(1) / (t - 2)
        if not bool(live.any()):
            continue
        varying += int(live.sum())
        snr_sum += (mean[live].abs() / (ss[live] / (t - 1)).sqrt()).sum()
        mean_o = (mean - dev / (t - 1))[:, live]
        sd_o = (ss_o[:, live] / (t - 2)).sqrt()
        snr_o += torch.where(sd_o > 0, mean_o.abs() / sd_o.clamp_min(1e-300), torch.nan).nansum(1)
    out: dict[str, float | int | None] = {
        "variance": float(var_sum) / p, "variance_stderr": _jackknife(var_o / p), "constant": p - varying,
        "snr": None, "snr_stderr": None}
    if varying:
        out.update(snr=float(snr_sum) / varying, snr_stderr=_jackknife(snr_o / varying))
    return out


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global random state set to ``seed`` inside, restored after (the objectives draw from it)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        if device.type == "cuda":
            torch.cuda.manual_seed(int(seed))
        yield


def _flat(grads: tuple[torch.Tensor | None, ...], params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def estimate_gradients(model: LatentVariableModel, x: torch.Tensor, estimator: str, k: int, trials: int, seed: int,
                       encoder: list[torch.Tensor], decoder: list[torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """T = ``trials`` estimates of the gradient of the mean IWAE_k bound over the batch x with ``estimator``:
    (encoder (T, P_phi), decoder (T, P_theta), the bound of each repeat (T,) in nats per example)."""
    objective, est = build_objective("iwae", k=k), build_estimator(estimator)
    params = [*encoder, *decoder]
    enc, dec, bounds = [], [], []
    with _seeded(seed, x.device), torch.enable_grad():
        for _ in range(trials):
            loss = objective_loss(objective, model, x, estimator=est).loss
            grads = torch.autograd.grad(-loss, params, allow_unused=True)  # the gradient of the bound
            enc.append(_flat(grads[:len(encoder)], encoder).detach().float().cpu())
            dec.append(_flat(grads[len(encoder):], decoder).detach().float().cpu())
            bounds.append(float(-loss.detach()))
    empty = torch.zeros(trials, 0)
    return (torch.stack(enc) if encoder else empty), (torch.stack(dec) if decoder else empty), torch.tensor(bounds)


@dataclass
class SNRRow:
    """One estimator at one K: the SNR and variance of the encoder's and the decoder's gradients of IWAE_K."""

    estimator: str
    k: int
    unbiased: bool  # for the gradient of IWAE_K (stl: only at K = 1, the ELBO)
    encoder_snr: float | None
    encoder_snr_stderr: float | None
    encoder_variance: float
    encoder_variance_stderr: float
    encoder_constant: int
    decoder_snr: float | None
    decoder_snr_stderr: float | None
    decoder_variance: float
    decoder_variance_stderr: float
    decoder_constant: int
    bound: float  # the mean IWAE_K estimate over the repeats, nats per example
    bound_stderr: float
    seconds: float


@dataclass
class SNRMeasurement:
    rows: list[SNRRow]
    n: int
    trials: int
    encoder_parameters: int
    decoder_parameters: int
    snr_floor: float
    notes: list[str] = field(default_factory=list)


def _row(name: str, k: int, enc: torch.Tensor, dec: torch.Tensor, bounds: torch.Tensor, seconds: float) -> SNRRow:
    e, d = summarize(enc), summarize(dec)
    se = float(bounds.double().std()) / math.sqrt(bounds.shape[0])
    return SNRRow(name, k, name != "stl" or k == 1, e["snr"], e["snr_stderr"], e["variance"], e["variance_stderr"],
                  e["constant"], d["snr"], d["snr_stderr"], d["variance"], d["variance_stderr"], d["constant"],
                  float(bounds.double().mean()), se, seconds)  # type: ignore[arg-type]


def _check_arguments(x: torch.Tensor, estimators: list[str], ks: list[int], trials: int) -> None:
    """One :class:`~vaekit.errors.VaekitError` naming the argument that cannot be measured."""
    from vaekit.resources import check_samples

    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 1:
        raise VaekitError(f"x must be a batch of at least one example, (N, ...); got {type(x).__name__}")
    if isinstance(estimators, str) or not estimators or not all(isinstance(e, str) for e in estimators):
        raise VaekitError(f"estimators must be a non-empty list of names like ['pathwise', 'dreg']; got {estimators!r}")
    if isinstance(ks, (int, str)) or not ks:
        raise VaekitError(f"ks must be a non-empty list of draws per example like [1, 4, 16]; got {ks!r}")
    for k in ks:
        check_samples(k, "ks")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 3:
        raise VaekitError(f"trials must be an integer >= 3 (an SNR with its standard error); got {trials!r}")


def measure_snr(model: LatentVariableModel, x: torch.Tensor, estimators: list[str], ks: list[int], trials: int,
                seed: int = 0, encoder: list[torch.Tensor] | None = None,
                decoder: list[torch.Tensor] | None = None) -> SNRMeasurement:
    """For each estimator and each K in ``ks``, ``trials`` gradients of the mean IWAE_K bound over the batch x, and
    their SNR and variance (see the module docstring). ``encoder``/``decoder``: the parameters of q(z|x) and of
    p(z) p(x|z) (default: ``model.inference_parameters()`` and every other parameter). The model is used at its
    fixed weights in eval mode; the rows of one K share their draws (seed + 10007 x its index), those of
    different K are independent. Cost: ``trials`` x K x N decoder rows per estimator and K.

    Raises:
        VaekitError: an argument that cannot be measured (named), or an estimator that does not apply to the
            model (:func:`vaekit.objectives.reparameterized.check_reparameterized_estimator`).
    """
    _check_arguments(x, estimators, ks, trials)
    encoder = list(model.inference_parameters()) if encoder is None else list(encoder)
    if decoder is None:
        own = {id(p) for p in encoder}
        decoder = [p for p in model.parameters() if id(p) not in own]
    if not encoder and not decoder:
        raise VaekitError("the model has no parameters to measure (its weights are buffers); pass encoder= and "
                          "decoder=, the tensors of q(z|x) and of p(z) p(x|z)")
    objective = build_objective("iwae", k=max(ks))
    for name in estimators:
        check_reparameterized_estimator(model, name, objective)
    tensors = [*encoder, *decoder]
    flags, was_training = [p.requires_grad for p in tensors], model.training
    model.eval()
    rows = []
    try:
        for p in tensors:
            p.requires_grad_(True)
        for k_index, k in enumerate(ks):
            for name in estimators:
                start = time.perf_counter()
                enc, dec, bounds = estimate_gradients(model, x, name, k, trials, seed + 10_007 * k_index, encoder,
                                                      decoder)
                rows.append(_row(name, k, enc, dec, bounds, time.perf_counter() - start))
    finally:
        for p, flag in zip(tensors, flags):
            p.requires_grad_(flag)
        model.train(was_training)
    rows.sort(key=lambda r: (estimators.index(r.estimator), r.k))
    notes = []
    if "stl" in estimators and any(k > 1 for k in ks):
        notes.append("stl at K > 1: the score term of IWAE_K's gradient does not vanish in expectation, so STL is "
                     "biased for it (Tucker et al. 2019); at K = 1 it is unbiased for the ELBO")
    return SNRMeasurement(rows, int(x.shape[0]), trials, sum(p.numel() for p in encoder),
                          sum(p.numel() for p in decoder), snr_floor(trials), notes)
