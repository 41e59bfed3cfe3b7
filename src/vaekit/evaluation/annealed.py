"""What ``vaekit evaluate --ais T [--gaps]`` adds to an evaluation: annealed importance sampling of log p(x) beside
IWAE_K, and the ELBO's gap split into approximation and amortization.

``ais_log_px`` is the mean over the examples of the per-example AIS estimates (:mod:`vaekit.bounds.ais`): a
*stochastic lower bound* on the mean log p(x), like IWAE_K, and usually a much tighter one at the same cost;
``ais_log_px_stderr`` is its Monte Carlo standard error across the chains (not over the examples, as
``nll_stderr`` is: the two figures are computed on the same examples, so their difference is measured against the
Monte Carlo errors alone). For a dequantized bound D log L is subtracted, as from log p(x).

``approximation_gap`` = log p(x) - ELBO[q*] and ``amortization_gap`` = ELBO[q*] - ELBO[q_phi]
(:mod:`vaekit.analysis.gaps`), with standard errors over the examples. log p(x) is AIS's where it was run, else
IWAE_K's (``gaps_log_px`` says which); both are lower bounds, so the approximation gap is, if anything,
underestimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vaekit.analysis.gaps import (
    DEFAULT_DRAWS,
    DEFAULT_EVAL_DRAWS,
    DEFAULT_LR,
    DEFAULT_STEPS,
    check_fittable,
    gap_decomposition,
)
from vaekit.bounds.ais import AISResult, AISSettings, ais, check_annealable

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: A mean acceptance rate below this (of the counted AIS run) is noted.
LOW_ACCEPTANCE = 0.2


@dataclass
class GapSettings:
    """How q* is fitted per example (:func:`vaekit.analysis.gaps.gap_decomposition`)."""

    steps: int = DEFAULT_STEPS
    draws: int = DEFAULT_DRAWS
    lr: float = DEFAULT_LR
    draws_eval: int = DEFAULT_EVAL_DRAWS


def check_annealed(model: LatentVariableModel, settings: AISSettings | None, gaps: GapSettings | None,
                   memory_budget: int) -> None:
    """Refuse, before any work, a model that AIS (``settings``) or the gap fit (``gaps``) cannot handle, and AIS
    chains whose memory is over ``memory_budget``."""
    if settings is not None:
        check_annealable(model, settings, memory_budget)
    if gaps is not None:
        check_fittable(model)


def _ais_fields(r: AISResult, shift: float, iwae: np.ndarray, iwae_se: float) -> tuple[dict[str, Any], list[str]]:
    """The result's AIS fields and notes (acceptance, AIS below IWAE_K)."""
    mean, se = r.mean - shift, r.mean_stderr
    fields = {"ais_log_px": mean, "ais_log_px_stderr": se, "ais_acceptance": float(r.acceptance.mean()),
              "ais_steps": r.steps, "ais_chains": r.chains, "ais_leapfrog": r.leapfrog, "ais_schedule": r.schedule,
              "ais_seconds": r.seconds, "ais_evaluations_per_second": r.evaluations_per_second}
    notes = [f"AIS (T = {r.steps} {r.schedule} temperatures, C = {r.chains} chains, L = {r.leapfrog} leapfrog steps) "
             "is a stochastic lower bound on log p(x), like IWAE_K; its standard error is the Monte Carlo error "
             "across chains"]
    if fields["ais_acceptance"] < LOW_ACCEPTANCE:
        notes.append(f"the HMC acceptance rate of AIS is low ({fields['ais_acceptance']:.2f}): the chains barely move "
                     "and AIS is loose; more leapfrog steps or temperatures help")
    diff = mean - float(iwae.mean())
    if diff < -3 * math.hypot(se, iwae_se):
        notes.append(f"AIS is {-diff:.3f} nats below IWAE_K on average: with T = {r.steps} it has not converged "
                     "(both are lower bounds: the larger is the better); increase --ais")
    return fields, notes


def add_annealed(result: Any, model: LatentVariableModel, x: torch.Tensor, y: torch.Tensor | None, shift: float,
                 iwae_log_px: np.ndarray, settings: AISSettings | None, gaps: GapSettings | None, seed: int,
                 memory_budget: int, per_example: bool, progress: Any = None) -> None:
    """Fill in ``result``'s AIS and gap fields (an :class:`~vaekit.evaluation.EvaluationResult`) for the evaluated
    examples x (N, D) (dequantized for a bound, whose D log L is ``shift``), given IWAE_K's per-example log p(x)
    ``iwae_log_px`` (shift subtracted); per-example arrays too when ``per_example``. ``progress``: a
    :class:`vaekit.progress.Bar` whose :meth:`~vaekit.progress.Bar.phase` follows AIS and the gap fit, or None."""
    phase = getattr(progress, "phase", None)
    per: dict[str, np.ndarray] = {}
    log_px = torch.from_numpy(iwae_log_px + shift)  # the gaps' log p(x), in the ELBO's own terms
    result.gaps_log_px = "iwae" if gaps is not None else None
    if settings is not None:
        r = ais(model, x, replace(settings, seed=seed), y=y, memory_budget=memory_budget,
                progress=phase(f"AIS, T = {settings.steps}", "temperatures", "--ais, --ais-chains or --limit")
                if phase else None)
        fields, notes = _ais_fields(r, shift, iwae_log_px, _iwae_mc_stderr(result, iwae_log_px))
        for key, value in fields.items():
            setattr(result, key, value)
        result.notes.extend(notes)
        per |= {"ais_log_px": r.log_px.numpy() - shift, "ais_log_px_stderr": r.stderr.numpy()}
        log_px, result.gaps_log_px = r.log_px, ("ais" if gaps is not None else None)
    if gaps is not None:
        g = gap_decomposition(model, x, log_px, y=y, steps=gaps.steps, draws=gaps.draws, lr=gaps.lr,
                              draws_eval=gaps.draws_eval, seed=seed, memory_budget=memory_budget,
                              progress=phase(f"the gap fit, {gaps.steps} steps", "examples", "--gaps-steps or --limit")
                              if phase else None)
        s = g.summary()
        for key in ("approximation_gap", "approximation_gap_stderr", "amortization_gap", "amortization_gap_stderr",
                    "gaps_steps", "gaps_converged"):
            setattr(result, key, s[key])
        if s["gaps_converged"] < 1:
            share = 100 * (1 - s["gaps_converged"])
            result.notes.append(f"the per-example fit of q* had not converged for {share:.0f}% of the examples after "
                                f"{g.steps} steps: the amortization gap is underestimated there and the approximation "
                                "gap overestimated; increase --gaps-steps")
        per |= {"approximation_gap": g.approximation.numpy(), "amortization_gap": g.amortization.numpy()}
    if result.per_example is not None:
        result.per_example = (result.per_example | per) if per_example else None


def _iwae_mc_stderr(result: Any, iwae_log_px: np.ndarray) -> float:
    """The Monte Carlo standard error of IWAE_K's mean over the examples, sqrt(sum_n SE_n^2) / N, where the
    per-example errors sqrt(1/ESS - 1/K) are at hand; else 0."""
    per = getattr(result, "per_example", None)
    if per is None or "log_px_stderr" not in per:
        return 0.0
    se = np.nan_to_num(per["log_px_stderr"], nan=0.0)
    return float(np.sqrt((se**2).sum()) / len(iwae_log_px))
