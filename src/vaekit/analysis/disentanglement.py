"""Disentanglement metrics: how well a code z (N, L) lines up with known generative factors v (N, K).

The definitions and protocols follow Locatello et al. (2019), "Challenging common assumptions in the unsupervised
learning of disentangled representations", as implemented in google-research/disentanglement_lib (its default
classifiers and hyperparameters; its study configs use 10000 training and 5000 test points). The scores work on
arrays: ``codes`` (N, L) floats, e.g. the posterior means of an encoder, and ``factors`` (N, K) integer class
indices of the ground-truth factors. Mutual information and entropies are in nats; every other score is a
fraction in [0, 1] (accuracies, AUCs, normalised information).

Scores on fixed examples (MIG, SAP, DCI, modularity and explicitness, total correlation):

* **MIG** (Chen et al., 2018), :func:`mig`: each code dim is discretised into ``bins`` equal-width bins between
  its minimum and maximum (disentanglement_lib's ``_histogram_discretize``); I(z_j; v_k) is the plug-in mutual
  information of the discretised z_j and v_k (``sklearn.metrics.mutual_info_score``) and H(v_k) the plug-in
  entropy. MIG = (1/K) sum_k (I_(1)k - I_(2)k) / H(v_k), I_(1)k >= I_(2)k the two largest I(z_j; v_k) over j.
* **SAP** (Kumar et al., 2018), :func:`sap`: S[j, k] = test accuracy of a linear SVM (``LinearSVC(C=0.01,
  class_weight="balanced")``) predicting v_k from z_j alone (discrete factors), or the squared correlation
  cov(z_j, v_k)^2 / (var z_j var v_k) on the training set (continuous factors). SAP = (1/K) sum_k (S_(1)k -
  S_(2)k), the gap between the two largest S[j, k] over j. With discrete factors an uninformative dim still
  scores about the chance accuracy, so the largest discrete SAP is about 1 - 1/(classes).
* **DCI** (Eastwood & Williams, 2018), :func:`dci`: R[j, k] = |feature importance| of z_j in a gradient-boosted
  classifier (``GradientBoostingClassifier``) predicting v_k. With P = R row-normalised,
  D_j = 1 - H_K(P[j, :]) and disentanglement = sum_j rho_j D_j, rho_j = sum_k R[j, k] / sum R; with
  Q = R column-normalised, C_k = 1 - H_L(Q[:, k]) and completeness = sum_k sigma_k C_k,
  sigma_k = sum_j R[j, k] / sum R (H_b: entropy to base b; disentanglement_lib adds 1e-11 to R). For boosted
  trees every column of R sums to 1, so sigma_k = 1/K and completeness is the plain mean of C_k.
  Informativeness = mean over factors of the classifier's test accuracy.
* **Modularity** (Ridgeway & Mozer, 2018), :func:`modularity_explicitness`: with the discretised MI matrix
  I[j, k] as for MIG, delta_j = (sum_k I[j, k]^2 - max_k I[j, k]^2) / ((K - 1) max_k I[j, k]^2) and modularity
  = (1/L) sum_j (1 - delta_j) (0 for a dim with no information). **Explicitness** = mean over factors of the
  one-vs-rest ROC AUC (macro average over classes) of a ``LogisticRegression`` predicting v_k from all of z,
  standardised with the training mean and std.
* **Gaussian total correlation of the means**, :func:`total_correlation_of_means` (unsupervised): the KL
  divergence from N(0, Sigma) to the product of its marginals, Sigma the sample covariance of the codes,
  TC = sum_j 0.5 log Sigma_jj - 0.5 log det Sigma = -0.5 log det Corr(z) nats (0 for uncorrelated codes).

Intervention scores, drawn from a ``sampler`` (see :class:`FactorSampler`) and a function ``represent(images)
-> codes (n, L)``:

* **beta-VAE score** (Higgins et al., 2017), :func:`beta_vae_score`: a point is a factor k drawn uniformly and
  ``batch_size`` pairs of examples whose factor k agrees within each pair (all other factors drawn afresh); its
  feature is the mean over the batch of |z(x_1) - z(x_2)|, its label k. A ``LogisticRegression`` is trained on
  ``train_points`` points; the score is its accuracy on ``eval_points`` new points.
* **FactorVAE score** (Kim & Mnih, 2018), :func:`factor_vae_score`: the global variance s_j^2 of every code dim
  over ``variance_points`` examples; dims with s_j < ``prune_threshold`` (0.05, disentanglement_lib's
  ``prune_dims.threshold``) are dropped. A point is a factor k drawn uniformly and a batch with factor k held at
  one value; the dim with the smallest variance relative to s_j^2 votes for k. Each dim predicts the factor with
  most of its training votes (majority vote); the score is that classifier's accuracy on ``eval_points`` points.

Standard errors. Every score is a :class:`Score` (value, stderr, detail). For the scores on fixed examples the
stderr is the bootstrap standard deviation (ddof=1) of the score over ``resamples`` (default 20) resamplings with
replacement of the examples (training and test sets resampled independently, every classifier refitted), drawn
from ``numpy.random.default_rng(seed)``; ``resamples=0`` skips it (stderr NaN). For the intervention scores it
is the standard error of the mean over evaluation batches, std(correct, ddof=1) / sqrt(eval_points), with the
classifier held fixed. Everything is deterministic given ``seed`` (and, for the intervention scores, a sampler
that draws only from the ``rng`` it is given).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy import stats
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score
from sklearn.svm import LinearSVC

from vaekit.errors import DataError

__all__ = [
    "DCIScore", "FactorSampler", "ModularityExplicitness", "Score", "beta_vae_score", "dci", "dci_from_importance",
    "dci_importance", "factor_entropies", "factor_vae_score", "histogram_discretize", "mig", "modularity_explicitness",
    "modularity_from_mi", "mutual_information_matrix", "sap", "sap_score_matrix", "total_correlation_of_means",
]

#: Bootstrap resamples behind the stderr of the scores on fixed examples.
DEFAULT_RESAMPLES = 20
#: Equal-width bins per code dim for the discretised mutual information (disentanglement_lib's study configs).
DEFAULT_BINS = 20
#: disentanglement_lib's offset on the importances before their entropies are taken.
_IMPORTANCE_EPS = 1e-11


@dataclass(frozen=True)
class Score:
    """A score, its standard error (how it was estimated is stated by the function that returns it) and the
    intermediate quantities behind it (plain floats and lists, JSON-ready)."""

    value: float
    stderr: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DCIScore:
    """Disentanglement, completeness and informativeness (test accuracy) of :func:`dci`."""

    disentanglement: Score
    completeness: Score
    informativeness: Score


@dataclass(frozen=True)
class ModularityExplicitness:
    """Modularity and explicitness (test ROC AUC) of :func:`modularity_explicitness`."""

    modularity: Score
    explicitness: Score


class FactorSampler(Protocol):
    """Draws examples with known factors. ``sample(n, fixed=(k, value))`` holds factor k at ``value`` in all n
    examples; ``factors`` is (n, K) int and ``images`` whatever ``represent`` takes. A sampler may also have
    ``sample_from_factors(factors, rng=None) -> images``, which the beta-VAE score then uses to render its pairs in
    one call (otherwise it draws the second batch of a pair with one ``sample`` call per value of the factor)."""

    factor_sizes: Sequence[int]

    def sample(self, n: int, fixed: tuple[int, int] | None = None,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, Any]: ...


Represent = Callable[[Any], np.ndarray]


# ----------------------------------------------------------------------------------------
# validation


def _as_codes(codes: Any, name: str, min_dims: int = 1) -> np.ndarray:
    try:
        array = np.asarray(codes, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"{name} must be a numeric array (examples, code dims): {error}") from None
    if array.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (examples, code dims); got shape {array.shape}")
    if array.shape[1] < min_dims:
        raise DataError(f"{name} has {array.shape[1]} code dim(s); this score needs at least {min_dims}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{name} holds NaN or infinite values")
    return array


def _as_factors(factors: Any, name: str, integer: bool = True) -> np.ndarray:
    array = np.asarray(factors)
    if array.ndim != 2 or array.shape[1] < 1:
        raise DataError(f"{name} must be a 2-D array (examples, factors); got shape {array.shape}")
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
        raise DataError(f"{name} must hold finite numbers (integer class indices, one column per factor)")
    if integer:
        if not np.all(array == np.round(array)):
            raise DataError(f"{name} must hold integer class indices (one column per factor)")
        return array.astype(np.int64)
    return array.astype(np.float64)


def _pair(codes: Any, factors: Any, prefix: str = "", min_dims: int = 1,
          integer: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Codes and factors checked: 2-D, finite, the same number of examples, at least 2 of them."""
    z = _as_codes(codes, f"{prefix}codes", min_dims)
    v = _as_factors(factors, f"{prefix}factors", integer)
    if z.shape[0] != v.shape[0]:
        raise DataError(f"{prefix}codes and {prefix}factors have different numbers of examples "
                        f"({z.shape[0]} vs {v.shape[0]})")
    if z.shape[0] < 2:
        raise DataError(f"{prefix}codes has {z.shape[0]} example(s); at least 2 are needed")
    return z, v


