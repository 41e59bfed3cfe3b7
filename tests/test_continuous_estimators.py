"""The gradient estimators of a reparameterized q(z|x) (pathwise, STL, DReG): what each is unbiased for, STL's zero
variance at the exact posterior, the SNR of DReG's and the pathwise encoder gradient against K, the flow's
stopped-gradient density, and training through the command line and fit() (bit-exact resume, one-line refusals).

Statistics: fixed seeds throughout. The unbiasedness checks draw T independent estimates at once (a linear-Gaussian
model whose parameters are copied per example: one copy per estimate), and compare the mean with the exact gradient
coordinate by coordinate in standard errors (sd / sqrt(T)); with about a dozen coordinates, |z| < 4.5 everywhere
holds for an unbiased estimator with probability above 0.999 (Bonferroni), and a biased one is caught by |z| in the
tens. The exact gradients: the closed-form ELBO's, and IWAE_K's by Gauss-Hermite quadrature over the K draws of a
one-dimensional latent (checked to have converged far below the standard error). The SNR's standard errors are the
jackknife's over the repeats (vaekit.analysis.gradient_snr.summarize).
"""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest
import torch
from tests.cli_run import run_cli

import vaekit
from vaekit.analysis.gradient_snr import summarize
from vaekit.distributions import DiagonalNormal
from vaekit.errors import ConfigError, VaekitError
from vaekit.models.linear_gaussian import LinearGaussian
from vaekit.objectives import Loss, build_objective, elbo, sampled_terms
from vaekit.objectives.reparameterized import (
    REPARAMETERIZED,
    build_estimator,
    check_reparameterized_estimator,
    objective_loss,
)

pytestmark = pytest.mark.usefixtures("single_thread")


class Replicated(LinearGaussian):
    """A linear-Gaussian model whose encoder (A, c, logvar) and decoder (W, b) are copied once per example, so that
    one batch of T copies of x gives T independent gradient estimates (the gradient of each copy's parameters)."""

    def replicate(self, copies: int) -> Replicated:
        self.copies = [t.detach().expand(copies, *t.shape).clone().requires_grad_(True)
                       for t in (self.enc_weight, self.enc_bias, self.enc_logvar, self.weight, self.bias)]
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight, bias, logvar = self.copies[:3]
        return torch.einsum("nld,nd->nl", weight, x) + bias, logvar

    def decode(self, z: torch.Tensor, y=None) -> torch.Tensor:
        weight, bias = self.copies[3:]
        return torch.einsum("...nl,ndl->...nd", z, weight) + bias


def _replicated(base: LinearGaussian) -> Replicated:
    model = Replicated(base.weight, base.bias, base.sigma)
    return model.set_encoder(base.enc_weight, base.enc_bias, base.enc_logvar)


