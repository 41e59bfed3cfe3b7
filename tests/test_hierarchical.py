"""The two-level hierarchical VAE: densities against torch.distributions, log p(x) against a 2-D grid
integral, training (MLP, conv, VampPrior), checkpoints, resume, the CLI and the report."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from bounds_check import check_bounds_against_exact
from synthetic import prototype_dataset
from vaekit.cli import main
from vaekit.config import TrainConfig
from vaekit.distributions import rsample_and_log_prob
from vaekit.distributions.kl import closed_form_kl
from vaekit.models import VAE
from vaekit.models.hierarchical import HierarchicalVAE
from vaekit.objectives import elbo, iwae_bound
from vaekit.pages.report import write_report
from vaekit.train import read_metrics, train

pytestmark = pytest.mark.usefixtures("single_thread")


def small(arch: str = "mlp", prior: str = "standard", **kw) -> HierarchicalVAE:
    p = {"name": "vamp", "components": 4} if prior == "vamp" else prior
    torch.manual_seed(0)
    model = HierarchicalVAE(shape=(1, 8, 8), latent=3, arch=arch, hidden=[16, 12], prior=p, **kw)
    assert isinstance(model, HierarchicalVAE)
    return model


def mean_path(model: HierarchicalVAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of q along its mean path, each (B, 2L) in the order [z1, z2]: z2's from q(z2|x), z1's from
    q(z1|x, z2 = mu_2(x)); mu is the model's point code."""
    q = model.posterior(x)
    q1 = q.q_z1(q.q_z2.loc)
    mu = model.code(x)
    torch.testing.assert_close(mu, torch.cat([q1.loc, q.q_z2.loc], -1))
    return mu, torch.cat([q1.logvar, q.q_z2.logvar], -1)


