"""The kept epoch is chosen by the training objective on the validation set, and every run says by which."""

from __future__ import annotations

import json

from cli_run import run_cli


def _train(tmp_path, capsys, name, *args, size=("--hidden", "32", "--latent", "4")):
    run = tmp_path / name
    code, out, err = run_cli(["train", "--dataset", "digits", *size, "--epochs", "6", "--out", str(run), "--json",
                              *args], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return json.loads(out.strip().splitlines()[-1]), rows


def test_beta_runs_keep_the_epoch_of_their_own_objective(tmp_path, capsys):
    size = ("--hidden", "400", "--latent", "40")  # large enough for the KL to grow unchecked at beta = 0
    result, rows = _train(tmp_path, capsys, "b0", "--beta", "0", size=size)
    scores = [r["valid_reconstruction"] for r in rows]  # beta = 0: the objective is the reconstruction alone
    assert result["selected_by"] == "valid beta-ELBO (beta = 0)"
    assert result["best_epoch"] == 1 + scores.index(max(scores))
    assert result["best_score"] == max(scores)
    assert all(r["selected_by"] == result["selected_by"] and r["score"] == r["valid_reconstruction"] for r in rows)
    # the ELBO of a beta = 0 run falls as its KL grows, so the old rule kept another epoch here
    old, old_rows = _train(tmp_path, capsys, "b0-elbo", "--beta", "0", "--select-by", "elbo", size=size)
    elbos = [r["valid_elbo"] for r in old_rows]
    assert old["selected_by"] == "valid ELBO" and old["best_epoch"] == 1 + elbos.index(max(elbos))
    assert old["best_epoch"] != result["best_epoch"]


def test_beta_two_selects_on_the_weighted_elbo_and_beta_one_on_the_elbo(tmp_path, capsys):
    result, rows = _train(tmp_path, capsys, "b2", "--beta", "2")
    weighted = [r["valid_reconstruction"] - 2 * r["valid_kl"] for r in rows]
    assert result["best_epoch"] == 1 + weighted.index(max(weighted))
    plain, rows = _train(tmp_path, capsys, "b1")
    assert plain["selected_by"] == "valid ELBO" and "selected_by" not in rows[0]
    elbos = [r["valid_elbo"] for r in rows]
    assert plain["best_epoch"] == 1 + elbos.index(max(elbos)) and plain["best_score"] == max(elbos)


def test_iwae_runs_select_on_the_iwae_bound(tmp_path, capsys):
    result, rows = _train(tmp_path, capsys, "iw", "--objective", "iwae", "--k", "3")
    bounds = [r["valid_iwae"] for r in rows]
    assert result["selected_by"] == "valid IWAE bound (k = 3)"
    assert result["best_epoch"] == 1 + bounds.index(max(bounds))
