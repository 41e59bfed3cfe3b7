"""Post-hoc samplers (vaekit.analysis.samplers): each fitted density integrates to 1 on a 2-D grid, the mixture
agrees with scikit-learn's, the flow's sampler inverts its density's map, save and load give the same density bit
for bit, and 'vaekit sample / evaluate --sampler' work on a tiny run and refuse a run with discrete codes."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch

from cli_run import run_cli
from vaekit.analysis import code_densities as cd
from vaekit.analysis import samplers

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = samplers.SamplerSettings(components=3, flow_steps=2, flow_hidden=16, stage_hidden=16, epochs=15,
                                 batch_size=64, lr=3e-3)


@pytest.fixture(scope="module")
def codes() -> torch.Tensor:
    """600 2-D codes from two blobs."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 2, generator=g) * torch.tensor([0.5, 0.2]) + torch.tensor([1.5, 0.0])
    b = torch.randn(300, 2, generator=g) * 0.3 - 1.0
    return torch.cat([a, b]).double()


@pytest.fixture(scope="module")
def fitted(codes) -> dict[str, samplers.FittedSampler]:
    return {name: samplers.fit_sampler(name, codes, SMALL) for name in samplers.FITTED}


def _grid(half: float = 7.0, n: int = 281) -> tuple[torch.Tensor, float]:
    xs = torch.linspace(-half, half, n, dtype=torch.float64)
    return torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2), float(xs[1] - xs[0]) ** 2


@pytest.mark.parametrize("name", ["gmm", "flow"])
def test_the_fitted_density_integrates_to_one(fitted, name):
    grid, area = _grid()
    with torch.no_grad():
        log_q = samplers.density(fitted[name], dtype=torch.float64).log_prob(grid)
    assert float(log_q.exp().sum()) * area == pytest.approx(1.0, abs=2e-3)  # the midpoint rule; tails < 1e-4


def test_the_two_stage_estimate_integrates_to_one_within_its_standard_error(fitted):
    """exp(log p_2^(K2)(z)) is unbiased for p_2(z): its integral is 1 within Monte Carlo error."""
    grid, area = _grid(6.0, 161)
    dist = samplers.density(fitted["two-stage"], dtype=torch.float64)
    with torch.no_grad():
        w = dist.module.log_weights(grid, 64, torch.Generator().manual_seed(1)).exp()  # (K2, G)
    integral = float(w.mean(0).sum()) * area
    se = math.sqrt(float((w.var(0) / w.shape[0]).sum())) * area
    assert abs(integral - 1.0) < 4 * se + 5e-3, (integral, se)
    assert dist.log_prob(grid[:5]).shape == (5,)


def test_the_mixture_is_scikit_learns(codes, fitted):
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(3, covariance_type="full", reg_covar=1e-6, max_iter=200, random_state=0).fit(codes.numpy())
    z = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    ours = samplers.density(fitted["gmm"], dtype=torch.float64).log_prob(z)
    assert torch.allclose(ours, torch.from_numpy(gmm.score_samples(z.numpy())), atol=1e-9)


