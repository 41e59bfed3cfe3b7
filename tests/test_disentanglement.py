"""Disentanglement metrics on codes whose answer is known: the true factors (maximum), a code independent of the
factors (minimum or chance), a rotation that mixes every factor into every unit (low), small hand computations,
and bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from vaekit.analysis import disentanglement as dis
from vaekit.errors import DataError

SIZES = [4, 5, 3]  # classes of the three factors


def _factors(n: int, seed: int, sizes: list[int] = SIZES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(s, size=n) for s in sizes], axis=1)


def _true_code(factors: np.ndarray, seed: int) -> np.ndarray:
    return factors + 1e-3 * np.random.default_rng(seed).normal(size=factors.shape)


def _random_code(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, len(SIZES)))


#: An orthogonal matrix with every entry +-1/3 or +-2/3: each unit carries every factor. (A random rotation can be
#: close to a permutation: numpy's QR of a seed-7 Gaussian matrix is, and leaves the code disentangled.)
ROTATION = np.array([[2, -1, 2], [2, 2, -1], [-1, 2, 2]]) / 3


def _mixed_code(factors: np.ndarray) -> np.ndarray:
    """The factors, standardised, rotated by ROTATION."""
    sizes = np.array(SIZES)
    return ((factors - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12)) @ ROTATION


class ToySampler:
    """Independent uniform factors; the "images" are the factors themselves, as floats."""

    def __init__(self, sizes: list[int]) -> None:
        self.factor_sizes = sizes

    def sample(self, n, fixed=None, rng=None):
        rng = rng if rng is not None else np.random.default_rng(0)
        factors = np.stack([rng.integers(s, size=n) for s in self.factor_sizes], axis=1)
        if fixed is not None:
            factors[:, fixed[0]] = fixed[1]
        return factors, factors.astype(np.float64)


class RenderingSampler(ToySampler):
    def sample_from_factors(self, factors, rng=None):
        return np.asarray(factors, dtype=np.float64)


def identity(images):
    return images


# ----------------------------------------------------------------------------------------
# MIG


def test_mig_of_the_true_factors_is_near_one():
    f = _factors(1000, 0)
    score = dis.mig(_true_code(f, 1), f)
    # Each z_k takes exactly the values of v_k, so I(z_k; v_k) = H(v_k); I(z_j; v_k), j != k, is only the plug-in
    # bias (s_j - 1)(s_k - 1) / (2N) <= 12 / 2000 nats, against H(v_k) >= log 3 = 1.1 nats.
    assert score.value > 0.98
    assert 0 <= score.stderr < 0.01
    assert np.allclose(np.diag(score.detail["mutual_information"]), score.detail["entropy"])


def test_mig_of_a_random_code_is_near_zero():
    f = _factors(1000, 0)
    score = dis.mig(_random_code(1000, 2), f)
    # Every dim has the same plug-in bias (19 bins: ~ 19 (s_k - 1) / 2000 nats), which cancels in the gap; what
    # is left is noise of the order of the stderr (~0.003): 0.02 is more than 5 stderr.
    assert abs(score.value) < 0.02
    assert score.stderr < 0.01


def test_mig_of_a_rotated_code_is_low():
    f = _factors(1000, 0)
    assert dis.mig(_mixed_code(f), f, resamples=0).value < 0.2  # 0.08 here; the true code gives > 0.98


def test_mig_by_hand():
    # v1, v2 independent fair bits; z1 = v1 and z2 = v1 AND v2 (two values each, so binning keeps them apart).
    # H(v) = log 2; I(z1; v1) = log 2, I(z1; v2) = 0; I(z2; v1) = I(z2; v2) = h(1/4) - h(1/2) / 2.
    # MIG = [(log 2 - I(z2; v1)) + (I(z2; v2) - 0)] / (2 log 2) = 1/2 exactly.
    v = np.tile([[0, 0], [0, 1], [1, 0], [1, 1]], (25, 1))
    z = np.stack([v[:, 0], v[:, 0] & v[:, 1]], axis=1).astype(float)
    score = dis.mig(z, v, resamples=0)
    h_quarter = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    cross = h_quarter - 0.5 * math.log(2)
    assert score.value == pytest.approx(0.5, abs=1e-12)
    assert np.allclose(score.detail["mutual_information"], [[math.log(2), 0.0], [cross, cross]], atol=1e-12)
    assert np.allclose(score.detail["entropy"], [math.log(2)] * 2)
    assert math.isnan(score.stderr)


def test_histogram_discretize_uses_equal_width_bins():
    z = np.array([[0.0], [0.49], [0.51], [1.0]])
    assert dis.histogram_discretize(z, bins=2)[:, 0].tolist() == [1, 1, 2, 2]


# ----------------------------------------------------------------------------------------
# SAP


def test_sap_of_the_true_factors():
    sizes = [2, 2, 2]
    f, f_test = _factors(600, 0, sizes), _factors(400, 1, sizes)
    score = dis.sap(_true_code(f, 2), f, _true_code(f_test, 3), f_test, resamples=3)
    matrix = np.array(score.detail["score_matrix"])
    assert np.all(np.diag(matrix) > 0.99)
    # An uninformative dim scores about the chance accuracy 1/2, so the discrete SAP of balanced bits is at most ~1/2.
    assert score.value > 0.42
    continuous = dis.sap(_true_code(f, 2), f, _true_code(f_test, 3), f_test, continuous_factors=True, resamples=3)
    assert continuous.value > 0.98  # squared correlations: 1 on the diagonal, ~1/N off it


def test_sap_of_a_random_code_is_near_zero():
    f, f_test = _factors(600, 0), _factors(400, 1)
    score = dis.sap(_random_code(600, 2), f, _random_code(400, 3), f_test, resamples=5)
    # Every dim scores about chance; the gap is the spread of ~400-example accuracies (sd ~0.02), below 0.06.
    assert score.value < 0.06
    continuous = dis.sap(_random_code(600, 2), f, _random_code(400, 3), f_test, continuous_factors=True, resamples=0)
    assert continuous.value < 0.02  # squared correlations of independent samples: ~1/N = 0.002


def test_sap_by_hand_with_continuous_factors():
    # v1, v2 independent fair bits; z1 = v1, z2 = v1 + v2: corr^2 = [[1, 0], [1/2, 1/2]], SAP = (1/2 + 1/2) / 2.
    v = np.tile([[0, 0], [0, 1], [1, 0], [1, 1]], (10, 1)).astype(float)
    z = np.stack([v[:, 0], v[:, 0] + v[:, 1]], axis=1)
    score = dis.sap(z, v, z, v, continuous_factors=True, resamples=0)
    assert np.allclose(score.detail["score_matrix"], [[1.0, 0.0], [0.5, 0.5]], atol=1e-12)
    assert score.value == pytest.approx(0.5, abs=1e-12)


# ----------------------------------------------------------------------------------------
# DCI


def test_dci_of_the_true_factors_is_near_one():
    f, f_test = _factors(400, 0), _factors(200, 1)
    score = dis.dci(_true_code(f, 2), f, _true_code(f_test, 3), f_test, n_estimators=10, resamples=3)
    assert score.disentanglement.value > 0.95
    assert score.completeness.value > 0.95
    assert score.informativeness.value > 0.99
    assert np.array(score.disentanglement.detail["importance"]).shape == (3, 3)


def test_dci_of_random_and_rotated_codes_is_low():
    f, f_test = _factors(400, 0), _factors(200, 1)
    random = dis.dci(_random_code(400, 2), f, _random_code(200, 3), f_test, n_estimators=10, resamples=3)
    assert random.disentanglement.value < 0.2  # 0.04 here
    assert random.informativeness.value < 0.45  # chance is 1/5 to 1/3 per factor
    mixed = dis.dci(_mixed_code(f), f, _mixed_code(f_test), f_test, n_estimators=10, resamples=0)
    assert mixed.disentanglement.value < 0.3  # 0.09 here; the true code gives > 0.95
    assert mixed.informativeness.value > 0.8  # the rotation loses no information


def test_dci_from_importance_by_hand():
    assert dis.dci_from_importance(np.eye(2)) == pytest.approx((1.0, 1.0), abs=1e-9)
    # Rows (1/2, 1/2) and (0, 1): D = (0 + 1) / 2, each row holding half of the importance.
    # Columns (1/2, 0) and (1/2, 1): C_1 = 1, C_2 = 1 - H_2(1/3, 2/3), with weights 1/4 and 3/4.
    d, c = dis.dci_from_importance([[0.5, 0.5], [0.0, 1.0]])
    h = -(1 / 3 * math.log2(1 / 3) + 2 / 3 * math.log2(2 / 3))
    assert d == pytest.approx(0.5, abs=1e-9)
    assert c == pytest.approx(0.25 + 0.75 * (1 - h), abs=1e-9)
    # Columns that sum to 1 (as boosted trees' importances do): completeness is the plain mean over factors.
    d, c = dis.dci_from_importance([[1.0, 0.5], [0.0, 0.5]])
    assert c == pytest.approx((1 + 0) / 2, abs=1e-9)
    assert d == pytest.approx(0.75 * (1 - h) + 0.25, abs=1e-9)  # rows (2/3, 1/3) and (0, 1), weights 3/4, 1/4


# ----------------------------------------------------------------------------------------
# modularity and explicitness


def test_modularity_and_explicitness_of_the_true_factors():
    f, f_test = _factors(500, 0), _factors(300, 1)
    score = dis.modularity_explicitness(_true_code(f, 2), f, _true_code(f_test, 3), f_test, resamples=2)
    assert score.modularity.value > 0.99
    assert score.explicitness.value > 0.99


def test_explicitness_of_a_random_code_is_chance():
    f, f_test = _factors(500, 0), _factors(300, 1)
    score = dis.modularity_explicitness(_random_code(500, 2), f, _random_code(300, 3), f_test, resamples=0)
    assert abs(score.explicitness.value - 0.5) < 0.05  # AUC of an independent code: 1/2, sd ~0.02 here


def test_modularity_by_hand():
    # Row (1, 0): delta = 0, modularity 1; row (1/2, 1/2): delta = (1/2 - 1/4) / (1/4) = 1, modularity 0.
    assert dis.modularity_from_mi([[1.0, 0.0], [0.5, 0.5]]) == pytest.approx(0.5)
    # Row (2, 1, 1): delta = (6 - 4) / (4 * 2) = 1/4; a row of zeros counts 0.
    assert dis.modularity_from_mi([[2.0, 1.0, 1.0], [0.0, 0.0, 0.0]]) == pytest.approx(0.75 / 2)


def test_explicitness_by_hand():
    # A bit read off one code dim exactly: the logistic regression ranks every 1 above every 0, AUC = 1.
    v = np.tile([[0, 0], [0, 1], [1, 0], [1, 1]], (20, 1))
    z = np.stack([v[:, 0], v[:, 1]], axis=1).astype(float)
    score = dis.modularity_explicitness(z, v, z, v, resamples=0)
    assert score.explicitness.value == pytest.approx(1.0)
    assert score.modularity.value == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------
# total correlation


def test_total_correlation_by_hand():
    # Codes whose sample covariance is exactly [[1, r], [r, 1]]: TC = -log(1 - r^2) / 2 nats.
    x = np.random.default_rng(0).normal(size=(200, 2))
    x -= x.mean(axis=0)
    x = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    r = 0.5
    z = x @ np.linalg.cholesky(np.array([[1.0, r], [r, 1.0]])).T
    z = np.column_stack([z, np.full(200, 3.0)])  # a collapsed dim is left out
    score = dis.total_correlation_of_means(z, resamples=5)
    assert score.value == pytest.approx(-0.5 * math.log(1 - r**2), abs=1e-10)
    assert score.detail["constant_dims"] == [2]
    assert 0 < score.stderr < 0.1


def test_total_correlation_of_independent_codes_is_near_zero():
    score = dis.total_correlation_of_means(_random_code(2000, 0))
    assert abs(score.value) < 0.01  # bias ~ L(L-1) / (4N) = 0.00075 nats; stderr ~0.002


# ----------------------------------------------------------------------------------------
# intervention scores


def test_factor_vae_score_of_the_true_factors_is_one():
    score = dis.factor_vae_score(ToySampler(SIZES), identity, batch_size=32, train_points=200, eval_points=200,
                                 variance_points=500)
    assert score.value == 1.0  # the fixed factor's dim has variance exactly 0
    assert score.stderr == 0.0
    assert score.detail["num_active_dims"] == 3


def test_factor_vae_score_of_a_random_code_is_chance():
    noise = np.random.default_rng(5)
    score = dis.factor_vae_score(ToySampler(SIZES), lambda images: noise.normal(size=(len(images), 3)),
                                 batch_size=32, train_points=300, eval_points=300, variance_points=500)
    assert abs(score.value - 1 / 3) < 4 * score.stderr  # stderr ~0.027


def test_factor_vae_score_by_hand_with_an_unseen_factor():
    # The code shows factors 0 and 1 only. Batches with factor 0 or 1 fixed vote for the right dim; batches with
    # factor 2 fixed are always misclassified. So the score is the share of evaluation batches that fix factor 0
    # or 1: 2/3 in expectation, its stderr exactly the binomial sqrt(p (1 - p) / n).
    score = dis.factor_vae_score(ToySampler(SIZES), lambda images: images[:, :2], batch_size=32, train_points=200,
                                 eval_points=300, variance_points=500)
    assert abs(score.value - 2 / 3) < 3 * score.stderr
    assert score.stderr == pytest.approx(math.sqrt(score.value * (1 - score.value) / 299))


def test_factor_vae_score_prunes_collapsed_dims():
    score = dis.factor_vae_score(ToySampler(SIZES), lambda images: 0.01 * images, batch_size=8, train_points=5,
                                 eval_points=5, variance_points=100)
    assert (score.value, score.detail["num_active_dims"]) == (0.0, 0)


@pytest.mark.parametrize("sampler", [ToySampler(SIZES), RenderingSampler(SIZES)], ids=["sample", "render"])
def test_beta_vae_score_of_the_true_factors_is_one(sampler):
    score = dis.beta_vae_score(sampler, identity, batch_size=32, train_points=200, eval_points=200)
    assert score.value == 1.0  # the fixed factor's dim of the feature is exactly 0, the others positive
    assert score.detail["train_accuracy"] == 1.0


def test_beta_vae_score_by_hand_with_a_summed_code():
    # One code unit z = v0 + v1 (all three factors of 4 values): fixing v0 or v1 gives the same distribution of
    # |z - z'| (identical factor sizes), fixing v2 leaves |z - z'| larger. The classifier can tell v2 from the others
    # but not v0 from v1, so it is right for v2 and one of v0, v1: 2/3 in expectation.
    # (0.02 of slack for the few v2 batches whose |z - z'| falls among the others': the gap is ~5 sd of the
    # batch mean.)
    score = dis.beta_vae_score(ToySampler([4, 4, 4]), lambda x: x[:, :2].sum(1, keepdims=True), batch_size=64,
                               train_points=300, eval_points=300)
    assert abs(score.value - 2 / 3) < 3 * score.stderr + 0.02


def test_beta_vae_score_of_a_random_code_is_near_chance():
    noise = np.random.default_rng(5)
    score = dis.beta_vae_score(ToySampler(SIZES), lambda images: noise.normal(size=(len(images), 3)),
                               batch_size=16, train_points=200, eval_points=300)
    assert score.value < 1 / 3 + 4 * score.stderr


# ----------------------------------------------------------------------------------------
# determinism, the returned types and bad input


def test_scores_are_deterministic_given_the_seed():
    f = _factors(300, 0)
    z = _random_code(300, 1)
    assert dis.mig(z, f, resamples=5, seed=3) == dis.mig(z, f, resamples=5, seed=3)
    assert dis.mig(z, f, resamples=5, seed=3).stderr != dis.mig(z, f, resamples=5, seed=4).stderr
    noise = np.random.default_rng(0)
    represent = lambda images: images + noise.normal(size=images.shape)  # noqa: E731
    one = dis.factor_vae_score(ToySampler(SIZES), represent, batch_size=8, train_points=30, eval_points=30,
                               variance_points=100, seed=1)
    noise = np.random.default_rng(0)
    two = dis.factor_vae_score(ToySampler(SIZES), represent, batch_size=8, train_points=30, eval_points=30,
                               variance_points=100, seed=1)
    assert one == two


def test_scores_are_frozen():
    score = dis.total_correlation_of_means(_random_code(50, 0), resamples=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        score.value = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: dis.mig(np.zeros((10, 2)), np.zeros((9, 2), dtype=int)), ["codes", "factors", "10 vs 9"]),
        (lambda: dis.mig(np.zeros(10), np.zeros((10, 2), dtype=int)), ["codes", "2-D"]),
        (lambda: dis.mig(np.zeros((10, 1)), _factors(10, 0)), ["codes", "at least 2"]),
        (lambda: dis.mig(np.ones((1, 2)), np.ones((1, 2), dtype=int)), ["codes", "1 example"]),
        (lambda: dis.mig(np.zeros((10, 2)), np.full((10, 2), 0.5)), ["factors", "integer"]),
        (lambda: dis.mig(np.zeros((10, 2)), np.zeros((10, 2), dtype=int)), ["factors", "single value"]),
        (lambda: dis.sap(np.zeros((10, 2)), _factors(10, 0), np.zeros((5, 3)), _factors(5, 1)), ["test_codes"]),
        (lambda: dis.dci(np.zeros((10, 2)), _factors(10, 0), np.zeros((5, 2)), _factors(4, 1)),
         ["test_codes", "test_factors"]),
        (lambda: dis.total_correlation_of_means([[np.nan, 1.0], [0.0, 1.0]]), ["codes", "NaN"]),
        (lambda: dis.dci_from_importance([1.0, 2.0]), ["importance"]),
        (lambda: dis.factor_vae_score(object(), identity), ["sampler"]),
        (lambda: dis.factor_vae_score(ToySampler(SIZES), lambda x: x[:, 0], variance_points=10), ["represent"]),
        (lambda: dis.beta_vae_score(ToySampler(SIZES), identity, batch_size=0), ["batch_size"]),
    ],
)
def test_bad_input_names_the_argument(call, names):
    with pytest.raises(DataError) as caught:
        call()
    for name in names:
        assert name in str(caught.value)
