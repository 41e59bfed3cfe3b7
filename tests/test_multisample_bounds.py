"""Rainforth et al.'s multi-sample bounds (MIWAE, CIWAE, PIWAE): each objective's value against the formula computed
by hand from log weights drawn here, their identities with IWAE and the ELBO on the same draws, PIWAE's gradients
routed by the trainer's step (the encoder's the MIWAE gradient, the decoder's the IWAE_{MK} gradient), and training
through the command line, a config file and vaekit.fit, resumed bit-exactly."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

import vaekit
from cli_run import run_cli
from vaekit import runtime as D
from vaekit.config import TrainConfig
from vaekit.errors import ConfigError
from vaekit.models import VAE
from vaekit.objectives import INFERENCE, OBJECTIVES, build_objective, elbo
from vaekit.objectives.ciwae import CIWAE
from vaekit.objectives.importance import IWAE
from vaekit.objectives.miwae import MIWAE
from vaekit.objectives.piwae import PIWAE
from vaekit.train import LossModule, _make_step, read_metrics

SEED = 11


@pytest.fixture
def model() -> VAE:
    torch.manual_seed(0)
    m = VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    with torch.no_grad():  # a posterior away from the prior, so that the bounds differ
        for p in m.parameters():
            p.mul_(2.0)
    return m


@pytest.fixture
def x() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.full((5, 1, 4, 4), 0.4), generator=g)


def by_hand(model: VAE, x: torch.Tensor, draws: int, seed: int = SEED) -> torch.Tensor:
    """log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x), (draws, N), nats: z_s = mu + sigma eps_s with eps_s
    drawn here from a generator seeded with ``seed`` (as the objectives draw from the global one seeded alike),
    each density written out with torch.distributions."""
    q = model.posterior(x)
    mu, sigma = q.loc, torch.exp(0.5 * q.logvar)
    eps = torch.randn((draws, *mu.shape), generator=torch.Generator().manual_seed(seed))
    z = mu + sigma * eps
    log_q = Normal(mu, sigma).log_prob(z).sum(-1)
    log_prior = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_lik = Bernoulli(logits=model.decode(z)).log_prob(x).sum((-3, -2, -1))
    return log_lik + log_prior - log_q


def log_mean_exp(a: torch.Tensor, dim: int) -> torch.Tensor:
    """log (1/n) sum exp(a) along ``dim``, in float64 with the maximum taken out."""
    a = a.double()
    top = a.max(dim, keepdim=True).values
    return (top + torch.log(torch.exp(a - top).mean(dim, keepdim=True))).squeeze(dim)


def loss_of(objective, model: VAE, x: torch.Tensor, seed: int = SEED):
    torch.manual_seed(seed)
    return objective.loss(model, x)


@pytest.mark.parametrize("m, k", [(3, 4), (1, 5), (4, 1)])
def test_miwae_is_the_mean_of_m_iwae_bounds_computed_by_hand(model, x, m, k):
    log_w = by_hand(model, x, m * k).reshape(m, k, -1)
    expected = log_mean_exp(log_w, 1).mean(0)  # (1/M) sum_m log (1/K) sum_k w_mk
    out = loss_of(MIWAE(m=m, k=k), model, x)
    torch.testing.assert_close(out.loss.double(), -expected.mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.terms.elbo.double(), log_w.reshape(m * k, -1).double().mean(0), rtol=1e-5,
                               atol=1e-5)
    assert out.inference is None


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_ciwae_mixes_the_elbo_and_iwae_of_the_same_draws_computed_by_hand(model, x, beta):
    log_w = by_hand(model, x, 6)
    expected = beta * log_w.double().mean(0) + (1 - beta) * log_mean_exp(log_w, 0)
    out = loss_of(CIWAE(beta=beta, k=6), model, x)
    torch.testing.assert_close(out.loss.double(), -expected.mean(), rtol=1e-5, atol=1e-5)


def test_piwae_trains_the_decoder_on_iwae_mk_and_the_encoder_on_miwae_by_hand(model, x):
    log_w = by_hand(model, x, 6)
    out = loss_of(PIWAE(m=2, k=3), model, x)
    torch.testing.assert_close(out.loss.double(), -log_mean_exp(log_w, 0).mean(), rtol=1e-5, atol=1e-5)
    miwae = log_mean_exp(log_w.reshape(2, 3, -1), 1).mean(0)
    torch.testing.assert_close(out.inference.double(), -miwae.mean(), rtol=1e-5, atol=1e-5)


def test_the_identities_hold_on_the_same_draws(model, x):
    with torch.no_grad():
        iwae = loss_of(IWAE(k=5), model, x).loss
        monte_carlo_elbo = -elbo(model, x, samples=5, analytic_kl=False,
                                 generator=torch.Generator().manual_seed(SEED)).elbo.mean()
        torch.testing.assert_close(loss_of(MIWAE(m=1, k=5), model, x).loss, iwae)  # MIWAE(1, K) = IWAE_K
        torch.testing.assert_close(loss_of(MIWAE(m=5, k=1), model, x).loss, monte_carlo_elbo)  # MIWAE(M, 1) = ELBO
        torch.testing.assert_close(loss_of(CIWAE(beta=0.0, k=5), model, x).loss, iwae)  # CIWAE(0) = IWAE_K
        torch.testing.assert_close(loss_of(CIWAE(beta=1.0, k=5), model, x).loss, monte_carlo_elbo)  # CIWAE(1) = ELBO
        piwae = loss_of(PIWAE(m=1, k=5), model, x)
        torch.testing.assert_close(piwae.loss, iwae)  # PIWAE(1, K): both bounds are IWAE_K
        torch.testing.assert_close(piwae.inference, iwae)
        assert -loss_of(PIWAE(m=5, k=1), model, x).inference == pytest.approx(-float(monte_carlo_elbo), abs=1e-5)


def test_the_validation_figures_are_the_bounds_of_the_validation_draws(model, x):
    with torch.no_grad():
        sums = PIWAE(m=2, k=3).validation_sums(model, x, None, torch.Generator().manual_seed(SEED), 1)
        log_w = by_hand(model, x[:1], 6)  # chunks of 8 x 1 // 6 = 1 example: the first chunk's draws come first
    assert set(sums) == {"iwae_mk", "miwae"} and set(PIWAE.bounds) == set(sums)
    assert all(v.dtype == torch.float64 and v.dim() == 0 for v in sums.values())
    assert float(sums["iwae_mk"]) > float(sums["miwae"])  # on average IWAE_{MK} >= MIWAE_{M,K}; 5 examples
    with torch.no_grad():
        one = MIWAE(m=2, k=3).validation_sums(model, x[:1], None, torch.Generator().manual_seed(SEED), 1)
        both = CIWAE(beta=0.5, k=6).validation_sums(model, x[:1], None, torch.Generator().manual_seed(SEED), 1)
    torch.testing.assert_close(one["miwae"], log_mean_exp(log_w.reshape(2, 3, -1), 1).mean(0).sum(), rtol=1e-5,
                               atol=1e-5)
    mixed = 0.5 * log_w.double().mean(0) + 0.5 * log_mean_exp(log_w, 0)
    torch.testing.assert_close(both["ciwae"], mixed.sum(), rtol=1e-5, atol=1e-5)


def _one_step(model: VAE, x: torch.Tensor, clip: float | None = None) -> dict[str, torch.Tensor]:
    """The change of each parameter in one step of the trainer's own step function (PIWAE(2, 3), SGD with lr 1:
    minus the gradient the step routed to it, clipped as the trainer clips)."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    step = _make_step(LossModule(model, PIWAE(m=2, k=3)), model, torch.optim.SGD(model.parameters(), lr=1.0),
                      TrainConfig(hidden=[8], latent=2, clip_grad=clip), torch.autocast("cpu", enabled=False),
                      D.DistContext())
    torch.manual_seed(SEED)
    step(x, 1.0)
    return {name: p.detach() - before[name] for name, p in model.named_parameters()}


