"""The report's interactive latent explorer: the decoder exported to the page (checked against the model in numpy),
and the page itself driven by real pointer events in headless Chromium (decoded pixels against the model's)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from headless import DevTools, needs_chromium
from synthetic import prototype_dataset
from vaekit.config import TrainConfig
from vaekit.models import VAE
from vaekit.pages import explorer
from vaekit.pages.report import write_report
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def ds():
    return prototype_dataset(240, 60, 60)


@pytest.fixture(scope="module")
def run2d(tmp_path_factory, ds):
    run = tmp_path_factory.mktemp("explorer") / "run"
    train(TrainConfig(dataset="synthetic", latent=2, hidden=[32], epochs=5, batch_size=40, device="cpu"), run,
          dataset=ds, progress=False)
    return run


def _model(seed: int = 0, **kw) -> VAE:
    torch.manual_seed(seed)
    return VAE(shape=kw.pop("shape", SHAPE), latent=kw.pop("latent", 3), hidden=kw.pop("hidden", [16, 12]), **kw).eval()


def _exact(model: VAE, z, labels=None) -> np.ndarray:
    """E[x|z] of the model in float64 (its float32 weights, computed exactly): what the page's float64 arithmetic
    on float32 weights must give up to summation order."""
    return explorer._torch_means(model.double(), np.asarray(z, dtype=np.float64), labels)


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu", "gelu", "softplus", "gated"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", {"name": "gaussian", "variance": "per-pixel"},
                                        "continuous-bernoulli"])
def test_the_exported_decoder_is_the_model(activation, likelihood):
    model = _model(activation=activation, likelihood=likelihood)
    program, weights = explorer.export_decoder(model)
    assert program["dtype"] == "float32" and program["mean"]["count"] == 64
    z = 2.5 * torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    # float64 on both sides, the same float32 weights: only the order of the sums differs (~1e-15 relative)
    np.testing.assert_allclose(explorer.run_program(program, weights, z.numpy()), _exact(model, z), rtol=0, atol=1e-9)


def test_a_conditional_decoder_takes_the_one_hot_label():
    model = _model(condition=4)
    program, weights = explorer.export_decoder(model)
    assert program["inputs"] == 3 + 4
    z = torch.randn(12, 3, generator=torch.Generator().manual_seed(2)).numpy()
    y = [0, 1, 2, 3] * 3
    ours = explorer.run_program(program, weights, z, y)
    np.testing.assert_allclose(ours, _exact(model, z, y), rtol=0, atol=1e-9)
    assert np.abs(ours - explorer.run_program(program, weights, z, [1] * 12)).max() > 1e-3  # the label matters


def test_a_large_decoder_is_stored_as_float16_with_its_error_measured():
    model = _model(hidden=[64])
    program, weights = explorer.export_decoder(model, float32_bytes=0)
    assert program["dtype"] == "float16" and len(program["weights"]) * 3 // 4 // 2 == program["size"]
    flat = np.concatenate([p.detach().double().numpy().ravel() for layer in model.decoder
                           for p in (getattr(layer, "weight", None), getattr(layer, "bias", None)) if p is not None])
    np.testing.assert_array_equal(weights, flat.astype(np.float16).astype(np.float64))  # round to nearest
    with pytest.raises(explorer.Unsupported, match="MiB"):
        explorer.export_decoder(model, float32_bytes=0, max_bytes=1000)


def test_what_the_page_cannot_run_is_said_in_one_line(ds):
    from vaekit.models import HierarchicalVAE

    cases = [(_model(arch="conv", hidden=[16]), "ConvDecoder"),
             (_model(likelihood="pixelcnn"), "pixelcnn likelihood"),
             (HierarchicalVAE(shape=SHAPE, latent=2, hidden=[8]), "HierarchicalVAE")]
    for model, why in cases:
        with pytest.raises(explorer.Unsupported, match=why):
            explorer.export_decoder(model)
        html = explorer.explorer_section(model, ds.test, ds.test_labels, ds.classes, None)
        assert "No interactive explorer for this model" in html and why in html and "<script" not in html


def test_the_page_data(ds):
    model = _model(latent=4)
    activity = [0.01, 0.5, 0.02, 0.3]
    names = ["</script><b>a", "b & c", "<!--", "d"]  # class names go into HTML and into a <script> element
    data = explorer.explorer_data(model, ds.test, ds.test_labels, names, activity)
    assert data["units"] == [1, 3] and data["unitNames"] == ["z_2", "z_4"]  # the two most active, numbered from 1
    assert len(data["points"]["u"]) == len(ds.test) and set(data["points"]["label"]) <= {0, 1, 2, 3}
    assert data["bases"][0]["z"] == [0.0] * 4 and data["bases"][0]["name"] == "the prior mean"
    assert len(data["bases"]) == 1 + explorer.MAX_BASES
    assert data["error"] < 1e-5  # float32 weights: float32 rounding of the model's own arithmetic only
    for lo, hi in data["extent"]:
        assert lo < -1.5 and hi > 1.5  # the prior's central 99% at least
    html = explorer.explorer_html(data)
    blob = html.split("id='vaekit-explorer-data'>")[1].split("</script>")[0]
    assert "<" not in blob and ">" not in blob and json.loads(blob) == data  # escaped, and read back whole
    assert "&lt;/script&gt;&lt;b&gt;a" in html and "<b>a" not in html  # the legend and the menu escape them


# -- the page in headless Chromium ---------------------------------------------------------------------


def _drive(tab: DevTools, points, model: VAE, atol: float, reference=None) -> None:
    """Move the pointer to each latent point of the plane and compare what the page decoded with the model."""
    for a, b in points:
        at = tab.evaluate(f"vaekitExplorer.toClient({a}, {b})")
        tab.mouse_move(at["x"], at["y"])
        state = tab.evaluate("vaekitExplorer.state")
        # the pointer sits on a whole CSS pixel: the code under it is within one pixel's worth of (a, b)
        assert abs(state["a"] - a) < 0.05 and abs(state["b"] - b) < 0.05, (state["a"], state["b"], a, b)
        z = np.asarray(state["z"])
        pixels = np.asarray(state["pixels"])
        np.testing.assert_allclose(pixels, explorer._torch_means(model, z[None])[0], rtol=0, atol=atol)
        if reference is not None:
            np.testing.assert_allclose(pixels, reference(z), rtol=0, atol=1e-9)
        drawn = np.asarray(tab.evaluate("vaekitExplorer.imageBytes()")).reshape(-1, 3)
        np.testing.assert_array_equal(drawn[:, 0], np.floor(255 * pixels + 0.5))  # the canvas shows these pixels


@needs_chromium("the latent explorer")
def test_the_report_explorer_decodes_under_the_pointer(run2d, ds, tmp_path):
    page = write_report(run2d, k=5, dataset=ds, out=tmp_path / "report.html")
    text = page.read_text()
    assert "Latent explorer" in text and "id='vaekit-explorer' hidden" in text
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)  # nothing fetched from elsewhere
    model = VAE.load(run2d).eval()
    exact = VAE.load(run2d).eval()
    with DevTools() as tab:
        tab.open(page)
        assert tab.evaluate("document.getElementById('vaekit-explorer').hidden") is False  # the script ran
        assert tab.evaluate("vaekitExplorer.spec.program.dtype") == "float32"
        tab.evaluate("document.getElementById('vaekit-explorer').scrollIntoView()")
        # float32 weights in float64 arithmetic against the model in float32: float32 rounding, < 1e-5 here
        _drive(tab, [(-1.2, 0.8), (0.3, -1.7), (1.5, 1.1)], model, 1e-5, lambda z: _exact(exact, z[None])[0])


@needs_chromium("the latent explorer")
def test_float16_weights_and_the_other_units_held_at_an_image(ds, tmp_path):
    model = _model(latent=4, hidden=[48], activation="gelu")
    data = explorer.explorer_data(model, ds.test, ds.test_labels, ds.classes, [0.1, 0.5, 0.05, 0.3],
                                  float32_bytes=0)
    program, quantised = explorer.export_decoder(model, float32_bytes=0)
    page = tmp_path / "explorer.html"
    page.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><style>{explorer.CSS}</style></head><body>"
                    f"{explorer.explorer_html(data)}</body></html>")
    points = [(-1.0, 0.5), (0.7, -0.9), (1.8, 1.6)]
    with DevTools() as tab:
        tab.open(page)
        assert tab.evaluate("vaekitExplorer.spec.program.dtype") == "float16"
        tab.evaluate("(function () { var s = document.querySelector('select.base'); s.value = '2'; "
                     "s.dispatchEvent(new Event('change')); })()")
        base = np.asarray(data["bases"][2]["z"])
        for a, b in points:
            at = tab.evaluate(f"vaekitExplorer.toClient({a}, {b})")
            tab.mouse_move(at["x"], at["y"])
            state = tab.evaluate("vaekitExplorer.state")
            z = np.asarray(state["z"])
            np.testing.assert_array_equal(z[[0, 2]], base[[0, 2]])  # the other units: the chosen image's
            pixels = np.asarray(state["pixels"])
            # the page computes exactly the float16 weights' decoder (float64 both sides)
            np.testing.assert_allclose(pixels, explorer.run_program(program, quantised, z[None])[0], rtol=0, atol=1e-9)
            # and differs from the model itself by the quantisation (measured here, at this very point) only
            full = explorer._torch_means(model, z[None])[0]
            quantisation = np.abs(explorer.run_program(program, quantised, z[None])[0] - full).max()
            assert 0 < quantisation < 1e-2
            assert np.abs(pixels - full).max() <= quantisation + 1e-6


@needs_chromium("the report without JavaScript")
def test_without_javascript_the_static_figures_remain(run2d, ds, tmp_path):
    page = write_report(run2d, k=5, dataset=ds, out=tmp_path / "report.html")
    with DevTools() as tab:
        tab.call("Emulation.setScriptExecutionDisabled", {"value": True})
        tab.open(page)
        assert tab.evaluate("document.getElementById('vaekit-explorer').hidden") is True
        assert tab.evaluate("typeof window.vaekitExplorer") == "undefined"
        images = tab.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
        assert len(images) >= 8 and all(done and width > 0 for done, width in images)
