"""What the evaluation calls log p(x): a density on integer-valued data is quoted as the dequantised bound
log P(k) >= E_u log p((k + u) / L) - D log L (checked against the exact bin probabilities of a Gaussian), the
discrete likelihoods need no correction, a cross-entropy on grey targets and a variance at its floor are
flagged, and the CLI, the table and the report say which figure they show."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from cli_run import run_cli
from vaekit.errors import DataError
from vaekit.evaluation import (
    CROSS_ENTROPY,
    DENSITY,
    DEQUANTIZED,
    LOG_PROBABILITY,
    dequantize,
    evaluate_model,
    format_table,
)
from vaekit.models import VAE

pytestmark = pytest.mark.usefixtures("single_thread")

F64 = torch.float64
SHAPE = (1, 2, 3)  # D = 6 pixels
D = 6


def _constant_gaussian(mu: torch.Tensor, sigma: float, variance: str = "fixed") -> VAE:
    """p(x|z) = N(mu, sigma^2) whatever z (decoder weights 0, bias logit(mu)), and q(z|x) = p(z) (encoder 0):
    every importance weight is the density p(x) itself, so log p(x) is exact."""
    model = VAE(shape=SHAPE, latent=1, hidden=[], likelihood={"name": "gaussian", "variance": variance,
                                                               "sigma": sigma}).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.decoder[0].bias.copy_(torch.logit(mu))
        model.likelihood.log_var.fill_(2 * math.log(sigma))  # a learned variance is a parameter: zeroed above
    return model.eval()


def _normal_cdf(v: torch.Tensor, mu: torch.Tensor, sigma: float) -> torch.Tensor:
    return 0.5 * (1 + torch.erf((v - mu) / (sigma * math.sqrt(2))))


@pytest.mark.parametrize("levels, sigma", [(16, 0.05), (256, 0.02)])
def test_the_dequantised_bound_holds_for_a_gaussian_with_exact_bin_probabilities(levels, sigma):
    """P(k) = prod_d [Phi((k_d + 1) / L) - Phi(k_d / L)] is the probability of the integers under the density's
    bins [k/L, (k+1)/L). The evaluation's figure, one u per example, must be (i) on average at most log P(k)
    (within 3 standard errors over examples), (ii) an unbiased estimate of E_u log p((k + u)/L) - D log L, which
    for a Gaussian is known in closed form (within 4 standard errors), and (iii) that closed form is <= log P(k)
    for every example (Jensen)."""
    g = torch.Generator().manual_seed(levels)
    mu = 0.2 + 0.6 * torch.rand(D, generator=g, dtype=F64)
    model = _constant_gaussian(mu, sigma)
    n = 3000
    k = ((mu + sigma * torch.randn(n, D, generator=g, dtype=F64)).clamp(0, 1) * (levels - 1)).round()
    x = (k / (levels - 1)).reshape(n, *SHAPE)
    r = evaluate_model(model, x, k=2, seed=3, levels=levels, surgery_samples=0)
    assert r.log_px_kind == DEQUANTIZED and r.dequantized and r.levels == levels
    assert r.dequantization_nats == pytest.approx(D * math.log(levels), rel=1e-15)
    est = r.per_example["log_px"]  # (N,), nats
    exact = torch.log(_normal_cdf((k + 1) / levels, mu, sigma) - _normal_cdf(k / levels, mu, sigma)).sum(1).numpy()
    centre = (k + 0.5) / levels
    closed = (-0.5 * math.log(2 * math.pi * sigma**2) - ((centre - mu) ** 2 + 1 / (12 * levels**2))
              / (2 * sigma**2)).sum(1).numpy() - D * math.log(levels)
    se = (est - exact).std(ddof=1) / math.sqrt(n)
    assert (est - exact).mean() <= 3 * se, ((est - exact).mean(), se)
    se_u = (est - closed).std(ddof=1) / math.sqrt(n)
    assert abs((est - closed).mean()) <= 4 * se_u, ((est - closed).mean(), se_u)
    assert (closed <= exact + 1e-9).all()
    # bits per dimension: the bound's NLL over D ln 2, an upper bound on the true bits/dim of the integers
    assert r.bits_per_dim == pytest.approx(r.nll / (D * math.log(2)), rel=1e-12)
    assert r.bits_per_dim >= float(-exact.mean() / (D * math.log(2))) - 3 * se / (D * math.log(2))


def test_the_correction_is_spelled_out_and_reproducible():
    mu = torch.full((D,), 0.5, dtype=F64)
    model = _constant_gaussian(mu, 0.1)
    x = torch.randint(0, 256, (40, *SHAPE), generator=torch.Generator().manual_seed(0)).double() / 255
    a = evaluate_model(model, x, k=3, seed=1, levels=256)
    b = evaluate_model(model, x, k=3, seed=1, levels=256)
    c = evaluate_model(model, x, k=3, seed=2, levels=256)
    assert a.nll == b.nll and a.nll != c.nll and abs(a.nll - c.nll) < 0.5  # a fixed u per seed
    note = next(n for n in a.notes if "dequantised" in n)
    assert "E_u log p((k + u) / L) - D log L" in note and "L = 256" in note and f"{D * math.log(256):.2f}" in note
    assert a.to_dict()["dequantized"] is True and a.to_dict()["dequantization_nats"] == pytest.approx(D * math.log(256))
    table = format_table(a)
    assert "log P(x) bound" in table and "a lower bound" in table
    from vaekit.pages.report import _eval_table

    assert "log P(x) bound, importance sampled" in _eval_table(a)
    # u ~ U[0, 1): each y lies in its value's bin [k / L, (k + 1) / L)
    y = dequantize(x.reshape(40, -1), 256, seed=1)
    k = (x.reshape(40, -1) * 255).round()
    assert ((y >= k / 256) & (y < (k + 1) / 256)).all()


def test_the_data_set_says_the_levels():
    mu = torch.full((D,), 0.5, dtype=F64)
    model = _constant_gaussian(mu, 0.1)
    x = torch.randint(0, 17, (30, *SHAPE), generator=torch.Generator().manual_seed(0)).double() / 16
    ds = types.SimpleNamespace(test=x, levels=17)
    r = evaluate_model(model, ds, k=2, seed=0)
    assert r.log_px_kind == DEQUANTIZED and r.levels == 17
    plain = evaluate_model(model, x, k=2, seed=0)  # images alone: their levels are unknown, a density
    assert plain.log_px_kind == DENSITY and plain.dequantization_nats == 0 and any("density" in n for n in plain.notes)
    binary = evaluate_model(model, (x > 0.5).double(), k=2, seed=0)
    assert binary.log_px_kind == DENSITY and binary.levels == 2
    with pytest.raises(DataError, match="not on the grid"):
        evaluate_model(model, torch.rand(5, *SHAPE, dtype=F64), k=2, levels=256)


def test_probabilities_need_no_correction_and_cross_entropies_are_named():
    torch.manual_seed(0)
    x8 = torch.randint(0, 256, (20, *SHAPE), generator=torch.Generator().manual_seed(1)).double() / 255
    dl = VAE(shape=SHAPE, latent=2, hidden=[8], likelihood="discretized-logistic").double()
    r = evaluate_model(dl, x8, k=4, seed=0)  # its own grid is recognised from the values
    assert r.log_px_kind == LOG_PROBABILITY and r.levels == 256 and r.dequantization_nats == 0
    assert not any("density" in n or "dequantised" in n for n in r.notes)
    with pytest.raises(DataError, match="256 grey levels but the data have 17"):
        evaluate_model(dl, x8, k=2, levels=17)
    with pytest.raises(DataError, match="real values"):
        evaluate_model(dl, torch.rand(5, *SHAPE, dtype=F64), k=2)
    bern = VAE(shape=SHAPE, latent=2, hidden=[8]).double()
    grey = evaluate_model(bern, x8, k=4, seed=0, levels=256)
    assert grey.log_px_kind == CROSS_ENTROPY and grey.log_px_label == "-cross-entropy"
    assert any("not a log-likelihood" in n and "--binarize" in n for n in grey.notes)
    binary = evaluate_model(bern, (x8 > 0.5).double(), k=4, seed=0)
    assert binary.log_px_kind == LOG_PROBABILITY and not binary.notes


def test_a_variance_at_its_floor_is_flagged():
    mu = torch.full((D,), 0.5, dtype=F64)
    x = torch.randint(0, 256, (30, *SHAPE), generator=torch.Generator().manual_seed(0)).double() / 255
    model = VAE(shape=SHAPE, latent=1, hidden=[], likelihood={"name": "gaussian", "variance": "per-pixel"}).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.decoder[0].bias.copy_(torch.cat([torch.logit(mu), torch.tensor([-20.0, -20.0, -20.0, -1, -1, -1])]))
    r = evaluate_model(model, x, k=2, seed=0, levels=256)
    assert r.variance_floor_fraction == pytest.approx(0.5)
    assert any("floor (log sigma^2 = -9)" in n and "50.0% of the pixels" in n for n in r.notes)
    learned = _constant_gaussian(mu, 0.005, variance="learned")  # 2 log 0.005 = -10.6: below the floor of -9
    assert evaluate_model(learned, x, k=2, seed=0, levels=256).variance_floor_fraction == 1.0
    wide = _constant_gaussian(mu, 0.2, variance="learned")
    rw = evaluate_model(wide, x, k=2, seed=0, levels=256)
    assert rw.variance_floor_fraction == 0.0 and not any("floor" in n for n in rw.notes)
    assert evaluate_model(_constant_gaussian(mu, 0.2), x, k=2, levels=256).variance_floor_fraction is None


def test_exact_enumeration_is_dequantised_too():
    """A discrete latent code with a Gaussian p(x|z): the exact log p(x) (a sum over codes) of the same
    dequantised images, with the same D log L subtracted."""
    from vaekit.bounds.enumeration import enumerated_bound

    torch.manual_seed(0)
    model = VAE(shape=SHAPE, latent=2, hidden=[8], posterior={"name": "categorical", "classes": 3},
                likelihood={"name": "gaussian", "sigma": 0.2}).double().eval()
    x = torch.randint(0, 256, (25, *SHAPE), generator=torch.Generator().manual_seed(2)).double() / 255
    r = evaluate_model(model, x, k=50, seed=4, levels=256, surgery_samples=0)
    assert r.log_px_kind == DEQUANTIZED and r.exact_codes == 9
    y = dequantize(x.reshape(25, -1), 256, seed=4)
    exact = enumerated_bound(model, y).log_px.numpy() - D * math.log(256)
    np.testing.assert_allclose(r.per_example["exact_log_px"], exact, rtol=0, atol=1e-10)
    assert r.nll_exact == pytest.approx(-exact.mean(), abs=1e-10)
    assert abs(r.nll - r.nll_exact) < 0.05  # K = 50 importance samples of 9 codes: nearly exact


def test_cli_evaluate_quotes_the_dequantised_bound_for_a_gaussian_on_grey_digits(tmp_path, capsys):
    run = tmp_path / "g"
    code, _, err = run_cli(["train", "--dataset", "digits", "--likelihood", "gaussian", "--epochs", "1",
                            "--hidden", "16", "--latent", "2", "--out", str(run), "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", str(run), "--k", "5", "--json", "--surgery-samples", "0", "--quiet"],
                             capsys)
    assert code == 0, err
    import json

    res = json.loads(out.strip().splitlines()[-1])
    assert res["dequantized"] is True and res["log_px_kind"] == DEQUANTIZED and res["levels"] == 17
    assert res["dequantization_nats"] == pytest.approx(64 * math.log(17))
    assert any("dequantised lower bound" in n for n in res["notes"])
    code, out, err = run_cli(["evaluate", str(run), "--k", "5", "--surgery-samples", "0", "--quiet"], capsys)
    assert code == 0 and "log P(x) bound, K = 5" in out and "note: the gaussian likelihood is a density" in out
