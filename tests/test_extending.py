"""Extending vaekit from outside the package: a new prior is one class plus one registration, and then it
trains and evaluates through Python, the command line and config files without further edits."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch
from torch.distributions import Independent, Laplace

from cli_run import run_cli
from vaekit import VAE
from vaekit.components import PRIORS, Prior
from vaekit.objectives import elbo

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
