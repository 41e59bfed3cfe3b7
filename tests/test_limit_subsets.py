"""Sensible subsets: ``--limit N`` takes a fixed, seeded, class-balanced (or uniform) subset, and says which;
the report's figures show every class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_run import run_cli
from vaekit.config import TrainConfig
from vaekit.data import Dataset
from vaekit.data.base import class_interleaved_order, describe_subset, subset_indices
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation import evaluate_model, evaluate_run, limit_split, load_model
from vaekit.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

SORTED = np.repeat(np.arange(10), 100)  # 1,000 labels sorted by class, as some test files are


# -- subset_indices ----------------------------------------------------------------------------------


def test_balanced_counts_and_never_the_first_n():
    idx = subset_indices(SORTED, 100, seed=0)
    assert np.bincount(SORTED[idx]).tolist() == [10] * 10  # the first 100 would all be zeros
    assert len(np.unique(idx)) == 100 and np.array_equal(idx, np.sort(idx))
    # 105 = 10 x 10 + 5: five classes get one more, chosen at random
    counts = np.bincount(SORTED[subset_indices(SORTED, 105, seed=3)])
    assert counts.sum() == 105 and sorted(counts.tolist()) == [10] * 5 + [11] * 5


def test_a_small_class_gives_all_it_has_and_the_others_share_its_shortfall():
    y = np.concatenate([np.zeros(3, int), np.ones(50, int), np.full(50, 2)])
    counts = np.bincount(y[subset_indices(y, 33, seed=1)])
    assert counts.tolist() == [3, 15, 15]
    counts = np.bincount(y[subset_indices(torch.as_tensor(y), 34, seed=1)])  # tensors too
    assert counts[0] == 3 and sorted(counts[1:].tolist()) == [15, 16]


def test_deterministic_for_a_seed_and_changed_by_another():
    a, b = subset_indices(SORTED, 50, seed=7), subset_indices(SORTED, 50, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, subset_indices(SORTED, 50, seed=8))


def test_more_than_there_are_gives_all_of_them():
    assert np.array_equal(subset_indices(SORTED, 5000, seed=0), np.arange(1000))
    assert np.array_equal(subset_indices(None, 12, seed=0, size=12), np.arange(12))


def test_uniform_without_labels():
    a = subset_indices(None, 100, seed=0, size=1000)
    assert len(np.unique(a)) == 100 and a.max() > 500  # spread over the whole range, not the first 100
    assert np.array_equal(a, subset_indices(torch.zeros(0, dtype=torch.int64), 100, seed=0, size=1000))
    assert not np.array_equal(a, subset_indices(None, 100, seed=1, size=1000))
    # a uniform subset: each item is in it with probability 100/1000; over 200 seeds item 0 is chosen ~20 times
    # (binomial, sd ~4.2): within 5 sd
    hits = sum(0 in subset_indices(None, 100, seed=s, size=1000) for s in range(200))
    assert abs(hits - 20) < 5 * (200 * 0.1 * 0.9) ** 0.5


def test_bad_arguments():
    with pytest.raises(ConfigError):
        subset_indices(SORTED, -1)
    with pytest.raises(ConfigError):
        subset_indices(None, 3)
    with pytest.raises(DataError):
        subset_indices(SORTED, 3, size=7)


def test_interleaved_order_shows_every_class_first():
    order = class_interleaved_order(SORTED, seed=0)
    assert sorted(order.tolist()) == list(range(1000))
    for k in (10, 20, 32):
        counts = np.bincount(SORTED[order[:k]], minlength=10)
        assert counts.max() - counts.min() <= 1  # every prefix as balanced as it can be
    assert not np.array_equal(order, class_interleaved_order(SORTED, seed=1))
    assert sorted(class_interleaved_order(None, 0, size=9).tolist()) == list(range(9))


def test_description():
    assert describe_subset(SORTED, 100, 1000, 4) == (
        "a class-balanced random subset of 100 of the 1000 test images (seed 4)")
    assert describe_subset(None, 5, 9, 0, "valid") == "a uniformly random subset of 5 of the 9 valid images (seed 0)"
    assert describe_subset(SORTED, 2000, 1000, 0) == "all 1000 test images"


# -- evaluate, the CLI and the report ------------------------------------------------------------------------


def sorted_dataset() -> Dataset:
    """8x8 binary images of 4 prototypes, every split sorted by class."""
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(4, 1, 8, 8, generator=g) < 0.4).float()

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(4).repeat_interleave(n // 4)
        flip = (torch.rand(n, 1, 8, 8, generator=g) < 0.05).float()
        return (protos[y] - flip).abs(), y

    (tr, ytr), (va, yva), (te, yte) = make(160), make(40), make(80)
    return Dataset("sorted", (1, 8, 8), True, False, tr, va, te, ytr, yva, yte, classes=tuple("abcd"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = sorted_dataset()
    run = tmp_path_factory.mktemp("limit") / "run"
    train(TrainConfig(dataset="sorted", latent=2, hidden=[16], epochs=2, batch_size=40, device="cpu"), run,
          dataset=ds, progress=False)
    return run, ds


def test_evaluate_run_limit_is_the_balanced_subset_and_says_so(trained):
    run, ds = trained
    r = evaluate_run(run, k=5, dataset=ds, limit=20, seed=2, surgery_samples=0)
    idx = subset_indices(ds.test_labels, 20, seed=2)
    assert np.bincount(ds.test_labels[idx].numpy()).tolist() == [5, 5, 5, 5]
    direct = evaluate_model(load_model(run), ds.test[idx], k=5, seed=2, surgery_samples=0)
    assert r.n == 20 and r.nll == direct.nll and r.elbo == direct.elbo
    assert "evaluated on a class-balanced random subset of 20 of the 80 test images (seed 2)" in r.notes
    first = evaluate_model(load_model(run), ds.test[:20], k=5, seed=2, surgery_samples=0)
    assert first.nll != r.nll  # not the first 20 (all of class a)
    x, y, what = limit_split(ds.test, ds.test_labels, 500, 0)
    assert len(x) == 80 and what == "all 80 test images"


def test_cli_limit_on_digits_names_the_subset(tmp_path, capsys):
    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--dataset", "digits", "--epochs", "1", "--hidden", "16", "--latent", "2",
                            "--device", "cpu", "--out", str(run), "--quiet"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", str(run), "--k", "3", "--limit", "30", "--surgery-samples", "0",
                              "--json"], capsys)
    assert code == 0, err
    res = json.loads(out.strip().splitlines()[-1])
    assert res["n"] == 30
    assert "evaluated on a class-balanced random subset of 30 of the 270 test images (seed 0)" in res["notes"]
    code, out, err = run_cli(["evaluate", str(run), "--k", "3", "--limit", "30", "--surgery-samples", "0"], capsys)
    assert code == 0 and "class-balanced random subset of 30" in out


def test_report_figures_show_every_class(trained, monkeypatch, tmp_path):
    from vaekit.pages import viz
    from vaekit.pages.report import write_report

    run, ds = trained
    seen = {}
    original = viz.reconstructions_figure

    def spy(model, x, n, split, labels=None, *args, **kwargs):
        seen["labels"] = labels[: min(n, len(x))].tolist()
        return original(model, x, n, split, labels, *args, **kwargs)

    monkeypatch.setattr(viz, "reconstructions_figure", spy)
    page = write_report(run, k=3, dataset=ds, limit=12, out=tmp_path / "r.html").read_text()
    # the test split is sorted by class: its first 12 are all of class a, a balanced 12 have 3 of each
    assert sorted(seen["labels"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert sorted(seen["labels"][:4]) == [0, 1, 2, 3]  # and the figure takes the classes in turn
    assert "class-balanced random subset of 12 of the 80 test images" in page
