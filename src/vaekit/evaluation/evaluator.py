"""Honest likelihoods: the test-set ELBO, the importance-sampled log p(x) and the gap between them.

For each example x, with z_1..z_K ~ q(z|x) and log-weights log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x):

    log p(x)  ~  log (1/K) sum_i w_i = logsumexp_i log w_i - log K      (IWAE_K; Burda et al., 2016)
    ELBO(x)   ~  (1/K) sum_i log w_i = reconstruction - KL,
                 reconstruction = (1/K) sum_i log p(x|z_i),  KL = (1/K) sum_i [log q(z_i|x) - log p(z_i)]
    gap(x)    =  log p(x) - ELBO(x)  ~  KL(q(z|x) || p(z|x))

all in nats per example. Both estimates use the SAME K draws, so the estimated gap is >= 0 for every
example (Jensen's inequality, draw by draw). IWAE_K is biased low by about Var(w)/(2 K p(x)^2), so the
gap is, if anything, underestimated; K = 5000 is the literature's protocol. NLL = -log p(x) is also
given in bits per dimension, NLL / (D ln 2). Standard errors are over the test set: std over
examples / sqrt(N) (they do not include the Monte Carlo error of each example, which is far smaller
at large K; the per-example error of log p(x) is sqrt(1/ESS - 1/K), ESS = (sum w)^2 / sum w^2).

Discrete latents: when the prior has a finite support of at most ``exact_limit`` codes (2^16 by default),
log p(x) = logsumexp_z [log p(x|z) + log p(z)], the ELBO and the gap KL(q(z|x) || p(z|x)) are also computed
exactly, by a sum over every code (:mod:`vaekit.bounds.enumeration`): ``nll_exact``, ``elbo_exact``, ``gap_exact``.
For G groups of K-way one-hot codes, ``kl_per_dim`` and ``latent_variance`` have one entry per group (G,
not G * K): KL(q_g || p_g), and the total variance sum_k Cov_x(E_q[z_gk]) of its class probabilities, which
is what the active-unit count (> 0.01) uses; binary units count one by one.

What log p(x) is (``log_px_kind``), by the likelihood and the data's grey levels L (``levels``: values
x = k / (L - 1), k = 0..L-1; 2 for binary data, None for real values):

* ``log-probability``: a probability of the data's values (the Bernoulli on binary data; the discretized
  logistic, its mixture and the L-way categorical on data of their L): bits/dim = -log2 p(x) / D, no correction.
* ``dequantized-bound``: a density p on [0, 1]^D (Gaussian, continuous Bernoulli) on integer-valued data
  (L > 2). Uniform dequantisation: the bins [k/L, (k+1)/L) partition [0, 1) and each holds its value k/(L-1);
  P(k) = integral of p over bin k is a probability of the integers, and by Jensen's inequality

      log P(k) = log E_u p((k + u) / L) - D log L  >=  E_u log p((k + u) / L) - D log L,   u ~ U[0, 1)^D.

  The evaluation draws one u per example (a generator seeded with ``seed`` + :data:`DEQUANTIZATION_SEED_OFFSET`),
  evaluates the model at y = (k + u) / L and subtracts D log L (``dequantization_nats``) from log p, the ELBO
  and the reconstruction term: log p(x), NLL and bits/dim are then a bound on the log-probability of the
  integer values (NLL and bits/dim upper bounds), comparable with the discrete likelihoods' figures.
* ``density``: a density on real-valued (or binary) data, nats of a density (it can exceed 0). On a standardised
  table (:mod:`vaekit.data.tabular`: u = (x - m) / s) the figures are in the ORIGINAL units of x: the model's
  log q(u) plus the log-Jacobian -sum_d log s_d (``log_jacobian``), added to log p, the ELBO and the reconstruction.
* ``cross-entropy``: a likelihood of binary pixels on data that are not binary (grey targets): not a
  log-likelihood at all; a note says so.

A learned Gaussian variance at its floor (``min_log_var``) on more than :data:`FLOOR_NOTE_FRACTION` of the
pixels (of the decoded point codes of the first :data:`FLOOR_EXAMPLES` examples) is noted too.

Speed: examples go in batches of B, their K draws in chunks of k_chunk, so every decoder call is one
(k_chunk * B, L) matrix product and memory stays below a budget (``memory_budget`` bytes of decoder
activations, 256 MB by default); running logsumexp values combine the chunks. For the common MLP
decoder with a Bernoulli likelihood, sum_d x_d l_d is computed as h . (W^T x) + b . x (h: the last
hidden layer), which leaves one matrix product and one softplus per logit.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.bounds.ais import AISSettings
from vaekit.bounds.enumeration import DEFAULT_LIMIT, EnumeratedBound, enumerated_bound, is_enumerable
from vaekit.bounds.pareto import khat_fraction, khat_note
from vaekit.bounds.sizing import CPU_ROWS, DEFAULT_MEMORY_BUDGET, bytes_per_row
from vaekit.bounds.sizing import model_device_dtype as _model_device_dtype
from vaekit.bounds.weights import log_weight_stats
from vaekit.errors import (
    ArgumentError,
    CheckpointError,
    DataError,
    VaekitError,
    argument,
    in_python_call,
    keywords_checked,
    python_call,
)
from vaekit.evaluation.annealed import GapSettings, add_annealed, check_annealed
from vaekit.objectives.figures import (  # noqa: F401 - public here too, as before
    CROSS_ENTROPY,
    DENSITY,
    DEQUANTIZATION_SEED_OFFSET,
    DEQUANTIZED,
    FIGURE_KINDS,
    LOG_PROBABILITY,
    _is_binary,
    dequantization_nats,
    dequantize,
    figure_kind,
    on_grid,
)
from vaekit.resources import check_batch_size, check_count, check_samples, check_seed, short
from vaekit.runtime import resolve_device

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Default number of importance samples per example (Burda et al.'s protocol).
DEFAULT_K = 5000
#: Monte Carlo draws of the ELBO surgery in an evaluation.
DEFAULT_SURGERY_SAMPLES = 10_000
#: Burda et al.'s threshold for an active latent unit: Cov_x(E_q[z_j]) > 0.01.
ACTIVE_THRESHOLD = 0.01


# -- the result ----------------------------------------------------------------------------------


#: The metadata of a field of :class:`EvaluationResult` that says how it was computed, not what was found.
DETAIL = {"detail": True}


@dataclass
class EvaluationResult:
    """Test-set averages (nats per example unless said otherwise) with standard errors over examples."""

    elbo: float
    reconstruction: float
    kl: float
    nll: float
    nll_stderr: float
    elbo_stderr: float
    bits_per_dim: float
    gap: float
    gap_stderr: float
    active_units: int  # units (groups, for categorical codes) with Cov_x(E_q[z_j]) > ACTIVE_THRESHOLD
    kl_per_dim: list[float]  # mean closed-form KL(q_j || p_j) per unit, or per group for categorical codes
    k: int
    n: int
    seconds: float
    data_dim: int = field(default=0, metadata=DETAIL)
    bits_per_dim_stderr: float = math.nan
    # mean closed-form KL(q || p(z)) when the prior has one; Cov_x(E_q[z_j]) per unit (group: summed over k)
    kl_analytic: float | None = field(default=None, metadata=DETAIL)
    latent_variance: list[float] = field(default_factory=list, metadata=DETAIL)
    mean_ess: float = math.nan  # mean effective sample size (sum w)^2 / sum w^2 of the K draws
    log_weights_per_second: float = math.nan
    batch_size: int = field(default=0, metadata=DETAIL)
    k_chunk: int = field(default=0, metadata=DETAIL)
    seed: int = field(default=0, metadata=DETAIL)
    split: str | None = None
    likelihood: str = field(default="", metadata=DETAIL)
    notes: list[str] = field(default_factory=list)  # caveats for the reader (low ESS, densities)
    per_example: dict[str, np.ndarray] | None = field(default=None, metadata={"json": False})
    # what an entry of kl_per_dim and latent_variance is: a latent "unit", or a "group" of one-hot categorical codes
    unit: str = "unit"
    # exact values by a sum over every code, for an enumerable (discrete) latent space; None otherwise
    nll_exact: float | None = None
    nll_exact_stderr: float | None = None
    bits_per_dim_exact: float | None = None
    elbo_exact: float | None = None
    elbo_exact_stderr: float | None = field(default=None, metadata=DETAIL)
    gap_exact: float | None = None  # mean exact KL(q(z|x) || p(z|x))
    gap_exact_stderr: float | None = field(default=None, metadata=DETAIL)
    exact_codes: int = 0  # the number of codes summed over (0: no exact values)
    exact_seconds: float = field(default=0.0, metadata=DETAIL)
    # rate R = E_x KL(q(z|x) || p(z)) and distortion D = -E_x E_q log p(x|z) (Alemi et al. 2018): ELBO = -(R + D)
    rate_stderr: float = math.nan
    distortion_stderr: float = math.nan
    # ELBO surgery (vaekit.analysis.surgery): rate = I_q(x; z) + KL(q(z) || p(z)); None where not estimated
    mutual_information: float | None = None
    mutual_information_stderr: float | None = None
    marginal_kl: float | None = None
    marginal_kl_stderr: float | None = None
    # the cluster variable of a mixture model against the data's labels (vaekit.analysis.clustering.clustering_report)
    clustering: dict[str, Any] | None = None
    selected_by: str | None = None  # what chose the evaluated weights (a run's kept epoch)
    # what log p(x) (nll, bits_per_dim, elbo) is: one of FIGURE_KINDS (see the module docstring); "" unknown
    log_px_kind: str = ""
    levels: int | None = None  # grey levels L of the evaluated data (2: binary; None: real-valued)
    dequantization_nats: float = 0.0  # D log L subtracted per example (a dequantized bound); 0 otherwise
    # a standardised table's -sum_d log sd_d, added per example so that log p(x) is in the data's original units
    log_jacobian: float = 0.0
    variance_floor_fraction: float | None = None  # pixels whose learned Gaussian variance is at its floor
    # the fraction of examples whose K weights have a Pareto k-hat > 0.7 (vaekit.bounds.pareto); None for K < 25
    pareto_k_fraction: float | None = None
    # annealed importance sampling (vaekit.evaluation.annealed): a stochastic lower bound on the mean log p(x), its
    # Monte Carlo standard error across chains, the HMC acceptance rate, and its settings T, C, L; None: not run
    ais_log_px: float | None = None
    ais_log_px_stderr: float | None = None
    ais_acceptance: float | None = None
    ais_steps: int = 0
    ais_chains: int = 0
    ais_leapfrog: int = 0
    ais_schedule: str | None = field(default=None, metadata=DETAIL)
    ais_seconds: float = field(default=0.0, metadata=DETAIL)
    ais_evaluations_per_second: float = field(default=math.nan, metadata=DETAIL)
    # the gap split (vaekit.analysis.gaps): log p(x) - ELBO[q*] and ELBO[q*] - ELBO[q_phi], standard errors over
    # examples; gaps_log_px names the log p(x) used ("ais" or "iwae"); gaps_converged: the fits that converged
    approximation_gap: float | None = None
    approximation_gap_stderr: float | None = None
    amortization_gap: float | None = None
    amortization_gap_stderr: float | None = None
    gaps_log_px: str | None = None
    gaps_steps: int = 0
    gaps_converged: float | None = None
    # a model whose q(z|x) is a point mass on one-hot codes (a VQ-VAE): its ELBO log p(x|z_q) + log p(z_q), a lower
    # bound on log p(x) under the code prior vq_prior ("uniform" or "pixelcnn"), and the bits/dim -bound / (D ln 2)
    vq_elbo: float | None = None
    vq_elbo_stderr: float | None = None
    vq_bits_per_dim: float | None = None
    vq_prior: str | None = None
    # a semi-supervised M2 model (vaekit.evaluation.m2): the error of argmax_y q(y|x) on the split's labels and its
    # binomial standard error; the labels it was trained with and its classes; nll is then the bound with y summed
    test_error: float | None = None
    test_error_stderr: float | None = None
    m2_labels: int | None = None
    m2_classes: int | None = None

    @property
    def dequantized(self) -> bool:
        """Whether log p(x), the ELBO and bits/dim are the dequantised lower bound of a density on integer data."""
        return self.log_px_kind == DEQUANTIZED

    @property
    def log_px_label(self) -> str:
        """What to call log p(x) in a table: "log p(x)", or a name saying it is a bound (on the log-probability
        of integer values), a log-density or a cross-entropy (no log-likelihood at all)."""
        return {DEQUANTIZED: "log P(x) bound", DENSITY: "log-density",
                CROSS_ENTROPY: "-cross-entropy"}.get(self.log_px_kind, "log p(x)")

    @property
    def rate(self) -> float:
        """R = E_x KL(q(z|x) || p(z)), nats (the KL term)."""
        return self.kl

    @property
    def distortion(self) -> float:
        """D = -E_x E_q log p(x|z), nats (the negative reconstruction term)."""
        return -self.reconstruction

    @property
    def log_px(self) -> float:
        """The mean importance-sampled log p(x), nats (= -nll)."""
        return -self.nll

    #: Figures derived from the fields, written with them.
    DERIVED = ("rate", "distortion", "dequantized")

    def to_dict(self, per_example: bool = False) -> dict[str, Any]:
        """A JSON-ready dict of every field and :data:`DERIVED` figure (non-finite numbers become None);
        per-example arrays as lists if asked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("json", True):
                value = getattr(self, f.name)
                out[f.name] = list(value) if isinstance(value, list) else value
        out.update({name: getattr(self, name) for name in self.DERIVED})
        if per_example and self.per_example is not None:
            out["per_example"] = {k: v.tolist() for k, v in self.per_example.items()}
        return json_safe(out)

    def __str__(self) -> str:
        """The table ``vaekit evaluate`` prints (:func:`format_table`); ``repr`` gives every field."""
        return format_table(self)

    def summary(self) -> dict[str, Any]:
        """:meth:`to_dict` less the details of how it was computed (fields marked ``DETAIL``): what
        ``vaekit evaluate --json`` prints."""
        details = {f.name for f in fields(self) if f.metadata.get("detail")}
        return {key: value for key, value in self.to_dict().items() if key not in details}


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, inf) replaced by None, through dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# -- memory and the log-likelihood kernel --------------------------------------------------------