def _estimates(model: Replicated, x: torch.Tensor, estimator: str, objective, copies: int, seed: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """T = ``copies`` independent gradients of the objective's bound at x (1, D): (encoder (T, P_phi), decoder)."""
    model.replicate(copies)
    torch.manual_seed(seed)
    out = objective_loss(objective, model, x.expand(copies, -1), estimator=build_estimator(estimator))
    grads = torch.autograd.grad(-out.loss * copies, model.copies)  # the loss is the mean over the copies
    flat = [g.reshape(copies, -1) for g in grads]
    return torch.cat(flat[:3], 1), torch.cat(flat[3:], 1)


def _exact(base: LinearGaussian, value) -> torch.Tensor:
    """The gradient of ``value(base)`` with respect to (A, c, logvar, W, b), flat."""
    params = [base.enc_weight, base.enc_bias, base.enc_logvar, base.weight, base.bias]
    for p in params:
        p.requires_grad_(True)
    try:
        grads = torch.autograd.grad(value(base), params)
    finally:
        for p in params:
            p.requires_grad_(False)
    return torch.cat([g.reshape(-1) for g in grads])


def _exact_iwae(base: LinearGaussian, x: torch.Tensor, k: int, nodes: int) -> torch.Tensor:
    """The gradient of E[IWAE_K(x)] for a one-dimensional latent: Gauss-Hermite quadrature over eps_1..eps_K,
    z_k = mu + sigma eps_k, differentiated by autograd (the reparameterized expectation, exactly, to quadrature)."""
    e, w = np.polynomial.hermite_e.hermegauss(nodes)
    e, w = torch.tensor(e), torch.tensor(w) / math.sqrt(2 * math.pi)
    grid = torch.cartesian_prod(*[e] * k).reshape(-1, k)
    weight = torch.cartesian_prod(*[w] * k).reshape(-1, k).prod(1)

    def value(model: LinearGaussian) -> torch.Tensor:
        q = model.posterior(x)
        z = q.loc + q.scale * grid[:, :, None, None]  # (G, K, N, 1)
        log_w = model.log_likelihood(x, z) + model.log_prior(z) - q.log_prob(z)
        return (weight[:, None] * (torch.logsumexp(log_w, 1) - math.log(k))).sum(0).mean()

    return _exact(base, value)


def _z_scores(grads: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return (grads.mean(0) - exact) / (grads.std(0) / math.sqrt(grads.shape[0]))


@pytest.fixture(scope="module")
def one_dimensional():
    torch.set_default_dtype(torch.float64)
    try:
        base = LinearGaussian.random(data_dim=3, latent=1, seed=4)
        base.set_wrong_posterior(shift=0.5, scale=1.5, seed=5)
        yield base, base.sample_data(1, seed=6)
    finally:
        torch.set_default_dtype(torch.float32)


# -- what each estimator is unbiased for ----------------------------------------------------------------------


def test_pathwise_and_stl_are_unbiased_for_the_elbo(one_dimensional) -> None:
    base, x = one_dimensional
    exact = _exact(base, lambda m: m.elbo_closed_form(x).mean())
    model = _replicated(base)
    for name in ("pathwise", "stl"):
        enc, dec = _estimates(model, x, name, build_objective("elbo"), 50_000, seed=11)
        z = _z_scores(torch.cat([enc, dec], 1), exact)
        assert float(z.abs().max()) < 4.5, (name, z)


@pytest.mark.parametrize("k, nodes", [(2, 80), (3, 50)])
def test_pathwise_and_dreg_are_unbiased_for_iwae_and_stl_is_not(one_dimensional, k: int, nodes: int) -> None:
    base, x = one_dimensional
    exact = _exact_iwae(base, x, k, nodes)
    model = _replicated(base)
    found = {}
    for name in ("pathwise", "dreg", "stl"):
        enc, dec = _estimates(model, x, name, build_objective("iwae", k=k), 50_000, seed=7 + k)
        grads = torch.cat([enc, dec], 1)
        stderr = grads.std(0) / math.sqrt(grads.shape[0])
        if name == "pathwise":  # the quadrature has converged far below the standard error
            coarse = _exact_iwae(base, x, k, nodes - 20)
            assert float(((coarse - exact).abs() / stderr).max()) < 0.2
        found[name] = _z_scores(grads, exact).abs().max()
    assert found["pathwise"] < 4.5 and found["dreg"] < 4.5, found
    assert found["stl"] > 20, found  # the same test catches a biased estimator: STL of IWAE_K (Tucker et al.)


def test_dreg_is_tuckers_closed_form_draw_by_draw() -> None:
    """The generic DReG (second derivatives of the loss) gives, for IWAE_K, exactly sum_k w~_k^2 d log w_k/dz dz/dphi
    for the encoder and sum_k w~_k d log w_k/dtheta for the decoder, at the same draws."""
    torch.manual_seed(0)
    model = LinearGaussian.random(data_dim=4, latent=2, seed=1).rotated().set_wrong_posterior(0.5, 1.3)
    x = model.sample_data(3, seed=2)
    enc, dec = [model.enc_weight, model.enc_bias, model.enc_logvar], [model.weight, model.bias]
    for t in enc + dec:
        t.requires_grad_(True)
    k = 5
    torch.manual_seed(3)
    out = objective_loss(build_objective("iwae", k=k), model, x, estimator=build_estimator("dreg"))
    got = torch.autograd.grad(out.loss, enc + dec)
    torch.manual_seed(3)
    q = model.posterior(x)
    z = q.rsample((k,))
    stopped = DiagonalNormal(q.loc.detach(), q.logvar.detach())

    def log_w(v: torch.Tensor) -> torch.Tensor:
        return model.log_likelihood(x, v) + model.log_prior(v) - stopped.log_prob(v)

    w = torch.softmax(log_w(z).detach(), 0)
    want = (*torch.autograd.grad(-(w**2 * log_w(z)).sum(0).mean(), enc),
            *torch.autograd.grad(-torch.logsumexp(log_w(z.detach()), 0).mean(), dec))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_dreg_of_any_importance_weighted_loss_is_its_generalised_form() -> None:
    """An objective made of log weights that vaekit does not know (a CIWAE-like beta ELBO_K + (1 - beta) IWAE_K,
    defined here) gets DReG with no line of its own: the encoder's gradient is sum_k (beta / K + (1 - beta) w~_k^2)
    d log w_k/dz dz/dphi (the general form with the second derivatives); its q(z|x) may take a loss of its own
    (``inference``, as PIWAE's), whose gradient is then the one rescaled."""
    beta, k = 0.3, 4

    class Mixed:
        name, importance_weighted = "mixed", True

        def loss(self, model, x, y=None, *, beta_kl=1.0, **_):
            rec, kl = sampled_terms(model, x, k)
            log_w = rec - kl
            bound = beta * log_w.mean(0) + (1 - beta) * (torch.logsumexp(log_w, 0) - math.log(k))
            return types.SimpleNamespace(loss=-bound.mean(), inference=-1.5 * bound.mean(), terms=None)

    torch.manual_seed(0)
    model = LinearGaussian.random(data_dim=4, latent=2, seed=1).set_wrong_posterior(0.4, 1.2)
    x = model.sample_data(2, seed=2)
    enc = [model.enc_weight, model.enc_bias, model.enc_logvar]
    for t in enc:
        t.requires_grad_(True)
    torch.manual_seed(5)
    out = objective_loss(Mixed(), model, x, estimator=build_estimator("dreg"))
    got = torch.autograd.grad(out.inference, enc)
    torch.manual_seed(5)
    q = model.posterior(x)
    z = q.rsample((k,))
    stopped = DiagonalNormal(q.loc.detach(), q.logvar.detach())
    log_w = model.log_likelihood(x, z) + model.log_prior(z) - stopped.log_prob(z)
    w = torch.softmax(log_w.detach(), 0)
    want = torch.autograd.grad(-1.5 * ((beta / k + (1 - beta) * w**2) * log_w).sum(0).mean(), enc)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_multi_sample_bounds_get_dreg_within_their_groups() -> None:
    """MIWAE_{M,K} (M independent IWAE_K bounds) gets sum_m sum_k w~_mk^2 d log w_mk/dz dz/dphi with w~ normalised
    within each group of K; PIWAE trains q(z|x) on that (its ``inference`` loss) while its decoder keeps the
    pathwise gradient of IWAE_{MK}. Neither objective has a line of DReG of its own."""
    m, k = 3, 4
    model = LinearGaussian.random(data_dim=4, latent=2, seed=1).set_wrong_posterior(0.4, 1.2)
    x = model.sample_data(2, seed=2)
    enc, dec = [model.enc_weight, model.enc_bias, model.enc_logvar], [model.weight, model.bias]
    for t in enc + dec:
        t.requires_grad_(True)
    torch.manual_seed(5)
    q = model.posterior(x)
    z = q.rsample((m * k,))
    stopped = DiagonalNormal(q.loc.detach(), q.logvar.detach())
    log_w = (model.log_likelihood(x, z) + model.log_prior(z) - stopped.log_prob(z)).reshape(m, k, -1)
    w = torch.softmax(log_w.detach(), 1)
    want_enc = torch.autograd.grad(-((w**2 * log_w).sum(1).mean(0)).mean(), enc)
    pooled = (model.log_likelihood(x, z.detach()) + model.log_prior(z.detach()) - stopped.log_prob(z.detach()))
    want_dec = torch.autograd.grad(-torch.logsumexp(pooled, 0).mean(), dec)
    for name in ("miwae", "piwae"):
        objective = build_objective({"name": name, "m": m}, k=k)
        torch.manual_seed(5)
        out = objective_loss(objective, model, x, estimator=build_estimator("dreg"))
        inference = out.loss if getattr(out, "inference", None) is None else out.inference
        for a, b in zip(torch.autograd.grad(inference, enc, retain_graph=True), want_enc):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        if name == "piwae":
            for a, b in zip(torch.autograd.grad(out.loss, dec), want_dec):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# -- STL at the exact posterior -----------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_stl_has_zero_variance_at_the_exact_posterior(objective: str) -> None:
    """At q = p(z|x), r - c = log p(x) at every draw, so STL's (and DReG's) encoder gradient is 0 at every draw;
    the pathwise gradient keeps its score term, whose variance is not 0."""
    torch.set_default_dtype(torch.float64)
    try:
        base = LinearGaussian.random(data_dim=5, latent=2, seed=3).rotated().set_exact_posterior()
        x = base.sample_data(1, seed=4)
        model = _replicated(base)
        spec = build_objective(objective, k=4)
        names = ("pathwise", "stl", "dreg") if objective == "iwae" else ("pathwise", "stl")
        found = {name: summarize(_estimates(model, x, name, spec, 2_000, seed=9)[0]) for name in names}
    finally:
        torch.set_default_dtype(torch.float32)
    assert found["pathwise"]["variance"] > 1e-3
    for name in names[1:]:
        assert found[name]["variance"] < 1e-24, (name, found[name])  # zero, to float64 rounding


# -- the SNR against K --------------------------------------------------------------------------------------


def _snr_slope(points: list[tuple[int, float, float]]) -> tuple[float, float]:
    """The slope of log SNR against log K by weighted least squares, and its standard error; points (K, SNR, SE),
    independent (drawn with different seeds); the SE of log SNR is SE / SNR (delta method)."""
    logk = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    w = np.array([(p[1] / p[2]) ** 2 for p in points])
    design = np.stack([np.ones_like(logk), logk], 1)
    info = design.T @ (w[:, None] * design)
    beta = np.linalg.solve(info, design.T @ (w * y))
    return float(beta[1]), float(math.sqrt(np.linalg.inv(info)[1, 1]))


def test_dreg_encoder_snr_does_not_fall_with_k_while_the_pathwise_falls_as_one_over_sqrt_k() -> None:
    """Rainforth et al.: IWAE_K's pathwise encoder SNR is O(1/sqrt(K)); Tucker et al.: DReG's does not fall.
    One example, 20,000 repeats per K (SNR floor of noise 0.006), K = 4, 16, 64 with independent draws."""
    torch.set_default_dtype(torch.float64)
    try:
        base = LinearGaussian.random(data_dim=5, latent=2, seed=1).rotated().set_wrong_posterior(0.3, 1.2, seed=3)
        x = base.sample_data(1, seed=2)
        model = _replicated(base)
        curves = {}
        for name in ("pathwise", "dreg"):
            points = []
            for index, k in enumerate((4, 16, 64)):
                stats = summarize(_estimates(model, x, name, build_objective("iwae", k=k), 20_000, 100 + index)[0])
                points.append((k, stats["snr"], stats["snr_stderr"]))
            curves[name] = points
    finally:
        torch.set_default_dtype(torch.float32)
    slope, se = _snr_slope(curves["pathwise"])
    assert abs(slope + 0.5) < 3 * se and se < 0.05, (slope, se, curves["pathwise"])
    slope, se = _snr_slope(curves["dreg"])
    assert slope > 3 * se, (slope, se, curves["dreg"])
    (_, first, first_se), (_, last, last_se) = curves["dreg"][0], curves["dreg"][-1]
    assert last - first > 3 * math.hypot(first_se, last_se)  # and at every K above the pathwise SNR
    assert all(d[1] > p[1] for d, p in zip(curves["dreg"], curves["pathwise"]))


def test_summarize_on_known_noise() -> None:
    """Coordinates of known mean mu_j and standard deviation 1: the SNR is the mean of |mu_j|, within its SE;
    the variance 1; a constant coordinate is left out of the SNR and counted."""
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([0.5, 1.0, 2.0, 3.0])
    grads = torch.cat([mu + torch.randn(4000, 4, generator=g, dtype=torch.float64),
                       torch.full((4000, 1), 7.0, dtype=torch.float64)], 1)
    out = summarize(grads)
    assert out["constant"] == 1
    assert abs(out["snr"] - float(mu.mean())) < 3 * out["snr_stderr"]
    assert abs(out["variance"] - 4 / 5) < 3 * out["variance_stderr"]
    with pytest.raises(VaekitError, match="at least 3"):
        summarize(grads[:2])


# -- flows: the density at stopped parameters ----------------------------------------------------------------


def test_a_planar_flows_stopped_density_has_the_score_of_its_inverse() -> None:
    """grad_z log q(z) at a planar flow's draw, from the Jacobian solve, against central differences of log q(z)
    computed through the flow's inverse (found by bisection along w); and its value is log q of the draw."""
    from vaekit.components.flows import PlanarPosterior

    torch.manual_seed(0)
    post = PlanarPosterior(latent=2, steps=1, context=0).double()
    with torch.no_grad():
        post.flow.steps[0].base.copy_(torch.tensor([0.9, -0.4, 0.7, 1.1, 0.2], dtype=torch.float64))
    params = torch.tensor([[0.3, -0.2, -0.5, 0.1]], dtype=torch.float64, requires_grad=True)
    q = post(params)
    z, log_q = q.rsample_and_log_prob((3,))
    stopped = q.stopped_log_prob(z)
    torch.testing.assert_close(stopped, log_q)
    score = torch.autograd.grad(stopped.sum(), z)[0]
    u, w, b = (t.detach() for t in post.flow.steps[0].coefficients(None))

    def log_density(v: torch.Tensor) -> float:
        lo, hi = -50.0, 50.0  # a = w . z_0 solves w . v = a + (w . u) tanh(a + b), increasing in a
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if mid + float(w @ u) * math.tanh(mid + float(b)) < float(w @ v) else (lo, mid)
        t = math.tanh(0.5 * (lo + hi) + float(b))
        z0 = v - u * t
        return float(q.base.log_prob(z0).detach()) - math.log(1 + (1 - t * t) * float(w @ u))

    h = 1e-5
    for s in range(3):
        point = z[s, 0].detach()
        fd = torch.tensor([(log_density(point + h * e) - log_density(point - h * e)) / (2 * h)
                           for e in torch.eye(2, dtype=torch.float64)], dtype=torch.float64)
        torch.testing.assert_close(score[s, 0], fd, rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError, match="own last draw"):
        q.stopped_log_prob(z + 1.0)


def test_stl_of_a_flow_posterior_is_unbiased_for_the_elbo() -> None:
    """An IAF posterior (flow weights in phi): STL's and the pathwise ELBO gradients agree in expectation (both
    unbiased: the difference of the means of 400 independent estimates each is within 4.5 standard errors in every
    coordinate, Bonferroni over the coordinates)."""
    torch.manual_seed(0)
    model = vaekit.VAE(latent=2, shape=(1, 3, 3), hidden=(6,), likelihood="gaussian",
                       posterior={"name": "iaf", "steps": 2, "hidden": 6, "layers": 1, "context": 2}).double()
    x = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = model.inference_parameters()
    means = {}
    for name, seed in (("pathwise", 1), ("stl", 2)):
        torch.manual_seed(seed)
        est = build_estimator(name)
        grads = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            objective_loss(build_objective("elbo"), model, x, estimator=est).loss, params)]) for _ in range(400)])
        means[name] = (grads.mean(0), grads.var(0) / grads.shape[0])
    diff = means["pathwise"][0] - means["stl"][0]
    se = (means["pathwise"][1] + means["stl"][1]).sqrt()
    live = se > 0
    assert float((diff[live] / se[live]).abs().max()) < 4.5
    assert float(means["stl"][1][live].sum()) < float(means["pathwise"][1][live].sum())  # and less noisy here