def images(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch, activation", [("mlp", "relu"), ("mlp", "gated"), ("conv", "elu")])
def test_shapes_and_interface(arch, activation):
    model = small(arch, activation=activation)
    x = images()
    z, log_q = rsample_and_log_prob(model.posterior(x.flatten(1)), (7,), torch.Generator().manual_seed(0))
    assert z.shape == (7, 5, 6) and log_q.shape == (7, 5)
    z1, log_q1 = rsample_and_log_prob(model.posterior(x))
    assert z1.shape == (5, 6) and log_q1.shape == (5,)
    assert model.log_prior(z).shape == (7, 5) and model.log_likelihood(x.flatten(1), z).shape == (7, 5)
    assert model.log_likelihood(x, z).shape == (7, 5)
    mu, logvar = mean_path(model, x)
    assert mu.shape == logvar.shape == (5, 6) and model.latent_size == 6
    assert closed_form_kl(model.posterior(x), model.prior_distribution()) is None
    assert model.decode(z).shape == (7, 5, 1, 8, 8)
    assert model.observation(z[0]).sample().shape == (5, 1, 8, 8)
    s = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.z.shape == (4, 6) and s.means.shape == s.draws.shape == (4, 1, 8, 8)
    assert model.reconstruct(x).shape == x.shape
    assert iwae_bound(model, x, 10).shape == (5,) and elbo(model, x).elbo.shape == (5,)
    assert '"levels": 2' in repr(model)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_pixelcnn_likelihood_on_two_levels(arch):
    """The PixelHVAE: the decoder on [z1, z2] gives the PixelCNN's P conditioning numbers per pixel."""
    model = small(arch, likelihood={"name": "pixelcnn", "params": 2, "layers": 2, "channels": 8})
    x = images(4).flatten(1)
    terms = elbo(model, x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(terms.elbo).all() and (terms.reconstruction < 0).all()
    (-terms.elbo.mean()).backward()
    assert model.likelihood.net.condition.weight.grad.abs().sum() > 0
    assert next(model.encoder.parameters()).grad.abs().sum() > 0 and next(model.q_z1_x.parameters()).grad is not None
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).draws.shape == (2, 1, 8, 8)


def test_encode_is_the_mean_path_and_clamps_log_variances():
    model = small(min_logvar=-1.0)
    with torch.no_grad():  # push every log-variance far below the floor
        for net in (model.encoder, model.q_z1_joint, model.p_z1):
            net[-1].bias[3:] = -50.0
    x = images().flatten(1)
    mu, logvar = mean_path(model, x)
    q2 = model.posterior_z2(x)
    mu2, logvar2 = q2.loc, q2.logvar
    q1 = model.posterior_z1(model.q_z1_x(x), mu2)
    mu1, logvar1 = q1.loc, q1.logvar
    torch.testing.assert_close(mu, torch.cat([mu1, mu2], -1))
    torch.testing.assert_close(logvar, torch.cat([logvar1, logvar2], -1))
    assert (logvar == -1.0).all() and (model.prior_z1(mu2).logvar == -1.0).all()


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_log_q_and_log_prior_match_torch_distributions(prior):
    model = small(prior=prior).double()
    x = images().flatten(1).double()
    s, b, latent = 6, x.shape[0], model.latent
    z, log_q = rsample_and_log_prob(model.posterior(x), (s,), torch.Generator().manual_seed(3))
    # the same draws from the same noise: eps2 first (z2 ~ q(z2|x)), then eps1 (z1 ~ q(z1|x, z2))
    g = torch.Generator().manual_seed(3)
    eps2 = torch.randn(s, b, latent, generator=g, dtype=torch.float64)
    eps1 = torch.randn(s, b, latent, generator=g, dtype=torch.float64)
    post2 = model.posterior_z2(x)
    mu2, logvar2 = post2.loc, post2.logvar
    q2 = Normal(mu2, torch.exp(0.5 * logvar2))
    z2 = mu2 + q2.scale * eps2
    post1 = model.posterior_z1(model.q_z1_x(x), z2)
    mu1, logvar1 = post1.loc, post1.logvar
    q1 = Normal(mu1, torch.exp(0.5 * logvar1))
    z1 = mu1 + q1.scale * eps1
    torch.testing.assert_close(z, torch.cat([z1, z2], -1))
    torch.testing.assert_close(log_q, q2.log_prob(z2).sum(-1) + q1.log_prob(z1).sum(-1))
    # log p(z1, z2) = log p(z2) + log p(z1|z2)
    log_p2 = Normal(0.0, 1.0).log_prob(z2).sum(-1) if prior == "standard" else model.prior.distribution().log_prob(z2)
    p1 = model.prior_z1(z2)
    mu_p, logvar_p = p1.loc, p1.logvar
    log_p1 = Normal(mu_p, torch.exp(0.5 * logvar_p)).log_prob(z1).sum(-1)
    torch.testing.assert_close(model.log_prior(z), log_p2 + log_p1)
    assert torch.isfinite(model.log_prior(z)).all()
    # log p(x|z1, z2) is the likelihood of the decoder's output on [z1, z2]
    logits = model.decoder(torch.cat([z1, z2], -1)).flatten(-3)  # (S, B, 1, 8, 8) images -> (S, B, 64)
    torch.testing.assert_close(model.log_likelihood(x, z), Bernoulli(logits=logits).log_prob(x).sum(-1))


# -- log p(x) of a tiny model, exactly ---------------------------------------------------------


def tiny_model(prior: str) -> HierarchicalVAE:
    """1-D z1 and z2, 3 Bernoulli pixels; weights scaled up so the posterior is far from q's init."""
    p = {"name": "vamp", "components": 3} if prior == "vamp" else prior
    torch.manual_seed(0)
    model = HierarchicalVAE(shape=(1, 1, 3), latent=1, hidden=[8], activation="tanh", prior=p).double()
    with torch.no_grad():
        for q in model.decoder.parameters():
            q.mul_(3.0)
        for q in model.p_z1.parameters():
            q.mul_(1.5)
        if prior == "vamp":
            model.prior.pseudo_inputs.copy_(torch.rand(3, 3, generator=torch.Generator().manual_seed(1)))
    return model.eval()


@torch.no_grad()
def grid_log_px(model: HierarchicalVAE, x: torch.Tensor, n: int, r: float = 9.0) -> torch.Tensor:
    """log p(x) = log int int p(z2) p(z1|z2) p(x|z1, z2) dz1 dz2 by the midpoint rule on [-r, r]^2, with
    z1 = mu_p(z2) + s_p(z2) t (so p(z1|z2) dz1 = N(t; 0, 1) dt), all densities from torch.distributions."""
    c = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2 * r - r
    h = 2 * r / n
    z2, t = (g.reshape(-1, 1) for g in torch.meshgrid(c, c, indexing="ij"))
    out = model.p_z1(z2)
    mu, logvar = out[:, :1], out[:, 1:].clamp(min=model.min_logvar)
    z1 = mu + torch.exp(0.5 * logvar) * t
    logits = model.decoder(torch.cat([z1, z2], -1)).flatten(-3)  # (n^2, 1, 1, 3) images -> (n^2, 3)
    log_px_z = Bernoulli(logits=logits[:, None, :]).log_prob(x[None]).sum(-1)
    if model.prior.name == "vamp":
        log_p2 = model.prior.distribution().log_prob(z2)[:, None]
    else:
        log_p2 = Normal(0.0, 1.0).log_prob(z2)
    return torch.logsumexp(log_px_z + log_p2 + Normal(0.0, 1.0).log_prob(t) + 2 * math.log(h), 0)


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_bounds_against_the_exact_log_px_by_grid_integration(prior):
    model = tiny_model(prior)
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    exact = grid_log_px(model, x, 800)
    grid_err = (exact - grid_log_px(model, x, 400)).abs()  # midpoint rule: halving the cells bounds its error
    assert (grid_err < 1e-4).all(), grid_err
    assert (exact < 0).all()
    res = check_bounds_against_exact(model, x, exact, grid_err).result
    # no closed-form per-unit KL for two levels: p(z1|z2) is not N(0, I)
    assert res.kl_per_dim == [] and res.kl_analytic is None
    assert len(res.latent_variance) == 2


# -- training, checkpoints, resume ---------------------------------------------------------------


@pytest.fixture(scope="module")
def protos():
    return prototype_dataset(240, 60, 60, seed=0)


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=6, hidden=[32], latent=3, batch_size=32, lr=3e-3, levels=2)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("model", ["mlp", "conv"])
def test_training_improves_the_elbo_and_checkpoints_round_trip(tmp_path, protos, model):
    result = train(cfg(model=model), tmp_path / "run", dataset=protos, progress=False)
    rows = read_metrics(tmp_path / "run")
    assert len(rows) == 6 and result.epochs == 6
    # from ~44 nats (64 coin flips at p ~ 0.4) towards ~15 (prototype choice + 5% flips): 5 nats is well clear
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 5.0, rows
    loaded = HierarchicalVAE.load(tmp_path / "run")
    assert isinstance(VAE.load(tmp_path / "run"), HierarchicalVAE) and loaded.arch == model
    again = HierarchicalVAE.load(tmp_path / "run")
    x = protos.test[:10].flatten(1)
    with torch.no_grad():
        a = iwae_bound(loaded, x, 20, torch.Generator().manual_seed(0))
        b = iwae_bound(again, x, 20, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.isfinite(a).all()
    loaded.save(tmp_path / "copy")
    with torch.no_grad():
        c = iwae_bound(HierarchicalVAE.load(tmp_path / "copy"), x, 20, torch.Generator().manual_seed(0))
    assert torch.equal(a, c)


def test_resume_after_interruption_gives_the_same_weights(tmp_path, protos):
    train(cfg(epochs=3), tmp_path / "full", dataset=protos, progress=False)

    class Interrupt(Exception):
        pass

    def stop_after_1(row):
        if row["epoch"] == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg(epochs=3), tmp_path / "cut", dataset=protos, progress=False, on_epoch=stop_after_1)
    train(cfg(epochs=3), tmp_path / "cut", dataset=protos, progress=False, resume=True)
    assert [r["epoch"] for r in read_metrics(tmp_path / "cut")] == [1, 2, 3]
    full, cut = HierarchicalVAE.load(tmp_path / "full"), HierarchicalVAE.load(tmp_path / "cut")
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), cut.parameters()))


