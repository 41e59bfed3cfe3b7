"""The deterministic autoencoder against a VAE of the same size: the bottleneck made visible.

An autoencoder reconstructs better (nothing limits what its code carries), but nothing makes its codes fill
N(0, I): the decoder applied to z ~ N(0, I) is a poor model of the data, measured here as the importance-sampled
log p(x) of "decoder + N(0, I)". A Gaussian mixture fitted to its training codes repairs most of that.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import vaekit
from cli_run import run_cli
from vaekit.analysis.posthoc import with_standard_normal_prior
from vaekit.config import from_dict
from vaekit.errors import ConfigError, VaekitError
from vaekit.evaluation import evaluate_model, load_model, load_run_data, split_images
from vaekit.objectives import elbo

SIZE = ["--dataset", "digits", "--binarize", "threshold", "--latent", "8", "--hidden", "128", "--epochs", "15"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bottleneck")
    for name, extra in (("ae", ["--posterior", "delta"]), ("vae", [])):
        code = vaekit.cli.main(["train", *SIZE, *extra, "--out", str(root / name), "--quiet"])
        assert code == 0
    return root


def _last(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]


def test_the_autoencoder_reconstructs_better_but_decodes_standard_normal_codes_worse(runs):
    ae_row, vae_row = _last(runs / "ae"), _last(runs / "vae")
    assert ae_row["objective"] == "autoencoder" and ae_row["selected_by"] == "valid reconstruction"
    assert ae_row["valid_kl"] == 0.0  # no latent penalty: the objective is the reconstruction alone
    # reconstruction log p(x | f(x)) against the VAE's E_q log p(x|z), validation set, nats per example
    assert ae_row["valid_reconstruction"] > vae_row["valid_reconstruction"] + 2.0, (ae_row, vae_row)

    ae, vae = load_model(runs / "ae"), load_model(runs / "vae")
    x, _ = split_images(load_run_data(runs / "ae"), "test")
    standard = evaluate_model(with_standard_normal_prior(ae), x, k=300, surgery_samples=0)
    fitted = evaluate_model(ae, x, k=300, surgery_samples=0)
    reference = evaluate_model(vae, x, k=300, surgery_samples=0)
    # decoder + N(0, I): the autoencoder's is far worse than the VAE's (which was trained for exactly that)
    se = math.hypot(standard.nll_stderr, reference.nll_stderr)
    assert standard.nll > reference.nll + 10.0 + 4 * se, (standard.nll, reference.nll)
    # the fitted mixture is what makes the autoencoder a generative model; it is labelled as such
    assert fitted.nll < standard.nll - 10.0
    assert fitted.notes[0].startswith("decoder + fitted density (a deterministic encoder z = f(x)): log p(x) is "
                                      "that of the decoder with a Gaussian mixture")
    assert "not trained with" in standard.notes[0]
    assert ae.prior.name == "fitted-gmm" and ae.sample(5).means.shape == (5, 1, 8, 8)


def test_evaluate_reports_what_chose_the_weights_and_no_surgery_for_a_point_mass(runs, capsys):
    code, out, err = run_cli(["evaluate", str(runs / "ae"), "--k", "50", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out.strip().splitlines()[-1])
    assert d["selected_by"] == "valid reconstruction" and d["mutual_information"] is None
    assert d["notes"][0].startswith("decoder + fitted density (a deterministic encoder z = f(x)):")


def test_the_objective_is_the_reconstruction_minus_the_latent_penalty():
    torch.manual_seed(0)
    model = vaekit.VAE(latent=3, shape=(1, 4, 4), hidden=[8], posterior={"name": "delta", "latent_penalty": 0.5})
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.4))
    terms = elbo(model, x)
    code = model.encode(x)
    torch.testing.assert_close(terms.kl, 0.25 * code.pow(2).sum(-1))
    torch.testing.assert_close(terms.reconstruction, model.log_likelihood(x, code))
    torch.testing.assert_close(terms.elbo, terms.reconstruction - terms.kl)


def test_an_autoencoder_without_a_fitted_density_has_no_log_likelihood():
    model = vaekit.VAE(latent=3, shape=(1, 4, 4), hidden=[8], posterior="delta")
    with pytest.raises(VaekitError, match="defines no density"):
        evaluate_model(model, torch.bernoulli(torch.full((4, 16), 0.5)), k=5)
    with pytest.raises(ValueError, match="no density"):
        model.posterior(torch.zeros(2, 16)).log_prob(torch.zeros(2, 3))


@pytest.mark.parametrize("bad, needle", [
    ({"posterior": "delta", "objective": "iwae", "k": 5}, "objective elbo"),
    ({"posterior": "delta", "prior": "vamp"}, "uses no prior"),
    ({"posterior": "delta", "latent_penalty": -1.0}, "latent_penalty"),
])
def test_impossible_autoencoder_settings_are_refused(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        from_dict(bad)


def test_reports_draw_the_vae_in_the_rate_distortion_plane_and_work_for_the_autoencoder(runs, capsys):
    from vaekit.pages.viz import rate_distortion_figure

    for name in ("vae", "ae"):
        code, _, err = run_cli(["report", str(runs / name), "--k", "20"], capsys)
        assert code == 0, err
    assert "Rate and distortion" in (runs / "vae" / "report.html").read_text()
    assert "Rate and distortion" not in (runs / "ae" / "report.html").read_text()  # no rate: a point mass
    rows = [{"epoch": 1, "valid_kl": 3.0, "valid_reconstruction": -20.0}, {"epoch": 2, "valid_kl": "x"}]
    fig = rate_distortion_figure(rows, 2.5, 19.0)
    xs, ys = fig.axes[0].lines[0].get_data()
    assert list(xs) == [3.0] and list(ys) == [20.0]  # (R, D) = (KL, -reconstruction); the bad row left out
    assert rate_distortion_figure([{"epoch": 1}]) is None


@pytest.mark.parametrize("flags, name", [([], "reconstruction"), (["--latent-penalty", "0.1"], "rec. - penalty")])
def test_the_epoch_line_of_an_autoencoder_names_what_it_shows_and_has_no_kl(tmp_path, capsys, flags, name):
    code, out, err = run_cli(["train", "--dataset", "digits", "--posterior", "delta", "--epochs", "1", "--hidden", "8",
                            "--latent", "2", *flags, "--out", str(tmp_path / "r")], capsys)
    line = next(line for line in (out + err).splitlines() if line.startswith("epoch"))
    assert code == 0 and f"train {name}" in line and f"valid {name}" in line and "KL" not in line, err
