"""Extending vaekit from outside the package: a new prior, objective or model family is one class plus one
registration, and then it trains (and evaluates) through Python, the command line and config files without
further edits."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Laplace, Normal, kl_divergence

import vaekit
from cli_run import run_cli
from vaekit import VAE
from vaekit.components import PRIORS, Prior
from vaekit.config import from_dict
from vaekit.errors import ConfigError
from vaekit.io.checkpoint import read_safetensors
from vaekit.models import FAMILIES, Family
from vaekit.objectives import OBJECTIVES, ElboTerms, Loss, Objective, elbo
from vaekit.train import read_metrics, train

NAME = "test-laplace"


@dataclass
class LaplaceConfig:
    scale: float = 1.0  # b of Laplace(0, b) in every latent unit

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")


class LaplacePrior(Prior):
    """p(z) = prod_j Laplace(z_j; 0, b): heavier tails than N(0, I); no closed-form KL to a Gaussian q."""

    def __init__(self, latent: int, scale: float = 1.0):
        super().__init__(latent)
        self.scale = float(scale)

    def distribution(self) -> Independent:
        loc = torch.zeros(self.latent, device=self._anchor.device, dtype=self._anchor.dtype)
        return Independent(Laplace(loc, torch.full_like(loc, self.scale)), 1)


@pytest.fixture(autouse=True)
def laplace_registered():
    PRIORS.register(NAME, LaplaceConfig, prefix="laplace")(LaplacePrior)
    yield
    PRIORS.unregister(NAME)


def test_the_new_prior_works_in_python_with_a_monte_carlo_kl():
    torch.manual_seed(0)
    model = VAE(shape=(1, 4, 4), latent=2, hidden=[8], prior={"name": NAME, "scale": 0.5})
    assert isinstance(model.prior, LaplacePrior) and model.prior.scale == 0.5
    assert model.describe()["prior"] == {"name": NAME, "scale": 0.5}
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.5))
    terms = elbo(model, x, samples=20000, generator=torch.Generator().manual_seed(1))
    # no closed form is registered: the KL is E_q[log q(z|x) - log p(z)], checked against an independent estimate
    q = model.posterior(x)
    z = q.rsample((20000,), torch.Generator().manual_seed(2))
    reference = (q.log_prob(z) - model.prior.log_prob(z)).mean(0)
    spread = (q.log_prob(z) - model.prior.log_prob(z)).std(0) / math.sqrt(20000)
    assert torch.all((terms.kl - reference).abs() < 5 * math.sqrt(2) * spread)
    with pytest.raises(Exception, match="scale must be > 0"):
        VAE(shape=(1, 4, 4), latent=2, hidden=[8], prior={"name": NAME, "scale": -1.0})


def test_the_new_prior_trains_and_evaluates_through_the_command_line(tmp_path, capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and "--laplace-scale" in out and NAME in out
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--dataset", "digits", "--binarize", "dynamic", "--prior", NAME,
                              "--laplace-scale", "0.7", "--latent", "2", "--hidden", "16", "--epochs", "2",
                              "--out", str(run), "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    assert json.loads((run / "model.json").read_text())["prior"] == {"name": NAME, "scale": 0.7}
    assert json.loads((run / "config.json").read_text())["model"]["prior"] == {"name": NAME, "scale": 0.7}
    code, out, err = run_cli(["evaluate", str(run), "--k", "20", "--limit", "40", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert math.isfinite(result["nll"]) and result["kl_per_dim"] == []  # a Monte Carlo KL: no closed form per unit
    code, _, err = run_cli(["train", "--dataset", "digits", "--prior", NAME, "--laplace-scale", "-1",
                            "--epochs", "1", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "scale must be > 0" in err and len(err.strip().splitlines()) == 1


def test_the_new_prior_trains_from_a_nested_config_file(tmp_path, capsys):
    config = tmp_path / "laplace.toml"
    config.write_text(f'dataset = "digits"\nbinarize = "dynamic"\nepochs = 1\n\n[model]\nlatent = 2\nhidden = [16]\n\n'
                      f'[model.prior]\nname = "{NAME}"\nscale = 2\n')
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--config", str(config), "--out", str(run), "--quiet", "--device", "cpu"], capsys)
    assert code == 0, err
    assert json.loads((run / "model.json").read_text())["prior"] == {"name": NAME, "scale": 2.0}
    code, _, err = run_cli(["evaluate", str(run), "--k", "10", "--limit", "20"], capsys)
    assert code == 0, err
    # a flag overrides the file's setting; a misspelt setting is one line with a suggestion
    code, _, err = run_cli(["train", "--config", str(config), "--laplace-scale", "3", "--out", str(tmp_path / "r2"),
                            "--quiet"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r2" / "model.json").read_text())["prior"]["scale"] == 3.0
    config.write_text(f'dataset = "digits"\n[model.prior]\nname = "{NAME}"\nscael = 2\n')
    code, _, err = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "r3")], capsys)
    assert code == 2 and "did you mean 'scale'" in err and len(err.strip().splitlines()) == 1


# -- an objective defined outside vaekit: beta-TCVAE's decomposed KL (Chen et al. 2018) -------------------------------

TC_NAME = "test-beta-tcvae"


@dataclass
class TCConfig:
    alpha: float = 1.0  # weight of the index-code mutual information I(x; z)
    weight: float = 6.0  # beta of the total correlation TC(z)
    gamma: float = 1.0  # weight of the dimension-wise KL sum_j KL(q(z_j) || p(z_j))


class BetaTCVAE(Objective):
    """-mean_x [E_q log p(x|z) - alpha I - weight TC - gamma DWKL], the three terms estimated at z ~ q(z|x) by
    minibatch-weighted sampling: log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N M), N the data set's size, M the
    batch's; likewise each log q(z_id). With alpha = weight = gamma = 1 the sum is E_q[log q(z|x) - log p(z)]."""

    def __init__(self, alpha: float = 1.0, weight: float = 6.0, gamma: float = 1.0, **shared):
        super().__init__(**shared)
        self.alpha, self.weight, self.gamma = alpha, weight, gamma

    def selection(self):
        return "valid beta-TCVAE objective", lambda v: v["tc_objective"]

    def _terms(self, model, x, y=None, encoder_input=None):
        x = model.as_data(x)
        q = model.posterior(x if encoder_input is None else encoder_input.reshape(x.shape), y)
        z = q.rsample()
        rec = model.log_likelihood(x, z, y)
        per_dim = Normal(q.mean.unsqueeze(0), q.stddev.unsqueeze(0)).log_prob(z.unsqueeze(1))  # (M, M, L): z_i, x_j
        log_nm = math.log(max(self.data_size, x.shape[0]) * x.shape[0])
        log_qz = torch.logsumexp(per_dim.sum(-1), 1) - log_nm
        log_prod = (torch.logsumexp(per_dim, 1) - log_nm).sum(-1)
        log_qzx, log_pz = q.log_prob(z), model.log_prior(z)
        penalty = (self.alpha * (log_qzx - log_qz) + self.weight * (log_qz - log_prod)
                   + self.gamma * (log_prod - log_pz))
        return rec, log_qzx - log_pz, penalty

    def loss(self, model, x, y=None, *, beta=1.0, encoder_input=None, estimator=None) -> Loss:
        rec, kl, penalty = self._terms(model, x, y, encoder_input)
        return Loss(-(rec - penalty).mean(), ElboTerms(rec - kl, rec, kl))

    def validation_sums(self, model, x, y, generator, batch_size, autocast=None):
        total = torch.zeros((), dtype=torch.float64)
        for start in range(0, x.shape[0], batch_size):
            rec, _, penalty = self._terms(model, x[start : start + batch_size])
            total += (rec - penalty).double().sum()
        return {"tc_objective": total}