def test_vampprior_on_top_trains(tmp_path, protos):
    train(cfg(epochs=1, prior="vamp", prior_settings={"components": 5}), tmp_path / "run", dataset=protos,
          progress=False)
    model = HierarchicalVAE.load(tmp_path / "run")
    assert model.prior.name == "vamp" and model.prior.components == 5
    # the VampPrior's components are q(z2|u_k): the encoder of the top level
    mu, logvar = model.prior.components_params()
    u = torch.nn.functional.hardtanh(model.prior.pseudo_inputs, 0.0, 1.0)
    q2 = model.posterior_z2(u)
    torch.testing.assert_close((mu, logvar), (q2.loc, q2.logvar))
    with torch.no_grad():
        z, _ = rsample_and_log_prob(model.posterior(protos.test[:8].flatten(1)), (4,))
        assert torch.isfinite(model.log_prior(z)).all()
        assert model.sample(3).z.shape == (3, 6)
    assert math.isfinite(read_metrics(tmp_path / "run")[-1]["valid_elbo"])


# -- the command line and the report ------------------------------------------------------------------


def test_cli_train_evaluate_and_report_on_digits(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--dataset", "digits", "--levels", "2", "--out", str(run), "--epochs", "1",
                 "--hidden", "32", "--latent", "2", "--json"]) == 0
    assert json.loads((run / "model.json").read_text())["model"] == "hvae"
    assert json.loads((run / "config.json").read_text())["model"]["levels"] == 2
    capsys.readouterr()
    assert main(["evaluate", str(run), "--k", "10", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("elbo", "nll", "gap", "bits_per_dim"):
        assert isinstance(data[key], float) and math.isfinite(data[key]), (key, data[key])
    assert data["nll"] > 0 and data["gap"] >= 0 and 0 <= data["active_units"] <= 4 and data["kl_per_dim"] == []
    path = write_report(run, k=10, limit=40)
    page = path.read_text()
    assert "latent 2 + 2 (two levels)" in page and "Interpolations" in page
    assert page.count("data:image/png;base64,") >= 5  # curves, samples, reconstructions, interpolations, traversals


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_vaekit_grid_integration_uses_the_hierarchical_prior(prior):
    """exact.grid_log_marginal (behind 'vaekit bound') integrates log p(x|z) + log p(z2) + log p(z1|z2) for a
    1+1-D model: it must equal this file's independent 800x800 grid within both grids' errors."""
    from vaekit.evaluation.exact import grid_log_marginal

    model = tiny_model(prior)
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    exact = grid_log_px(model, x, 800)
    res = grid_log_marginal(model, x, n=400)
    assert ((res.log_px - exact).abs() < 10 * res.error + 1e-4).all(), (res.log_px, exact, res.error)