# -- where they act, and what they refuse -------------------------------------------------------------------


def test_the_estimators_are_registered_names() -> None:
    assert REPARAMETERIZED.names() == ["pathwise", "stl", "dreg"]
    assert [build_estimator(n).name for n in REPARAMETERIZED.names()] == ["pathwise", "stl", "dreg"]
    with pytest.raises(ConfigError, match="did you mean 'dreg'"):
        build_estimator("drek")


def test_values_are_unchanged_and_every_draw_goes_through_the_estimator() -> None:
    """The loss's value is the objective's whatever the estimator (log q at stopped parameters has the same value);
    elbo() under STL takes the Monte Carlo KL at the same draws."""
    model = LinearGaussian.random(data_dim=4, latent=2, seed=1).set_wrong_posterior()
    x = model.sample_data(3, seed=2)
    values = []
    for name in ("pathwise", "stl", "dreg"):
        torch.manual_seed(0)
        values.append(float(objective_loss(build_objective("iwae", k=3), model, x,
                                           estimator=build_estimator(name)).loss))
    assert values[1:] == [pytest.approx(values[0], rel=1e-12)] * 2
    with build_estimator("stl").session():
        torch.manual_seed(0)
        stl = elbo(model, x, samples=2)
        with pytest.raises(VaekitError, match="analytic_kl=True"):
            elbo(model, x, analytic_kl=True)
    torch.manual_seed(0)
    mc = elbo(model, x, samples=2, analytic_kl=False)
    torch.testing.assert_close(stl.kl, mc.kl)
    torch.testing.assert_close(stl.reconstruction, mc.reconstruction)