def test_the_step_routes_the_miwae_gradient_to_the_encoder_and_the_iwae_mk_gradient_to_the_decoder(model, x):
    # the reference: autograd of each bound, by hand, on the same draws, into every parameter
    params = dict(model.named_parameters())
    log_w = by_hand(model, x, 6)
    iwae_mk = (torch.logsumexp(log_w, 0) - math.log(6)).mean()
    miwae = (torch.logsumexp(log_w.reshape(2, 3, -1), 1) - math.log(3)).mean(0).mean()
    d_iwae = dict(zip(params, torch.autograd.grad(iwae_mk, list(params.values()), retain_graph=True)))
    d_miwae = dict(zip(params, torch.autograd.grad(miwae, list(params.values()))))
    encoder = {id(p) for p in model.inference_parameters()}
    assert encoder and len(encoder) < len(params)
    moved = _one_step(model, x)
    for name, p in params.items():
        want = d_miwae[name] if id(p) in encoder else d_iwae[name]  # SGD, lr 1: the step is + d bound
        torch.testing.assert_close(moved[name], want, rtol=1e-4, atol=1e-6)
        other = d_iwae[name] if id(p) in encoder else d_miwae[name]
        if id(p) in encoder:  # the two bounds' encoder gradients do differ: the test tells them apart
            assert not torch.allclose(want, other, rtol=1e-3, atol=1e-6)


