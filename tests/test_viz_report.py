"""vaekit.viz figures and the self-contained HTML report, rendered in headless Chromium when installed."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from headless import blank, needs_chromium, screenshot
from synthetic import prototype_dataset
from vaekit import viz
from vaekit.config import TrainConfig
from vaekit.errors import DataError
from vaekit.models import VAE
from vaekit.report import write_report
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def ds():
    return prototype_dataset(240, 60, 60)


@pytest.fixture(scope="module")
def run2d(tmp_path_factory, ds):
    run = tmp_path_factory.mktemp("viz") / "run"
    train(TrainConfig(dataset="synthetic", latent=2, hidden=[32], epochs=5, batch_size=40, device="cpu"), run,
          dataset=ds, progress=False)
    return run


def _png(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data))


def test_image_grid_layout():
    grey = torch.rand(10, 1, 8, 8)
    g = viz.image_grid(grey, nrow=4, pad=1)
    assert g.shape == (3 * 9 + 1, 4 * 9 + 1)  # 3 rows of 4
    np.testing.assert_allclose(g[1:9, 1:9], grey[0, 0].numpy(), rtol=1e-6)
    colour = viz.image_grid(torch.rand(3, 3, 5, 5), nrow=3)
    assert colour.shape == (7, 19, 3) and colour.min() >= 0 and colour.max() <= 1


def test_normal_quantiles_are_the_inverse_cdf():
    q = viz.normal_quantiles(3)
    np.testing.assert_allclose(q, [-1.6448536, 0.0, 1.6448536], atol=1e-6)


def test_every_figure_renders(run2d, ds):
    model = VAE.load(run2d).eval()
    x, y = ds.test, ds.test_labels
    figs = [viz.samples_figure(model, 16, seed=1), viz.reconstructions_figure(model, x, 8),
            viz.interpolations_figure(model, x, 3, 5), viz.traversals_figure(model, [1, 0], None, 5),
            viz.manifold_figure(model, 6), viz.latent_scatter_figure(model, x, y, ds.classes),
            viz.latent_scatter_figure(model, x, None), viz.kl_per_unit_figure([0.5, 2.0], [0.2, 0.001]),
            viz.training_curves_figure([{"epoch": 1, "train_elbo": -50.0, "valid_elbo": -49.0, "train_kl": 1.0},
                                        {"epoch": 2, "train_elbo": -45.0, "valid_elbo": float("nan")}])]
    for fig in figs:
        img = _png(viz.figure_png(fig))
        assert img.size[0] > 100 and img.size[1] > 50


def test_manifold_needs_a_2d_latent_space():
    with pytest.raises(ValueError, match="2-dimensional"):
        viz.manifold_figure(VAE(shape=(1, 4, 4), latent=3, hidden=[8]))


def test_samples_are_deterministic(run2d, tmp_path):
    model = VAE.load(run2d).eval()
    a = viz.save_figure(viz.samples_figure(model, 9, seed=4), tmp_path / "a.png").read_bytes()
    b = viz.save_figure(viz.samples_figure(model, 9, seed=4), tmp_path / "b.png").read_bytes()
    assert np.array_equal(np.asarray(_png(a)), np.asarray(_png(b)))


def test_report_is_self_contained(run2d, ds):
    path = write_report(run2d, k=20, dataset=ds)
    assert path == run2d / "report.html"
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) >= 8  # KL bars, curves, samples, reconstructions, interpolations, traversals, manifold, scatter
    for data in images:
        _png(base64.b64decode(data))
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)  # nothing fetched from elsewhere
    for needle in ("K = 20", "Training curves", "Samples from the prior", "Reconstructions", "Interpolations",
                   "Latent traversals", "The 2-D latent space", "bits per dimension", "active units"):
        assert needle in page, needle


def test_report_without_data_still_shows_the_model(run2d, monkeypatch, tmp_path):
    import vaekit.evaluation as ev

    def broken(*_a, **_k):
        raise DataError("digits.npz not found in /nowhere; pass --data-dir")

    monkeypatch.setattr(ev, "_load_dataset", broken)
    path = write_report(run2d, k=5, out=tmp_path / "r.html")
    page = path.read_text()
    assert "could not be loaded" in page and "/nowhere" in page
    assert "Samples from the prior" in page and "Evaluation on" not in page


@needs_chromium("the report")
def test_report_renders_in_headless_chromium(run2d, ds, tmp_path):
    path = write_report(run2d, k=20, dataset=ds, out=tmp_path / "report.html")
    img = screenshot(path, tmp_path / "shot.png")
    assert img.size == (1200, 3000)
    assert not blank(img)
    # the top of the page (title and the evaluation table) and the images further down all rendered
    assert not blank(img.crop((0, 0, 1200, 600))) and not blank(img.crop((0, 1200, 1200, 2400)))
