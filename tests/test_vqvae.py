"""The VQ-VAE family (vaekit.models.vqvae) and its objective (vaekit.objectives.vqvae): the bound its protocol gives,
the objective's gradients, training, bit-exact resume, the PixelCNN prior fitted over the codes (--prior-of RUN),
sampling, evaluation, report and compare through the CLI, a config file and vaekit.fit."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vaekit
from cli_run import run_cli
from vaekit.io.checkpoint import read_safetensors
from vaekit.io.runs import read_metrics
from vaekit.models.vqvae import VQVAE, prior_stage
from vaekit.objectives import build_objective

TINY = ["--dataset", "digits", "--binarize", "dynamic", "--family", "vqvae", "--codes", "8", "--code-dim", "4",
        "--conv-channels", "8,16", "--threads", "1", "--quiet"]


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(seed))


def _model(**kw) -> VQVAE:
    torch.manual_seed(0)
    return VQVAE((1, 8, 8), codes=kw.pop("codes", 5), code_dim=3, channels=[4, 8], **kw)


def test_the_protocol_gives_the_bound_the_objective_trains():
    model, x = _model().eval(), _images(6)
    z_e, out = model.quantize(x)
    q = model.posterior(x)
    assert torch.equal(q.mean.reshape(6, 2, 2, 5).argmax(-1), out.indices)
    assert torch.allclose(model.decode(q.mean), model.decode_grid(out.z_q), atol=1e-6)
    terms = vaekit.elbo(model, x)  # the generic ELBO of a point-mass q on one-hot codes
    loss = build_objective("vqvae").for_model(model).loss(model, x)
    assert torch.allclose(terms.elbo, loss.terms.elbo, atol=1e-5)
    # the uniform prior: log p(z_q) = -G log K with G = 2 x 2 positions and K = 5 codes
    assert torch.allclose(loss.terms.kl, torch.full((6,), 4 * math.log(5)), atol=1e-5)
    assert torch.allclose(loss.terms.elbo, loss.terms.reconstruction - 4 * math.log(5), atol=1e-5)


def test_the_loss_and_its_gradients_by_parts():
    model, x = _model(), _images(4)
    loss = build_objective("vqvae").for_model(model).loss(model, x)
    z_e, out = model.quantize(x)
    rec = model.likelihood.log_prob(x, model.decode_grid(out.z_q))
    want = -(rec - out.codebook_loss - out.commitment_loss - 4 * math.log(5)).mean()
    assert loss.loss.item() == pytest.approx(want.item(), rel=1e-6)
    # the codebook takes the gradient of the codebook loss alone (the decoder's reaches the encoder instead)
    (g_book,) = torch.autograd.grad(loss.loss, [model.quantizer.codebook], retain_graph=True)
    (g_hand,) = torch.autograd.grad(out.codebook_loss.mean(), [model.quantizer.codebook])
    assert torch.allclose(g_book, g_hand, atol=1e-6) and g_book.abs().sum() > 0
    # the encoder: straight through the quantizer, -d rec / d z_q, plus the commitment term
    enc = list(model.encoder.parameters())
    g_enc = torch.autograd.grad(loss.loss, enc)
    z_e, out = model.quantize(x)
    g_zq = torch.autograd.grad(-model.likelihood.log_prob(x, model.decode_grid(out.z_q)).mean(), out.z_q)[0]
    g_hand = torch.autograd.grad(z_e, enc, grad_outputs=g_zq + 2 * 0.25 * (z_e - out.z_q).detach() / 4)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g_enc, g_hand))


def test_train_resume_bit_exact_then_fit_the_prior_sample_evaluate_report(tmp_path, capsys):
    full, cut, prior = tmp_path / "full", tmp_path / "cut", tmp_path / "prior"
    assert run_cli(["train", *TINY, "--vq-ema", "true", "--epochs", "3", "--out", str(full)], capsys)[0] == 0
    assert run_cli(["train", *TINY, "--vq-ema", "true", "--epochs", "1", "--out", str(cut)], capsys)[0] == 0
    code, _, err = run_cli(["train", *TINY, "--vq-ema", "true", "--epochs", "3", "--out", str(cut), "--resume"],
                           capsys)
    assert code == 0, err
    a, _ = read_safetensors(full / "checkpoint.safetensors")
    b, _ = read_safetensors(cut / "checkpoint.safetensors")
    assert any("cluster_size" in k for k in a)  # the moving averages travel with the checkpoint
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    ae = vaekit.load(full)
    assert isinstance(ae, VQVAE) and ae.quantizer.ema and ae.prior.name == "uniform"

    code, _, err = run_cli(["train", "--config", str(full / "config.json"), "--prior-of", str(full),
                            "--vq-prior-channels", "8", "--vq-prior-layers", "2", "--epochs", "4", "--quiet",
                            "--out", str(prior)], capsys)
    assert code == 0, err
    fitted = vaekit.load(prior)
    assert fitted.prior.name == "pixelcnn"
    stage = ["train", "--config", str(full / "config.json"), "--prior-of", str(full), "--vq-prior-channels", "8",
             "--vq-prior-layers", "2", "--quiet", "--out", str(tmp_path / "prior-cut")]
    assert run_cli([*stage, "--epochs", "2"], capsys)[0] == 0
    assert run_cli([*stage, "--epochs", "4", "--resume"], capsys)[0] == 0  # the prior's fit resumes bit for bit
    a, _ = read_safetensors(prior / "checkpoint.safetensors")
    b, _ = read_safetensors(tmp_path / "prior-cut" / "checkpoint.safetensors")
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
    same = {k: v for k, v in ae.state_dict().items()}
    assert all(torch.equal(v, fitted.state_dict()[k]) for k, v in same.items())  # the autoencoder is untouched
    rows_ae, rows_prior = read_metrics(full), read_metrics(prior)
    assert rows_prior[-1]["selected_by"] == "valid vq_elbo (pixelcnn prior)"
    # the fitted prior beats the uniform one on the validation codes of the kept autoencoder (same reconstruction)
    kept = next(r for r in rows_ae if r.get("best") and r["epoch"] == max(q["epoch"] for q in rows_ae if q.get("best")))
    assert rows_prior[-1]["valid_elbo"] > kept["valid_elbo"] + 0.5
    assert rows_prior[-1]["valid_reconstruction"] == pytest.approx(kept["valid_reconstruction"], abs=1e-6)

    png = tmp_path / "s.png"
    code, _, err = run_cli(["sample", str(prior), "-n", "4", "--out", str(png)], capsys)
    assert code == 0 and png.read_bytes().startswith(b"\x89PNG"), err
    code, out, err = run_cli(["evaluate", str(prior), "--json"], capsys)
    assert code == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["vq_prior"] == "pixelcnn" and r["vq_elbo"] == pytest.approx(r["elbo"]) == pytest.approx(-r["nll"])
    assert r["vq_bits_per_dim"] == pytest.approx(-r["vq_elbo"] / (64 * math.log(2)))
    code, out, err = run_cli(["evaluate", str(full)], capsys)
    assert code == 0 and "vq_elbo (uniform prior)" in out and "log p(x), K" not in out, err
    code, _, err = run_cli(["compare", str(full), str(prior), "--out", str(tmp_path / "c.html"), "--quiet"], capsys)
    assert code == 0 and "vq_elbo" in (tmp_path / "c.html").read_text(), err
    code, _, err = run_cli(["report", str(prior), "--quiet"], capsys)
    page = (prior / "report.html").read_text()
    assert code == 0 and "vq_elbo (pixelcnn prior)" in page, err
    assert "one bound per example, no importance sampling" in page and "importance samples)" not in page
    assert "perplexity exp(H)" in page and "Latent traversals" not in page and "<h2>Interpolations</h2><p" in page


def test_a_config_file_and_fit_train_a_vqvae_and_its_prior(tmp_path, capsys):
    config = tmp_path / "vq.toml"
    config.write_text('dataset = "digits"\nbinarize = "dynamic"\nepochs = 1\nthreads = 1\nconv_channels = [8, 16]\n'
                      '[family]\nname = "vqvae"\ncodes = 6\ncode_dim = 2\ncommitment = 0.5\n')
    code, _, err = run_cli(["train", "--config", str(config), "--out", str(tmp_path / "cfg"), "--quiet"], capsys)
    assert code == 0, err
    model = vaekit.load(tmp_path / "cfg")
    assert (model.codes, model.quantizer.code_dim, model.quantizer.commitment) == (6, 2, 0.5)

    x = _images(120)
    result = vaekit.fit(_model(), x[:100], x[100:], out=tmp_path / "fit", epochs=2, progress=False)
    assert result.selected_by == "valid vq_elbo (uniform prior)"
    stage = prior_stage(tmp_path / "fit", channels=8, layers=2)
    assert not any(p.requires_grad for p in stage.encoder.parameters())
    result = vaekit.fit(stage, x[:100], x[100:], out=tmp_path / "fit-prior", epochs=2, progress=False)
    assert result.selected_by == "valid vq_elbo (pixelcnn prior)"
    samples = vaekit.load(tmp_path / "fit-prior").sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.z.shape == (3, 4 * 5) and samples.z.sum(-1).eq(4).all()  # one code per grid position


@pytest.mark.parametrize("argv", [
    ["--codes", "1"], ["--code-dim", "0"], ["--vq-decay", "1.5"], ["--objective", "iwae"], ["--latent", "3",
                                                                                              "--k", "2"],
    ["--model", "mlp"], ["--prior-of", "no-such-run"], ["--vq-prior-kernel", "4"], ["--posterior", "iaf"]])
def test_bad_settings_are_one_line_and_write_nothing(tmp_path, capsys, argv):
    out = tmp_path / "run"
    code, _, err = run_cli(["train", *TINY, "--epochs", "1", *argv, "--out", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not out.exists()


def test_what_a_vqvae_run_cannot_do_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "vq"
    assert run_cli(["train", *TINY, "--epochs", "1", "--out", str(run)], capsys)[0] == 0
    code, _, err = run_cli(["evaluate", str(run), "--ais", "10"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "vq_elbo" in err, err
    code, _, err = run_cli(["train", *TINY, "--prior-of", str(tmp_path / "vq"), "--epochs", "1", "--out",
                            str(tmp_path / "p1")], capsys)
    assert code == 0, err
    code, _, err = run_cli(["train", *TINY, "--prior-of", str(tmp_path / "p1"), "--epochs", "1", "--out",
                            str(tmp_path / "p2")], capsys)  # a run with a fitted prior already
    assert code == 2 and "fitted pixelcnn prior" in err and not (tmp_path / "p2").exists(), err
