"""Baselines for the tabular recipe: scikit-learn's GaussianMixture and FactorAnalysis on vaekit's split.

    python benchmarks/tabular_baselines.py --dataset breast-cancer [--seed 0] [--json]

The data are vaekit's own splits (``vaekit.load_dataset``, standardised by the training split's mean and SD,
the test split carved with the fixed test seed, the validation split with ``--seed``). Each model is fitted on
the training split; its size (mixture components 1..10 with full covariances; factors 1..D) is chosen by the
mean validation log-likelihood; the test NLL is reported in nats per example in the ORIGINAL units:
-mean_x [log p(u(x)) + log_jacobian], log_jacobian = -sum_d log sd_d, with the standard error over examples.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np


def _flat(ds, split: str) -> np.ndarray:
    x = ds.split(split)
    return x.reshape(len(x), -1).double().numpy()


def _choose(make, sizes, train, valid, test, jac: float) -> dict:
    """Fit ``make(size)`` for each size, keep the best on the validation split; its test NLL (original units)."""
    best = None
    for size in sizes:
        model = make(size).fit(train)
        score = float(model.score_samples(valid).mean())
        if best is None or score > best[0]:
            best = (score, size, model)
    score, size, model = best
    nll = -(model.score_samples(test) + jac)
    return {"size": int(size), "valid_log_px": score + jac, "test_nll": float(nll.mean()),
            "test_nll_stderr": float(nll.std(ddof=1) / math.sqrt(len(nll)))}


def baselines(name: str, seed: int = 0) -> dict:
    from sklearn.decomposition import FactorAnalysis
    from sklearn.mixture import GaussianMixture

    import vaekit

    ds = vaekit.load_dataset(name, seed=seed)
    jac = ds.standardisation.log_jacobian
    train, valid, test = (_flat(ds, s) for s in ("train", "valid", "test"))
    d = train.shape[1]
    gmm = _choose(lambda k: GaussianMixture(k, covariance_type="full", random_state=seed, n_init=3),
                  range(1, 11), train, valid, test, jac)
    fa = _choose(lambda k: FactorAnalysis(k, random_state=seed), range(1, d + 1), train, valid, test, jac)
    return {"dataset": name, "seed": seed, "splits": {s: len(ds.split(s)) for s in ("train", "valid", "test")},
            "log_jacobian": jac, "gaussian_mixture": gmm, "factor_analysis": fa}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="breast-cancer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = baselines(args.dataset, args.seed)
    if args.json:
        print(json.dumps(out))
        return
    for key in ("gaussian_mixture", "factor_analysis"):
        r = out[key]
        print(f"{key:18s} size {r['size']:3d}  test NLL {r['test_nll']:.2f} +- {r['test_nll_stderr']:.2f} nats")


if __name__ == "__main__":
    main()
