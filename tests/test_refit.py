"""Training q(z|x) alone on a trained model (``--init-from RUN --train-only encoder``), and model
selection on the IWAE bound when that is the objective.

Refitting the inference network leaves p(z) p(x|z), and so log p(x), exactly as it was: only the
importance-sampling proposal of ``vaekit evaluate`` changes (Cremer et al., 2018, measure the
amortization gap this way).
"""

from __future__ import annotations

import json

import pytest
import torch

from cli_run import run_cli
from vaekit.evaluation import load_model
from vaekit.models import VAE
from vaekit.models.hierarchical import HierarchicalVAE


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("refit") / "base"
    from vaekit.cli import main

    assert main(["train", "--out", str(run), "--epochs", "2", "--hidden", "64", "--latent", "4", "--quiet"]) == 0
    return run


def _train(argv, capsys):
    code, out, err = run_cli(["train", *argv, "--quiet"], capsys)
    assert code == 0, err
    return out


def test_encoder_only_training_keeps_the_generative_model(trained, tmp_path, capsys):
    out = tmp_path / "refit"
    _train(["--config", str(trained / "config.json"), "--out", str(out), "--init-from", str(trained),
            "--train-only", "encoder", "--objective", "iwae", "--k", "5", "--epochs", "2"], capsys)
    before, after = load_model(trained), load_model(out)
    changed = {name for name, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[name])}
    encoder = {f"encoder.{name}" for name, _ in before.encoder.named_parameters()}
    assert changed and changed <= encoder  # only q(z|x) moved, and it did move
    config = json.loads((out / "config.json").read_text())
    assert config["init_from"] == str(trained) and config["train_only"] == "encoder"


def test_iwae_objective_keeps_the_epoch_with_the_best_validation_bound(trained, tmp_path, capsys):
    out = tmp_path / "iwae"
    code, printed, err = run_cli(["train", "--out", str(out), "--hidden", "64", "--latent", "4", "--objective", "iwae",
                                  "--k", "4", "--epochs", "6", "--lr", "3e-3", "--seed", "3"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    running, expected = -float("inf"), []
    for row in rows:
        assert row["valid_iwae"] >= row["valid_elbo"] - 1e-6  # the bound sits above the ELBO
        expected.append(row["valid_iwae"] > running)
        running = max(running, row["valid_iwae"])
    assert [row["best"] for row in rows] == expected
    assert f"valid IWAE bound {running:.3f}" in printed


def test_elbo_runs_do_not_pay_for_a_validation_bound(trained):
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("valid_iwae" not in row for row in rows)


@pytest.mark.parametrize(("extra", "message"), [
    (["--train-only", "encoder"], "needs init_from"),
    (["--train-only", "decoder"], "train_only must be one of all, encoder"),
    (["--init-from", "{missing}"], "init_from: run directory"),
    (["--init-from", "{base}", "--hidden", "32", "--latent", "4"], "holds another architecture than this run"),
    (["--init-from", "{base}", "--train-only", "encoder", "--prior", "vamp"], "would change the vamp prior"),
])
def test_refit_settings_fail_with_one_clear_line(trained, tmp_path, capsys, extra, message):
    extra = [e.format(missing=tmp_path / "nope", base=trained) for e in extra]
    code, _, err = run_cli(["train", "--out", str(tmp_path / "bad"), "--epochs", "1", *extra], capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_inference_parameters_are_exactly_those_of_the_guide():
    vae = VAE(shape=(1, 8, 8), latent=3, hidden=[16], posterior={"name": "planar", "steps": 2})
    guide = {id(p) for p in vae.inference_parameters()}
    named = dict(vae.named_parameters())
    assert any(n.startswith("posterior_family.flow.") for n in named)
    assert {n for n, p in named.items() if id(p) in guide} == {
        n for n in named if n.startswith(("encoder.", "posterior_family.flow."))}
    hvae = HierarchicalVAE(shape=(1, 8, 8), latent=3, hidden=[16])
    guide = {id(p) for p in hvae.inference_parameters()}
    names = {n for n, p in hvae.named_parameters() if id(p) in guide}
    assert names and all(n.startswith(("encoder.", "q_z1_")) for n in names)
    assert not any(n.startswith(("p_z1.", "decoder.", "prior.")) for n in names)
    assert len(guide) == sum(1 for n, _ in hvae.named_parameters() if n.startswith(("encoder.", "q_z1_")))


def test_a_resumed_refit_still_trains_only_the_encoder(trained, tmp_path, capsys):
    out = tmp_path / "refit"
    common = ["--config", str(trained / "config.json"), "--out", str(out), "--init-from", str(trained),
              "--train-only", "encoder"]
    _train([*common, "--epochs", "1"], capsys)
    _train([*common, "--epochs", "3", "--resume"], capsys)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    before, after = load_model(trained).state_dict(), load_model(out).state_dict()
    assert all(torch.equal(after[n], before[n]) for n in before if not n.startswith("encoder."))
    assert any(not torch.equal(after[n], before[n]) for n in before if n.startswith("encoder."))