def test_gradient_clipping_covers_both_routes(model, x):
    moved = _one_step(model, x, clip=1e-3)
    norm = torch.sqrt(sum((d.double() ** 2).sum() for d in moved.values()))
    assert float(norm) == pytest.approx(1e-3, rel=1e-4)  # clip_grad_norm_ over every parameter, after both passes


def test_the_loss_module_hands_the_encoder_loss_to_the_step_by_name(model, x):
    torch.manual_seed(SEED)
    loss, stats, extra = LossModule(model, PIWAE(m=2, k=3))(x, 1.0)
    assert set(extra) == {INFERENCE} and extra[INFERENCE].requires_grad and loss.requires_grad
    assert stats.shape == (3,)
    _, _, none = LossModule(model, MIWAE(m=2, k=3))(x, 1.0)
    assert none == {}


def test_settings_are_checked_in_one_line_naming_them(model):
    for spec, text in (({"name": "miwae", "m": 0}, "m must be an integer"),
                       ({"name": "piwae", "m": -2}, "m must be an integer"),
                       ({"name": "ciwae", "beta": 1.5}, "beta must be a number from 0 to 1"),
                       ({"name": "ciwae", "beta": -0.1}, "beta must be a number from 0 to 1")):
        with pytest.raises(ConfigError, match=text) as err:
            build_objective(spec, k=2)
        assert len(str(err.value).splitlines()) == 1 and spec["name"] in str(err.value)
    assert build_objective({"name": "miwae", "m": 4}, k=3).draws() == 12
    assert build_objective({"name": "ciwae", "beta": 0.2}, k=3).draws() == 3
    ciwae = build_objective({"name": "ciwae", "beta": 0.2}, k=3, beta=4.0)
    assert ciwae.mix == 0.2 and ciwae.beta == 1.0  # its beta is its own; the KL weight does not apply
    discrete = VAE(shape=(1, 4, 4), latent=3, hidden=[8], posterior="categorical")
    for name in ("miwae", "ciwae", "piwae"):
        with pytest.raises(ConfigError, match="discrete"):
            OBJECTIVES.build(name, k=2).for_model(discrete)


def test_piwae_refuses_a_model_whose_posterior_has_no_parameters_of_its_own(model):
    class Exact(VAE):
        def inference_parameters(self):
            return []

    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="no parameters of its own"):
        PIWAE(m=2, k=2).for_model(Exact(shape=(1, 4, 4), latent=2, hidden=[8]))
    assert MIWAE(m=2, k=2).for_model(model) is not None


FLAGS = {"miwae": ["--m", "2", "--k", "3"], "ciwae": ["--ciwae-beta", "0.3", "--k", "3"],
         "piwae": ["--m", "2", "--k", "3"]}
