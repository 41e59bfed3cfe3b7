"""The autoregressive (PixelCNN) likelihood: causality, normalisation, sampling, batching, training, CLI."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from cli_run import run_cli
from synthetic import prototype_dataset
from vaekit.components import LIKELIHOODS
from vaekit.components.pixelcnn import PixelCNNDistribution, PixelCNNLikelihood
from vaekit.config import TrainConfig, resolve
from vaekit.errors import ConfigError
from vaekit.evaluation import bytes_per_row, evaluate_model
from vaekit.models import VAE, HierarchicalVAE
from vaekit.nn import MaskedConv2d
from vaekit.train import model_for, read_metrics, train

pytestmark = pytest.mark.usefixtures("single_thread")


def make(shape=(1, 3, 3), params=2, layers=2, channels=8, kernel=3, seed=0) -> PixelCNNLikelihood:
    torch.manual_seed(seed)
    return PixelCNNLikelihood(shape, params=params, layers=layers, channels=channels, kernel=kernel).double()


def raster_order(shape) -> list[int]:
    """Flat (C-order) indices of the pixels in the model's order: row, then column, then channel."""
    c, h, w = shape
    return [ch * h * w + i * w + j for i in range(h) for j in range(w) for ch in range(c)]


def all_images(shape) -> torch.Tensor:
    """Every binary image of ``shape`` (C, H, W), (2^D, C, H, W), in the order of their flat (C-order) bits."""
    d = math.prod(shape)
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64).reshape(-1, *shape)


@pytest.mark.parametrize("shape, kernel, layers", [((1, 5, 5), 3, 3), ((1, 6, 4), 5, 2), ((2, 4, 4), 3, 2)])
def test_logit_d_depends_only_on_earlier_pixels(shape, kernel, layers):
    lik = make(shape, layers=layers, kernel=kernel)
    d = math.prod(shape)
    params = torch.randn(lik.param_shape, dtype=torch.float64)
    x = torch.rand(d, dtype=torch.float64)  # continuous inputs: no accidental zero gradients from ties
    jac = torch.autograd.functional.jacobian(lambda v: lik.logits(v.reshape(shape), params).flatten(), x)  # (D, D)
    order = raster_order(shape)
    jac = jac[order][:, order]  # rows and columns in the autoregressive order
    assert torch.all(jac.triu() == 0), "l_d must not depend on x_j for j >= d"
    below = jac.tril(-1) != 0
    assert below[1:].any(1).all(), "every l_d (d > 0) should depend on some earlier pixel"
    # the left neighbour (same row) always feeds the first, type-A layer
    c, h, w = shape
    for i, j in itertools.product(range(h), range(1, w)):
        row, col = (i * w + j) * c, (i * w + j - 1) * c
        assert jac[row, col] != 0


