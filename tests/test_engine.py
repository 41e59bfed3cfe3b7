"""The training engine's contracts: the trainer learns what a model is from the model (not from config strings),
objectives and families are registered objects, and a run's figures are one quantity wherever they are shown."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vaekit
from cli_run import run_cli
from vaekit.config import from_dict, training_keys
from vaekit.errors import ConfigError
from vaekit.models import FAMILIES
from vaekit.objectives import OBJECTIVES, build_objective
from vaekit.pages.viz import rate_distortion_figure
from vaekit.train import model_for, objective_for, read_metrics


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("likelihood", ["gaussian", "continuous-bernoulli"])
def test_training_and_evaluation_quote_the_same_figure_on_integer_data(tmp_path, capsys, likelihood):
    """A density on digits (17 grey levels) is trained, validated and evaluated as the dequantised bound
    E_u log p((k + u) / L) - D log L: the kept epoch's validation ELBO and evaluate's ELBO on the validation split
    agree within 3 standard errors, and the rate-distortion path ends at the evaluated (R, D). Before, training
    quoted the density at the grid values, D log 17 = 181.3 nats away."""
    run = tmp_path / likelihood
    code, _, err = run_cli(["train", "--dataset", "digits", "--likelihood", likelihood, "--epochs", "3", "--hidden",
                            "64", "--latent", "4", "--out", str(run), "--quiet", "--threads", "1"], capsys)
    assert code == 0, err
    rows = read_metrics(run)
    assert rows[-1]["best"]  # the evaluated weights are the last epoch's, the path's end
    code, out, err = run_cli(["evaluate", str(run), "--split", "valid", "--json", "--k", "20"], capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert rows[-1]["log_px_kind"] == res["log_px_kind"] == "dequantized-bound"
    assert rows[-1]["dequantization_nats"] == pytest.approx(res["dequantization_nats"]) == 64 * math.log(17)
    assert abs(rows[-1]["valid_elbo"] - res["elbo"]) < 3 * res["elbo_stderr"]
    xs, ys = rate_distortion_figure(rows, res["rate"], res["distortion"]).axes[0].lines[0].get_data()
    assert abs(xs[-1] - res["rate"]) < 3 * res["rate_stderr"]
    assert abs(ys[-1] - res["distortion"]) < 3 * res["distortion_stderr"]


def test_fit_names_a_user_built_autoencoders_selection_score_as_the_cli_does(tmp_path, capsys):
    x = _images(120)
    model = vaekit.VAE(shape=(1, 4, 4), latent=2, hidden=[8], posterior="delta")
    result = vaekit.fit(model, x[:100], x[100:], out=tmp_path / "fit", epochs=2, progress=False)
    code, out, err = run_cli(["train", "--dataset", "digits", "--binarize", "dynamic", "--posterior", "delta",
                              "--latent", "2", "--hidden", "8", "--epochs", "2", "--out", str(tmp_path / "cli"),
                              "--json", "--threads", "1"], capsys)
    assert code == 0, err
    cli = json.loads(out.strip().splitlines()[-1])
    assert result.selected_by == cli["selected_by"] == "valid reconstruction"
    assert all(r["objective"] == "autoencoder" for r in read_metrics(tmp_path / "fit"))
    with pytest.raises(ConfigError, match="autoencoder"):
        vaekit.fit(model, x, out=tmp_path / "iwae", objective="iwae", k=5, progress=False)


def test_fit_seeds_a_user_built_mixture_of_bernoullis_as_the_cli_does(tmp_path):
    x = _images(60)
    user = vaekit.VAE(shape=(1, 4, 4), latent=1, hidden=[], posterior={"name": "categorical", "classes": 5},
                      prior={"name": "categorical", "learned": True})
    seen = {}

    def first_epoch(row):
        seen.setdefault("row", row)

    torch.manual_seed(0)
    vaekit.fit(user, x, out=tmp_path / "fit", epochs=1, lr=1e-9, seed=3, progress=False, on_epoch=first_epoch)
    built = model_for(from_dict({"family": "bernoulli-mixture", "components": 5}), (1, 4, 4), True)
    built.seed_from_data(x, 3)  # what the trainer does for the CLI's family, with the run's seed
    torch.testing.assert_close(user.decoder[0].weight, built.decoder[0].weight, rtol=0, atol=1e-6)  # lr ~ 0
    templates = torch.sigmoid(user.decode(torch.eye(5))).reshape(5, -1)
    assert all(any(torch.allclose(t, 0.05 + 0.9 * row, atol=1e-5) for row in x.reshape(60, -1)) for t in templates)


def test_an_ordinary_vae_is_not_seeded_from_data():
    model = vaekit.VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    before = [p.clone() for p in model.parameters()]
    model.seed_from_data(_images(20), 0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_objectives_are_registered_objects_chosen_for_the_model():
    assert {"elbo", "iwae", "autoencoder"} <= set(OBJECTIVES)
    vae = vaekit.VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    ae = vaekit.VAE(shape=(1, 4, 4), latent=2, hidden=[8], posterior={"name": "delta", "latent_penalty": 0.5})
    assert objective_for(from_dict({"objective": "iwae", "k": 7}), vae).selection()[0] == "valid IWAE bound (k = 7)"
    assert objective_for(from_dict({"beta": 2.0}), vae).selection()[0] == "valid beta-ELBO (beta = 2)"
    chosen = objective_for(from_dict({"beta": 2.0, "posterior": "delta"}), ae)  # the ELBO gives way to the model's
    assert chosen.name == "autoencoder" and chosen.selection()[0] == "valid autoencoder objective"
    with pytest.raises(ConfigError, match="did you mean 'iwae'"):
        from_dict({"objective": "iwea"})
    with pytest.raises(ConfigError, match="density"):
        build_objective("iwae").for_model(ae)


def test_families_are_registered_with_their_defaults_and_checks():
    assert {"vae", "gmvae", "bernoulli-mixture"} <= set(FAMILIES)
    assert from_dict({"family": "gmvae"}).prior == "mixture"
    with pytest.raises(ConfigError, match="did you mean 'gmvae'"):
        from_dict({"family": "gmvea"})
    with pytest.raises(ConfigError, match="mixture prior"):
        from_dict({"family": "gmvae", "prior": "vamp"})


def test_fit_takes_the_training_keys_derived_from_the_config():
    keys = set(training_keys())
    assert {"lr_schedule", "patience", "estimator", "select_by", "log_images_every"} <= keys
    assert not keys & {"dataset", "hidden", "latent", "posterior", "family", "log", "prior_settings"}


def test_fast_kernels_are_registered_by_network_and_likelihood_and_agree_with_the_model():
    from vaekit.bounds.kernels import _KERNELS, find_kernel, likelihood_kernel, register_kernel
    from vaekit.components.likelihoods import BernoulliLikelihood
    from vaekit.nn import MLP

    torch.manual_seed(0)
    model = vaekit.VAE(shape=(1, 4, 4), latent=2, hidden=[8])
    x, z = _images(5).reshape(5, -1), torch.randn(3, 5, 2)
    with torch.no_grad():
        torch.testing.assert_close(likelihood_kernel(model, x)(z), model.log_likelihood(x, z))

    class MyMLP(MLP):
        pass

    assert find_kernel(MyMLP, BernoulliLikelihood) is find_kernel(MLP, BernoulliLikelihood)  # by the MRO
    calls = []

    @register_kernel(MyMLP, BernoulliLikelihood)
    def mine(decoder, likelihood, x):
        calls.append(decoder)
        return lambda z: torch.zeros(z.shape[:-1])

    try:
        model.decoder.__class__ = MyMLP
        assert torch.equal(likelihood_kernel(model, x)(z), torch.zeros(3, 5)) and calls == [model.decoder]
        assert likelihood_kernel(model, x, fast=False)(z).abs().min() > 0  # the model's own
    finally:
        _KERNELS.pop((MyMLP, BernoulliLikelihood))
    assert not vaekit.VAE(shape=(1, 4, 4), latent=2, hidden=[8], condition=3).decodes_directly


def test_every_objectives_selection_rule_fits_a_sound_metrics_row():
    """The name of the score that picks the kept epoch is written in every metrics row: a row with a name past
    the reader's limit would be skipped as unsound."""
    from vaekit.io.runs import TEXT_LIMIT, metrics_row
    from vaekit.objectives import OBJECTIVES

    for name in OBJECTIVES.names():
        objective = OBJECTIVES.entry(name).cls(k=64, beta=0.5)
        rule, _ = objective.selection()
        assert len(rule) <= TEXT_LIMIT and metrics_row({"epoch": 1, "selected_by": rule, "valid_elbo": -1.0}), name
