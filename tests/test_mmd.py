"""The MMD family: the unbiased MMD estimator against a brute-force double sum and in expectation, WAE-MMD's and
InfoVAE-MMD's losses by hand, and both objectives through the command line (train, resume, evaluate, sample, report,
compare) and vaekit.fit, evaluated as "decoder + density fitted to the codes"."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

import vaekit
from cli_run import run_cli
from vaekit.errors import ConfigError, VaekitError
from vaekit.objectives import build_objective
from vaekit.objectives.mmd import WAE_SCALES, kernel_matrix, mmd2_unbiased
from vaekit.train import read_metrics


def brute_mmd2(a: torch.Tensor, b: torch.Tensor, kernel: str, scales: tuple[float, ...]) -> float:
    """The U-statistic as the double sums over pairs, one kernel value at a time, in float64."""
    a, b = a.double().tolist(), b.double().tolist()
    c = 2.0 * len(a[0])

    def k(u, v):
        sq = sum((ui - vi) ** 2 for ui, vi in zip(u, v))
        return sum(s * c / (s * c + sq) if kernel == "imq" else math.exp(-sq / (s * c)) for s in scales)

    n, m = len(a), len(b)
    aa = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    bb = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    ab = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
    return aa + bb - 2 * ab


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
@pytest.mark.parametrize("scales", [(1.0,), WAE_SCALES])
def test_the_estimator_is_the_double_sum(kernel, scales):
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(7, 3, generator=gen, dtype=torch.float64), 2 * torch.randn(5, 3, generator=gen,
                                                                                  dtype=torch.float64)
    value = mmd2_unbiased(a, b, kernel, scales)
    assert value.item() == pytest.approx(brute_mmd2(a, b, kernel, scales), rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("kernel", ["rbf", "imq"])
def test_it_is_zero_in_expectation_for_one_distribution_and_positive_for_two(kernel):
    """Over 2000 seeded repetitions of n = m = 16 draws in 3 dimensions: the mean estimate for two samples of
    N(0, I) lies within 3 standard errors (SD / sqrt(R)) of 0; for N(0, I) against N(0.5, I) it is positive by more
    than 10 of them. The biased V-statistic (diagonal kept) fails the first test, so the test can fail."""
    gen = torch.Generator().manual_seed(0)
    r, n, d = 2000, 16, 3
    same, apart, biased = [], [], []
    for _ in range(r):
        a, b = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
        same.append(mmd2_unbiased(a, b, kernel).item())
        apart.append(mmd2_unbiased(a, b + 0.5, kernel).item())
        biased.append((kernel_matrix(a, a, kernel).mean() + kernel_matrix(b, b, kernel).mean()
                       - 2 * kernel_matrix(a, b, kernel).mean()).item())
    for values, sign in ((same, 0), (apart, 1), (biased, 1)):
        mean, se = float(np.mean(values)), float(np.std(values, ddof=1) / math.sqrt(r))
        if sign == 0:
            assert abs(mean) < 3 * se, (mean, se)
        else:
            assert mean > 10 * se, (mean, se)


def test_gradients_flow_and_match_finite_differences():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    for kernel in ("rbf", "imq"):
        assert torch.autograd.gradcheck(lambda u, v, k=kernel: mmd2_unbiased(u, v, k, WAE_SCALES), (a, b))
    mmd2_unbiased(a, b).backward()
    assert a.grad is not None and bool(a.grad.abs().sum() > 0) and bool(torch.isfinite(a.grad).all())


def test_the_estimator_refuses_what_it_cannot_take():
    with pytest.raises(VaekitError, match="at least 2 rows"):
        mmd2_unbiased(torch.zeros(1, 2), torch.zeros(4, 2))
    with pytest.raises(VaekitError, match="same d"):
        mmd2_unbiased(torch.zeros(3, 2), torch.zeros(4, 3))
    with pytest.raises(VaekitError, match="rbf or imq"):
        mmd2_unbiased(torch.zeros(3, 2), torch.zeros(4, 2), "laplace")


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 2, 3), 0.4), generator=torch.Generator().manual_seed(seed))


def test_the_wae_loss_by_hand():
    torch.manual_seed(0)
    model = vaekit.VAE(latent=2, shape=(1, 2, 3), hidden=[4], posterior="delta")
    x = _images(5)
    objective = build_objective({"name": "wae-mmd", "kernel": "imq", "weight": 7.0}).for_model(model)
    torch.manual_seed(11)
    got = objective.loss(model, x)
    z = model.code(x)  # f(x): a point mass
    torch.manual_seed(11)
    prior = torch.randn(5, 2)  # the loss's only random draws: as many N(0, I) draws as codes
    rec = model.log_likelihood(x, z)
    want = -rec.mean() + 7.0 * brute_mmd2(z.detach(), prior, "imq", WAE_SCALES)
    assert got.loss.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(got.terms.reconstruction, rec)
    assert float(got.terms.kl.detach().abs().sum()) == 0.0


def test_the_infovae_loss_by_hand():
    torch.manual_seed(0)
    model = vaekit.VAE(latent=2, shape=(1, 2, 3), hidden=[4])
    x = _images(6, seed=1)
    objective = build_objective({"name": "infovae-mmd", "alpha": 0.25, "weight": 3.0}).for_model(model)
    torch.manual_seed(5)
    got = objective.loss(model, x, beta=0.5)
    q = model.posterior(x)
    torch.manual_seed(5)
    z = q.rsample()  # the draw z ~ q(z|x), then the N(0, I) draws
    prior = torch.randn(6, 2)
    rec, kl = model.log_likelihood(x, z), kl_divergence(q, model.prior_distribution())
    mmd = brute_mmd2(z.detach(), prior, "rbf", (1.0,))
    want = -(rec - (1 - 0.25) * 0.5 * kl).mean() + (0.25 + 3.0 - 1) * mmd
    assert got.loss.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(got.terms.kl, kl)


@pytest.mark.parametrize("spec, needle", [
    ({"name": "infovae-mmd", "alpha": 1.5}, "alpha <= 1"),
    ({"name": "infovae-mmd", "alpha": -2.0, "weight": 1.0}, "alpha + lambda - 1 >= 0"),
    ({"name": "wae-mmd", "kernel": "gauss"}, "kernel must be rbf or imq"),
    ({"name": "wae-mmd", "scales": "1,-2"}, "scales must be"),
    ({"name": "wae-mmd", "weight": -1.0}, "weight must be"),
])
def test_bad_settings_are_refused_naming_them(spec, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        build_objective(spec)


def test_models_they_cannot_train_are_refused():
    wae = build_objective("wae-mmd")
    with pytest.raises(ConfigError, match="N\\(0, I\\)"):
        wae.for_model(vaekit.VAE(latent=2, shape=(1, 2, 3), hidden=[4], prior="vamp"))
    with pytest.raises(ConfigError, match="discrete"):
        wae.for_model(vaekit.VAE(latent=2, shape=(1, 2, 3), hidden=[4], posterior="bernoulli"))
    with pytest.raises(ConfigError, match="latent-penalty"):
        wae.for_model(vaekit.VAE(latent=2, shape=(1, 2, 3), hidden=[4],
                                 posterior={"name": "delta", "latent_penalty": 1.0}))
    with pytest.raises(ConfigError, match="needs a density"):
        build_objective("infovae-mmd").for_model(vaekit.VAE(latent=2, shape=(1, 2, 3), hidden=[4],
                                                            posterior="delta"))


@pytest.mark.parametrize("argv, needle", [
    (["--objective", "wae-mmd", "--mmd-kernel", "gauss"], "kernel must be rbf or imq"),
    (["--objective", "wae-mmd", "--mmd-scales", "0.1,x"], "scales must be"),
    (["--objective", "infovae-mmd", "--mmd-alpha", "2"], "alpha <= 1"),
    (["--objective", "infovae-mmd", "--posterior", "delta"], "infovae-mmd"),
])
def test_bad_flags_are_one_line_and_write_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--dataset", "digits", "--epochs", "1", *argv, "--out", str(out)], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not out.exists()


SIZE = ["--dataset", "digits", "--binarize", "threshold", "--latent", "3", "--hidden", "16", "--threads", "1",
        "--quiet"]
FLAGS = {"wae": ["--objective", "wae-mmd", "--posterior", "delta", "--mmd-kernel", "rbf", "--mmd-weight", "20"],
         "info": ["--objective", "infovae-mmd"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmd")
    for name, flags in FLAGS.items():
        assert vaekit.cli.main(["train", *SIZE, *flags, "--epochs", "3", "--out", str(root / name)]) == 0
    return root


def test_both_train_select_by_their_own_objective_and_report_the_mmd(runs):
    wae, info = read_metrics(runs / "wae"), read_metrics(runs / "info")
    assert [r["selected_by"] for r in wae] == ["valid WAE objective"] * 3
    assert [r["selected_by"] for r in info] == ["valid InfoVAE objective"] * 3
    for r in wae:  # the score is the validation reconstruction - lambda MMD, with the run's lambda = 20
        assert r["score"] == pytest.approx(r["valid_reconstruction"] - 20 * r["valid_mmd"])
    for r in info:  # alpha = 0, lambda = 1000: KL weight 1, MMD weight 999
        assert r["score"] == pytest.approx(r["valid_reconstruction"] - r["valid_kl"] - 999 * r["valid_mmd"])
    written = json.loads((runs / "wae" / "config.json").read_text())["objective"]
    assert written == {"name": "wae-mmd", "kernel": "rbf", "weight": 20.0, "scales": "0.1,0.2,0.5,1,2,5,10"}


@pytest.mark.parametrize("name, label", [("wae", "decoder + fitted density (a deterministic encoder z = f(x)): "
                                                 "log p(x) is that of the decoder with a Gaussian mixture"),
                                         ("info", "decoder + fitted density: log p(x) is that of the decoder with a "
                                                  "Gaussian mixture")])
def test_evaluate_reports_decoder_and_fitted_density_labelled(runs, capsys, name, label):
    model = vaekit.load(runs / name)
    assert model.prior.name == "fitted-gmm" and model.prior.fitted
    code, out, err = run_cli(["evaluate", str(runs / name), "--k", "20", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out.strip().splitlines()[-1])
    assert d["notes"][0].startswith(label) and math.isfinite(d["nll"]) and d["nll"] > 0
    assert d["selected_by"] == ("valid WAE objective" if name == "wae" else "valid InfoVAE objective")


def test_sample_report_and_compare_take_such_runs(runs, capsys, tmp_path):
    for name in FLAGS:
        code, _, err = run_cli(["sample", str(runs / name), "-n", "4", "--out", str(tmp_path / f"{name}.png")],
                               capsys)
        assert code == 0 and (tmp_path / f"{name}.png").is_file(), err
        code, _, err = run_cli(["report", str(runs / name), "--out", str(tmp_path / f"{name}.html")], capsys)
        assert code == 0 and (tmp_path / f"{name}.html").is_file(), err
    code, out, err = run_cli(["compare", str(runs / "wae"), str(runs / "info"), "--k", "10", "--out",
                              str(tmp_path / "compare.html"), "--json"], capsys)
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out.strip().splitlines()[-1])["runs"]}
    assert rows["wae"]["objective"] == "wae-mmd" and math.isfinite(rows["wae"]["fitted_density_nll"])
    assert rows["info"]["objective"] == "infovae-mmd" and rows["info"]["notes"][0].startswith("decoder + fitted")


@pytest.mark.parametrize("name", list(FLAGS))
def test_a_resumed_run_is_bit_exact(tmp_path, capsys, name):
    base = ["train", *SIZE, *FLAGS[name]]
    assert run_cli([*base, "--epochs", "3", "--out", str(tmp_path / "full")], capsys)[0] == 0
    assert run_cli([*base, "--epochs", "1", "--out", str(tmp_path / "cut")], capsys)[0] == 0
    code, _, err = run_cli([*base, "--epochs", "3", "--out", str(tmp_path / "cut"), "--resume"], capsys)
    assert code == 0, err
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "full")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_metrics(tmp_path / "cut")]
    full, cut = vaekit.load(tmp_path / "full"), vaekit.load(tmp_path / "cut")
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), cut.state_dict().values()))


def test_fit_trains_wae_mmd_from_python(tmp_path):
    x = _images(120).expand(120, 1, 2, 3).contiguous()
    model = vaekit.VAE(shape=(1, 2, 3), latent=2, hidden=[8], posterior="delta")
    result = vaekit.fit(model, x[:100], x[100:], out=tmp_path / "fit", epochs=2, objective="wae-mmd",
                        mmd_weight=5.0, progress=False)
    assert result.selected_by == "valid WAE objective"
    assert vaekit.load(tmp_path / "fit").prior.name == "fitted-gmm"
