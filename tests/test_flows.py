"""Normalizing flows in q(z|x) (planar, IAF): log|det| against autograd Jacobians, the IAF's triangular
Jacobian, q(z|x) integrating to 1, the bounds against log p(x) by grid integration, training, checkpoints,
the command line and the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import MultivariateNormal, Normal

from bounds_check import check_bounds_against_exact
from cli_run import run_cli
from synthetic import prototype_dataset
from vaekit.components import POSTERIORS
from vaekit.components.flows import Flow, IAFStep, PlanarFlow
from vaekit.config import TrainConfig, from_dict
from vaekit.distributions import DiagonalNormal, rsample_and_log_prob
from vaekit.distributions.kl import closed_form_kl
from vaekit.errors import ConfigError
from vaekit.evaluation.exact import grid_log_marginal
from vaekit.models import VAE
from vaekit.objectives import elbo
from vaekit.train import read_metrics, train

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


def randomize(module: torch.nn.Module, scale: float, seed: int, add: bool = False) -> None:
    """Set (or, with ``add``, perturb) every parameter to scale * N(0, 1): flows far from their near-identity start."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = scale * torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.copy_(p + noise if add else noise)


def make_step(kind: str, latent: int, context: int, reverse: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    step = PlanarFlow(latent, context) if kind == "planar" else IAFStep(latent, 12, 2, context, reverse=reverse)
    step = step.double()
    randomize(step, 0.7, 1)
    return step


# -- log|det| and the Jacobian -------------------------------------------------------------------


@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("kind", ["planar", "iaf"])
def test_log_det_equals_the_autograd_jacobian(kind, context):
    latent = 5
    torch.manual_seed(0)
    flow = Flow(kind, latent, 3, hidden=12, layers=2, context=context).double()
    randomize(flow, 0.7, 2)
    g = torch.Generator().manual_seed(3)
    for module in (make_step(kind, latent, context), make_step(kind, latent, context, reverse=True), flow):
        for _ in range(4):
            z = 1.5 * torch.randn(latent, generator=g, dtype=F64)
            h = torch.randn(context, generator=g, dtype=F64) if context else None
            jac = jacobian(lambda v, h=h, module=module: module(v, h)[0], z)
            sign, expected = torch.linalg.slogdet(jac)
            _, log_det = module(z, h)
            torch.testing.assert_close(log_det, expected, rtol=1e-10, atol=1e-10)
            assert sign > 0  # both flows are orientation-preserving: 1 + u_hat^T psi > 0, sigma > 0
        # batched (S, B, L) with a per-example context (B, C) gives each row's own value
        zb = torch.randn(2, 3, latent, generator=g, dtype=F64)
        hb = torch.randn(3, context, generator=g, dtype=F64) if context else None
        out, log_det = module(zb, hb)
        assert out.shape == zb.shape and log_det.shape == (2, 3)
        for s in range(2):
            for b in range(3):
                one, ld = module(zb[s, b], hb[b] if context else None)
                torch.testing.assert_close(out[s, b], one)
                torch.testing.assert_close(log_det[s, b], ld)


def test_planar_constraint_keeps_the_map_invertible():
    """With w^T u = -5 (a raw planar map that folds space), u_hat has w^T u_hat = -1 + softplus(-5) > -1."""
    step = PlanarFlow(3).double()
    with torch.no_grad():
        w = torch.tensor([1.0, 2.0, -1.0], dtype=F64)
        step.base.copy_(torch.cat([-5.0 * w / w.pow(2).sum(), w, torch.tensor([0.3], dtype=F64)]))
        u_hat, w_, _ = step.coefficients()
    wu = float((u_hat * w_).sum().detach())
    assert wu == pytest.approx(-1.0 + math.log1p(math.exp(-5.0)), abs=1e-12)
    z = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert torch.isfinite(step(z)[1]).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_iaf_jacobian_is_triangular_in_the_steps_order(reverse):
    latent = 5
    step = make_step("iaf", latent, 3, reverse=reverse)
    g = torch.Generator().manual_seed(4)
    z, h = torch.randn(latent, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    jac = jacobian(lambda v: step(v, h)[0], z)
    perm = torch.argsort(step.order)  # the variables in the step's order
    ordered = jac[perm][:, perm]
    assert torch.equal(torch.triu(ordered, 1), torch.zeros_like(ordered))  # z'_i depends on no later z_j
    below = ordered[torch.tril(torch.ones(latent, latent, dtype=torch.bool), -1)]
    assert (below.abs() > 1e-6).all(), ordered  # and on every earlier one: autoregressive, not diagonal
    _, s = step.made(z, h)
    torch.testing.assert_close(torch.diagonal(ordered), torch.sigmoid(s)[perm])
    # two steps in alternating orders: the composite Jacobian is full
    flow = Flow("iaf", latent, 2, hidden=12, context=3).double()
    randomize(flow, 0.7, 5)
    full = jacobian(lambda v: flow(v, h)[0], z)
    assert (full.abs() > 1e-8).all(), full


# -- q(z|x) is a normalized density of its samples ------------------------------------------------


def flow_of(model: VAE) -> Flow:
    """The flow of q(z|x) (its posterior component's)."""
    return model.posterior_family.flow


def tiny_model(kind: str) -> VAE:
    """A 2-D latent, 4 Bernoulli pixels; the decoder scaled up (a posterior far from q's start) and the flow
    moved away from its near-identity start (planar: random parameters; iaf: perturbed)."""
    torch.manual_seed(0)
    model = VAE(shape=(1, 1, 4), latent=2, hidden=[8], activation="tanh",
                posterior={"name": kind, "steps": 2, "hidden": 8, "context": 3}).double()
    assert isinstance(model, VAE) and isinstance(flow_of(model), Flow)
    if kind == "planar":
        randomize(flow_of(model), 1.0, 1)
    else:
        randomize(flow_of(model), 0.3, 1, add=True)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
    return model.eval()


def invert(model: VAE, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """z_0 = f_1^-1(...f_T^-1(z)), computed independently of the forward code's log|det|.

    Planar: a = w^T z_0 + b solves w^T z + b = a + (w^T u_hat) tanh(a), increasing in a (w^T u_hat > -1) and
    within |w^T u_hat| of the left side: bisection; then z_0 = z - u_hat tanh(a).
    IAF: z_0 = (z - (1 - sigma) m) / sigma with (m, sigma) from z_0 itself; L fixed-point sweeps are exact,
    each fixes one more variable in the step's order.
    """
    for step in reversed(flow_of(model).steps):
        if isinstance(step, PlanarFlow):
            u, w, b = step.coefficients(h)
            wu = (w * u).sum(-1, keepdim=True)
            target = (w * z).sum(-1, keepdim=True) + b
            lo, hi = target - wu.abs(), target + wu.abs()
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                below = mid + wu * torch.tanh(mid) < target
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
            z = z - u * torch.tanh(0.5 * (lo + hi))
        else:
            y = z
            for _ in range(y.shape[-1]):
                m, s = step.made(z, h)
                z = (y - torch.sigmoid(-s) * m) / torch.sigmoid(s)
    return z


def log_q_at(model: VAE, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q(z|x), log N(f^-1(z); mu, sigma)) at any z: change of variables through the inverse flow."""
    q = model.posterior(x)  # the base Gaussian q_0(z_0|x) and the flow's context h(x)
    mu, logvar, h = q.base.loc, q.base.logvar, q.context
    z0 = invert(model, z, h)
    base = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1)
    return base - flow_of(model)(z0, h)[1], base


@pytest.mark.parametrize("kind", ["planar", "iaf"])
@torch.no_grad()
def test_log_q_is_a_normalized_density_of_the_samples(kind):
    model = tiny_model(kind)
    for x in (torch.tensor([[1.0, 0.0, 1.0, 1.0]], dtype=F64), torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=F64)):
        z, log_q = rsample_and_log_prob(model.posterior(x), (2000,), torch.Generator().manual_seed(0))
        # (a) the sampler's log q equals the change of variables through the independently inverted flow
        torch.testing.assert_close(log_q, log_q_at(model, x, z)[0], rtol=1e-9, atol=1e-9)
        # (b) int q(z|x) dz = E_r[q / r] = 1 by importance sampling from r = N(mean, 9 cov) of q's draws
        # (3x q's spread: heavier tails than q, so q / r has a finite variance); 5 standard errors
        zs = z[:, 0]
        r = MultivariateNormal(zs.mean(0), 9.0 * torch.cov(zs.T))
        torch.manual_seed(1)
        n = 200_000
        zr = r.sample((n,))[:, None]
        lq, base = log_q_at(model, x, zr)
        w = torch.exp(lq[:, 0] - r.log_prob(zr)[:, 0])
        se = float(w.std()) / math.sqrt(n)
        assert se < 0.03 and abs(float(w.mean()) - 1.0) < 5 * se, (float(w.mean()), se)
        # the check has power: the base density without the Jacobian term does not integrate to 1
        wb = torch.exp(base[:, 0] - r.log_prob(zr)[:, 0])
        assert abs(float(wb.mean()) - 1.0) > 10 * float(wb.std()) / math.sqrt(n) + 0.1


# -- the bounds against the exact log p(x) --------------------------------------------------------


@pytest.mark.parametrize("kind", ["planar", "iaf"])
def test_bounds_against_the_exact_log_px_by_grid_integration(kind):
    model = tiny_model(kind)
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]],
                     dtype=F64)
    with torch.no_grad():
        assert closed_form_kl(model.posterior(x), model.prior_distribution()) is None
    grid = grid_log_marginal(model, x, n=400)
    exact, grid_err = grid.log_px, grid.error
    assert (grid_err < 1e-4).all() and (exact < 0).all()
    check = check_bounds_against_exact(model, x, exact, grid_err)
    with torch.no_grad():
        # the test has power: a log q without the flow's log|det| shifts log w by it, about its mean, which is
        # more than the tolerance of (b) for at least 3 of the 4 examples
        q = model.posterior(x)
        mu, logvar, h = q.base.loc, q.base.logvar, q.context
        z0 = DiagonalNormal(mu, logvar).rsample((2000,), torch.Generator().manual_seed(2))
        mean_log_det = flow_of(model)(z0, h)[1].mean(0)
    assert (mean_log_det.abs() > 5 * check.iwae_se + grid_err).sum() >= 3, (mean_log_det, check.iwae_se)
    res = check.result
    assert res.kl_per_dim == [] and res.kl_analytic is None  # (mu, logvar) are the base's, not q's


# -- the model's interface ------------------------------------------------------------------------


@pytest.mark.parametrize("kind, arch, likelihood", [("iaf", "mlp", "bernoulli"), ("planar", "conv", "gaussian"),
                                                    ("iaf", "conv", "continuous-bernoulli")])
def test_interface_any_arch_and_likelihood(kind, arch, likelihood):
    torch.manual_seed(0)
    model = VAE(shape=(1, 8, 8), latent=3, arch=arch, hidden=[16], likelihood=likelihood,
                posterior={"name": kind, "hidden": 8, "context": 4})
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    q = model.posterior(x)
    z, log_q = rsample_and_log_prob(q, (7,), torch.Generator().manual_seed(0))
    assert z.shape == (7, 5, 3) and log_q.shape == (7, 5) and torch.isfinite(log_q).all()
    out = model.encode(x)  # [mu, logvar, h(x)]
    mu, logvar, h = out[..., :3], out[..., 3:6], out[..., 6:]
    assert mu.shape == logvar.shape == (5, 3) and h.shape == (5, 4)
    torch.testing.assert_close(q.base.loc, mu)
    torch.testing.assert_close(q.base.logvar, logvar.clamp(min=model.posterior_family.min_logvar))
    # z is the flow of the base draw: the same noise without the flow gives z_0 = mu + sigma eps
    z0 = DiagonalNormal(q.base.loc, q.base.logvar).rsample((7,), torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, flow_of(model)(z0, h)[0])
    assert closed_form_kl(q, model.prior_distribution()) is None and model.reconstruct(x).shape == x.shape
    terms = elbo(model, x, generator=torch.Generator().manual_seed(0))
    (-terms.elbo.mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow_of(model).parameters())
    assert f'"posterior": "{kind}"' in repr(model)
    # no flow: the encoder and its parameters are as before (old checkpoints load)
    plain = VAE(shape=(1, 8, 8), latent=3, arch=arch, hidden=[16])
    assert not hasattr(plain.posterior_family, "flow") and not any("flow" in k for k in plain.state_dict())
    assert plain.encode(x).shape == (5, 6)


# -- training, checkpoints, the command line --------------------------------------------------------


@pytest.fixture(scope="module")
def protos():
    return prototype_dataset(240, 60, 60, seed=0)


@pytest.mark.parametrize("kind", ["iaf", "planar"])
def test_training_improves_the_elbo_and_checkpoints_round_trip(tmp_path, protos, kind):
    cfg = TrainConfig(epochs=6, hidden=[32], latent=3, batch_size=32, lr=3e-3, posterior=kind,
                      posterior_settings={"hidden": 16, "context": 8})
    train(cfg, tmp_path / "run", dataset=protos, progress=False)
    rows = read_metrics(tmp_path / "run")
    # from ~44 nats (64 coin flips at p ~ 0.4) towards ~15 (prototype choice + 5% flips): 5 nats is well clear
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 5.0, rows
    saved = json.loads((tmp_path / "run" / "model.json").read_text())
    posterior = saved["posterior"]
    assert (posterior["name"], posterior["steps"], posterior["context"]) == (kind, 2, 8)
    loaded = VAE.load(tmp_path / "run")
    assert isinstance(flow_of(loaded), Flow) and len(flow_of(loaded).steps) == 2
    assert not any(k.endswith(".mask") or k.endswith(".order") for k in loaded.state_dict())  # derived, not stored
    loaded.save(tmp_path / "copy")
    again = VAE.load(tmp_path / "copy")
    x = protos.test[:10].flatten(1)
    with torch.no_grad():
        za, qa = rsample_and_log_prob(loaded.posterior(x), (5,), torch.Generator().manual_seed(0))
        zb, qb = rsample_and_log_prob(again.posterior(x), (5,), torch.Generator().manual_seed(0))
    assert torch.equal(za, zb) and torch.equal(qa, qb) and torch.isfinite(qa).all()



def test_cli_train_and_evaluate_with_iaf_on_digits(tmp_path, capsys):
    run = tmp_path / "r"
    code, _, err = run_cli(["train", "--dataset", "digits", "--flow", "iaf", "--flow-steps", "2", "--flow-hidden",
                            "32", "--out", str(run), "--epochs", "1", "--hidden", "32", "--latent", "2", "--json"],
                           capsys)
    assert code == 0, err
    assert json.loads((run / "model.json").read_text())["posterior"]["name"] == "iaf"
    assert json.loads((run / "config.json").read_text())["model"]["posterior"]["steps"] == 2
    code, out, err = run_cli(["evaluate", str(run), "--k", "10", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out.strip().splitlines()[-1])
    for key in ("elbo", "nll", "gap", "bits_per_dim"):
        assert isinstance(data[key], float) and math.isfinite(data[key]), (key, data[key])
    assert data["nll"] > 0 and data["gap"] >= 0 and data["kl_per_dim"] == []  # no closed form with a flow


@pytest.mark.parametrize("argv, needle", [
    (["--flow", "iaf", "--flow-steps", "0"], "steps must be an integer from 1"),
    (["--flow", "maf"], "unknown posterior 'maf'"),
    (["--flow", "iaf", "--levels", "2"], "levels"),
    (["--flow", "planar", "--flow-context", "-1"], "context must be an integer from 0"),
])
def test_bad_flow_settings_one_line_status_2(tmp_path, capsys, argv, needle):
    code, _, err = run_cli(["train", "--dataset", "digits", "--out", str(tmp_path / "r"), *argv], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_bad_flow_settings_in_the_configs():
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig(posterior="iaf", posterior_settings={"steps": 0})
    with pytest.raises(ConfigError, match="steps"):
        from_dict({"flow": "iaf", "flow_steps": 0})
    with pytest.raises(ConfigError, match="unknown posterior 'maf'.*choose from"):
        TrainConfig(posterior="maf")
    with pytest.raises(ConfigError, match="levels"):
        TrainConfig(posterior="planar", levels=2)
    assert from_dict({"flow_steps": 3, "levels": 2}).posterior == "gaussian"  # flow settings without a flow are inert
    with pytest.raises(ValueError, match="levels 1"):
        from_dict({"flow": "iaf", "levels": 2})
    with pytest.raises(ValueError, match="unknown posterior 'real-nvp'.*choose from"):
        VAE(shape=(1, 8, 8), latent=3, posterior="real-nvp")
    with pytest.raises(ValueError, match="unknown posterior 'real-nvp'"):
        POSTERIORS.build("real-nvp", latent=3)
    with pytest.raises(ValueError, match="steps"):
        VAE(shape=(1, 8, 8), latent=3, posterior={"name": "planar", "steps": 0})
