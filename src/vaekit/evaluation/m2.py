"""The evaluation of a semi-supervised M2 model (:mod:`vaekit.models.m2`): its test classification error and a
bound on log p(x) with the class y summed out exactly.

For each example x and each class y, K draws z_k ~ q(z|x, y) give an unbiased estimate of p(x, y), and their sum
over the C classes one of p(x); by Jensen's inequality its log is a stochastic lower bound on log p(x):

    log p(x)  >=  E[ log sum_y (1/K) sum_k p(x|y, z_k) p(y) p(z_k) / q(z_k|x, y) ]          (nats)

reported as ``nll`` (its negation, an upper bound in expectation, tighter as K grows), with C K decoder rows per
example (K draws per class: ``--k`` is per class). The same draws give the bound that training maximises,

    -U(x) = sum_y q(y|x) ELBO(x, y) + H(q(y|x)),   ELBO(x, y) ~ (1/K) sum_k log [p(x|y, z_k) p(y) p(z_k) / q(z_k|x, y)]

as ``elbo`` (with ``reconstruction`` and ``kl`` = KL(q(y, z|x) || p(y, z)) its terms), and the classifier's
``test_error`` = the fraction of examples whose argmax_y q(y|x) is not their label, with the binomial standard
error sqrt(e (1 - e) / N) (on whichever split is evaluated). No importance weights of a single proposal exist here,
so the ESS and the Pareto k-hat are not reported.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.bounds.sizing import CPU_ROWS, DEFAULT_MEMORY_BUDGET, bytes_per_row
from vaekit.errors import DataError, VaekitError

if TYPE_CHECKING:
    from vaekit.models.m2 import M2

#: The name of the bound on log p(x) reported for an M2 model (negated as ``nll``).
M2_BOUND = "log p(x) bound, y summed"
_LOG_2PI = math.log(2 * math.pi)


def _plan(model: M2, n: int, k: int, batch_size: int | None, memory_budget: int,
          device: torch.device) -> tuple[int, int]:
    """(examples per batch B, draws per class and chunk) so that C x draws x B decoder rows fit the budget."""
    rows = max(1, memory_budget // max(1, bytes_per_row(model, int(model.latent_size))))
    if device.type == "cpu":
        rows = min(rows, CPU_ROWS)
    per_example = model.classes
    b = batch_size if batch_size is not None else max(1, min(64, rows // (per_example * k) or 1))
    b = max(1, min(b, n, max(1, rows // per_example)))
    return b, max(1, min(k, rows // (per_example * b)))


@torch.no_grad()
def class_summed_bound(model: M2, x: torch.Tensor, k: int, k_chunk: int,
                       generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """For a batch x (B, ...): per example (B,), float64 nats, the bound on log p(x) with y summed
    (``log_px``), -U(x) (``elbo``) and its terms, and log q(y|x) (``log_pi``, (B, C)); see the module docstring."""
    xb = model.as_data(x)
    classes = model.classes
    log_pi = model.class_log_probs(xb).double()  # (B, C)
    x_all, onehot = model._every_class(xb)  # class-major: row c * B + i is example i with class c
    q = model.z_posterior(x_all, onehot)
    rows = x_all.shape[0]
    lse = torch.full((rows,), -math.inf, dtype=torch.float64, device=xb.device)
    sums = torch.zeros(2, rows, dtype=torch.float64, device=xb.device)  # sum_k log w, sum_k log p(x|y, z)
    for start in range(0, k, k_chunk):
        m = min(k_chunk, k - start)
        z = q.rsample((m,), generator)  # (m, C B, d)
        log_q = q.log_prob(z)
        log_pz = -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)
        params = model.decoder(z.reshape(m * rows, -1), onehot.repeat(m, 1))
        rec = model.likelihood.log_prob(x_all, params.reshape(m, rows, *params.shape[1:])).double()
        log_w = rec + (log_pz - log_q).double()
        lse = torch.logaddexp(lse, torch.logsumexp(log_w, 0))
        sums += torch.stack([log_w.sum(0), rec.sum(0)])
    log_py = -math.log(classes)
    per_class = (lse - math.log(k) + log_py).reshape(classes, -1)  # log p^(x, y), (C, B)
    elbo_y = (sums[0] / k + log_py).reshape(classes, -1).t()  # (B, C)
    rec_y = (sums[1] / k).reshape(classes, -1).t()
    pi = log_pi.exp()
    entropy = -(pi * log_pi).sum(-1)
    elbo = (pi * elbo_y).sum(-1) + entropy
    reconstruction = (pi * rec_y).sum(-1)
    return {"log_px": torch.logsumexp(per_class, 0), "elbo": elbo, "reconstruction": reconstruction,
            "kl": reconstruction - elbo, "log_pi": log_pi}


def _labels(labels: Any, n: int) -> torch.Tensor | None:
    if labels is None:
        return None
    y = torch.as_tensor(labels).long().reshape(-1)
    if y.shape[0] != n:
        raise DataError(f"got {y.shape[0]} labels for {n} images")
    return y


def _stderr(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def m2_fields(model: M2, x: torch.Tensor, labels: Any, *, k: int, seed: int, shift: float, device: torch.device,
              dtype: torch.dtype, batch_size: int | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
              per_example: bool = False) -> dict[str, Any]:
    """The figures of an M2 evaluation of images x (N, D) (and their ``labels``, for the test error), as keyword
    arguments of :class:`~vaekit.evaluation.EvaluationResult`; ``shift``: D log L nats subtracted (a dequantized
    bound), 0 otherwise."""
    y = _labels(labels, x.shape[0])
    n = x.shape[0]
    b, k_chunk = _plan(model, n, k, batch_size, memory_budget, device)
    gen = torch.Generator(device=device).manual_seed(int(seed))
    parts: dict[str, list[torch.Tensor]] = {key: [] for key in ("log_px", "elbo", "reconstruction", "kl", "log_pi")}
    t0 = time.perf_counter()
    for start in range(0, n, b):
        out = class_summed_bound(model, x[start : start + b].to(device=device, dtype=dtype), k, k_chunk, gen)
        for key in parts:
            parts[key].append(out[key].cpu())
    seconds = time.perf_counter() - t0
    arr = {key: torch.cat(v).numpy() for key, v in parts.items() if key != "log_pi"}
    for key in ("log_px", "elbo", "reconstruction"):
        arr[key] = arr[key] - shift
    if not np.isfinite(arr["log_px"]).all():
        raise VaekitError(f"the bound is not finite for {int((~np.isfinite(arr['log_px'])).sum())} examples; the "
                          "model or the data is broken (NaN weights, or data outside the likelihood's support)")
    guesses = torch.cat(parts["log_pi"]).argmax(-1)
    error = float((guesses != y).double().mean()) if y is not None else None
    nll, gap = -arr["log_px"], arr["log_px"] - arr["elbo"]
    bpd = 1.0 / (x.shape[1] * math.log(2))
    fields = {"elbo": float(arr["elbo"].mean()), "reconstruction": float(arr["reconstruction"].mean()),
              "kl": float(arr["kl"].mean()), "nll": float(nll.mean()), "nll_stderr": _stderr(nll),
              "elbo_stderr": _stderr(arr["elbo"]), "bits_per_dim": float(nll.mean()) * bpd,
              "bits_per_dim_stderr": _stderr(nll) * bpd, "gap": float(gap.mean()), "gap_stderr": _stderr(gap),
              "rate_stderr": _stderr(arr["kl"]), "distortion_stderr": _stderr(arr["reconstruction"]),
              "seconds": seconds, "log_weights_per_second": n * k * model.classes / seconds if seconds > 0
              else math.inf, "batch_size": b, "k_chunk": k_chunk, "test_error": error,
              "test_error_stderr": math.sqrt(error * (1 - error) / n) if error is not None else None,
              "m2_labels": int(model.labels), "m2_classes": int(model.classes)}
    if per_example:
        fields["per_example"] = {"log_px": arr["log_px"], "elbo": arr["elbo"], "reconstruction":
                                 arr["reconstruction"], "kl": arr["kl"], "guess": guesses.numpy()}
    return fields


def m2_notes(k: int, classes: int, labels: int, has_labels: bool) -> list[str]:
    """What the figures of an M2 evaluation are, in words."""
    notes = [f"M2 (trained with {labels} labels): log p(x) is log sum_y (1/K) sum_k p(x, y, z_k) / q(z_k|x, y) with "
             f"K = {k} draws z_k ~ q(z|x, y) for each of the {classes} classes (y summed exactly), a stochastic lower "
             "bound on log p(x), tighter as K grows; nll and bits_per_dim are its negation (upper bounds in "
             "expectation); elbo is -U(x) = sum_y q(y|x) ELBO(x, y) + H(q(y|x)) from the same draws"]
    if not has_labels:
        notes.append("the data have no labels, so test_error is not reported")
    return notes


def m2_rows(r: Any, pm: Any, row: Any) -> list[str]:
    """The table rows of an M2 evaluation (``r`` an EvaluationResult): the bound and the classification error."""
    lines = [f"{r.split or 'data'}: {r.n} examples, K = {r.k} draws per class x {r.m2_classes} classes, "
             f"{r.seconds:.1f} s",
             row("-U(x) (ELBO, y summed)", pm(r.elbo, r.elbo_stderr), " nats"),
             row("  reconstruction", f"{r.reconstruction:.3f}", " nats"),
             row("  KL(q(y,z|x) || p(y,z))", f"{r.kl:.3f}", " nats"),
             row(f"{M2_BOUND}, K = {r.k}", pm(-r.nll, r.nll_stderr), " nats  (a stochastic lower bound)"),
             row("NLL bound", pm(r.nll, r.nll_stderr), " nats"),
             row("", pm(r.bits_per_dim, r.bits_per_dim_stderr, ".4f"), " bits/dim")]
    if r.test_error is not None:
        lines.append(row(f"{r.split or 'data'} error of argmax q(y|x)", pm(100 * r.test_error,
                                                                          100 * r.test_error_stderr, ".2f"),
                         f" %  ({r.m2_labels} training labels)"))
    if r.selected_by:
        lines.append(row("weights chosen by", r.selected_by))
    return lines + [f"note: {note}" for note in r.notes]
