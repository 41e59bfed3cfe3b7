"""Property-based tests of vaekit.analysis.info: random arrays (NaN, inf, negative, huge, subnormal, empty, any
shape and axis, any base) give either a ValueError or values that agree with scipy - never another
exception, a NaN, or a silently wrong number.

The scipy reference uses ``scipy.special.xlogy`` / ``rel_entr`` on the same (normalized) arrays:
H(p) = -sum xlogy(p, p), D(p||q) = sum rel_entr(p, q), H(p, q) = -sum xlogy(p, q). Tolerances: the
float64 sums have rounding errors of a few ulp per term, so rtol 1e-9 and atol 1e-12 are generous.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special as sp
import scipy.stats
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vaekit.analysis import info

SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

weird = st.floats(allow_nan=True, allow_infinity=True)
nonneg = st.one_of(st.floats(0, 1), st.floats(0, 1e308), st.sampled_from([0.0, 5e-324, 1e-300, 1e308]))
shapes = st.one_of(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
                   hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3))
_valid_bases = st.sampled_from([math.e, 2, 10, 0.5, 3.0])
_bad_bases = st.sampled_from([1, 0, -2, float("nan"), float("inf"), True, "2", None])
bases = st.integers(0, 7).flatmap(lambda i: _bad_bases if i == 0 else _valid_bases)  # mostly valid


KINDS = ["weird", "weights", "probabilities"]


@st.composite
def arrays(draw, shape=None, kind=None):
    shape = draw(shapes) if shape is None else shape
    kind = draw(st.sampled_from(KINDS)) if kind is None else kind
    if kind == "weird":
        return draw(hnp.arrays(np.float64, shape, elements=weird))
    w = draw(hnp.arrays(np.float64, shape, elements=nonneg))
    if kind == "probabilities" and w.ndim:  # rows that sum to 1 (to rounding) along the last axis
        with np.errstate(all="ignore"):
            w = w / w.max(axis=-1, keepdims=True, initial=0)
            w = w / w.sum(axis=-1, keepdims=True)
    return w


def reference(p, q, what, axis, normalize):
    """scipy's value for the same inputs, normalizing as vaekit does (scale by the max, then by the sum)."""
    def prep(x):
        if normalize:
            x = x / x.max(axis=axis, keepdims=True, initial=0)
            x = x / x.sum(axis=axis, keepdims=True)
        return x

    p = prep(p)
    if what == "entropy":
        return -sp.xlogy(p, p).sum(axis=axis)
    q = prep(q)
    if what == "kl":
        return sp.rel_entr(p, q).sum(axis=axis)
    return -sp.xlogy(p, q).sum(axis=axis)


def valid(x, axis, normalize) -> bool:
    """Certainly valid input (a clear margin from every rule)."""
    if x.ndim == 0 or not -x.ndim <= axis < x.ndim or x.shape[axis] == 0:
        return False
    if not np.isfinite(x).all() or (x < 0).any():
        return False
    if normalize:
        return bool((x.max(axis=axis, initial=0) > 0).all())
    return bool(np.all(np.abs(x.sum(axis=axis) - 1) < 1e-9)) if x.size else True


@settings(SETTINGS, max_examples=1000)
@given(st.data(), st.sampled_from(["entropy", "kl", "cross_entropy"]), st.booleans(), bases)
def test_random_arrays_give_value_error_or_scipys_value(data, what, normalize, base):
    kind = data.draw(st.sampled_from(KINDS))
    p = data.draw(arrays(kind=kind))
    in_range = st.integers(-p.ndim, p.ndim - 1) if p.ndim else st.just(0)
    axis = data.draw(st.one_of(st.just(-1), in_range, st.integers(-4, 3)))
    q = data.draw(arrays(p.shape, kind)) if data.draw(st.integers(0, 4)) else data.draw(arrays())
    fn = {"entropy": info.entropy, "kl": info.kl_divergence, "cross_entropy": info.cross_entropy}[what]
    args = (p,) if what == "entropy" else (p, q)
    ok_base = not isinstance(base, bool) and isinstance(base, (int, float)) and math.isfinite(base) and base > 0 \
        and base != 1
    with np.errstate(all="ignore"):
        certainly_valid = ok_base and valid(p, axis, normalize) and (
            what == "entropy" or (q.shape == p.shape and valid(q, axis, normalize)))
    try:
        value = fn(*args, base=base, axis=axis, normalize=normalize)
    except ValueError as exc:
        event("refused: " + str(exc)[:30])
        assert str(exc)
        assert not certainly_valid, f"valid input refused: {exc}"
        return
    event(f"accepted ({'normalized' if normalize else 'distributions'})")
    # accepted: the inputs were distributions, and the value is scipy's (or +inf where q_i = 0 < p_i)
    assert ok_base and p.ndim and np.isfinite(p).all() and (p >= 0).all()
    value = np.asarray(value)
    assert not np.isnan(value).any()
    with np.errstate(all="ignore"):
        want = reference(p, q, what, axis, normalize) / math.log(base)
    assert value.shape == want.shape
    np.testing.assert_allclose(value, want, rtol=1e-9, atol=1e-12)
    if what == "entropy":
        assert np.isfinite(value).all()
    if what != "cross_entropy" and base > 1:
        assert (value >= 0).all()


@settings(SETTINGS, max_examples=100)
@given(hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(0, 10)), st.integers(0, 2**32 - 1))
def test_agrees_with_scipy_stats_entropy(w, seed):
    assume(w.sum() > 0)
    rng = np.random.default_rng(seed)
    v = rng.random(len(w)) + 1e-3
    np.testing.assert_allclose(info.entropy(w, normalize=True), scipy.stats.entropy(w), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(info.kl_divergence(w, v, normalize=True, base=2), scipy.stats.entropy(w, v, base=2),
                               rtol=1e-9, atol=1e-12)


@settings(SETTINGS, max_examples=100)
@given(hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 5)), elements=st.floats(0, 1, width=32)),
       st.sampled_from([torch.float32, torch.float64]))
def test_torch_inputs_agree_with_numpy_and_keep_gradients(w, dtype):
    assume((w.sum(axis=-1) > 0).all())
    p = torch.tensor(w, dtype=dtype, requires_grad=True)
    h = info.entropy(p, normalize=True)
    assert isinstance(h, torch.Tensor) and h.dtype == dtype
    np.testing.assert_allclose(h.detach().numpy(), info.entropy(w.astype(np.float64), normalize=True),
                               rtol=1e-5 if dtype == torch.float32 else 1e-9, atol=1e-6)
    h.sum().backward()
    assert p.grad is not None


def test_inputs_that_are_not_real_arrays_are_value_errors():
    for bad in ([0.5 + 1j, 0.5], np.array([0.5 + 0j, 0.5]), torch.tensor([0.5 + 0j, 0.5]), "ab", None, {1: 2},
                [[0.5, 0.5], [1.0]], object(), np.array(["a", "b"])):
        try:
            info.entropy(bad)
        except ValueError as exc:
            assert str(exc)
        else:
            raise AssertionError(f"accepted {bad!r}")
    assert info.entropy(np.ones((0, 3)) / 3).shape == (0,)  # an empty batch of distributions


def test_huge_weights_are_normalized_without_overflow():
    assert info.entropy([1e308, 1e308], normalize=True) == math.log(2)  # the sum overflows; was 0
    assert abs(info.kl_divergence([1e308, 1e308], [1e308, 1e307], normalize=True)
               - scipy.stats.entropy([1, 1], [10, 1])) < 1e-12