def test_an_objective_that_makes_no_draws_through_the_terms_is_one_line() -> None:
    class OwnDraws:
        name = "own-draws"

        def loss(self, model, x, y=None, **_):
            q = model.posterior(x)
            z = q.rsample()
            return Loss(-(model.log_likelihood(x, z) - q.log_prob(z)).mean(), None)

    model = LinearGaussian.random(data_dim=4, latent=2, seed=1)
    with pytest.raises(VaekitError, match="objective own-draws makes no draws"):
        objective_loss(OwnDraws(), model, model.sample_data(2), estimator=build_estimator("stl"))


def test_check_refuses_what_does_not_apply_in_one_line() -> None:
    gaussian = vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=(8,))
    discrete = vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=(8,), posterior={"name": "categorical", "classes": 3})
    two_level = vaekit.HierarchicalVAE(latent=2, shape=(1, 4, 4), hidden=(8,))
    cases = [(gaussian, "dreg", "elbo", "importance-weighted"), (discrete, "stl", "elbo", "discrete"),
             (two_level, "stl", "elbo", "TwoLevelPosterior"), (gaussian, "nope", "elbo", "unknown estimator")]
    for model, name, objective, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            check_reparameterized_estimator(model, name, build_objective(objective, k=2))
        assert "\n" not in str(info.value)
    check_reparameterized_estimator(gaussian, "dreg", build_objective("iwae", k=2))
    check_reparameterized_estimator(two_level, "pathwise", build_objective("elbo"))


