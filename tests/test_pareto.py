"""The Pareto k-hat of importance weights against scipy's generalized Pareto fit, on heavy-tailed weights of known
shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import genpareto

from vaekit.bounds.pareto import TailKeeper, gpd_fit, khat_of_tail, pareto_khat, tail_length

pytestmark = pytest.mark.usefixtures("single_thread")


def _gpd_weights(shape: float, k: int, n: int, seed: int = 0) -> torch.Tensor:
    """log-weights (k, n) with w ~ GPD(shape, 1): every tail above a threshold is a GPD of the same shape."""
    u = torch.rand(k, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.log((u.pow(-shape) - 1) / shape)


def _exceedances(log_w: torch.Tensor) -> torch.Tensor:
    """The M largest weights over the (M + 1)-th, (n, M) increasing, as PSIS fits them."""
    top = torch.topk(log_w, tail_length(log_w.shape[0]) + 1, 0).values.flip(0)
    return (top[1:].exp() - top[0].exp()).T


@pytest.mark.parametrize("shape", [0.3, 1.0])
def test_khat_agrees_with_scipy_genpareto_and_finds_the_known_shape(shape):
    k, n = 5000, 20
    log_w = _gpd_weights(shape, k, n, seed=int(10 * shape))
    u = _exceedances(log_w)
    ours, _ = gpd_fit(u, prior=False)
    mle = np.array([genpareto.fit(row.numpy(), floc=0)[0] for row in u])
    spread = float(mle.std(ddof=1))  # the sampling spread of a fit of M = 213 exceedances (~0.1)
    # the two estimators read the same samples: they differ by far less than either's own sampling error
    assert float(np.abs(ours.numpy() - mle).max()) < 0.25 * spread
    for est in (ours.numpy(), mle):  # both find the true shape within 3 standard errors of their mean
        assert abs(est.mean() - shape) < 3 * est.std(ddof=1) / math.sqrt(n)
    # pareto_khat = the same fit with PSIS's prior: (M k + 5) / (M + 10)
    m = tail_length(k)
    torch.testing.assert_close(pareto_khat(log_w), (m * ours + 5) / (m + 10))


def test_heavy_tails_are_flagged_and_light_ones_are_not():
    heavy = pareto_khat(_gpd_weights(1.5, 2000, 30))  # k-hat ~ 1.5 +- 0.2: above 0.7 nearly surely
    light = pareto_khat(torch.randn(2000, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3)
    assert float((heavy > 0.7).float().mean()) > 0.9 and float((light > 0.7).float().mean()) == 0.0


def test_chunked_tails_give_the_same_khat_and_degenerate_tails_are_marked():
    log_w = _gpd_weights(0.6, 1000, 7, seed=3)
    keeper = TailKeeper(1000)
    for start in range(0, 1000, 128):
        keeper.update(log_w[start : start + 128])
    torch.testing.assert_close(keeper.khat(), pareto_khat(log_w), rtol=0, atol=0)
    flat = torch.full((500, 3), -12.5, dtype=torch.float64)  # an exact posterior: every weight is p(x)
    assert bool(torch.isneginf(pareto_khat(flat)).all())
    assert bool(torch.isnan(pareto_khat(log_w[:20])).all())  # K = 20: a tail of 4 weights, too few to fit
    assert bool(torch.isnan(khat_of_tail(log_w[:3])).all())


def test_evaluate_reports_the_fraction_of_untrustworthy_examples_and_names_them():
    """A Gaussian q narrower than the posterior by a factor s has weights with tail shape k = 1 - s^2: 0.84 at
    s = 0.4 (flagged), negative for a q wider than the posterior; an exact q has equal weights and no tail."""
    import vaekit
    from vaekit.models.linear_gaussian import LinearGaussian

    lg = LinearGaussian.random(data_dim=16, latent=2, sigma=0.5, seed=0)
    x = lg.sample_data(40, seed=1)
    narrow = vaekit.evaluate(lg.set_wrong_posterior(shift=0.0, scale=0.4), x, k=2000, per_example=True,
                             surgery_samples=0)
    khat = narrow.per_example["pareto_k"]
    assert narrow.pareto_k_fraction == float((khat > 0.7).mean()) > 0.5
    (note,) = [n for n in narrow.notes if "Pareto k-hat" in n]
    assert f"for {int((khat > 0.7).sum())} of 40 examples (#{int(np.argmax(khat > 0.7))}," in note
    wide = vaekit.evaluate(lg.set_wrong_posterior(shift=0.0, scale=1.5), x, k=2000, surgery_samples=0)
    assert wide.pareto_k_fraction == 0.0 and not any("Pareto" in n for n in wide.notes)
    exact = vaekit.evaluate(lg.rotated().set_exact_posterior(), x, k=2000, per_example=True, surgery_samples=0)
    assert exact.pareto_k_fraction == 0.0 and bool(np.isneginf(exact.per_example["pareto_k"]).all())
    assert exact.summary()["pareto_k_fraction"] == 0.0 and vaekit.evaluate(lg, x, k=10).pareto_k_fraction is None