FIGURES = {"miwae": {"valid_miwae"}, "ciwae": {"valid_ciwae"}, "piwae": {"valid_iwae_mk", "valid_miwae"}}
SETTINGS = {"miwae": {"m": 2}, "ciwae": {"beta": 0.3}, "piwae": {"m": 2}}
BASE = ["train", "--dataset", "digits", "--binarize", "dynamic", "--latent", "2", "--hidden", "16", "--threads", "1"]


@pytest.mark.parametrize("name", ["miwae", "ciwae", "piwae"])
def test_each_trains_through_the_command_line(tmp_path, capsys, name):
    run = tmp_path / name
    code, out, err = run_cli([*BASE, "--epochs", "2", "--objective", name, *FLAGS[name], "--out", str(run),
                              "--json"], capsys)
    assert code == 0, err
    rows = read_metrics(run)
    assert len(rows) == 2 and all(FIGURES[name] <= set(r) for r in rows)
    assert all(math.isfinite(r[key]) for r in rows for key in FIGURES[name])
    assert "valid_iwae" not in rows[0]  # no figure claims to be IWAE_k of --k draws
    assert json.loads((run / "config.json").read_text())["objective"] == {"name": name, **SETTINGS[name]}
    result = json.loads(out.strip().splitlines()[-1])
    assert result["selected_by"] == rows[0]["selected_by"] and "K = 3" in result["selected_by"]
    if name == "piwae":  # the tighter bound of the pooled draws is the larger, epoch by epoch
        assert all(r["valid_iwae_mk"] >= r["valid_miwae"] for r in rows)


@pytest.mark.parametrize("name", ["miwae", "ciwae", "piwae"])
def test_each_trains_through_fit_and_a_config_file_and_resumes_bit_exact(tmp_path, capsys, name):
    g = torch.Generator().manual_seed(3)
    images = torch.bernoulli(torch.full((60, 1, 4, 4), 0.3), generator=g)
    flat = {"miwae": {"m": 2}, "ciwae": {"ciwae_beta": 0.3}, "piwae": {"m": 2}}[name]
    result = vaekit.fit(VAE(shape=(1, 4, 4), latent=2, hidden=[8]), images[:50], images[50:], out=tmp_path / "fit",
                        epochs=2, objective=name, k=3, progress=False, **flat)
    assert result.epochs == 2 and "K = 3" in result.selected_by and math.isfinite(result.best_score)
    assert json.loads((tmp_path / "fit" / "config.json").read_text())["objective"] == {"name": name,
                                                                                       **SETTINGS[name]}
    table = "".join(f"{key} = {value}\n" for key, value in SETTINGS[name].items())
    config = tmp_path / f"{name}.toml"
    config.write_text('dataset = "digits"\nbinarize = "dynamic"\nepochs = 3\nthreads = 1\nk = 3\n[model]\n'
                      f'latent = 2\nhidden = [16]\n[objective]\nname = "{name}"\n{table}')
    for args in ([], ["--epochs", "1"], ["--resume"]):
        out = tmp_path / ("full" if not args else "cut")
        code, _, err = run_cli(["train", "--config", str(config), "--out", str(out), "--quiet", *args], capsys)
        assert code == 0, err
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "full")]
    assert len(strip) == 3 and strip == [{k: v for k, v in r.items() if k != "seconds"}
                                         for r in read_metrics(tmp_path / "cut")]
    full, cut = vaekit.load(tmp_path / "full"), vaekit.load(tmp_path / "cut")
    assert all(torch.equal(a, b) for a, b in zip(full.parameters(), cut.parameters()))


