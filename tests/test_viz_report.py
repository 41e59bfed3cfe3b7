"""vaekit.pages.viz figures and the self-contained HTML report, rendered in headless Chromium when installed."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from headless import blank, needs_chromium, screenshot
from synthetic import prototype_dataset
from vaekit.config import TrainConfig
from vaekit.errors import DataError
from vaekit.models import VAE
from vaekit.pages import viz
from vaekit.pages.report import write_report
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
    import vaekit.evaluation.evaluator as ev  # the module that loads the data

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


# -- pictures of images: whole-factor enlargement, shown unresampled ------------------------------------


def _region(fig, png: bytes) -> np.ndarray:
    """The pixels of the PNG where the figure's (only) image axes sit."""
    img = np.asarray(_png(png).convert("RGB"))
    box = fig.axes[0].get_window_extent()
    x0, top = int(round(box.x0)), int(round(img.shape[0] - box.y1))
    return img[top:top + int(round(box.height)), x0:x0 + int(round(box.width))]


def test_the_manifold_is_enlarged_by_a_whole_factor_pixel_for_pixel(run2d):
    model = VAE.load(run2d).eval()
    fig = viz.manifold_figure(model, 6)
    s = fig.image_scale
    assert isinstance(fig, viz.PixelFigure) and s == viz.pixel_scale(6 * 8) == viz.MAX_SCALE
    q = torch.tensor(viz.normal_quantiles(6), dtype=torch.float32)
    z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")
    grid = viz.image_grid(viz.decode_means(model, torch.stack([z1, z2], -1).reshape(-1, 2)), 6, pad=0)
    want = np.repeat(np.repeat(np.round(grid * 255).astype(np.uint8), s, 0), s, 1)
    got = _region(fig, viz.figure_png(fig))
    assert got.shape[:2] == want.shape  # exactly s x s pixels per image pixel
    np.testing.assert_array_equal(got[..., 0], want)  # nearest neighbour: every block one value, no blending
    np.testing.assert_array_equal(got[..., 1], want)


def test_the_factor_is_whole_and_fits_the_page():
    assert viz.pixel_scale(560) == 1 and viz.pixel_scale(233 * 2) == 2 and viz.pixel_scale(64) == viz.MAX_SCALE
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    fig = viz.panels([viz.image_grid(images, 8)] * 2, ["a", "b"])
    w, h = viz.png_size(viz.figure_png(fig))
    assert fig.image_scale == 2 and 2 * 233 * 2 < w <= viz.IMAGE_WIDTH + 100
    colour = viz.panels([viz.image_grid(torch.rand(4, 3, 5, 5), 2)], ["c"], scale=3)
    region = _region(colour, viz.figure_png(colour))
    assert region.shape[:2] == (13 * 3, 13 * 3) and (region[::3, ::3] == region[2::3, 2::3]).all()


def test_report_images_are_shown_at_their_own_size(run2d, ds, tmp_path):
    page = write_report(run2d, k=5, dataset=ds, out=tmp_path / "r.html").read_text()
    assert re.search(r"figure\.px img \{[^}]*max-width: none;[^}]*image-rendering: pixelated", page)
    tags = re.findall(r"<figure( class='px')?><img width=\"(\d+)\" height=\"(\d+)\" alt=\"([^\"]+)\" "
                      r"src=\"data:image/png;base64,([A-Za-z0-9+/=]+)\"", page)
    assert len(tags) >= 8
    pixel = {alt for px, _, _, alt, _ in tags if px}
    assert {"samples", "reconstructions", "interpolations", "traversals", "manifold"} <= pixel
    assert "training curves" not in pixel and "scatter" not in pixel
    for _, w, h, alt, data in tags:
        assert _png(base64.b64decode(data)).size == (int(w), int(h)), alt  # the <img> states the PNG's size


@needs_chromium("the report")
def test_the_browser_does_not_resample_the_pictures_of_images(run2d, ds, tmp_path):
    from headless import DevTools

    page = write_report(run2d, k=5, dataset=ds, out=tmp_path / "r.html")
    with DevTools(size=(1200, 900)) as tab:
        tab.open(page)
        shown = tab.evaluate("Array.from(document.querySelectorAll('figure.px img')).map(i => [i.alt, "
                             "i.naturalWidth, i.naturalHeight, i.clientWidth, i.clientHeight, "
                             "getComputedStyle(i).imageRendering])")
    assert len(shown) >= 5
    for alt, nw, nh, w, h, rendering in shown:
        assert (w, h) == (nw, nh) and rendering == "pixelated", alt


# -- one numbering of latent units -----------------------------------------------------------------------