# -- training -------------------------------------------------------------------------------------------------


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [["--estimator", "stl"], ["--objective", "iwae", "--k", "4", "--estimator", "dreg"]])
def test_training_through_the_cli_resumes_bit_exact(tmp_path, capsys, extra: list[str]) -> None:
    base = ["train", "--dataset", "digits", "--binarize", "threshold", "--hidden", "16", "--latent", "3", *extra]
    assert run_cli([*base, "--epochs", "3", "--out", str(tmp_path / "full")], capsys)[0] == 0
    assert run_cli([*base, "--epochs", "1", "--out", str(tmp_path / "half")], capsys)[0] == 0
    code, _, err = run_cli([*base, "--epochs", "3", "--out", str(tmp_path / "half"), "--resume"], capsys)
    assert code == 0, err
    full, half = _rows(tmp_path / "full"), _rows(tmp_path / "half")
    assert [r["valid_elbo"] for r in full] == [r["valid_elbo"] for r in half]
    assert all(r["estimator"] == extra[-1] for r in full) and full[-1]["valid_elbo"] > full[0]["valid_elbo"]
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["estimator"] == extra[-1]


def test_fit_takes_the_estimator_by_name(tmp_path) -> None:
    torch.manual_seed(0)
    x = (torch.rand(200, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    model = vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=(8,))
    result = vaekit.fit(model, x[:150], x[150:], out=tmp_path / "r", epochs=2, objective="iwae", k=3,
                        estimator="dreg", progress=False)
    assert math.isfinite(result.best_valid_elbo)
    assert all(r["estimator"] == "dreg" for r in _rows(tmp_path / "r"))
    with pytest.raises(ConfigError, match="importance-weighted"):
        vaekit.fit(vaekit.VAE(latent=2, shape=(1, 4, 4), hidden=(8,)), x, out=tmp_path / "s", epochs=1,
                   estimator="dreg", progress=False)


@pytest.mark.parametrize("argv, message", [
    (["--estimator", "dreg"], "estimator dreg is for importance-weighted bounds"),
    (["--estimator", "score"], "estimator score is for discrete latents"),
    (["--posterior", "categorical", "--estimator", "stl"], "estimator stl is for reparameterized latents"),
    (["--posterior", "delta", "--estimator", "stl"], "point mass"),
    (["--levels", "2", "--estimator", "dreg", "--objective", "iwae"], "has_stopped_log_prob"),
    (["--estimator", "sticking"], "estimator must be one of"),
    (["--estimator", "stl", "--compile"], "train it without compile"),
    (["--objective", "beta-tcvae", "--estimator", "stl"], "objective beta-tcvae draws z itself"),
    (["--objective", "wae-mmd", "--posterior", "gaussian", "--estimator", "stl"], "has no log q(z|x) term"),
])
def test_refusals_are_one_line_exit_2(tmp_path, capsys, argv: list[str], message: str) -> None:
    code, out, err = run_cli(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "8", "--latent", "2",
                              *argv, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not (tmp_path / "r" / "config.json").exists()
