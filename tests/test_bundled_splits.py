"""The splits of scikit-learn's bundled arrays (digits, wine, breast-cancer): the loaders give exactly the examples,
labels and order of the documented rule, written out here from numpy alone: the test split carved from all N with
the fixed TEST_SEED, the validation split from the M = N - T left with ``seed``, each in the original order."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.datasets
import torch

from vaekit.data.base import TEST_SEED
from vaekit.data.digits import load_digits
from vaekit.data.tabular import load_table

#: name -> (scikit-learn loader, loader of vaekit, default test and valid counts from N).
BUNDLED = {
    "digits": (sklearn.datasets.load_digits, lambda **kw: load_digits(**kw), lambda n: (270, 270)),
    "wine": (sklearn.datasets.load_wine, lambda **kw: load_table("wine", **kw),
             lambda n: (round(0.2 * n), round(0.2 * n))),
    "breast-cancer": (sklearn.datasets.load_breast_cancer, lambda **kw: load_table("breast-cancer", **kw),
                      lambda n: (round(0.2 * n), round(0.2 * n))),
}
#: (seed, valid_size, test_size): the defaults, another seed, counts and fractions.
CASES = [(0, None, None), (3, None, None), (1, 0.1, 25), (2, 30, 0.3)]


def _count(size, n: int, default: int) -> int:
    return default if size is None else size if isinstance(size, int) else int(round(size * n))


def _expected(name: str, seed: int, valid_size, test_size) -> dict[str, np.ndarray]:
    bunch = BUNDLED[name][0]()
    n = len(bunch.target)
    default_test, default_valid = BUNDLED[name][2](n)
    t = _count(test_size, n, default_test)
    perm = np.random.default_rng(TEST_SEED).permutation(n)
    test, pool = np.sort(perm[:t]), np.sort(perm[t:])
    v = _count(valid_size, len(pool), default_valid)
    inner = np.random.default_rng(seed).permutation(len(pool))
    return {"train": pool[np.sort(inner[v:])], "valid": pool[np.sort(inner[:v])], "test": test}


@pytest.mark.parametrize("name", sorted(BUNDLED))
@pytest.mark.parametrize(("seed", "valid_size", "test_size"), CASES)
def test_bundled_splits_are_the_documented_carving(name, seed, valid_size, test_size):
    sk, load, _ = BUNDLED[name]
    bunch = sk()
    values = bunch.images / 16.0 if name == "digits" else bunch.data
    ds = load(seed=seed, valid_size=valid_size, test_size=test_size)
    idx = _expected(name, seed, valid_size, test_size)
    assert sum(len(i) for i in idx.values()) == len(bunch.target)
    for split, index in idx.items():
        x, y = getattr(ds, split), getattr(ds, f"{split}_labels")
        assert x.dtype == torch.float32 and tuple(x.shape) == (len(index), *ds.shape)
        want = torch.from_numpy(values[index].astype(np.float32)).reshape(x.shape)
        assert torch.equal(x, want), (name, split)
        assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(bunch.target[index].astype(np.int64)))