def test_latent_units_are_numbered_from_one_everywhere(run2d, ds):
    from vaekit.evaluation import evaluate_model, format_table

    model = VAE.load(run2d).eval()
    assert [viz.unit_name(j) for j in range(3)] == ["z_1", "z_2", "z_3"]
    labels = [t.get_text() for t in viz.traversals_figure(model, [1, 0], None, 3).axes[0].get_yticklabels()]
    assert labels == ["z_2", "z_1"]
    kl = [t.get_text() for t in viz.kl_per_unit_figure([0.1, 0.5], [0.2, 0.2]).axes[0].get_xticklabels()]
    assert kl == ["z_2", "z_1"]
    manifold = viz.manifold_figure(model, 4).axes[0]
    assert (manifold.get_xlabel(), manifold.get_ylabel()) == ("z_1", "z_2")
    scatter = viz.latent_scatter_figure(model, ds.test[:20]).axes[0]
    assert scatter.get_xlabel().startswith("z_1") and scatter.get_ylabel().startswith("z_2")
    table = format_table(evaluate_model(model, ds.test[:20], k=3))
    assert re.search(r"KL per unit \(largest\)\s+z_[12]: ", table) and not re.search(r"\bz_?0\b", table)
    page = write_report(run2d, k=5, dataset=ds).read_text()
    text = re.sub(r"<script.*?</script>|data:image/png;base64,[A-Za-z0-9+/=]+", "", page, flags=re.S)
    assert "z_1" in text and not re.search(r"\bz_?0\b", text)


# -- the settings table -----------------------------------------------------------------------------------


def _config(**changes) -> dict:
    return json.loads(json.dumps(TrainConfig(**{"dataset": "digits", **changes}).to_dict()))


def test_the_settings_table_lists_what_applies_to_the_run():
    from vaekit.pages.report import CORE_SETTINGS, run_settings

    shown, hidden = run_settings(_config(epochs=7))
    assert {"dataset", "family", "objective", "epochs", "batch_size", "lr", "seed"} <= set(shown) <= set(CORE_SETTINGS)
    assert shown["epochs"] == 7 and len(shown) + len(hidden) == len(_config()) - 1  # all but the model's own
    for key in ("temperature", "temperature_min", "anneal_rate", "estimator", "em_iterations", "components", "fit",
                "k", "train_only", "log_images_every"):
        assert key not in shown, key
    # a setting that differs from the default shows; k with the IWAE objective even at its default
    shown, _ = run_settings(_config(beta=0.5, warmup=3, objective="iwae"))
    assert shown["beta"] == 0.5 and shown["warmup"] == 3 and shown["k"] == 1
    # the temperatures only where a Gumbel-softmax (or straight-through) estimator uses them
    gumbel, _ = run_settings(_config(posterior="categorical", estimator="gumbel"))
    assert {"estimator", "temperature", "temperature_min", "anneal_rate"} <= set(gumbel)
    nvil, _ = run_settings(_config(posterior="categorical", estimator="nvil", temperature=2.0))
    assert "estimator" in nvil and "temperature" not in nvil  # set, but nvil has no temperature
    # exact EM: its own settings, none of the trainer's
    em, _ = run_settings({**_config(), "family": "bernoulli-mixture", "fit": "em", "em_iterations": 40})
    assert em["em_iterations"] == 40 and em["fit"] == "em"
    assert not {"epochs", "batch_size", "lr", "objective", "k"} & set(em)
    # keys vaekit does not know (an older run's) are shown rather than hidden
    assert run_settings({**_config(), "an_old_key": 3})[0]["an_old_key"] == 3


def test_the_report_shows_the_rule(run2d, ds):
    page = write_report(run2d, k=5, dataset=ds).read_text()
    settings = page[page.index("<h2>Settings</h2>"):]
    assert "<td>epochs</td>" in settings and "<td>temperature</td>" not in settings
    assert "<td>em_iterations</td>" not in settings and "Left out:" in settings


# -- robust y-limits ---------------------------------------------------------------------------------------


def test_a_wild_first_epoch_does_not_flatten_the_curves():
    rows = [{"epoch": 1, "train_elbo": -2000.0, "valid_elbo": -1500.0}]
    rows += [{"epoch": e, "train_elbo": -120.0 + 5 * e, "valid_elbo": -118.0 + 5 * e} for e in range(2, 11)]
    ax = viz.training_curves_figure(rows).axes[0]
    lo, hi = ax.get_ylim()
    assert -110 > lo > -115 and -68 < hi < -63  # the later epochs fill the axis
    marks = [line for line in ax.lines if line.get_marker() == "v"]
    assert len(marks) == 2 and all(line.get_ydata()[0] == lo for line in marks)  # epoch 1 at the edge, marked
    assert {t.get_text() for t in ax.texts} == {"-2000", "-1500"}
    # a first epoch that is merely the worst is kept on the axis
    rows = [{"epoch": e, "train_elbo": v} for e, v in enumerate([-60.0, -50.0, -45.0, -44.0, -43.0], 1)]
    lo, hi = viz.training_curves_figure(rows).axes[0].get_ylim()
    assert lo < -60 < -43 < hi
    assert viz.robust_limits([]) is None and viz.robust_limits([[1.0]]) == pytest.approx((0.95, 1.05))