def _check_varying(factors: np.ndarray, name: str) -> None:
    constant = [k for k in range(factors.shape[1]) if np.all(factors[:, k] == factors[0, k])]
    if constant:
        raise DataError(f"{name} column(s) {constant} take a single value; every factor needs at least 2 values")


def _train_test(train_codes: Any, train_factors: Any, test_codes: Any, test_factors: Any, min_dims: int = 1,
                integer: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    z, v = _pair(train_codes, train_factors, "train_", min_dims, integer)
    z_test, v_test = _pair(test_codes, test_factors, "test_", min_dims, integer)
    if z_test.shape[1] != z.shape[1]:
        raise DataError(f"test_codes has {z_test.shape[1]} code dims but train_codes has {z.shape[1]}")
    if v_test.shape[1] != v.shape[1]:
        raise DataError(f"test_factors has {v_test.shape[1]} factors but train_factors has {v.shape[1]}")
    _check_varying(v, "train_factors")
    return z, v, z_test, v_test


def _check_count(value: int, name: str, least: int) -> int:
    if int(value) != value or value < least:
        raise DataError(f"{name} must be an integer >= {least}; got {value!r}")
    return int(value)


def _bootstrap_stderr(statistic: Callable[..., Any], samples: Sequence[tuple[np.ndarray, ...]], resamples: int,
                      seed: int, size: int) -> np.ndarray:
    """Standard deviation (ddof=1) of ``statistic`` (``size`` numbers) over ``resamples`` bootstrap replicates;
    each group of row-aligned arrays in ``samples`` is resampled with replacement, independently of the others.
    NaN when ``resamples`` < 2."""
    resamples = _check_count(resamples, "resamples", 0)
    if resamples < 2:
        return np.full(size, np.nan)
    rng = np.random.default_rng(seed)
    replicates = np.empty((resamples, size))
    for r in range(resamples):
        args: list[np.ndarray] = []
        for group in samples:
            rows = rng.integers(0, group[0].shape[0], size=group[0].shape[0])
            args.extend(array[rows] for array in group)
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates[r] = statistic(*args)
    return np.std(replicates, axis=0, ddof=1)


# ----------------------------------------------------------------------------------------
# mutual information gap


def histogram_discretize(codes: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Bin index (1..bins) of every entry of ``codes`` (N, L): ``bins`` equal-width bins between each column's
    minimum and maximum, as disentanglement_lib's ``_histogram_discretize``."""
    codes = _as_codes(codes, "codes")
    bins = _check_count(bins, "bins", 1)
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I[j, k] = plug-in mutual information (nats) between discrete code column j and factor column k, (L, K)."""
    return np.array([[mutual_info_score(factors[:, k], discrete_codes[:, j]) for k in range(factors.shape[1])]
                     for j in range(discrete_codes.shape[1])])


def factor_entropies(factors: np.ndarray) -> np.ndarray:
    """H(v_k) = plug-in entropy (nats) of every factor column, (K,)."""
    return np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def _mig_parts(codes: np.ndarray, factors: np.ndarray, bins: int) -> tuple[float, np.ndarray, np.ndarray,
                                                                             np.ndarray]:
    mi = mutual_information_matrix(histogram_discretize(codes, bins), factors)
    entropy = factor_entropies(factors)
    top = np.sort(mi, axis=0)[::-1]
    gaps = (top[0] - top[1]) / entropy
    return float(np.mean(gaps)), mi, entropy, gaps


def mig(codes: Any, factors: Any, bins: int = DEFAULT_BINS, resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0) -> Score:
    """Mutual information gap, mean_k (I_(1)k - I_(2)k) / H(v_k) on ``bins``-bin discretised codes (needs L >= 2).

    stderr: bootstrap over the examples (``resamples`` replicates, ``seed``), discretisation redone in each.
    detail: ``mutual_information`` (L, K, nats), ``entropy`` (K, nats), ``gap`` (K, normalised per factor)."""
    codes, factors = _pair(codes, factors, min_dims=2)
    _check_varying(factors, "factors")
    bins = _check_count(bins, "bins", 1)
    value, mi, entropy, gaps = _mig_parts(codes, factors, bins)
    stderr = _bootstrap_stderr(lambda z, v: _mig_parts(z, v, bins)[0], [(codes, factors)], resamples, seed, 1)
    return Score(value, float(stderr[0]), {"mutual_information": mi.tolist(), "entropy": entropy.tolist(),
                                           "gap": gaps.tolist(), "bins": bins, "resamples": resamples})


# ----------------------------------------------------------------------------------------
# SAP


def sap_score_matrix(train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray,
                     test_factors: np.ndarray, continuous_factors: bool = False) -> np.ndarray:
    """S[j, k], (L, K): the test accuracy of ``LinearSVC(C=0.01, class_weight="balanced")`` fitted to predict
    factor k from code dim j on the training set, or (``continuous_factors``) the squared correlation of z_j and
    v_k on the training set (0 where var z_j <= 1e-12), as disentanglement_lib's ``_compute_score_matrix``."""
    latents, count = train_codes.shape[1], train_factors.shape[1]
    matrix = np.zeros((latents, count))
    for j in range(latents):
        for k in range(count):
            if continuous_factors:
                cov = np.cov(train_codes[:, j], train_factors[:, k], ddof=1)
                matrix[j, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
            else:
                classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=0)
                classifier.fit(train_codes[:, j : j + 1], train_factors[:, k])
                matrix[j, k] = np.mean(classifier.predict(test_codes[:, j : j + 1]) == test_factors[:, k])
    return matrix


def _sap_parts(z: np.ndarray, v: np.ndarray, z_test: np.ndarray, v_test: np.ndarray,
               continuous: bool) -> tuple[float, np.ndarray, np.ndarray]:
    matrix = sap_score_matrix(z, v, z_test, v_test, continuous)
    top = np.sort(matrix, axis=0)[::-1]
    gaps = top[0] - top[1]
    return float(np.mean(gaps)), matrix, gaps


def sap(train_codes: Any, train_factors: Any, test_codes: Any, test_factors: Any, continuous_factors: bool = False,
        resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Score:
    """Separated attribute predictability, mean_k of the gap between the two best single-dim scores S[j, k]
    (:func:`sap_score_matrix`; needs L >= 2). With ``continuous_factors`` only the training set is used and the
    factors may be real numbers.

    stderr: bootstrap over the training and (independently) test examples, classifiers refitted in each.
    detail: ``score_matrix`` (L, K) and ``gap`` (K,)."""
    z, v, z_test, v_test = _train_test(train_codes, train_factors, test_codes, test_factors, min_dims=2,
                                       integer=not continuous_factors)
    value, matrix, gaps = _sap_parts(z, v, z_test, v_test, continuous_factors)
    stderr = _bootstrap_stderr(lambda *a: _sap_parts(*a, continuous_factors)[0], [(z, v), (z_test, v_test)],
                               resamples, seed, 1)
    return Score(value, float(stderr[0]), {"score_matrix": matrix.tolist(), "gap": gaps.tolist(),
                                           "continuous_factors": continuous_factors, "resamples": resamples})


# ----------------------------------------------------------------------------------------
# DCI


def _one_minus_entropy(weights: np.ndarray, base: int) -> np.ndarray:
    """1 - H_base of every column of ``weights`` (normalised per column); 1 when there is a single outcome."""
    if base == 1:
        return np.ones(weights.shape[1])
    return 1.0 - stats.entropy(weights + _IMPORTANCE_EPS, base=base, axis=0)


def dci_from_importance(importance: Any) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix R (L code dims, K factors), as
    disentanglement_lib's ``disentanglement`` and ``completeness``: sum_j rho_j (1 - H_K(R[j, :] / sum_k R[j, k]))
    and sum_k sigma_k (1 - H_L(R[:, k] / sum_j R[j, k])), rho and sigma the row and column shares of sum R
    (uniform when R is all zero); 1e-11 is added to R inside the entropies."""
    matrix = np.asarray(importance, dtype=np.float64)
    if matrix.ndim != 2 or matrix.size == 0:
        raise DataError(f"importance must be a 2-D array (code dims, factors); got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0):
        raise DataError("importance must hold finite non-negative numbers")
    per_code = _one_minus_entropy(matrix.T, matrix.shape[1])
    per_factor = _one_minus_entropy(matrix, matrix.shape[0])
    weights = matrix if matrix.sum() > 0 else np.ones_like(matrix)
    code_share = weights.sum(axis=1) / weights.sum()
    factor_share = weights.sum(axis=0) / weights.sum()
    return float(np.sum(per_code * code_share)), float(np.sum(per_factor * factor_share))


def dci_importance(train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray,
                   test_factors: np.ndarray, n_estimators: int = 100,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importance matrix R (L, K) = |feature_importances_| of one ``GradientBoostingClassifier(n_estimators,
    random_state=seed)`` per factor (100 estimators: scikit-learn's default, as disentanglement_lib), and the
    per-factor train and test accuracies (K,), as disentanglement_lib's ``compute_importance_gbt``."""
    count = train_factors.shape[1]
    importance = np.zeros((train_codes.shape[1], count))
    train_accuracy, test_accuracy = np.zeros(count), np.zeros(count)
    for k in range(count):
        model = GradientBoostingClassifier(n_estimators=n_estimators, random_state=seed)
        model.fit(train_codes, train_factors[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_accuracy[k] = np.mean(model.predict(train_codes) == train_factors[:, k])
        test_accuracy[k] = np.mean(model.predict(test_codes) == test_factors[:, k])
    return importance, train_accuracy, test_accuracy


def dci(train_codes: Any, train_factors: Any, test_codes: Any, test_factors: Any, n_estimators: int = 100,
        resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> DCIScore:
    """Disentanglement, completeness (:func:`dci_from_importance`) and informativeness (mean test accuracy) from
    gradient-boosted trees (:func:`dci_importance`; ``n_estimators`` trades accuracy for speed).

    stderr (all three): bootstrap over the training and (independently) test examples, the trees refitted in
    each, so it costs (1 + ``resamples``) x K fits. detail: ``importance`` (L, K), per-factor accuracies."""
    z, v, z_test, v_test = _train_test(train_codes, train_factors, test_codes, test_factors)
    n_estimators = _check_count(n_estimators, "n_estimators", 1)

    def statistic(*arrays: np.ndarray) -> np.ndarray:
        importance, _, test_accuracy = dci_importance(*arrays, n_estimators=n_estimators, seed=seed)
        return np.array([*dci_from_importance(importance), np.mean(test_accuracy)])

    importance, train_accuracy, test_accuracy = dci_importance(z, v, z_test, v_test, n_estimators, seed)
    disentanglement, completeness = dci_from_importance(importance)
    stderr = _bootstrap_stderr(statistic, [(z, v), (z_test, v_test)], resamples, seed, 3)
    shared = {"importance": importance.tolist(), "n_estimators": n_estimators, "resamples": resamples}
    return DCIScore(
        disentanglement=Score(disentanglement, float(stderr[0]), dict(shared)),
        completeness=Score(completeness, float(stderr[1]), dict(shared)),
        informativeness=Score(float(np.mean(test_accuracy)), float(stderr[2]), {
            "test_accuracy": test_accuracy.tolist(), "train_accuracy": train_accuracy.tolist(),
            "train": float(np.mean(train_accuracy))}),
    )


# ----------------------------------------------------------------------------------------
# modularity and explicitness


def modularity_from_mi(mutual_information: Any) -> float:
    """Modularity of a mutual information matrix I (L, K), as disentanglement_lib's ``modularity``:
    mean_j [1 - (sum_k I[j, k]^2 - max_k I[j, k]^2) / ((K - 1) max_k I[j, k]^2)], a dim with max_k I = 0
    counting 0 (and, with one factor, every informative dim 1)."""
    squared = np.square(np.asarray(mutual_information, dtype=np.float64))
    if squared.ndim != 2 or squared.size == 0:
        raise DataError(f"mutual_information must be a 2-D array (code dims, factors); got shape {squared.shape}")
    largest = squared.max(axis=1)
    if squared.shape[1] == 1:
        score = np.ones(squared.shape[0])
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            score = 1.0 - (squared.sum(axis=1) - largest) / (largest * (squared.shape[1] - 1))
    score[largest == 0] = 0.0
    return float(np.mean(score))


def _macro_auc(labels: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes that occur in ``labels`` and not everywhere."""
    aucs = [roc_auc_score(labels == c, probabilities[:, i]) for i, c in enumerate(classes)
            if 0 < np.sum(labels == c) < labels.shape[0]]
    return float(np.mean(aucs)) if aucs else float("nan")


def _explicitness(z: np.ndarray, v: np.ndarray, z_test: np.ndarray,
                  v_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-factor train and test macro ROC AUC of ``LogisticRegression()`` on the standardised codes."""
    mean, std = z.mean(axis=0), z.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x, x_test = (z - mean) / std, (z_test - mean) / std
    train, test = np.zeros(v.shape[1]), np.zeros(v.shape[1])
    for k in range(v.shape[1]):
        if np.all(v[:, k] == v[0, k]):  # possible in a bootstrap replicate only
            train[k] = test[k] = np.nan
            continue
        model = LogisticRegression().fit(x, v[:, k])
        train[k] = _macro_auc(v[:, k], model.predict_proba(x), model.classes_)
        test[k] = _macro_auc(v_test[:, k], model.predict_proba(x_test), model.classes_)
    return train, test


def _modularity_of(codes: np.ndarray, factors: np.ndarray, bins: int) -> tuple[float, np.ndarray]:
    mi = mutual_information_matrix(histogram_discretize(codes, bins), factors)
    return modularity_from_mi(mi), mi


def modularity_explicitness(train_codes: Any, train_factors: Any, test_codes: Any, test_factors: Any,
                            bins: int = DEFAULT_BINS, resamples: int = DEFAULT_RESAMPLES,
                            seed: int = 0) -> ModularityExplicitness:
    """Modularity (:func:`modularity_from_mi` of the ``bins``-bin discretised MI matrix of the training set) and
    explicitness (mean over factors of the test one-vs-rest ROC AUC of a logistic regression on all codes).

    stderr (both): bootstrap over the training and (independently) test examples, everything refitted in each.
    detail: ``mutual_information`` (L, K, nats); per-factor ``test_auc`` / ``train_auc`` and mean ``train``."""
    z, v, z_test, v_test = _train_test(train_codes, train_factors, test_codes, test_factors)
    _check_varying(v_test, "test_factors")
    bins = _check_count(bins, "bins", 1)

    def statistic(*arrays: np.ndarray) -> np.ndarray:
        return np.array([_modularity_of(arrays[0], arrays[1], bins)[0], np.mean(_explicitness(*arrays)[1])])

    modularity, mi = _modularity_of(z, v, bins)
    train_auc, test_auc = _explicitness(z, v, z_test, v_test)
    stderr = _bootstrap_stderr(statistic, [(z, v), (z_test, v_test)], resamples, seed, 2)
    return ModularityExplicitness(
        modularity=Score(modularity, float(stderr[0]), {"mutual_information": mi.tolist(), "bins": bins,
                                                        "resamples": resamples}),
        explicitness=Score(float(np.mean(test_auc)), float(stderr[1]), {
            "test_auc": test_auc.tolist(), "train_auc": train_auc.tolist(), "train": float(np.mean(train_auc)),
            "resamples": resamples}),
    )


# ----------------------------------------------------------------------------------------
# total correlation


def _gaussian_total_correlation(codes: np.ndarray) -> float:
    """-0.5 log det of the sample correlation matrix over the non-constant dims (+inf when it is singular)."""
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    variance = np.diag(cov)
    keep = variance > 0
    scale = np.sqrt(variance[keep])
    correlation = cov[np.ix_(keep, keep)] / np.outer(scale, scale)
    sign, logdet = np.linalg.slogdet(correlation)
    return float(-0.5 * logdet) if sign > 0 else float("inf")


def total_correlation_of_means(codes: Any, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Score:
    """Gaussian total correlation (nats) of the codes, sum_j 0.5 log Var(z_j) - 0.5 log det Cov(z), as
    disentanglement_lib's ``gaussian_total_correlation`` of the covariance of the mean codes. Constant dims
    (variance exactly 0) are left out, and listed in detail ``constant_dims``; +inf for a singular covariance.

    stderr: bootstrap over the examples (``resamples`` replicates, ``seed``)."""
    codes = _as_codes(codes, "codes")
    if codes.shape[0] < 2:
        raise DataError(f"codes has {codes.shape[0]} example(s); at least 2 are needed")
    value = _gaussian_total_correlation(codes)
    stderr = _bootstrap_stderr(_gaussian_total_correlation, [(codes,)], resamples, seed, 1)
    constant = np.flatnonzero(np.var(codes, axis=0) == 0).tolist()
    return Score(value, float(stderr[0]), {"constant_dims": constant, "resamples": resamples})


# ----------------------------------------------------------------------------------------
# intervention scores


def _factor_sizes(sampler: Any) -> list[int]:
    sizes = getattr(sampler, "factor_sizes", None)
    if sizes is None or not callable(getattr(sampler, "sample", None)):
        raise DataError("sampler must have factor_sizes and a sample(n, fixed=None, rng=None) method")
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise DataError(f"sampler.factor_sizes must list at least 2 factors of at least 1 value each; got {sizes}")
    return sizes


def _checked_factors(factors: Any, n: int, count: int, fixed: tuple[int, int] | None) -> np.ndarray:
    factors = np.asarray(factors)
    if factors.shape != (n, count):
        raise DataError(f"sampler.sample({n}) must return factors of shape ({n}, {count}); got {factors.shape}")
    if fixed is not None and not np.all(factors[:, fixed[0]] == fixed[1]):
        raise DataError(f"sampler.sample(fixed={fixed}) returned factors with factor {fixed[0]} not held at "
                        f"{fixed[1]}")
    return factors


def _checked_codes(codes: Any, n: int) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] != n:
        raise DataError(f"represent must return a 2-D array (n, L) of codes; got shape {codes.shape} for {n} images")
    return codes


def _draw(sampler: Any, represent: Represent, n: int, count: int, rng: np.random.Generator,
          fixed: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n examples from the sampler (factor ``fixed[0]`` held at ``fixed[1]``): their factors and codes."""
    factors, images = sampler.sample(n, fixed=fixed, rng=rng)
    return _checked_factors(factors, n, count, fixed), _checked_codes(represent(images), n)


def _beta_vae_point(sampler: Any, represent: Represent, batch_size: int, count: int,
                    rng: np.random.Generator) -> tuple[int, np.ndarray]:
    """One beta-VAE training point: the factor k shared within every pair, and mean_pairs |z(x_1) - z(x_2)|."""
    k = int(rng.integers(count))
    factors, codes = _draw(sampler, represent, batch_size, count, rng)
    if callable(getattr(sampler, "sample_from_factors", None)):
        partners = _checked_factors(sampler.sample(batch_size, rng=rng)[0], batch_size, count, None).copy()
        partners[:, k] = factors[:, k]
        other = _checked_codes(represent(sampler.sample_from_factors(partners, rng=rng)), batch_size)
    else:
        other = np.empty_like(codes)
        for value in np.unique(factors[:, k]):
            rows = np.flatnonzero(factors[:, k] == value)
            other[rows] = _draw(sampler, represent, rows.shape[0], count, rng, fixed=(k, int(value)))[1]
    return k, np.mean(np.abs(codes - other), axis=0)


def _beta_vae_set(sampler: Any, represent: Represent, batch_size: int, points: int, count: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_beta_vae_point(sampler, represent, batch_size, count, rng) for _ in range(points)]
    return np.stack([p[1] for p in pairs]), np.array([p[0] for p in pairs])


def _mean_and_stderr(correct: np.ndarray) -> tuple[float, float]:
    """Accuracy and its standard error over evaluation batches (NaN with a single batch)."""
    if correct.shape[0] < 2:
        return float(np.mean(correct)), float("nan")
    return float(np.mean(correct)), float(np.std(correct, ddof=1) / np.sqrt(correct.shape[0]))


def beta_vae_score(sampler: Any, represent: Represent, batch_size: int = 64, train_points: int = 10000,
                   eval_points: int = 5000, seed: int = 0) -> Score:
    """beta-VAE score (Higgins et al., 2017; disentanglement_lib's ``beta_vae_sklearn``): the evaluation accuracy
    of ``LogisticRegression(random_state=seed)`` predicting the factor shared within pairs from the batch mean of
    |z(x_1) - z(x_2)|.

    stderr: over evaluation batches, std(correct, ddof=1) / sqrt(eval_points) (the classifier held fixed).
    detail: ``train_accuracy`` and the point counts."""
    count = len(_factor_sizes(sampler))
    batch_size = _check_count(batch_size, "batch_size", 1)
    train_points = _check_count(train_points, "train_points", 2)
    eval_points = _check_count(eval_points, "eval_points", 1)
    rng = np.random.default_rng(seed)
    x, y = _beta_vae_set(sampler, represent, batch_size, train_points, count, rng)
    if np.unique(y).shape[0] < 2:
        raise DataError(f"train_points={train_points} drew a single factor; use more training points")
    model = LogisticRegression(random_state=seed).fit(x, y)
    train_accuracy = float(np.mean(model.predict(x) == y))
    x_eval, y_eval = _beta_vae_set(sampler, represent, batch_size, eval_points, count, rng)
    value, stderr = _mean_and_stderr(model.predict(x_eval) == y_eval)
    return Score(value, stderr, {"train_accuracy": train_accuracy, "batch_size": batch_size,
                                 "train_points": train_points, "eval_points": eval_points})


def _factor_vae_votes(sampler: Any, represent: Represent, sizes: list[int], batch_size: int, points: int,
                      rng: np.random.Generator, variance: np.ndarray,
                      active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ``points`` batches with one factor held fixed: that factor, and the active code dim with the smallest
    variance relative to its global variance (its index among all dims)."""
    factors, dims = np.zeros(points, dtype=np.int64), np.zeros(points, dtype=np.int64)
    for i in range(points):
        k = int(rng.integers(len(sizes)))
        value = int(rng.integers(sizes[k]))
        codes = _draw(sampler, represent, batch_size, len(sizes), rng, fixed=(k, value))[1]
        if codes.shape[1] != variance.shape[0]:
            raise DataError(f"represent returned {codes.shape[1]} code dims, earlier {variance.shape[0]}")
        ratio = np.full(variance.shape[0], np.inf)
        ratio[active] = np.var(codes[:, active], axis=0, ddof=1) / variance[active]
        factors[i], dims[i] = k, int(np.argmin(ratio))
    return factors, dims


def factor_vae_score(sampler: Any, represent: Represent, batch_size: int = 64, train_points: int = 10000,
                     eval_points: int = 5000, variance_points: int = 10000, prune_threshold: float = 0.05,
                     seed: int = 0) -> Score:
    """FactorVAE score (Kim & Mnih, 2018; disentanglement_lib's ``factor_vae_score``): the evaluation accuracy of
    the majority-vote classifier from the dim of least relative variance to the factor held fixed. Dims with
    global std below ``prune_threshold`` are pruned (none left: score 0, as disentanglement_lib).

    stderr: over evaluation batches, std(correct, ddof=1) / sqrt(eval_points) (the classifier held fixed).
    detail: ``train_accuracy``, ``num_active_dims``, ``votes`` (K, L training votes)."""
    sizes = _factor_sizes(sampler)
    batch_size = _check_count(batch_size, "batch_size", 2)
    train_points = _check_count(train_points, "train_points", 1)
    eval_points = _check_count(eval_points, "eval_points", 1)
    variance_points = _check_count(variance_points, "variance_points", 2)
    rng = np.random.default_rng(seed)
    variance = np.var(_draw(sampler, represent, variance_points, len(sizes), rng)[1], axis=0, ddof=1)
    active = np.sqrt(variance) >= prune_threshold
    if not active.any():
        return Score(0.0, 0.0, {"train_accuracy": 0.0, "num_active_dims": 0, "votes": []})
    factors, dims = _factor_vae_votes(sampler, represent, sizes, batch_size, train_points, rng, variance, active)
    votes = np.zeros((len(sizes), variance.shape[0]), dtype=np.int64)
    np.add.at(votes, (factors, dims), 1)
    classifier = np.argmax(votes, axis=0)  # the factor each code dim stands for
    train_accuracy = float(np.mean(classifier[dims] == factors))
    factors, dims = _factor_vae_votes(sampler, represent, sizes, batch_size, eval_points, rng, variance, active)
    value, stderr = _mean_and_stderr(classifier[dims] == factors)
    return Score(value, stderr, {"train_accuracy": train_accuracy, "num_active_dims": int(active.sum()),
                                 "votes": votes.tolist(), "batch_size": batch_size, "train_points": train_points,
                                 "eval_points": eval_points})