@pytest.fixture
def tcvae_registered():
    OBJECTIVES.register(TC_NAME, TCConfig, prefix="tc")(BetaTCVAE)
    yield
    OBJECTIVES.unregister(TC_NAME)


def _chose_by_its_score(rows: list[dict]) -> None:
    """Each row names the objective's score; the kept epochs are exactly those that improved it."""
    assert len(rows) == 3
    assert all(r["selected_by"] == "valid beta-TCVAE objective" for r in rows)
    best = -math.inf
    for r in rows:
        assert r["best"] == (r["score"] > best) and r["score"] == r["valid_tc_objective"]
        best = max(best, r["score"])


def test_objective_defined_outside_trains_through_cli_config_and_fit(tmp_path, capsys, tcvae_registered):
    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0 and "--tc-weight" in out and "--tc-alpha" in out
    base = ["train", "--dataset", "digits", "--binarize", "dynamic", "--latent", "3", "--hidden", "16", "--epochs",
            "3", "--quiet", "--device", "cpu", "--threads", "1"]
    code, _, err = run_cli([*base, "--objective", TC_NAME, "--tc-weight", "4", "--out", str(tmp_path / "cli")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["objective"] == {
        "name": TC_NAME, "alpha": 1.0, "weight": 4.0, "gamma": 1.0}
    _chose_by_its_score(read_metrics(tmp_path / "cli"))
    config = tmp_path / "tc.toml"
    config.write_text(f'dataset = "digits"\nbinarize = "dynamic"\nepochs = 3\nthreads = 1\n[model]\nlatent = 3\n'
                      f'hidden = [16]\n[objective]\nname = "{TC_NAME}"\nweight = 4\n')
    code, _, err = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "file"), "--quiet"], capsys)
    assert code == 0, err
    assert [r["score"] for r in read_metrics(tmp_path / "file")] == [r["score"] for r in read_metrics(tmp_path / "cli")]
    config.write_text(f'dataset = "digits"\n[objective]\nname = "{TC_NAME}"\nwieght = 4\n')
    code, _, err = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "did you mean 'weight'" in err and len(err.strip().splitlines()) == 1
    x = torch.bernoulli(torch.full((120, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(0))
    model = VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    result = vaekit.fit(model, x[:100], x[100:], out=tmp_path / "fit", epochs=3, objective=TC_NAME, tc_weight=3.0,
                        progress=False)
    assert result.selected_by == "valid beta-TCVAE objective"
    rows = read_metrics(tmp_path / "fit")
    _chose_by_its_score(rows)
    assert result.best_score == max(r["score"] for r in rows)
    assert json.loads((tmp_path / "fit" / "config.json").read_text())["objective"]["weight"] == 3.0
    with pytest.raises(ConfigError, match="did you mean 'tc_weight'"):
        vaekit.fit(model, x, out=tmp_path / "fit2", objective=TC_NAME, tc_wieght=3.0)


def test_the_decomposed_kl_adds_up_to_the_kl_with_unit_weights():
    torch.manual_seed(0)
    model = VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    objective = BetaTCVAE(alpha=1.0, weight=1.0, gamma=1.0, data_size=50)
    _, kl, penalty = objective._terms(model, torch.bernoulli(torch.full((50, 1, 4, 4), 0.3)))
    torch.testing.assert_close(penalty, kl)  # MI + TC + DWKL = log q(z|x) - log p(z), term by term


# -- a family defined outside vaekit, with a module trained by its own optimizer: FactorVAE (Kim & Mnih 2018) --------

FACTOR_NAME = "test-factorvae"


@dataclass
class FactorConfig:
    gamma: float = 6.0  # weight of the discriminator's total-correlation estimate
    discriminator_hidden: int = 16
    discriminator_lr: float = 1e-3


class FactorVAE(VAE):
    """A VAE with a discriminator D(z) telling codes z ~ q(z) from codes with each unit permuted across the batch
    (a sample of prod_j q(z_j)); its logit difference estimates the total correlation."""

    def __init__(self, *, gamma: float, discriminator_hidden: int, discriminator_lr: float, **kwargs):
        super().__init__(**kwargs)
        self.gamma, self.discriminator_lr = gamma, discriminator_lr
        self.discriminator = nn.Sequential(nn.Linear(self.latent, discriminator_hidden), nn.ReLU(),
                                           nn.Linear(discriminator_hidden, 2))

    @property
    def default_objective(self) -> str:
        return FACTOR_NAME

    def auxiliary_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        return {"discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=self.discriminator_lr,
                                                  betas=(0.5, 0.9))}


class FactorObjective(Objective):
    """-mean_x [ELBO(x) - gamma (D_0(z) - D_1(z))]; the discriminator's loss is its cross-entropy on z (class 0)
    and on the permuted codes (class 1), reported as the auxiliary loss ``discriminator``."""

    auxiliary = ("discriminator",)  # the loss for the model's auxiliary optimizer of that name

    def loss(self, model, x, y=None, *, beta=1.0, encoder_input=None, estimator=None) -> Loss:
        x = model.as_data(x)
        q = model.posterior(x, y)
        z = q.rsample()
        rec, kl = model.log_likelihood(x, z, y), kl_divergence(q, model.prior_distribution())
        logits = model.discriminator(z)
        tc = logits[:, 0] - logits[:, 1]
        codes = z.detach()
        permuted = torch.stack([codes[torch.randperm(codes.shape[0]), j] for j in range(codes.shape[1])], 1)
        labels = torch.cat([torch.zeros(len(codes)), torch.ones(len(codes))]).long()
        d_loss = nn.functional.cross_entropy(model.discriminator(torch.cat([codes, permuted])), labels)
        return Loss(-(rec - beta * kl - model.gamma * tc).mean(), ElboTerms(rec - kl, rec, kl),
                    {"discriminator": d_loss})


class FactorFamily(Family):
    def __init__(self, gamma: float = 6.0, discriminator_hidden: int = 16, discriminator_lr: float = 1e-3):
        self.settings = {"gamma": gamma, "discriminator_hidden": discriminator_hidden,
                         "discriminator_lr": discriminator_lr}

    def build(self, cfg, shape, likelihood, condition=0):
        return FactorVAE(**self.settings, latent=cfg.latent, shape=shape, likelihood=likelihood, hidden=cfg.hidden)


@pytest.fixture
def factorvae_registered():
    FAMILIES.register(FACTOR_NAME, FactorConfig, prefix="factor")(FactorFamily)
    OBJECTIVES.register(FACTOR_NAME)(FactorObjective)
    yield
    FAMILIES.unregister(FACTOR_NAME)
    OBJECTIVES.unregister(FACTOR_NAME)


def _without_seconds(progress: dict) -> dict:
    """A progress record less its wall-clock times (the seconds of the run and of its last row)."""
    last = {k: v for k, v in (progress.get("last") or {}).items() if k != "seconds"}
    return {**{k: v for k, v in progress.items() if k != "seconds"}, "last": last}


def test_family_with_its_own_optimizer_resumes_bit_exact(tmp_path, capsys, factorvae_registered):
    settings = {"dataset": "digits", "binarize": "dynamic", "family": FACTOR_NAME, "factor_gamma": 4.0,
                "latent": 3, "hidden": [16], "epochs": 3, "threads": 1, "device": "cpu"}
    full = train(from_dict(settings), tmp_path / "full", progress=False)
    model = full.model
    assert isinstance(model, FactorVAE) and model.gamma == 4.0
    start = FactorVAE(gamma=4.0, discriminator_hidden=16, discriminator_lr=1e-3, latent=3, shape=(1, 8, 8),
                      hidden=[16])
    assert not torch.equal(start.discriminator[0].weight, model.discriminator[0].weight)  # it was trained

    class Killed(Exception):
        pass

    def kill_after_first(row):
        if row["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train(from_dict(settings), tmp_path / "cut", on_epoch=kill_after_first, progress=False)
    code, _, err = run_cli(["train", "--config", str(tmp_path / "cut" / "config.json"), "--resume", "--out",
                            str(tmp_path / "cut"), "--quiet"], capsys)
    assert code == 0, err
    for name in ("model.safetensors", "checkpoint.safetensors"):  # weights, both optimizers, RNG, progress
        (a, meta_a), (b, meta_b) = (read_safetensors(tmp_path / run / name) for run in ("full", "cut"))
        assert sorted(a) == sorted(b) and all(torch.equal(a[key], b[key]) for key in a), name
        progress = [json.loads(m.pop("progress", "{}")) for m in (meta_a, meta_b)]
        for m in (meta_a, meta_b):
            m.pop("sha256", None)  # a digest of the progress record too, whose times differ
        assert meta_a == meta_b and _without_seconds(progress[0]) == _without_seconds(progress[1]), name
    assert any(key.startswith("aux.discriminator.") for key in read_safetensors(
        tmp_path / "cut" / "checkpoint.safetensors")[0])  # the discriminator's Adam moments
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "full")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "cut")]
    with pytest.raises(ConfigError, match="did you mean 'factor_gamma'"):
        from_dict({**settings, "factor_gama": 1.0})
