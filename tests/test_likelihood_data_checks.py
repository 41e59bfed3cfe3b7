"""The data are checked against the likelihood before training: a likelihood of binary pixels only on binary
data (or data binarised on purpose), a discrete likelihood only on data of its grey levels, densities on
anything; a refusal is one line and exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_run import run_cli
from vaekit.config import resolve
from vaekit.errors import ConfigError
from vaekit.train import check_likelihood_data, likelihood_levels, model_for

pytestmark = pytest.mark.usefixtures("single_thread")


def _one_line_refusal(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("likelihood", ["bernoulli", "pixelcnn"])
def test_a_likelihood_of_binary_pixels_on_grey_digits_is_refused(tmp_path, capsys, likelihood):
    code, _, err = run_cli(["train", "--dataset", "digits", "--likelihood", likelihood, "--epochs", "1",
                            "--out", str(tmp_path / "r")], capsys)
    line = _one_line_refusal(code, err)
    assert "binary" in line and "17 grey levels" in line
    assert "--binarize dynamic" in line and "--binarize threshold" in line
    assert "--likelihood discretized-logistic --pixel-levels 17" in line  # or a likelihood of the grey levels


def test_a_discrete_likelihood_needs_the_data_levels(tmp_path, capsys):
    code, _, err = run_cli(["train", "--dataset", "digits", "--likelihood", "discretized-logistic", "--epochs", "1",
                            "--out", str(tmp_path / "r")], capsys)
    line = _one_line_refusal(code, err)
    assert "levels 256" in line and "17 grey levels" in line and "--pixel-levels 17" in line


def test_a_discrete_likelihood_on_real_valued_data_is_refused(tmp_path, capsys):
    path = tmp_path / "real.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.random((60, 1, 4, 4), dtype=np.float32))
    code, _, err = run_cli(["train", "--dataset", f"npz:{path}", "--likelihood", "categorical-256", "--epochs", "1",
                            "--out", str(tmp_path / "r")], capsys)
    line = _one_line_refusal(code, err)
    assert "real-valued" in line and "--likelihood gaussian" in line


def test_binarised_data_and_the_right_levels_train(tmp_path, capsys):
    code, _, err = run_cli(["train", "--dataset", "digits", "--binarize", "threshold", "--likelihood", "bernoulli",
                            "--epochs", "1", "--hidden", "8", "--latent", "2", "--out", str(tmp_path / "b"),
                            "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", "--dataset", "digits", "--likelihood", "discretized-logistic-mixture",
                            "--mixtures", "2", "--pixel-levels", "17", "--epochs", "1", "--hidden", "8", "--latent",
                            "2", "--out", str(tmp_path / "m"), "--quiet"], capsys)
    assert code == 0, err
    from vaekit.models import VAE

    assert VAE.load(tmp_path / "m").likelihood.config() == {"name": "discretized-logistic-mixture", "mixtures": 2,
                                                             "levels": 17}


@pytest.mark.parametrize("name", ["gaussian", "continuous-bernoulli"])
@pytest.mark.parametrize("binary, levels", [(False, 17), (False, 256), (False, None), (True, 2)])
def test_densities_take_any_data(name, binary, levels):
    cfg = resolve({"dataset": "digits", "likelihood": name, "hidden": [8], "latent": 2}, {})
    model = model_for(cfg, (1, 8, 8), binary, levels=levels)
    assert model.likelihood.name == name


def test_the_default_likelihood_follows_the_data():
    cfg = resolve({"dataset": "digits", "hidden": [8], "latent": 2}, {})
    assert model_for(cfg, (1, 8, 8), False, levels=17).likelihood.name == "gaussian"
    assert model_for(cfg, (1, 8, 8), True).likelihood.name == "bernoulli"


def test_the_levels_of_each_likelihood():
    assert likelihood_levels({"name": "bernoulli"}) == 2 and likelihood_levels({"name": "pixelcnn"}) == 2
    assert likelihood_levels({"name": "gaussian"}) is None
    assert likelihood_levels({"name": "continuous-bernoulli"}) is None
    assert likelihood_levels({"name": "categorical-256"}) == 256
    assert likelihood_levels({"name": "discretized-logistic", "levels": 17}) == 17
    cfg = resolve({"dataset": "digits"}, {})
    check_likelihood_data(cfg, {"name": "discretized-logistic", "levels": 2}, True, None)  # binary data: 2 levels
    with pytest.raises(ConfigError, match="has levels 256 but digits has 2 grey levels"):
        check_likelihood_data(cfg, {"name": "categorical-256"}, True, 2)
    with pytest.raises(ConfigError, match="not binary"):
        check_likelihood_data(cfg, {"name": "bernoulli"}, False, 256)


def test_the_memory_check_counts_every_decoder_output_of_the_likelihood():
    """categorical-256 needs 256 decoder outputs per sub-pixel: a decoder that fits for one output per pixel
    (about 3.2e6 parameters at hidden 4000) is 256 times as large, and refused with the settings to lower."""
    from vaekit.config import check_model_size, resolve
    from vaekit.errors import ConfigError

    cfg = resolve({"dataset": "mnist-grey", "hidden": [4000], "latent": 32, "likelihood": "categorical-256"}, {})
    check_model_size(cfg, (1, 28, 28), {"name": "gaussian"})  # one output per pixel: fits
    with pytest.raises(ConfigError, match="out of memory.*--hidden"):
        check_model_size(cfg, (1, 28, 28), cfg.component("likelihood"))


def test_bound_says_a_density_on_grey_levels_gives_log_densities(tmp_path, capsys):
    run = tmp_path / "gauss"
    code, _, err = run_cli(["train", "--dataset", "digits", "--likelihood", "gaussian", "--epochs", "1",
                            "--hidden", "16", "--latent", "2", "--out", str(run), "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["bound", str(run), "--n", "3", "--k", "20", "--grid", "20"], capsys)
    assert code == 0, err
    assert "log-densities of the images scaled to [0, 1], not log-probabilities of their 17 grey levels" in out
    code, out, _ = run_cli(["bound", str(run), "--n", "3", "--k", "20", "--grid", "20", "--json"], capsys)
    assert json.loads(out.strip().splitlines()[-1])["values"] == "log-density"