def plan_chunks(model: LatentVariableModel, n: int, k: int, latent: int, batch_size: int | None = None,
                memory_budget: int = DEFAULT_MEMORY_BUDGET, device: torch.device | None = None) -> tuple[int, int]:
    """(examples per batch B, draws per chunk k_chunk) so that k_chunk * B decoder rows fit the budget.

    On the CPU a chunk is at most :data:`CPU_ROWS` rows (faster: it stays in the cache); on a GPU the
    whole budget is used. A ``batch_size`` larger than the budget allows is reduced to fit it.
    """
    if k < 1:
        raise VaekitError(f"k must be >= 1, got {k}")
    rows_budget = max(1, int(memory_budget // max(1, bytes_per_row(model, latent))))
    dev = device if device is not None else _model_device_dtype(model)[0]
    rows = rows_budget if dev.type != "cpu" else min(rows_budget, CPU_ROWS)
    if batch_size is None:
        batch_size = max(min(64, rows), rows // k)
    b = max(1, min(batch_size, rows_budget, max(1, n)))
    k_chunk = max(1, min(k, rows // b))
    return b, k_chunk


def _flat_data(data: Any, split: str = "test") -> torch.Tensor:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if not isinstance(data, torch.Tensor):
        getter = getattr(data, "split", None)
        data = getter(split) if callable(getter) else getattr(data, split, None)
        if not isinstance(data, torch.Tensor):
            raise DataError(f"expected images as a tensor (N, C, H, W) or a data set with a {split!r} split")
    if data.dim() < 2:
        raise DataError(f"expected images (N, C, H, W) or flat (N, D), got shape {tuple(data.shape)}")
    return data.flatten(1)


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def evaluate_model(model: LatentVariableModel, data: Any, k: int = DEFAULT_K, batch_size: int | None = None,
                   seed: int = 0, device: str | torch.device | None = None, *, split: str = "test",
                   memory_budget: int = DEFAULT_MEMORY_BUDGET, per_example: bool = True, fast: bool = True,
                   progress: Callable[[int, int], None] | None = None, labels: Any = None,
                   exact_limit: int = DEFAULT_LIMIT, class_labels: Any = None,
                   surgery_samples: int = DEFAULT_SURGERY_SAMPLES, levels: int | None = None,
                   ais: AISSettings | None = None, gaps: GapSettings | None = None,
                   log_jacobian: float | None = None) -> EvaluationResult:
    """Evaluate ``model`` on ``data`` (images (N, C, H, W), flat (N, D), or a data set's ``split``;
    ``labels`` (N,) for a conditional model, taken from the data set's split when it has them).
    ``levels``: the data's grey levels L (default: the data set's ``levels``; for images alone 2 when every
    value is 0 or 1, else real-valued), which decide what log p(x) is (``log_px_kind``, the module docstring):
    a density on L-level data is evaluated as the dequantised bound. ``log_jacobian``: nats added per example to
    log p(x), the ELBO and the reconstruction (default: a standardised table's -sum_d log sd_d, when ``data`` is
    its data set; 0 for tensors), so that they are in the data's original units.

    Returns the mean ELBO, reconstruction and KL, the importance-sampled NLL = -log p(x) with K samples
    (nats and bits/dim), the gap log p(x) - ELBO, the active units and the KL per latent dimension;
    see the module docstring. Deterministic for a given seed, batch size and memory budget. When the
    prior has at most ``exact_limit`` codes (discrete latents; 0: never), also the exact log p(x), ELBO and
    gap by a sum over every code (:mod:`vaekit.bounds.enumeration`): ``nll_exact``, ``elbo_exact``, ``gap_exact``.
    The rate (the KL term) splits into I_q(x; z) and KL(q(z) || p(z)) by ELBO surgery over these examples
    (:mod:`vaekit.analysis.surgery`, ``surgery_samples`` draws; 0: not estimated). With ``class_labels`` (N,) (the data
    set's labels by default) a model with a cluster variable also reports its clustering accuracy.
    ``progress(done, total)`` is called with the examples done (0 first, then after every batch of them, each
    batch all K draws), e.g. a :class:`vaekit.progress.Bar`. ``ais``: also log p(x) by annealed importance
    sampling with these settings (their seed replaced by ``seed``); ``gaps``: also the approximation and amortization
    gaps (:mod:`vaekit.evaluation.annealed`).
    """
    from vaekit.analysis.surgery import check_samples as check_surgery_samples

    seed, batch_size = _check_numbers(k, seed, batch_size, exact_limit, memory_budget, levels)
    check_surgery_samples(surgery_samples, "surgery_samples")  # within the memory budget, before any work
    check_annealed(model, ais, gaps, memory_budget)  # what AIS or the gap fit cannot do: refused before any work
    x, y, kind, levels, shift = _evaluation_data(model, data, k, seed, split, labels, levels)
    jacobian = data_log_jacobian(data) if log_jacobian is None else float(log_jacobian)
    shift -= jacobian  # a standardised table: log p(x) = log q(u) - sum_d log sd_d
    ev = _Evaluation(model, x, y, kind, levels, shift, k=k, seed=seed, split=split, fast=fast,
                     memory_budget=memory_budget, log_jacobian=jacobian)
    own = _own_result(ev, data, device, batch_size, ais, gaps, per_example,
                      class_labels if class_labels is not None else labels)
    if own is not None:
        return own
    _plan(ev, device, batch_size)
    passes = _run_passes(ev, progress, exact_limit, surgery_samples, data, class_labels)
    if ais is None and gaps is None:
        return _summarise(ev, passes, per_example)
    result = _summarise(ev, passes, True)
    assert result.per_example is not None
    add_annealed(result, ev.model, ev.x, ev.y, ev.shift, result.per_example["log_px"], ais, gaps, int(seed),
                 memory_budget, per_example, progress)
    return result


def _check_numbers(k: Any, seed: Any, batch_size: Any, exact_limit: Any, memory_budget: Any,
                   levels: Any) -> tuple[int, int | None]:
    """(seed, batch size) of an evaluation after the checks of the command line's flags (--k, --seed, --batch-size,
    --exact-limit) and of the other numbers, each refusal one ConfigError naming the argument."""
    from vaekit.distributions.discrete import MAX_SUPPORT

    check_samples(k, "k")  # an int from 1 to MAX_SAMPLES
    check_count(exact_limit, "exact_limit", 0, MAX_SUPPORT, "codes", "0: no exact sum")
    check_count(memory_budget, "memory_budget", 1, None, "bytes")
    if levels is not None:
        check_count(levels, "levels", 2, None, "grey levels")
    return check_seed(seed), check_batch_size(batch_size)


def _own_result(ev: _Evaluation, data: Any, device: str | torch.device | None, batch_size: int | None, ais: Any,
                gaps: Any, per_example: bool, class_labels: Any) -> EvaluationResult | None:
    """The result of a model evaluated its own way, or None: M2 (y summed out exactly, and the classifier's error
    against ``class_labels``, else the data set's), a VQ-VAE (one bound, no draws: every weight of q is the same)."""
    if getattr(ev.model, "semi_supervised", False):
        return _m2_result(ev, device, batch_size, ais, gaps, per_example, _split_labels(data, ev.split, class_labels))
    if getattr(ev.model, "one_hot_codes", False):
        ev.k = 1
        return _one_hot_result(ev, device, batch_size, ais, gaps, per_example)
    return None


def _one_hot_result(ev: _Evaluation, device: str | torch.device | None, batch_size: int | None, ais: Any, gaps: Any,
                    per_example: bool) -> EvaluationResult:
    """The result of a model whose q(z|x) is a point mass on one-hot codes z_q(x) (a VQ-VAE): ELBO = log p(x|z_q)
    + log p(z_q) per example (entropy 0, KL = -log p(z_q)), which importance sampling with q does not tighten
    (IWAE_K = ELBO for every K), reported as ``vq_elbo``; ``nll`` and ``bits_per_dim`` are its negation."""
    if ais is not None or gaps is not None:
        raise VaekitError(f"{'ais' if ais is not None else 'gaps'}: this model's q(z|x) is a point mass on discrete "
                          "codes (a VQ-VAE), which AIS and the gap fit do not take; its figure is the vq_elbo bound")
    _plan(ev, device, batch_size)
    t0, parts = time.perf_counter(), {"reconstruction": [], "kl": []}
    try:
        with torch.inference_mode():
            for start in range(0, ev.n, ev.batch_size):
                x = ev.x[start : start + ev.batch_size].to(device=ev.device, dtype=ev.dtype)
                z = ev.model.posterior(x).mean
                parts["reconstruction"].append(ev.model.log_likelihood(x, z).double().cpu())
                parts["kl"].append(-ev.model.log_prior(z).double().cpu())
    finally:
        ev.model.train(ev.was_training)
    rec, kl = (torch.cat(parts[key]).numpy() - (ev.shift if key == "reconstruction" else 0.0) for key in parts)
    bound, seconds, bpd = rec - kl, time.perf_counter() - t0, 1.0 / (ev.x.shape[1] * math.log(2))
    if not np.isfinite(bound).all():
        raise VaekitError(f"the bound is not finite for {int((~np.isfinite(bound)).sum())} examples; the model or "
                          "the data is broken (NaN weights, or data outside the likelihood's support)")
    prior = str(getattr(ev.model, "code_prior_name", "")) or None
    mean, se = float(bound.mean()), _stderr(bound)
    notes = [f"q(z|x) is a point mass on one-hot codes (a VQ-VAE): vq_elbo = log p(x|z_q) + log p(z_q) with the "
             f"{prior} prior over the codes is a lower bound on log p(x), which importance sampling with q does not "
             "tighten (every weight is the same); nll and bits_per_dim are this bound negated (upper bounds)"]
    notes += _notes(ev.model, np.ones(1), 1, kind=ev.kind, levels=ev.levels, dim=ev.x.shape[1], seed=int(ev.seed))
    per = {"vq_elbo": bound, "reconstruction": rec, "kl": kl} if per_example else None
    return EvaluationResult(
        elbo=mean, reconstruction=float(rec.mean()), kl=float(kl.mean()), nll=-mean, nll_stderr=se, elbo_stderr=se,
        bits_per_dim=-mean * bpd, gap=0.0, gap_stderr=0.0, active_units=0, kl_per_dim=[], k=1, n=ev.n,
        seconds=seconds, data_dim=ev.x.shape[1], bits_per_dim_stderr=se * bpd, mean_ess=1.0,
        log_weights_per_second=ev.n / seconds if seconds > 0 else math.inf, batch_size=ev.batch_size, k_chunk=1,
        seed=int(ev.seed), split=ev.split, likelihood=str(getattr(ev.model.likelihood, "name", "")), notes=notes,
        per_example=per, rate_stderr=_stderr(kl), distortion_stderr=_stderr(rec), log_px_kind=ev.kind,
        levels=ev.levels, dequantization_nats=ev.shift + ev.log_jacobian, log_jacobian=ev.log_jacobian, vq_elbo=mean,
        vq_elbo_stderr=se, vq_bits_per_dim=-mean * bpd,
        vq_prior=prior)


def _split_labels(data: Any, split: str, labels: Any) -> Any:
    """The class labels of the evaluated examples: ``labels`` when given, else the data set's for ``split``."""
    if labels is not None or isinstance(data, (torch.Tensor, np.ndarray)):
        return labels
    getter = getattr(data, "labels", None)
    return getter(split) if callable(getter) else getattr(data, f"{split}_labels", None)


def _m2_result(ev: _Evaluation, device: str | torch.device | None, batch_size: int | None, ais: Any, gaps: Any,
               per_example: bool, labels: Any) -> EvaluationResult:
    """The result of a semi-supervised M2 model (:mod:`vaekit.evaluation.m2`): the bound on log p(x) with y summed
    out, -U(x), and the classification error of argmax_y q(y|x) on ``labels`` (None: not reported)."""
    from vaekit.evaluation.m2 import m2_fields, m2_notes

    if ais is not None or gaps is not None:
        raise VaekitError(f"{'ais' if ais is not None else 'gaps'}: an M2 model's latent class is summed out "
                          "exactly, which AIS and the gap fit do not do; its log p(x) is the class-summed bound")
    _plan(ev, device, batch_size)
    try:
        fields = m2_fields(ev.model, ev.x, labels, k=ev.k, seed=ev.seed, shift=ev.shift, device=ev.device,
                           dtype=ev.dtype, batch_size=batch_size, memory_budget=ev.memory_budget,
                           per_example=per_example)
    finally:
        ev.model.train(ev.was_training)
    notes = m2_notes(ev.k, ev.model.classes, ev.model.labels, labels is not None)
    notes += _notes(ev.model, np.full(1, float(ev.k)), ev.k, kind=ev.kind, levels=ev.levels, dim=ev.x.shape[1],
                    seed=int(ev.seed))
    return EvaluationResult(**fields, active_units=0, kl_per_dim=[], k=ev.k, n=ev.n, data_dim=ev.x.shape[1],
                            seed=int(ev.seed), split=ev.split, notes=notes, log_px_kind=ev.kind, levels=ev.levels,
                            likelihood=str(getattr(ev.model.likelihood, "name", "")),
                            dequantization_nats=ev.shift)


#: The per-example statistics of :func:`log_weight_stats` that :func:`evaluate_model` averages.
_STAT_KEYS = ("log_px", "elbo", "reconstruction", "kl", "ess", "pareto_k")


@dataclass
class _Evaluation:
    """What the steps of one :func:`evaluate_model` share: the model, the flat data and how they are batched."""

    model: LatentVariableModel
    x: torch.Tensor  # (N, D) on the CPU, dequantized for a bound
    y: torch.Tensor | None  # (N,) labels of a conditional model; None otherwise
    kind: str  # what log p(x) is: one of FIGURE_KINDS
    levels: int | None  # grey levels L of the data (None: real-valued)
    shift: float  # D log L nats, subtracted from log p, the ELBO and the reconstruction of a bound; 0 otherwise
    k: int
    seed: int
    split: str
    fast: bool
    memory_budget: int
    device: torch.device | None = None  # the model's, set by _plan
    dtype: torch.dtype | None = None
    batch_size: int = 0  # examples per batch B
    k_chunk: int = 0  # draws per chunk
    generator: torch.Generator | None = None
    was_training: bool = False  # the model's mode before the evaluation, restored after it
    log_jacobian: float = 0.0  # a standardised table's -sum_d log sd_d (within -shift)

    @property
    def n(self) -> int:
        """The number of examples N."""
        return self.x.shape[0]


@dataclass
class _Passes:
    """What the passes over the data gathered: per-batch statistics (CPU, float64) and the whole-set extras."""

    parts: dict[str, list[torch.Tensor]]  # _STAT_KEYS, "code" and "kl_units": one tensor per batch
    groups: int | None = None  # G of one-hot categorical codes; None otherwise
    seconds: float = 0.0  # of the importance-sampling passes
    surgery: Any = None  # vaekit.analysis.surgery's result, or None
    clusters: dict[str, Any] | None = None
    floor: float | None = None  # the fraction of pixels at the learned variance's floor
    exact: EnumeratedBound | None = None
    exact_seconds: float = 0.0


def data_log_jacobian(data: Any) -> float:
    """-sum_d log sd_d of a data set whose table was standardised (``data.standardisation``), else 0: what turns
    log-densities of the standardised values into the original units (nats per example)."""
    rule = None if isinstance(data, (torch.Tensor, np.ndarray)) else getattr(data, "standardisation", None)
    return float(rule.log_jacobian) if rule is not None else 0.0


def _evaluation_data(model: LatentVariableModel, data: Any, k: int, seed: int, split: str, labels: Any,
                     levels: int | None) -> tuple[torch.Tensor, torch.Tensor | None, str, int | None, float]:
    """(x (N, D), the labels of a conditional model, what log p(x) is, the grey levels L, the shift D log L nats).
    A density on L-level data is dequantized, x -> (k + u) / L with one u ~ U[0, 1)^D per example; the shift is 0
    for the other kinds."""
    x_all = _flat_data(data, split)
    n = x_all.shape[0]
    y_all = _condition_labels(model, data, split, labels, n)
    if n == 0:
        raise DataError(f"the {split} split is empty: nothing to evaluate")
    kind, levels = figure_kind(model, x_all, data, levels)
    shift = 0.0  # D log L, subtracted from log p, the ELBO and the reconstruction of a dequantized bound
    if kind == DEQUANTIZED:
        x_all = dequantize(x_all, levels, seed)
        shift = dequantization_nats(tuple(x_all.shape[1:]), levels)
    return x_all, y_all, kind, levels, shift


def _plan(ev: _Evaluation, device: str | torch.device | None, batch_size: int | None) -> None:
    """Move the model to ``device`` (when given) and into eval mode, and fill in ``ev``'s device, dtype, batch
    size, draws per chunk (:func:`plan_chunks`) and the generator of the draws, seeded with ``ev.seed``."""
    if device is not None:
        if isinstance(device, str):
            device = resolve_device(device)
        ev.model = ev.model.to(device)
    ev.device, ev.dtype = _model_device_dtype(ev.model)
    ev.was_training = ev.model.training
    ev.model.eval()
    latent = int(ev.model.latent_size)
    ev.batch_size, ev.k_chunk = plan_chunks(ev.model, ev.n, ev.k, latent, batch_size, ev.memory_budget, ev.device)
    ev.generator = torch.Generator(device=ev.device).manual_seed(int(ev.seed))


def _run_passes(ev: _Evaluation, progress: Callable[[int, int], None] | None, exact_limit: int,
                surgery_samples: int, data: Any, class_labels: Any) -> _Passes:
    """Every pass over the data, in the model's frozen context where it has one (a VampPrior encodes its
    pseudo-inputs once): the K draws per example, the ELBO surgery, the clustering and the variance floor; then
    the exact sum over every code when the prior has at most ``exact_limit`` of them. The model's training mode
    is restored after, whatever happens."""
    t0 = time.perf_counter()
    frozen = getattr(ev.model, "frozen", None)  # e.g. the VampPrior encodes its pseudo-inputs once
    try:
        with frozen() if frozen is not None else contextlib.nullcontext():
            enumerable = exact_limit > 0 and is_enumerable(ev.model, exact_limit)  # p(z) built in the frozen context
            passes = _draw_batches(ev, progress)
            passes.seconds = time.perf_counter() - t0
            # in the same frozen prior (a VampPrior's components encoded once per evaluation)
            passes.surgery = _surgery(ev.model, ev.x, ev.y, surgery_samples, ev.seed, ev.device, ev.dtype)
            passes.clusters = _clustering(ev.model, ev.x, ev.y, data, ev.split, class_labels, ev.device, ev.dtype)
            passes.floor = _floor_fraction(ev.model, passes.parts["code"], ev.y, ev.device, ev.dtype)
        if enumerable:  # every code decoded once for all examples
            t1 = time.perf_counter()
            phase = getattr(progress, "phase", None)
            passes.exact = enumerated_bound(ev.model, ev.x, ev.y, memory_budget=ev.memory_budget, fast=ev.fast,
                                            progress=phase("the exact sum over every code", "codes", "--exact-limit")
                                            if phase else None)
            passes.exact_seconds = time.perf_counter() - t1
    finally:
        ev.model.train(ev.was_training)
    return passes


def _draw_batches(ev: _Evaluation, progress: Callable[[int, int], None] | None) -> _Passes:
    """:func:`log_weight_stats` of every batch of examples, K draws each, gathered on the CPU in float64;
    ``progress(done, N)`` is called with 0 first, then after every batch."""
    n, bsz = ev.n, ev.batch_size
    passes = _Passes({key: [] for key in (*_STAT_KEYS, "code", "kl_units")})
    if progress is not None:
        progress(0, n)  # the work starts: a bar shows now, not after the first batch
    for start in range(0, n, bsz):
        x = ev.x[start : start + bsz].to(device=ev.device, dtype=ev.dtype)
        y = ev.y[start : start + bsz].to(ev.device) if ev.y is not None else None
        stats = log_weight_stats(ev.model, x, ev.k, ev.k_chunk, ev.generator, ev.fast, y)
        for key in passes.parts:
            if key in stats:
                passes.parts[key].append(stats[key].detach().to("cpu", torch.float64))
        if "groups" in stats:
            passes.groups = int(stats["groups"])
        if progress is not None:
            progress(min(n, start + bsz), n)
    return passes


def _summarise(ev: _Evaluation, passes: _Passes, per_example: bool) -> EvaluationResult:
    """The :class:`EvaluationResult` of the gathered statistics: means over the examples and their standard
    errors, nats per example; bits/dim = NLL / (D ln 2)."""
    arr = _example_arrays(ev, passes.parts)
    gap = arr["log_px"] - arr["elbo"]
    d = ev.x.shape[1]
    nll = -arr["log_px"]
    latent_var = _latent_variance(passes.parts["code"], passes.groups, ev.n)
    kl_per_dim, kl_analytic = _unit_kls(passes.parts["kl_units"], ev.batch_size, ev.n)
    bpd = 1.0 / (d * math.log(2))
    per = _per_example(arr, gap, ev.k, ev.n) if per_example else None
    notes = _result_notes(ev, arr["ess"], passes.floor)
    khat = torch.from_numpy(arr["pareto_k"])
    notes += [note for note in (khat_note(khat, ev.k),) if note]
    fields = _exact_fields(passes.exact, arr["log_px"], bpd, ev.k, notes, ev.shift)
    exact, shift, surgery, seconds, n, k = passes.exact, ev.shift, passes.surgery, passes.seconds, ev.n, ev.k
    if per is not None and exact is not None:
        per |= {"exact_log_px": exact.log_px.cpu().numpy() - shift, "exact_elbo": exact.elbo.cpu().numpy() - shift,
                "exact_gap": exact.gap.cpu().numpy()}
    return EvaluationResult(
        rate_stderr=_stderr(arr["kl"]), distortion_stderr=_stderr(arr["reconstruction"]),
        mutual_information=surgery.mutual_information if surgery else None,
        mutual_information_stderr=surgery.mutual_information_stderr if surgery else None,
        marginal_kl=surgery.marginal_kl if surgery else None,
        marginal_kl_stderr=surgery.marginal_kl_stderr if surgery else None, clustering=passes.clusters,
        elbo=float(arr["elbo"].mean()), reconstruction=float(arr["reconstruction"].mean()),
        kl=float(arr["kl"].mean()), nll=float(nll.mean()), nll_stderr=_stderr(nll),
        elbo_stderr=_stderr(arr["elbo"]), bits_per_dim=float(nll.mean() * bpd), gap=float(gap.mean()),
        gap_stderr=_stderr(gap), active_units=int((latent_var > ACTIVE_THRESHOLD).sum()), kl_per_dim=kl_per_dim,
        k=k, n=n, seconds=seconds, data_dim=d, bits_per_dim_stderr=_stderr(nll) * bpd, kl_analytic=kl_analytic,
        latent_variance=latent_var.tolist(), mean_ess=float(arr["ess"].mean()),
        log_weights_per_second=n * k / seconds if seconds > 0 else math.inf, batch_size=ev.batch_size,
        k_chunk=ev.k_chunk, seed=int(ev.seed), split=ev.split,
        likelihood=str(getattr(getattr(ev.model, "likelihood", None), "name", "")), notes=notes, per_example=per,
        unit="group" if passes.groups is not None else "unit", exact_seconds=passes.exact_seconds,
        log_px_kind=ev.kind, levels=ev.levels, dequantization_nats=shift + ev.log_jacobian,
        log_jacobian=ev.log_jacobian, variance_floor_fraction=passes.floor,
        pareto_k_fraction=khat_fraction(khat),
        **fields,
    )


def _example_arrays(ev: _Evaluation, parts: dict[str, list[torch.Tensor]]) -> dict[str, np.ndarray]:
    """The per-example log p(x), ELBO, reconstruction, KL (nats) and ESS, float64 arrays (N,); log p(x) must be
    finite. For a dequantized bound the first three have D log L subtracted: E_u log p((k + u) / L) - D log L."""
    arr = {key: torch.cat(parts[key]).numpy() for key in _STAT_KEYS}
    if not np.isfinite(arr["log_px"]).all():
        raise VaekitError(f"log p(x) is not finite for {int((~np.isfinite(arr['log_px'])).sum())} examples; "
                          "the model or the data is broken (NaN weights, or data outside the likelihood's support)")
    for key in ("log_px", "elbo", "reconstruction") if ev.shift else ():
        arr[key] = arr[key] - ev.shift  # the dequantized bound: E_u log p((k + u) / L) - D log L
    return arr


def _latent_variance(codes: list[torch.Tensor], groups: int | None, n: int) -> torch.Tensor:
    """Cov_x(E_q[z_j]) per unit over the N examples' point codes (0 for one example); for G groups of one-hot
    codes the total variance of each group's class probabilities, (G,)."""
    code = torch.cat(codes)
    latent_var = code.var(0, unbiased=False) if n > 1 else torch.zeros(code.shape[1], dtype=torch.float64)
    if groups is not None:  # one-hot groups: the total variance of each group's class probabilities
        latent_var = latent_var.reshape(groups, -1).sum(-1)
    return latent_var


def _unit_kls(units: list[torch.Tensor], batch_size: int, n: int) -> tuple[list[float], float | None]:
    """(the mean closed-form KL(q_j || p_j) per unit, or per group of one-hot codes; their sum KL(q || p(z))), nats;
    ([], None) unless every batch has them."""
    # per unit only where q(z|x) and p(z) factorise over units with a closed-form KL (distributions.kl);
    # not with a flow, a mixture prior or a two-level model
    if len(units) * batch_size >= n and units:
        per_dim = torch.cat(units)
        return per_dim.mean(0).tolist(), float(per_dim.sum(1).mean())
    return [], None


def _per_example(arr: dict[str, np.ndarray], gap: np.ndarray, k: int, n: int) -> dict[str, np.ndarray]:
    """The per-example arrays of a result, nats: log p(x), ELBO, reconstruction, KL, gap, ESS, the Pareto k-hat and
    the Monte Carlo standard error of log p(x), sqrt(1/ESS - 1/K) (NaN for K = 1)."""
    return {"log_px": arr["log_px"], "elbo": arr["elbo"], "reconstruction": arr["reconstruction"],
            "kl": arr["kl"], "gap": gap, "ess": arr["ess"], "pareto_k": arr["pareto_k"],
            "log_px_stderr": np.sqrt(np.clip(1.0 / arr["ess"] - 1.0 / k, 0.0, None)) if k > 1
            else np.full(n, np.nan)}


def _result_notes(ev: _Evaluation, ess: np.ndarray, floor: float | None) -> list[str]:
    """The caveats of :func:`_notes`, after a note on a density fitted after training (an autoencoder's)."""
    notes = _notes(ev.model, ess, ev.k, kind=ev.kind, levels=ev.levels, dim=ev.x.shape[1], seed=int(ev.seed),
                   floor=floor)
    from vaekit.analysis.posthoc import density_note

    note = density_note(ev.model)  # an autoencoder's, or decoder + a density fitted to q(z|x)'s draws
    if note is not None:
        notes.insert(0, note)
    if ev.log_jacobian:
        notes.append(f"the data are a standardised table, u = (x - m) / s (the training split's mean and SD): log "
                     f"p(x), the ELBO and the reconstruction are in the original units of x, the model's figures "
                     f"for u plus the log-Jacobian -sum_d log s_d = {ev.log_jacobian:.4f} nats per example")
    return notes


def _surgery(model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None, samples: int, seed: int,
             device: torch.device,
             dtype: torch.dtype) -> Any:
    """ELBO surgery on the evaluated examples, or None (disabled, a flow, one example)."""
    from vaekit.analysis.surgery import elbo_surgery, supports_surgery

    if samples <= 0 or x.shape[0] < 2 or not supports_surgery(model):
        return None
    return elbo_surgery(model, x.to(device=device, dtype=dtype), samples=samples, seed=seed, y=y)


def _clustering(model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None, data: Any, split: str, labels: Any,
                device: torch.device, dtype: torch.dtype) -> dict[str, Any] | None:
    """The clustering accuracy of a model's cluster variable against the class labels, when both exist."""
    from vaekit.analysis.clustering import cluster_count, clustering_report

    if cluster_count(model) is None:
        return None
    if labels is None:
        getter = getattr(data, "labels", None)
        labels = getter(split) if callable(getter) else getattr(data, f"{split}_labels", None)
    if labels is None:
        return None
    labels = torch.as_tensor(labels).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        return None
    with torch.no_grad():
        report = clustering_report(model, x.to(device=device, dtype=dtype), labels, y=y)
    if getattr(model, "condition", 0):  # q(z|x, y) saw the labels themselves
        report["note"] = "the model is conditional on the labels, so this accuracy is not a clustering of x alone"
    return report


#: An importance-sampled log p(x) this many nats below the exact one is flagged.
IWAE_SHORTFALL = 0.05


def _exact_fields(exact: EnumeratedBound | None, iwae: np.ndarray, bpd: float, k: int,
                  notes: list[str], shift: float = 0.0) -> dict[str, Any]:
    """The exact results' fields of :class:`EvaluationResult`; a note when IWAE_K falls short of them.
    ``shift``: D log L of a dequantized bound, subtracted from the exact log p(x) and ELBO as from ``iwae``."""
    if exact is None:
        return {}
    log_px, elbo, gap = (t.cpu().numpy() for t in (exact.log_px, exact.elbo, exact.gap))
    log_px, elbo = log_px - shift, elbo - shift
    if not np.isfinite(log_px).all():
        raise VaekitError(f"the exact log p(x) is not finite for {int((~np.isfinite(log_px)).sum())} examples; "
                          "the model or the data is broken (NaN weights, or data outside the likelihood's support)")
    nll = -log_px
    short = float((log_px - iwae).mean())
    if short > IWAE_SHORTFALL:
        notes.append(f"the importance-sampled log p(x) (K = {k}) is {short:.3f} nats below the exact one on average; "
                     "the exact NLL is the figure to report")
    return {"nll_exact": float(nll.mean()), "nll_exact_stderr": _stderr(nll), "bits_per_dim_exact": float(nll.mean()
            * bpd), "elbo_exact": float(elbo.mean()), "elbo_exact_stderr": _stderr(elbo), "gap_exact":
            float(gap.mean()), "gap_exact_stderr": _stderr(gap), "exact_codes": exact.codes}


#: Below this median effective sample size the importance-sampled log p(x) is flagged as unreliable.
LOW_ESS = 10.0


def _notes(model: LatentVariableModel, ess: np.ndarray, k: int, *, kind: str = "", levels: int | None = None,
           dim: int = 0,
           seed: int = 0, floor: float | None = None) -> list[str]:
    """Caveats for the reader: a low ESS, what log p(x) is (a density, a dequantised bound, a cross-entropy),
    a Gaussian variance at its floor."""
    notes = []
    med = float(np.median(ess))
    if k >= 2 * LOW_ESS and med < LOW_ESS:
        notes.append(f"the importance weights are dominated by a few draws (median ESS {med:.1f} of K = {k}): "
                     "log p(x) is probably underestimated and its spread understated; increase K")
    lik = getattr(model, "likelihood", None)
    name = f"the {getattr(lik, 'name', '') or type(lik).__name__} likelihood"
    if kind == DENSITY and getattr(lik, "real_support", False) and getattr(lik, "mean_map", "identity") == "identity":
        notes.append(f"{name} makes log p(x) a density on R^D (nats), which can exceed 0 (NLL < 0)")
    elif kind == DENSITY:
        what = ("on binary data it is no probability of the pixels (a Bernoulli is)" if levels == 2 else
                "no probability of discrete values: for integer-valued data give their grey levels (levels=L; "
                "vaekit evaluate takes them from the data set) for the dequantised bound")
        notes.append(f"{name} makes log p(x) a density on [0, 1]^D, which can exceed 0 (NLL < 0); {what}")
    elif kind == DEQUANTIZED:
        notes.append(f"{name} is a density, so log p(x), the ELBO and bits/dim are the dequantised lower bound on "
                     f"the log-probability of the {levels}-level values: log P(x) >= E_u log p((k + u) / L) - "
                     f"D log L with k = x (L - 1), L = {levels}, u ~ U[0, 1)^D drawn once per example (seed "
                     f"{seed} + {DEQUANTIZATION_SEED_OFFSET}); D log L = {dim * math.log(levels):.2f} nats "
                     f"({math.log2(levels):.4g} bits/dim) subtracted")
    elif kind == CROSS_ENTROPY:
        grey = f"{levels} grey levels" if levels is not None else "grey levels"
        notes.append(f"{name} is a probability of binary pixels but the data are not binary ({grey}): log p(x) "
                     "and bits/dim here are a cross-entropy against grey targets, not a log-likelihood; train "
                     "with --binarize dynamic or threshold, or with a likelihood of the grey levels "
                     "(discretized-logistic)")
    if floor is not None and floor > FLOOR_NOTE_FRACTION:
        bound = getattr(lik, "min_log_var", None)
        at = f" (log sigma^2 = {bound:g})" if isinstance(bound, (int, float)) else ""
        notes.append(f"the learned Gaussian variance sits at its floor{at} for {100 * floor:.1f}% of the pixels of "
                     f"the decoded codes of the first {FLOOR_EXAMPLES} examples: the density is as narrow as allowed "
                     "there (pixels that barely vary, such as constant borders), which inflates log p(x) at the "
                     "data's values (a lower floor would inflate it more); a discrete likelihood has no such floor")
    return notes


#: A learned variance at its floor on more than this fraction of the pixels is noted.
FLOOR_NOTE_FRACTION = 0.01
#: Examples whose decoded point codes the variance floor is measured on.
FLOOR_EXAMPLES = 256


@torch.inference_mode()
def _floor_fraction(model: LatentVariableModel, codes: list[torch.Tensor], y: torch.Tensor | None, device: torch.device,
                    dtype: torch.dtype) -> float | None:
    """The likelihood's :meth:`~vaekit.components.base.Likelihood.floor_fraction` on the decoded point codes of
    the first :data:`FLOOR_EXAMPLES` examples; None for a likelihood without a scale floor."""
    from vaekit.components.base import Likelihood

    lik = getattr(model, "likelihood", None)
    if not isinstance(lik, Likelihood) or type(lik).floor_fraction is Likelihood.floor_fraction or not codes:
        return None
    z = torch.cat(codes)[:FLOOR_EXAMPLES].to(device=device, dtype=dtype)
    yb = y[: z.shape[0]].to(device) if y is not None else None
    return lik.floor_fraction(model.decode(z, yb) if yb is not None else model.decode(z))


def _condition_labels(model: LatentVariableModel, data: Any, split: str, labels: Any, n: int) -> torch.Tensor | None:
    """The labels a conditional model is evaluated with, (N,) int64; None for other models."""
    if not getattr(model, "condition", 0):
        return None
    if labels is None:
        getter = getattr(data, "labels", None)
        labels = getter(split) if callable(getter) else None
    if labels is None:
        raise DataError(f"the model is conditional: give the labels of the images ({argument('labels')}=..., or a "
                        "data set with labels)")
    y = torch.as_tensor(labels).long().reshape(-1)
    if y.shape[0] != n:
        raise DataError(f"got {y.shape[0]} labels for {n} images")
    return y


# -- runs -----------------------------------------------------------------------------------------


def read_run_config(run: str | Path) -> dict[str, Any]:
    """The training config of a run (``RUN/config.json``) as a dict; {} when it is absent."""
    from vaekit.io.runfolder import RunFolder

    return RunFolder(run).read_config(resuming=False)


def load_model(run: str | Path, device: str | torch.device | None = None) -> Any:
    """The best weights of a run (safetensors only), on ``device`` (``auto`` allowed)."""
    from vaekit.models import load_model as load

    run = Path(run)
    if not run.exists():
        raise CheckpointError(f"run directory {run} not found; give a directory written by 'vaekit train'")
    model = load(run)
    if device is not None:
        model = model.to(resolve_device(str(device)) if isinstance(device, str) else device)
    model.eval()
    return model


def _load_dataset(spec: str, data_dir: str | None, binarize: str | None, seed: int,
                  splits: tuple[str, ...] | None = None, **options: Any) -> Any:
    """``vaekit.data.load_dataset`` of ``splits`` only (all when None), with the run's ``image_size`` and
    ``limit`` when it set them: a separate function so that tests can replace it."""
    from vaekit.data import load_dataset

    return load_dataset(spec, data_dir=data_dir, binarize=binarize, seed=seed, splits=splits, **options)


def _data_options(cfg: dict[str, Any], cfg_path: Path) -> dict[str, Any]:
    """The run's ``image_size``, ``limit``, ``standardise`` and ``label_column`` (those it set), checked."""
    options: dict[str, Any] = {key: cfg[key] for key in ("image_size", "limit") if cfg.get(key) is not None}
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(f"{cfg_path} is corrupt: {key} is {str(value)[:40]!r}, expected a whole number >= 1")
    for key, kind in (("standardise", bool), ("label_column", str)):
        if cfg.get(key) is not None:
            if not isinstance(cfg[key], kind):
                raise CheckpointError(f"{cfg_path} is corrupt: {key} is {str(cfg[key])[:40]!r}")
            options[key] = cfg[key]
    return options


def load_run_data(run: str | Path, *, data_dir: str | None = None, dataset: Any = None,
                  dataset_name: str | None = None, split: str | None = None) -> Any:
    """The data set a run was trained on (from ``RUN/config.json``), or ``dataset`` when given.

    ``data_dir`` overrides the run's data folder and ``dataset_name`` its data set. ``split``: load only that
    split (the others are empty), so that evaluating the test split needs only the test files (MNIST's
    ``t10k-`` files, say) and never fetches the training files; None loads all three.
    """
    if split is not None and split not in ("train", "valid", "test"):
        raise VaekitError(f"unknown split {split!r}; choose train, valid or test")
    if dataset is not None:
        return dataset
    cfg = read_run_config(run)
    cfg_path = Path(run) / "config.json"
    for key in ("dataset", "data_dir", "binarize"):
        if not isinstance(cfg.get(key), (str, type(None))):
            raise CheckpointError(f"{cfg_path} is corrupt: {key} is {str(cfg[key])[:40]!r}, expected a string")
    seed = cfg.get("seed", 0)
    if seed is None:
        seed = 0
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63):
        raise CheckpointError(f"{cfg_path} is corrupt: seed is {str(seed)[:40]!r}, expected a whole number >= 0")
    name = dataset_name or cfg.get("dataset")
    if not name:
        raise CheckpointError(f"{Path(run) / 'config.json'} not found, so the data set is unknown; "
                              "pass --dataset NAME (e.g. digits)")
    if name == "in-memory":
        raise CheckpointError(f"{run} was trained by vaekit.fit on data held in memory; pass --dataset NAME "
                              "(and --data-dir), or evaluate it in Python: vaekit.evaluate(model, x)")
    where = data_dir if data_dir is not None else cfg.get("data_dir")
    options = _data_options(cfg, cfg_path) if name == cfg.get("dataset") else {}
    if name == cfg.get("dataset") and cfg.get("standardisation") is not None:  # a table: as stored with the run
        options["standardisation"] = cfg["standardisation"]
    if split is None:
        return _load_dataset(name, where, cfg.get("binarize"), seed, **options)
    return _load_dataset(name, where, cfg.get("binarize"), seed, splits=(split,), **options)


def split_images(ds: Any, split: str = "test", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images (N, C, H, W), labels or None) of a split. A dynamically binarized training split is
    binarized once with ``seed`` (the valid and test splits already are)."""
    if split not in ("train", "valid", "test"):
        raise VaekitError(f"unknown split {split!r}; choose train, valid or test")
    getter = getattr(ds, "split", None)
    x = getter(split) if callable(getter) else getattr(ds, split)
    labels_of = getattr(ds, "labels", None)
    y = labels_of(split) if callable(labels_of) else getattr(ds, f"{split}_labels", None)
    if split == "train" and bool(getattr(ds, "dynamic", False)):
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(int(seed)))
    return x, y


def check_shape(model: LatentVariableModel, x: torch.Tensor, where: str = "the data") -> None:
    shape = tuple(getattr(model, "shape", None) or ())
    if shape and tuple(x.shape[1:]) != shape and math.prod(x.shape[1:]) != math.prod(shape):
        fix = "give data of that shape" if in_python_call() else \
            "pass the data set the run was trained on (--dataset / --data-dir)"
        raise DataError(f"{where} has images of shape {tuple(x.shape[1:])} but the model was trained on {shape}; {fix}")


def evaluate_run(run: str | Path, split: str = "test", k: int = DEFAULT_K, batch_size: int | None = None,
                 seed: int = 0, device: str | None = None, *, data_dir: str | None = None, dataset: Any = None,
                 dataset_name: str | None = None, limit: int | None = None, per_example: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 exact_limit: int = DEFAULT_LIMIT,
                 surgery_samples: int = DEFAULT_SURGERY_SAMPLES, ais: AISSettings | None = None,
                 gaps: GapSettings | None = None) -> EvaluationResult:
    """Load a run's best model and ``split`` of its data set (that split alone), and :func:`evaluate_model` on
    it; the result says which validation score chose the weights. ``limit``: evaluate a fixed random subset of
    ``limit`` examples chosen with ``seed`` (:func:`limit_split`: class-balanced when the data set has labels,
    else uniform; never simply the first ``limit``), named in the result's notes. ``ais``, ``gaps``: as for
    :func:`evaluate_model`."""
    model = load_model(run, device)
    ds = load_run_data(run, data_dir=data_dir, dataset=dataset, dataset_name=dataset_name, split=split)
    x, y = split_images(ds, split, seed)
    subset = None
    if limit is not None:
        x, y, subset = limit_split(x, y, limit, seed, split)
    check_shape(model, x, f"the {split} split")
    result = evaluate_model(model, x, k=k, batch_size=batch_size, seed=seed, split=split, per_example=per_example,
                            progress=progress, labels=y if getattr(model, "condition", 0) else None,
                            exact_limit=exact_limit, class_labels=y, surgery_samples=surgery_samples,
                            levels=getattr(ds, "levels", None), ais=ais, gaps=gaps,
                            log_jacobian=data_log_jacobian(ds))
    result.selected_by = selected_by(run)
    if subset is not None:
        result.notes.append(f"evaluated on {subset}")
    return result


def limit_split(x: torch.Tensor, y: torch.Tensor | None, limit: int, seed: int = 0,
                split: str = "test") -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(images, labels, what was chosen) of a fixed random subset of ``limit`` examples of a split:
    class-balanced when there are labels, else uniformly random, drawn with ``seed``
    (:func:`vaekit.data.base.subset_indices`); all of them when ``limit`` is at least their number."""
    from vaekit.data.base import describe_subset, subset_indices

    idx = torch.from_numpy(subset_indices(y, int(limit), seed, size=len(x)))
    what = describe_subset(y, int(limit), len(x), seed, split)
    return x[idx], (y[idx] if y is not None else None), what


def selected_by(run: str | Path) -> str | None:
    """The validation score that chose a run's kept weights: what its metrics say, else what the trainer of
    its time used (the IWAE bound for an IWAE run, the ELBO otherwise); None for a model folder."""
    from vaekit.io.runs import read_metrics

    path = Path(run)
    if not (path / "metrics.jsonl").is_file():
        return None
    rows = read_metrics(path)
    for row in reversed(rows):
        if isinstance(row.get("selected_by"), str):
            return row["selected_by"]
    try:
        cfg = read_run_config(path)
    except VaekitError:
        cfg = {}
    from vaekit.config import named

    if named(cfg, "objective") == "iwae":
        return f"valid IWAE bound (k = {cfg.get('k')})"
    return "valid ELBO"


@keywords_checked
def evaluate(model: LatentVariableModel, x: Any, k: int = DEFAULT_K, seed: int = 0, *, y: Any = None,
             batch_size: int | None = None, split: str = "test", device: str | torch.device | None = None,
             per_example: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET,
             exact_limit: int = DEFAULT_LIMIT, class_labels: Any = None,
             surgery_samples: int = DEFAULT_SURGERY_SAMPLES, levels: int | None = None,
             ais: AISSettings | None = None, gaps: GapSettings | None = None) -> EvaluationResult:
    """The :class:`EvaluationResult` that ``vaekit evaluate`` prints, for a model and images x (N, C, H, W)
    (a tensor, an array or a vaekit data set's ``split``): the ELBO, log p(x) by importance sampling with
    ``k`` draws (``.nll``, ``.nll_stderr``), the gap, the active units, all in nats; for discrete latents
    with at most ``exact_limit`` codes also the exact ``.nll_exact`` by a sum over every code. ``y``: labels
    of a conditional model. ``levels``: the grey levels L of x (a density on L-level data is then evaluated as
    the dequantised bound; see the module docstring). ``ais`` (:class:`~vaekit.bounds.ais.AISSettings`): also
    log p(x) by annealed importance sampling (``.ais_log_px``); ``gaps``
    (:class:`~vaekit.evaluation.annealed.GapSettings`): also the approximation and amortization gaps. Deterministic
    for a given ``seed``. ``x`` may also be a torch ``Dataset`` (or ``DataLoader``) of images or (image, label)
    pairs, held in memory; it is checked as :func:`vaekit.fit` checks its data (:mod:`vaekit.data.given`,
    :mod:`vaekit.objectives.support`: values in [0, 1] unless the likelihood is a density on the real line, on the
    grid of a likelihood of grey levels), each refusal one error naming the argument, before any work."""
    with python_call(labels="y"):  # messages name evaluate()'s arguments
        x, y, class_labels = _python_data(model, x, y, class_labels, split, levels)
        return evaluate_model(model, x, k=k, batch_size=batch_size, seed=seed, device=device, split=split,
                              memory_budget=memory_budget, per_example=per_example, labels=y, exact_limit=exact_limit,
                              class_labels=class_labels, surgery_samples=surgery_samples, levels=levels, ais=ais,
                              gaps=gaps)


def _python_data(model: Any, x: Any, y: Any, class_labels: Any, split: str,
                 levels: int | None) -> tuple[Any, Any, Any]:
    """(data, labels, class labels) of an :func:`evaluate` call, checked: a vaekit model; x a vaekit data set (its
    ``split``) or what :func:`vaekit.data.given.examples` takes (a pair's or a Dataset's labels become ``y`` and
    the class labels where those are not given); x's values against the model's likelihood. ``split`` must be a
    split's name even where x is no data set (it then names the result)."""
    from vaekit.data.base import SPLITS
    from vaekit.data.given import check_classes, examples
    from vaekit.data.given import labels as checked_labels
    from vaekit.models.base import LatentVariableModel
    from vaekit.objectives.support import check_support

    if not isinstance(model, LatentVariableModel):
        raise ArgumentError(f"evaluate() evaluates a vaekit model (model: e.g. vaekit.load(RUN) for a run folder, or "
                            f"the model vaekit.fit trained); got a {type(model).__name__}")
    if not isinstance(split, str) or split not in SPLITS:
        raise ArgumentError(f"evaluate() takes split='train', 'valid' or 'test' (the split of a vaekit data set to "
                            f"evaluate; for other data it names the result); got split={short(repr(split))}")
    if _is_vaekit_data(x):
        check_support(model, _flat_data(x, split), "x", training=False, levels=levels or getattr(x, "levels", None))
        return x, y, class_labels
    x, pair_labels = examples(x, "x")
    check_shape(model, x, "x")
    check_support(model, x.reshape(x.shape[0], -1), "x", training=False, levels=levels)
    y = checked_labels(y, "y", x.shape[0]) if y is not None else pair_labels
    check_classes(y, int(getattr(model, "condition", 0) or 0), "y")
    if class_labels is not None:
        class_labels = checked_labels(class_labels, "class_labels", x.shape[0])
    return x, y, class_labels if class_labels is not None else pair_labels


def _is_vaekit_data(data: Any) -> bool:
    """Whether ``data`` is a vaekit data set (splits by name), not a tensor, array or torch Dataset."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, (torch.Tensor, np.ndarray, tuple, list, Dataset, DataLoader)):
        return False
    return callable(getattr(data, "split", None)) or isinstance(getattr(data, "test", None), torch.Tensor)


def _pm_cell(v: float | None, se: float | None, fmt: str = ".3f") -> str:
    """A table's value, with its standard error where it has a finite one."""
    v = math.nan if v is None else v
    se = math.nan if se is None else se
    return f"{v:{fmt}}" + (f" +- {se:{fmt}}" if math.isfinite(se) else "")


def _row_text(label: str, value: str, tail: str = "") -> str:
    return f"  {label:<24} {value:>24}{tail}"


def format_table(r: EvaluationResult) -> str:
    """A readable table of an :class:`EvaluationResult`; it names the NLL it reports (importance sampled with
    K draws, or exact by a sum over every code), or for a VQ-VAE its one bound, ``vq_elbo``."""
    pm, row = _pm_cell, _row_text
    if r.vq_elbo is not None:
        return _vq_table(r, pm, row)
    if r.m2_classes is not None:
        from vaekit.evaluation.m2 import m2_rows

        return "\n".join(m2_rows(r, pm, row))
    lines = [
        f"{r.split or 'data'}: {r.n} examples, K = {r.k} importance samples, {r.seconds:.1f} s "
        f"({r.log_weights_per_second:,.0f} log-weights/s)",
        row("ELBO", pm(r.elbo, r.elbo_stderr), " nats"),
        row("  reconstruction", f"{r.reconstruction:.3f}", " nats"),
        row("  KL(q(z|x) || p(z))", f"{r.kl:.3f}", " nats"),
        row(f"{r.log_px_label}, K = {r.k}", pm(-r.nll, r.nll_stderr), " nats  (importance sampled"
            + ("; dequantized, a lower bound: see the note)" if r.dequantized else ")")),
        row(f"NLL (IWAE K={r.k})", pm(r.nll, r.nll_stderr), " nats"),
        row("", pm(r.bits_per_dim, r.bits_per_dim_stderr, ".4f"), " bits/dim"),
        row("gap log p(x) - ELBO", pm(r.gap, r.gap_stderr), " nats  (~ KL(q(z|x) || p(z|x)))"),
    ]
    lines += _annealed_rows(r, pm, row)
    if r.nll_exact is not None:
        bpd = r.bits_per_dim_exact / r.nll_exact if r.bits_per_dim_exact is not None and r.nll_exact else math.nan
        se = r.nll_exact_stderr if r.nll_exact_stderr is not None else math.nan
        lines += [
            f"  NLL (exact, sum over {r.exact_codes:,} codes, {r.exact_seconds:.1f} s)",
            row("", pm(r.nll_exact, se), " nats"),
            row("", pm(r.bits_per_dim_exact, se * bpd, ".4f"), " bits/dim"),
            row("ELBO (exact)", pm(r.elbo_exact, r.elbo_exact_stderr), " nats"),
            row("gap (exact)", pm(r.gap_exact, r.gap_exact_stderr), " nats  (= KL(q(z|x) || p(z|x)))"),
        ]
    lines += [row("rate R = KL term", pm(r.rate, r.rate_stderr), " nats"),
              row("distortion D", pm(r.distortion, r.distortion_stderr), " nats  (R + D = -ELBO)")]
    if r.mutual_information is not None:
        lines += [row("  I_q(x; z)", pm(r.mutual_information, r.mutual_information_stderr),
                      f" nats  (at most log N = {math.log(r.n):.2f})"),
                  row("  KL(q(z) || p(z))", pm(r.marginal_kl, r.marginal_kl_stderr), " nats  (aggregate posterior)")]
    if r.clustering is not None:
        c = r.clustering
        lines.append(row("clustering accuracy", f"{c['accuracy']:.4f}",
                         f"  ({c['matching']} matching of {c['clusters']} clusters to {c['classes']} labels)"))
    if r.selected_by:
        lines.append(row("weights chosen by", r.selected_by))
    group = r.unit == "group"
    lines += [
        row(f"active {'groups' if group else 'units'}", f"{r.active_units:d}",
            f" of {len(r.latent_variance)} (Cov_x E_q[z_j] > {ACTIVE_THRESHOLD}{', summed over k' if group else ''})"),
        row("mean ESS of the K draws", f"{r.mean_ess:.1f}"),
        *_pareto_rows(r, row),
    ]
    if r.kl_per_dim:
        top = sorted(range(len(r.kl_per_dim)), key=lambda j: -r.kl_per_dim[j])[:8]
        name = "group " if group else "z_"  # numbered from 1, as on the report's pages (vaekit.pages.viz.unit_name)
        lines.append(f"  {f'KL per {r.unit} (largest)':<24} " + ", ".join(f"{name}{j + 1}: {r.kl_per_dim[j]:.2f}"
                                                                           for j in top))
    lines += [f"note: {note}" for note in r.notes]
    return "\n".join(lines)


def _vq_table(r: EvaluationResult, pm: Callable[..., str], row: Callable[..., str]) -> str:
    """The table of a model whose q(z|x) is a point mass on one-hot codes (a VQ-VAE): its one bound."""
    se = r.vq_elbo_stderr if r.vq_elbo_stderr is not None else math.nan
    lines = [f"{r.split or 'data'}: {r.n} examples, {r.seconds:.1f} s",
             row(f"vq_elbo ({r.vq_prior} prior)", pm(r.vq_elbo, se), " nats  (log p(x|z_q) + log p(z_q) <= log p(x))"),
             row("  reconstruction", pm(r.reconstruction, r.distortion_stderr), " nats  (log p(x|z_q))"),
             row("  -log p(z_q)", pm(r.kl, r.rate_stderr), " nats  (= KL(q(z|x) || p(z)): q is a point mass)"),
             row("bits/dim from the bound", pm(r.vq_bits_per_dim, se / (r.data_dim * math.log(2)), ".4f"),
                 " (-vq_elbo / (D ln 2), an upper bound)")]
    if r.selected_by:
        lines.append(row("weights chosen by", r.selected_by))
    return "\n".join(lines + [f"note: {note}" for note in r.notes])


def _pareto_rows(r: EvaluationResult, row: Callable[..., str]) -> list[str]:
    """The table's row of the Pareto k-hat, where the K draws allowed one."""
    if r.pareto_k_fraction is None:
        return []
    return [row("Pareto k-hat > 0.7", f"{100 * r.pareto_k_fraction:.1f}%", " of the examples (untrusted)")]


def _annealed_rows(r: EvaluationResult, pm: Callable[..., str], row: Callable[..., str]) -> list[str]:
    """The table's rows of AIS and of the gap split, where they were computed."""
    lines = []
    if r.ais_log_px is not None:
        lines.append(row(f"{r.log_px_label}, AIS", pm(r.ais_log_px, r.ais_log_px_stderr),
                         f" nats  (T = {r.ais_steps}, C = {r.ais_chains}, L = {r.ais_leapfrog}; a stochastic lower "
                         f"bound, SE across chains; acceptance {r.ais_acceptance:.2f})"))
    if r.approximation_gap is not None:
        lines += [row("approximation gap", pm(r.approximation_gap, r.approximation_gap_stderr),
                      f" nats  (log p(x) [{r.gaps_log_px}] - ELBO[q*], q* fitted per example, {r.gaps_steps} steps)"),
                  row("amortization gap", pm(r.amortization_gap, r.amortization_gap_stderr),
                      " nats  (ELBO[q*] - ELBO[q_phi])")]
    return lines