def test_the_flows_sampler_inverts_its_density(fitted):
    """z = sample(u): the density's forward map takes z back to the same standard normal draws u."""
    flow = samplers.density(fitted["flow"], dtype=torch.float64).module
    z = flow.sample(20, torch.Generator().manual_seed(3))
    u_drawn = torch.randn(20, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = flow.standardize(z)
    with torch.no_grad():
        for made in flow.steps:
            m, s = flow._shift_scale(made, y)
            y = (y - m) * torch.exp(-s)
    assert torch.allclose(y, u_drawn, atol=1e-9)


def test_save_and_load_give_the_same_density(tmp_path, fitted):
    z = torch.randn(30, 2, generator=torch.Generator().manual_seed(4)).float()
    for name, f in fitted.items():
        samplers.save_sampler(tmp_path, f)
        back = samplers.load_sampler(tmp_path, name)
        assert back is not None and back.info == f.info
        assert all(torch.equal(back.tensors[k], v) for k, v in f.tensors.items()) and back.tensors.keys() == \
            f.tensors.keys()
        a, b = (samplers.density(s, seed=5).log_prob(z) for s in (f, back))
        assert torch.equal(a, b)
    record = tmp_path / "samplers" / "gmm.json"
    record.write_text(record.read_text().replace('"tensors_sha256": "', '"tensors_sha256": "0'))
    assert samplers.load_sampler(tmp_path, "gmm") is None  # a record that is not of these tensors: none kept


def test_settings_are_checked():
    with pytest.raises(samplers.VaekitError, match="components"):
        samplers.SamplerSettings(components=0)
    with pytest.raises(samplers.VaekitError, match="name"):
        samplers.fit_sampler("prior", torch.zeros(4, 2))


# -- the command line ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from vaekit.cli import main

    path = tmp_path_factory.mktemp("samplers") / "vae"
    assert main(["train", "--dataset", "digits", "--binarize", "threshold", "--epochs", "2", "--hidden", "16",
                 "--latent", "2", "--out", str(path), "--quiet"]) == 0
    return path


@pytest.fixture
def small_fits(monkeypatch):
    """The CLI fits with small settings (its defaults are sized for MNIST)."""
    monkeypatch.setattr(samplers, "SamplerSettings", functools.partial(samplers.SamplerSettings, **{
        k: getattr(SMALL, k) for k in ("components", "flow_steps", "flow_hidden", "stage_hidden", "epochs")}))


def test_sample_fits_once_keeps_and_refits_for_new_weights(run, tmp_path, capsys, small_fits):
    out = tmp_path / "s.png"
    code, printed, err = run_cli(["sample", str(run), "--sampler", "flow", "-n", "9", "--out", str(out)], capsys)
    assert code == 0 and "flow: fitted (none kept)" in err and out.read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run / "samplers" / "flow.json").read_text())
    assert record["codes"] == 1257 and record["code_kind"] == "one draw of q(z|x) per image"
    code, _, err = run_cli(["sample", str(run), "--sampler", "flow", "-n", "9", "--out", str(out)], capsys)
    assert code == 0 and "flow: kept in" in err
    code, _, err = run_cli(["sample", str(run), "--sampler", "flow", "-n", "9", "--out", str(out), "--refit"], capsys)
    assert code == 0 and "fitted (--refit)" in err
    import vaekit

    model = vaekit.load(run)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save(run)  # the run's weights change: the kept flow is of other weights
    code, _, err = run_cli(["sample", str(run), "--sampler", "flow", "-n", "9", "--out", str(out)], capsys)
    assert code == 0 and "fitted (fitted to other weights)" in err


@pytest.mark.parametrize("name", ["gmm", "two-stage"])
def test_evaluate_labels_the_figure_with_its_sampler(run, capsys, small_fits, name):
    argv = ["evaluate", str(run), "--sampler", name, "--k", "20", "--limit", "40", "--surgery-samples", "0",
            "--quiet"]
    code, out, err = run_cli([*argv, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["sampler"] == name and math.isfinite(result["nll"]) and result["nll_stderr"] > 0
    assert result["prior_nll"] > 0 and result["nll_gain_stderr"] > 0
    assert result["nll_gain"] == pytest.approx(result["prior_nll"] - result["nll"], abs=1e-6)
    assert ("nested" in result["sampler_figure"]) == (name == "two-stage")
    assert result["notes"][0].startswith(f"--sampler {name}:")
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and f"NLL [{name}]" in out and "NLL [run prior p(z)]" in out and "gain over the prior" in out


def test_evaluate_without_a_sampler_says_prior(run, capsys):
    code, out, _ = run_cli(["evaluate", str(run), "--k", "5", "--limit", "10", "--surgery-samples", "0", "--json",
                            "--quiet"], capsys)
    assert code == 0 and json.loads(out)["sampler"] == "prior"


def test_a_run_with_discrete_codes_is_refused_in_one_line(tmp_path, capsys):
    from vaekit.cli import main

    cat = tmp_path / "cat"
    assert main(["train", "--dataset", "digits", "--binarize", "threshold", "--epochs", "1", "--hidden", "8",
                 "--posterior", "categorical", "--latent", "2", "--classes", "3", "--out", str(cat), "--quiet"]) == 0
    capsys.readouterr()
    for argv in (["sample", str(cat), "--sampler", "gmm", "--out", str(tmp_path / "c.png")],
                 ["evaluate", str(cat), "--sampler", "flow", "--k", "5"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and "discrete codes" in err and len(err.strip().splitlines()) == 1
    assert not (cat / "samplers").exists()


def test_flags_that_do_not_go_with_a_sampler_are_refused(run, capsys):
    for argv in (["evaluate", str(run), "--sampler", "gmm", "--ais", "5"], ["sample", str(run), "--refit"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1


def test_the_density_is_a_torch_mixture(fitted):
    dist = samplers.density(fitted["gmm"])
    assert isinstance(dist, torch.distributions.MixtureSameFamily) and isinstance(dist, cd.FittedGaussianMixture)
    assert dist.sample((4,), generator=torch.Generator().manual_seed(0)).shape == (4, 2)