def test_mask_a_hides_the_centre_and_mask_b_shows_it():
    a, b = MaskedConv2d(1, 1, 3, "A"), MaskedConv2d(1, 1, 3, "B")
    expected_a = torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert torch.equal(a.mask[0, 0], expected_a)
    assert torch.equal(b.mask[0, 0], expected_a + torch.tensor([[0.0, 0, 0], [0, 1, 0], [0, 0, 0]]))


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 3, 3), (2, 2, 2)])
def test_probabilities_of_all_binary_images_sum_to_one(shape):
    lik = make(shape, layers=2)
    d = math.prod(shape)
    images = all_images(shape)  # (2^D, C, H, W)
    params = torch.randn(2, 1, *lik.param_shape, dtype=torch.float64)  # two codes z
    logp = lik.log_prob(images, params)  # (2, 2^D)
    assert logp.shape == (2, 2**d)
    torch.testing.assert_close(torch.logsumexp(logp, -1), torch.zeros(2, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("shape, layers", [((1, 2, 2), 2), ((1, 3, 3), 1), ((2, 2, 2), 1)])
def test_sample_frequencies_match_the_probabilities(shape, layers):
    # 3x3 with one layer: radius 1, so the sampler works on cones narrower than the image
    lik = make(shape, layers=layers, seed=1)
    with torch.no_grad():  # strong dependence on the earlier pixels, so a sampler that ignored them would fail
        lik.net.first.weight.mul_(4.0)
        lik.net.out.weight.mul_(4.0)
    d = math.prod(shape)
    params = torch.randn(lik.param_shape, dtype=torch.float64)
    n = 20_000
    x = lik.sample(params.expand(n, *lik.param_shape), generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, *shape) and set(x.unique().tolist()) <= {0.0, 1.0}
    bits = x.flatten(1)
    codes = (bits * 2 ** torch.arange(d - 1, -1, -1, dtype=x.dtype)).sum(-1).long()  # matches all_images' order
    freq = torch.bincount(codes, minlength=2**d).double() / n
    p = lik.log_prob(all_images(shape), params).exp()
    # each frequency is a binomial proportion: 5 standard errors sqrt(p(1-p)/n), plus 3 counts for the
    # Poisson tail of outcomes with n p << 1
    tol = 5 * torch.sqrt(p * (1 - p) / n) + 3 / n
    assert torch.all((freq - p).abs() <= tol), (freq - p).abs().max()


def test_sampling_is_reproducible_with_a_generator():
    lik = make((1, 4, 4))
    params = torch.randn(5, *lik.param_shape, dtype=torch.float64)
    a = lik.sample(params, generator=torch.Generator().manual_seed(3))
    b = lik.sample(params, generator=torch.Generator().manual_seed(3))
    c = lik.sample(params, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(lik.mean(params), lik.mean(params))  # deterministic: its own seeded generator


@pytest.mark.parametrize("shape, kernel, layers", [((1, 7, 9), 3, 2), ((1, 8, 8), 5, 1), ((2, 6, 6), 3, 2)])
def test_cone_logits_equal_the_full_pass(shape, kernel, layers):
    lik = make(shape, layers=layers, kernel=kernel)
    net = lik.net
    assert 2 * net.radius + 1 < shape[2]  # some cones are narrower than the image
    x = torch.bernoulli(torch.full((3, *shape), 0.5, dtype=torch.float64))
    c = torch.randn(3, lik.params_per_pixel * shape[0], *shape[1:], dtype=torch.float64)
    full = net(x, c)
    for i, j in itertools.product(range(shape[1]), range(shape[2])):
        torch.testing.assert_close(net.pixel_logits(x, c, i, j), full[:, :, i, j], atol=1e-12, rtol=0)


def test_mean_estimates_the_exact_marginals():
    shape = (1, 2, 2)
    lik = make(shape, layers=2, seed=2)
    params = torch.randn(lik.param_shape, dtype=torch.float64)
    images = all_images(shape)
    exact = (lik.log_prob(images, params).exp()[:, None, None, None] * images).sum(0)  # E[x_d] by enumeration
    n = 4000
    est = lik.mean(params.expand(n, *lik.param_shape))  # n independent one-sequence estimates
    assert est.shape == (n, *shape)
    se = est.std(0) / math.sqrt(n)
    assert torch.all((est.mean(0) - exact).abs() <= 5 * se + 1e-12)  # 5 standard errors


def test_log_prob_broadcasts_like_the_per_sample_loop():
    lik = make((1, 4, 4))
    s, b = 3, 5
    x = torch.bernoulli(torch.full((b, 1, 4, 4), 0.5, dtype=torch.float64))
    params = torch.randn(s, b, *lik.param_shape, dtype=torch.float64)
    batched = lik.log_prob(x, params)
    assert batched.shape == (s, b)
    loop = torch.stack([lik.log_prob(x, params[i]) for i in range(s)])
    one = torch.stack([torch.stack([lik.log_prob(x[j : j + 1], params[i, j : j + 1])[0] for j in range(b)])
                       for i in range(s)])
    torch.testing.assert_close(batched, loop, atol=1e-12, rtol=0)
    torch.testing.assert_close(batched, one, atol=1e-12, rtol=0)
    assert lik.log_prob(x, params[0]).shape == (b,)


def test_distribution_view():
    lik = make((1, 3, 3))
    params = torch.randn(4, *lik.param_shape, dtype=torch.float64)
    dist = lik.distribution(params)
    assert isinstance(dist, PixelCNNDistribution) and dist.batch_shape == (4,) and dist.event_shape == (1, 3, 3)
    assert isinstance(lik(params), PixelCNNDistribution)
    x = dist.sample((2,), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 4, 1, 3, 3)
    torch.testing.assert_close(dist.log_prob(x), lik.log_prob(x, params))
    assert dist.mean.shape == (4, 1, 3, 3) and torch.all((dist.mean > 0) & (dist.mean < 1))


def test_the_registry_builds_it_and_the_config_round_trips():
    with pytest.raises(ValueError, match="shape"):  # the pixelcnn needs the image's layout (C, H, W)
        LIKELIHOODS.build("pixelcnn", shape=(25,))
    with pytest.raises(ValueError, match="shape"):
        VAE(latent=3, likelihood="pixelcnn")
    lik = LIKELIHOODS.build({"name": "pixelcnn", "layers": 3, "channels": 4}, shape=(1, 5, 5))
    assert isinstance(lik, PixelCNNLikelihood) and lik.params_per_pixel == 4 and lik.net.radius == 3
    assert lik.shape == (1, 5, 5) and lik.param_shape == (4, 5, 5)
    again = LIKELIHOODS.build(lik.config(), shape=lik.shape)
    assert again.config() == lik.config() == {"name": "pixelcnn", "params": 4, "layers": 3, "channels": 4,
                                              "kernel": 3}
    with pytest.raises(ValueError, match="not"):  # a likelihood for 5x5 images in a model of 6x6 images
        VAE(shape=(1, 6, 6), latent=3, hidden=[8], likelihood=lik)
    with pytest.raises(ValueError, match="not"):
        HierarchicalVAE(shape=(1, 6, 6), latent=3, hidden=[8], likelihood=lik)
    with pytest.raises(ValueError, match="odd"):
        PixelCNNLikelihood((1, 5, 5), kernel=4)


def test_settings_reach_the_model():
    cfg = resolve({"likelihood": "pixelcnn", "pixelcnn_layers": 3, "pixelcnn_channels": 16, "pixelcnn_params": 2,
                   "pixelcnn_kernel": 5}, {})
    assert cfg.likelihood_settings == {"params": 2, "layers": 3, "channels": 16, "kernel": 5}
    model = model_for(cfg, (1, 8, 8), True)
    assert model.likelihood.config() == {"name": "pixelcnn", "params": 2, "layers": 3, "channels": 16, "kernel": 5}
    assert model.likelihood.shape == (1, 8, 8)
    assert model.describe()["likelihood"] == model.likelihood.config()
    assert model.decoder[-1].out_features == 2 * 64
    with pytest.raises(ConfigError, match="binary"):
        model_for(cfg, (1, 8, 8), False)
    with pytest.raises(ConfigError, match="odd"):
        resolve({"pixelcnn_kernel": 4}, {})
    with pytest.raises(ConfigError, match="pixelcnn'?: layers"):
        resolve({"pixelcnn_layers": 0}, {})


def test_memory_probe_counts_the_pixelcnn():
    plain = VAE(shape=(1, 8, 8), latent=3, hidden=[16])
    pixel = VAE(shape=(1, 8, 8), latent=3, hidden=[16], likelihood={"name": "pixelcnn", "layers": 4, "channels": 32})
    # at least the 4 layers' outputs of 32 features x 64 pixels in float32
    assert bytes_per_row(pixel, 3) - bytes_per_row(plain, 3) >= 4 * 32 * 64 * 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = prototype_dataset(300, 60, 40)
    cfg = TrainConfig(dataset="synthetic", likelihood="pixelcnn",
                      likelihood_settings={"layers": 2, "channels": 16, "params": 2}, hidden=[32], latent=4, epochs=8,
                      batch_size=30, lr=3e-3, device="cpu")
    run = tmp_path_factory.mktemp("pixel") / "run"
    result = train(cfg, run, dataset=ds, progress=False)
    return run, ds, result


def test_a_pixelcnn_vae_trains_saves_loads_and_evaluates(trained):
    run, ds, result = trained
    rows = read_metrics(run)
    # from ~44 nats (64 fair coins) towards ~17 nats (prototype choice + 5% flips); the first epoch is
    # already well below 44, so ask for 3 more nats of improvement
    assert rows[-1]["valid_elbo"] > rows[0]["valid_elbo"] + 3.0, [r["valid_elbo"] for r in rows]
    model = VAE.load(run)
    assert model.likelihood.name == "pixelcnn"
    x = ds.test.flatten(1)
    z = torch.randn(2, x.shape[0], 4, generator=torch.Generator().manual_seed(0))
    again = VAE.load(run)
    torch.testing.assert_close(model.log_likelihood(x, z), again.log_likelihood(x, z), atol=0, rtol=0)
    res = evaluate_model(model, ds.test, k=10, seed=0)
    assert math.isfinite(res.nll) and math.isfinite(res.elbo)
    assert res.elbo <= -res.nll and (res.per_example["gap"] >= -1e-9).all()
    assert res.likelihood == "pixelcnn" and not any("density" in note for note in res.notes)
    s = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert s.draws.shape == (6, 1, 8, 8) and set(s.draws.unique().tolist()) <= {0.0, 1.0}
    assert torch.all((s.means >= 0) & (s.means <= 1))



def test_cli_train_sample_evaluate_report(tmp_path, capsys):
    run = tmp_path / "r"
    code, out, err = run_cli(["train", "--dataset", "digits", "--binarize", "threshold", "--likelihood", "pixelcnn",
                              "--pixelcnn-layers", "2", "--pixelcnn-channels", "8", "--pixelcnn-params", "2",
                              "--hidden", "32", "--latent", "4", "--epochs", "1", "--out", str(run), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["epochs"] == 1
    assert json.loads((run / "model.json").read_text())["likelihood"]["layers"] == 2
    code, out, err = run_cli(["sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png")], capsys)
    assert code == 0, err
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = run_cli(["evaluate", str(run), "--k", "10", "--limit", "50", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["nll"] > 0 and res["elbo"] <= -res["nll"] and not any("density" in n for n in res["notes"])
    code, out, err = run_cli(["report", str(run), "--k", "5", "--limit", "20", "--out", str(tmp_path / "r.html")],
                             capsys)
    assert code == 0, err
    assert (tmp_path / "r.html").stat().st_size > 1000


def test_grey_level_data_is_refused_in_one_line(tmp_path, capsys):
    code, out, err = run_cli(["train", "--dataset", "digits", "--likelihood", "pixelcnn", "--epochs", "1",
                              "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "binary" in err and "--binarize" in err
