"""Bidirectional Monte Carlo (BDMC; Grosse, Ghahramani and Adams 2015; for VAEs Wu et al. 2017): log p(x)
sandwiched between two stochastic bounds on data simulated from the model itself.

For n examples (z_i, x_i) drawn from the model, z_i ~ p(z), x_i ~ p(x|z_i), z_i is an exact sample of the
posterior p(z|x_i). Forward AIS from the prior gives a stochastic lower bound on log p(x_i) and reverse AIS
started at z_i a stochastic upper bound (:mod:`vaekit.bounds.ais`)::

    E[lower_i] <= log p(x_i) <= E[upper_i]

Both converge to log p(x_i) as the number of temperatures T grows, so the width upper - lower (nats, averaged
over the examples) bounds the error of AIS at that T on data like the model's own: where it is small, forward
AIS with the same settings can be trusted on real data too, if the posteriors of real data are no harder than
those of simulated data (Wu et al. 2017 discuss when they are).

The reverse run takes the step sizes of the forward run's pilot (the same kernels at the same temperatures).
Standard errors: of ``lower`` and ``upper``, the Monte Carlo error across chains (that of ``upper`` is
conditional on the exact starting codes, which its chains share); of ``width``, the standard error over examples
of the per-example width.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from vaekit.bounds.ais import AISResult, AISSettings, ais, check_annealable
from vaekit.bounds.sizing import DEFAULT_MEMORY_BUDGET, model_device_dtype
from vaekit.errors import VaekitError

if TYPE_CHECKING:
    from vaekit.models.base import LatentVariableModel

#: Offset of the seed of the simulated data from the seed of the chains.
DATA_SEED_OFFSET = 7_000_003


@dataclass
class Sandwich:
    """The BDMC sandwich at T temperatures: means over the simulated examples, nats."""

    steps: int
    lower: float  # mean forward AIS estimate: a stochastic lower bound on the mean log p(x)
    lower_stderr: float
    upper: float  # mean reverse AIS estimate: a stochastic upper bound
    upper_stderr: float
    width: float  # mean of upper - lower
    width_stderr: float
    forward_acceptance: float
    reverse_acceptance: float
    seconds: float


@dataclass
class BDMCResult:
    """The sandwich for each T (:attr:`rows`, increasing T) on ``n`` simulated examples."""

    rows: list[Sandwich]
    n: int
    chains: int
    leapfrog: int
    schedule: str
    seed: int
    evaluations: int = 0  # log p(x, z) evaluations with their gradient, all runs together
    per_example: dict[str, torch.Tensor] = field(default_factory=dict)  # "lower", "upper" at the largest T

    def summary(self) -> dict[str, Any]:
        """``bdmc_lower``, ``bdmc_upper``, ``bdmc_width`` (the largest T, with ``_stderr`` twins), ``n`` and the
        settings, and ``bdmc`` (every row)."""
        last = self.rows[-1]
        return {"bdmc_lower": last.lower, "bdmc_lower_stderr": last.lower_stderr, "bdmc_upper": last.upper,
                "bdmc_upper_stderr": last.upper_stderr, "bdmc_width": last.width,
                "bdmc_width_stderr": last.width_stderr, "bdmc_steps": last.steps, "n": self.n,
                "bdmc_chains": self.chains, "bdmc_leapfrog": self.leapfrog, "bdmc_schedule": self.schedule,
                "seed": self.seed, "bdmc": [asdict(row) for row in self.rows]}


def simulate(model: LatentVariableModel, n: int, seed: int,
             y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples from the model: (x (n, D) flat, the codes z (n, L) that generated them), drawn with a generator
    seeded with ``seed`` + :data:`DATA_SEED_OFFSET` (labels ``y`` of a conditional model)."""
    device, _ = model_device_dtype(model)
    g = torch.Generator(device=device).manual_seed(int(seed) + DATA_SEED_OFFSET)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), model.frozen():
            s = model.sample(n, y, generator=g)
    finally:
        model.train(was_training)
    return s.draws.reshape(n, -1), s.z


def _stderr(values: torch.Tensor) -> float:
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else math.nan


def sandwich(forward: AISResult, reverse: AISResult, seconds: float) -> Sandwich:
    """The :class:`Sandwich` of a forward and a reverse AIS run on the same examples."""
    width = reverse.log_px - forward.log_px
    return Sandwich(steps=forward.steps, lower=forward.mean, lower_stderr=forward.mean_stderr, upper=reverse.mean,
                    upper_stderr=reverse.mean_stderr, width=float(width.mean()), width_stderr=_stderr(width),
                    forward_acceptance=float(forward.acceptance.mean()),
                    reverse_acceptance=float(reverse.acceptance.mean()), seconds=seconds)


def bdmc(model: LatentVariableModel, n: int, steps: list[int] | tuple[int, ...], settings: AISSettings, *,
         data: tuple[torch.Tensor, torch.Tensor] | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET,
         progress: Any = None) -> BDMCResult:
    """Forward and reverse AIS for each T in ``steps`` on n examples simulated from the model (or on ``data``
    = (x, z) with z an exact posterior sample of each x), the other settings from ``settings`` (its ``steps``
    is ignored). A conditional model's examples get the labels 0, 1, ..., in turn. ``progress``: a
    :class:`vaekit.progress.Bar` whose :meth:`~vaekit.progress.Bar.phase` follows each AIS run, or None."""
    phase = getattr(progress, "phase", None)

    def bar(direction: str, t: int) -> Any:
        flags = "--bdmc, --bdmc-chains or --n"
        return phase(f"BDMC {direction} AIS, T = {t}", "temperatures", flags) if phase else None

    check_annealable(model)
    if not steps or any(int(t) < 1 for t in steps):
        raise VaekitError(f"BDMC needs one or more numbers of annealing steps >= 1, got {list(steps)}")
    cond = int(getattr(model, "condition", 0) or 0)
    y = torch.arange(n) % cond if cond else None
    x, z = data if data is not None else simulate(model, n, settings.seed, y)
    rows, evaluations = [], 0
    per: dict[str, torch.Tensor] = {}
    for t in sorted({int(t) for t in steps}):
        s = replace(settings, steps=t)
        fwd = ais(model, x, s, y=y, memory_budget=memory_budget, progress=bar("forward", t))
        rev = ais(model, x, s, y=y, z_exact=z, step_sizes=fwd.step_sizes, memory_budget=memory_budget,
                  progress=bar("reverse", t))
        rows.append(sandwich(fwd, rev, fwd.seconds + rev.seconds))
        evaluations += fwd.evaluations + rev.evaluations
        per = {"lower": fwd.log_px, "upper": rev.log_px, "lower_stderr": fwd.stderr, "upper_stderr": rev.stderr}
    return BDMCResult(rows=rows, n=int(x.shape[0]), chains=settings.chains, leapfrog=settings.leapfrog,
                      schedule=settings.schedule, seed=settings.seed, evaluations=evaluations, per_example=per)
