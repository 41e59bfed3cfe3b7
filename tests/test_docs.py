"""The documentation's Python examples run as they are and do what their text says."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)


def test_own_networks_page_trains_evaluates_saves_reloads_and_samples(tmp_path, monkeypatch):
    (code,) = python_blocks(DOCS / "your-own-networks.md")
    assert len(code.strip().splitlines()) < 40, "the page promises a whole example in under 40 lines"
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "your-own-networks.md", "exec"), scope)
    result, images, model = scope["result"], scope["images"], scope["model"]
    run = tmp_path / "runs" / "my-conv-vae"
    assert (run / "model.safetensors").is_file() and (run / "checkpoint.safetensors").is_file()
    assert '"custom"' in (run / "model.json").read_text()
    assert type(model.encoder).__name__ == "Encoder" and type(model.decoder).__name__ == "Decoder"
    # log p(x) of 64 binary pixels: above the uniform model's -64 log 2 = -44.4 nats once trained, below 0
    assert math.isfinite(result.nll) and 0 < result.nll < 64 * math.log(2) - 5
    assert result.k == 500 and result.n == 270 and result.gap >= 0
    assert images.shape == (16, 1, 8, 8) and bool(((images >= 0) & (images <= 1)).all())


@pytest.mark.parametrize("page", ["README.md", *sorted(f"docs/{p.name}" for p in DOCS.glob("*.md"))])
def test_every_python_block_of_the_docs_compiles(page):
    for block in python_blocks(ROOT / page):
        compile(block, page, "exec")


def test_discrete_latents_page_trains_a_categorical_vae_and_reports_the_exact_nll(tmp_path, monkeypatch, capsys):
    (code,) = python_blocks(DOCS / "discrete-latents.md")
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "discrete-latents.md", "exec"), scope)
    result = scope["result"]
    assert result.exact_codes == 8**2  # 2 groups of 8 classes: the page's "64 codes"
    # the importance-sampled NLL estimates the exact one from above (IWAE_K <= log p(x)), within its error
    assert result.nll_exact <= result.nll + 3 * result.nll_stderr
    assert (tmp_path / "runs" / "cat" / "model.safetensors").is_file()


def test_disentanglement_page_trains_a_beta_tcvae_on_dsprites_and_scores_it(tmp_path, monkeypatch, capsys):
    (code,) = python_blocks(DOCS / "disentanglement.md")
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "disentanglement.md", "exec"), scope)
    scores, ds = scope["scores"], scope["ds"]
    assert ds.factors.split("train").shape == (2400, 5) and len(ds.train) == 2400
    assert all(0 <= scores[n] <= 1 and scores[n + "_stderr"] >= 0 for n in ("mig", "sap", "dci_disentanglement",
                                                                           "factor_vae_score", "beta_vae_score"))
    assert "mig" in capsys.readouterr().out
    assert (tmp_path / "runs" / "dsprites-tc" / "model.safetensors").is_file()



def test_bounds_and_estimators_page_trains_with_dreg_and_measures_the_snr(tmp_path, monkeypatch, capsys):
    (code,) = python_blocks(DOCS / "bounds-and-estimators.md")
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "bounds-and-estimators.md", "exec"), scope)
    result, snr = scope["result"], scope["snr"]
    assert math.isfinite(result.best_valid_iwae)
    assert (tmp_path / "runs" / "digits-iwae-dreg" / "model.safetensors").is_file()
    rows = {(r.estimator, r.k): r for r in snr.rows}

    def apart(a, b, part: str) -> bool:
        """a above b by more than 3 x the hypot of their jackknife SEs (rows of different K draw independently;
        DReG's and the pathwise rows of one K share draws, and differ here by far more than that)."""
        sa, sb = getattr(a, f"{part}_snr"), getattr(b, f"{part}_snr")
        return sa - sb > 3 * math.hypot(getattr(a, f"{part}_snr_stderr"), getattr(b, f"{part}_snr_stderr"))

    path1, path32, dreg32 = rows[("pathwise", 1)], rows[("pathwise", 32)], rows[("dreg", 32)]
    # what the text says: the pathwise encoder SNR falls with K (to near the noise floor), DReG's stays near 1,
    # the decoder's grows
    assert apart(path1, path32, "encoder") and path32.encoder_snr < 2 * snr.snr_floor
    assert apart(dreg32, path32, "encoder") and 0.5 < dreg32.encoder_snr < 2
    assert apart(path32, path1, "decoder")
    assert "encoder SNR" in capsys.readouterr().out


def test_mmd_family_page_trains_both_and_labels_decoder_and_fitted_density(tmp_path, monkeypatch, capsys):
    (code,) = python_blocks(DOCS / "mmd-family.md")
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__docs__"}
    exec(compile(code, "mmd-family.md", "exec"), scope)
    results, same, apart = scope["results"], float(scope["same"]), float(scope["apart"])
    # what the page says: each NLL is that of decoder + the mixture fitted to the codes, and labelled so; on 64
    # binary pixels it is below the uniform model's 64 log 2 = 44.4 nats once trained
    assert results["wae-mmd"].notes[0].startswith("decoder + fitted density (a deterministic encoder z = f(x)): "
                                                  "log p(x) is that of the decoder with a Gaussian")
    assert results["infovae-mmd"].notes[0].startswith("decoder + fitted density")
    assert all(0 < r.nll < 64 * math.log(2) for r in results.values())
    # MMD^2_u of 500 + 500 draws: under one distribution its SD is of order 1/n = 0.002; a shift of 1 in each of 4
    # units gives far more
    assert abs(same) < 0.01 and apart > 0.1
    assert "MMD^2_u" in capsys.readouterr().out