def test_piwae_trains_under_bf16_autocast_with_clipping_and_only_its_encoder(tmp_path, capsys):
    base = [*BASE, "--objective", "piwae", "--m", "2", "--k", "2", "--quiet"]
    code, _, err = run_cli([*base, "--epochs", "1", "--precision", "bf16", "--clip-grad", "1",
                            "--out", str(tmp_path / "bf16")], capsys)
    assert code == 0, err
    assert all(math.isfinite(r["valid_iwae_mk"]) for r in read_metrics(tmp_path / "bf16"))
    code, _, err = run_cli([*base, "--epochs", "1", "--init-from", str(tmp_path / "bf16"), "--train-only", "encoder",
                            "--out", str(tmp_path / "encoder")], capsys)
    assert code == 0, err
    before, after = vaekit.load(tmp_path / "bf16"), vaekit.load(tmp_path / "encoder")
    encoder = {id(p) for p in after.inference_parameters()}
    pairs = [(a, b, id(b) in encoder) for a, b in zip(before.parameters(), after.parameters())]
    assert all(torch.equal(a, b) for a, b, mine in pairs if not mine)  # the generative model stayed fixed
    assert not all(torch.equal(a, b) for a, b, mine in pairs if mine)  # q(z|x) trained on MIWAE alone


def _grads(objective, model: VAE, x: torch.Tensor, estimator, part: str = "loss") -> dict[str, torch.Tensor]:
    """d(the objective's ``part`` loss)/d(each parameter) under ``estimator``, its draws from the global generator
    seeded with SEED."""
    from vaekit.objectives.reparameterized import objective_loss

    torch.manual_seed(SEED)
    out = objective_loss(objective, model, x, estimator=estimator)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(getattr(out, part), list(params.values()), allow_unused=True)
    return {name: g if g is not None else torch.zeros_like(p) for (name, p), g in zip(params.items(), grads)}


def test_the_reparameterized_estimators_act_on_their_draws(model, x):
    """STL and DReG act where the draws are made (vaekit.objectives.terms), so the bounds need no code of their own:
    DReG of MIWAE(1, K) is DReG of IWAE_K, and the trainer's step gives PIWAE's encoder DReG's MIWAE gradient while
    its decoder keeps the IWAE_{MK} gradient."""
    reparameterized = pytest.importorskip("vaekit.objectives.reparameterized")
    dreg, pathwise = reparameterized.build_estimator("dreg"), reparameterized.build_estimator("pathwise")
    encoder = {id(p) for p in model.inference_parameters()}
    names = [name for name, p in model.named_parameters() if id(p) in encoder]
    one, iwae = _grads(MIWAE(m=1, k=4), model, x, dreg), _grads(IWAE(k=4), model, x, dreg)
    for name in one:
        torch.testing.assert_close(one[name], iwae[name], rtol=1e-5, atol=1e-6)
    miwae_dreg = _grads(MIWAE(m=2, k=3), model, x, dreg)
    miwae_path = _grads(MIWAE(m=2, k=3), model, x, pathwise)
    assert not all(torch.allclose(miwae_dreg[n], miwae_path[n], rtol=1e-3, atol=1e-6) for n in names)  # it acts
    iwae_mk = _grads(IWAE(k=6), model, x, pathwise)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    step = _make_step(LossModule(model, PIWAE(m=2, k=3), estimator=dreg), model,
                      torch.optim.SGD(model.parameters(), lr=1.0), TrainConfig(hidden=[8], latent=2),
                      torch.autocast("cpu", enabled=False), D.DistContext())
    torch.manual_seed(SEED)
    step(x, 1.0)
    for name, p in model.named_parameters():
        want = miwae_dreg[name] if name in names else iwae_mk[name]  # SGD, lr 1: minus the gradient of the loss
        torch.testing.assert_close(p.detach() - before[name], -want, rtol=1e-4, atol=1e-6)


def test_fit_counts_the_draws_of_miwae_in_its_memory_check(monkeypatch):
    """vaekit.fit's memory check sizes a step by the objective's draws per example (MIWAE's m x k), not k alone."""
    import types

    from vaekit.config import resolve
    from vaekit.training import trainer

    seen = []
    monkeypatch.setattr(trainer, "check_draws", lambda model, draws, batch, device, names: seen.append((draws, names)))
    model = vaekit.VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    cfg = resolve({"objective": {"name": "miwae", "m": 3}, "k": 5}, {})
    trainer._check_fit_memory(model, types.SimpleNamespace(shape=(1, 4, 4)), cfg)
    assert seen == [(15, ("m and k", "batch_size"))]
