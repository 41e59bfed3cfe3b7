"""One check of the bound log p(x) >= IWAE_S >= ELBO against an exactly known log p(x), shared by the
tests of every model with a 2-D latent space whose log p(x) a grid integral gives."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from vaekit.evaluation import EvaluationResult, evaluate_model
from vaekit.objectives import ElboTerms, elbo, iwae_bound, log_importance_weights


class BoundCheck(NamedTuple):
    terms: ElboTerms  # the ELBO from S draws
    elbo_se: torch.Tensor  # its standard error per example
    iwae_se: torch.Tensor  # the delta-method standard error of IWAE_S per example
    result: EvaluationResult  # the evaluator's, with K = S


def check_bounds_against_exact(model: Any, x: torch.Tensor, exact: torch.Tensor, grid_err: torch.Tensor,
                               s: int = 20000) -> BoundCheck:
    """(a) the ELBO from S draws lies below log p(x) by more than 4 standard errors (std(log w) / sqrt(S));
    (b) IWAE_S is within 5 of its delta-method SE std(w) / (mean(w) sqrt(S)) plus the grid error of log p(x)
    (its bias, about SE^2 / 2, is far smaller) and above the ELBO; (c) the evaluator's per-example log p(x)
    is within 5 of its own Monte Carlo SE sqrt(1/ESS - 1/K), its ELBO agrees with (a), and the gap is > 0."""
    with torch.no_grad():
        terms = elbo(model, x, samples=s, generator=torch.Generator().manual_seed(0))
        log_w = log_importance_weights(model, x, s, torch.Generator().manual_seed(0))  # the same draws
        torch.testing.assert_close(terms.elbo, log_w.mean(0))
        elbo_se = log_w.std(0) / math.sqrt(s)
        assert (exact - terms.elbo > 4 * elbo_se).all(), (exact, terms.elbo, elbo_se)
        iwae = iwae_bound(model, x, s, torch.Generator().manual_seed(1))
        w = torch.exp(log_w - log_w.max(0).values)
        iwae_se = w.std(0) / (w.mean(0) * math.sqrt(s))
        assert ((iwae - exact).abs() < 5 * iwae_se + grid_err + 1e-6).all(), (iwae, exact, iwae_se)
        assert (iwae > terms.elbo + 4 * elbo_se).all()
    res = evaluate_model(model, x, k=s, seed=2)
    per = res.per_example
    assert per is not None
    got, se = torch.from_numpy(per["log_px"]), torch.from_numpy(per["log_px_stderr"])
    assert ((got - exact).abs() < 5 * se + grid_err + 1e-6).all(), (got, exact, se)
    assert abs(res.nll + float(exact.mean())) < 5 * float(se.max()) + 1e-4
    assert ((torch.from_numpy(per["elbo"]) - terms.elbo).abs() < 5 * elbo_se * math.sqrt(2)).all()
    assert (per["gap"] > 0).all()
    return BoundCheck(terms, elbo_se, iwae_se, res)
