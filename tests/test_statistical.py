"""Reductions, cumulative ops, sorting, searching and set functions vs NumPy, eager and jit."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

REDUCTIONS = [
    ("sum", np.sum, {}), ("prod", np.prod, {}), ("max", np.max, {}), ("min", np.min, {}),
    ("mean", np.mean, {}), ("var", np.var, {}), ("std", np.std, {}),
    ("var", lambda a, **k: np.var(a, ddof=1, **k), {"correction": 1}),
    ("all", lambda a, **k: np.all(a > 0, **k), "gt0"), ("any", lambda a, **k: np.any(a > 0, **k), "gt0"),
    ("count_nonzero", lambda a, **k: np.count_nonzero(a > 0, **k), "gt0"),
]
AXES = [None, 0, -1, (0, -1), (1,), ()]


REDUCTION_IDS = [r[0] + ("_c1" if r[2] == {"correction": 1} else "") for r in REDUCTIONS]


@pytest.mark.parametrize("name,ref,extra", REDUCTIONS, ids=REDUCTION_IDS)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # NumPy warns on var over no elements
def test_reductions(name, ref, extra, keepdims, rng, jit_backend):
    fn = getattr(tj, name)
    kw = extra if isinstance(extra, dict) else {}
    pre = (lambda a: a > 0) if extra == "gt0" else (lambda a: a)
    for a in [rng.uniform(0.5, 1.5, (3, 4, 5)), rng.uniform(0.5, 1.5, (4, 6))[:, ::2].T]:
        for axis in AXES:
            expected = ref(a, axis=axis, keepdims=keepdims)
            for f in (fn, jitted(fn, jit_backend, static_argnames=("axis", "keepdims", "correction"))):
                x = pre(tj.asarray(a.astype(np.float32)))
                assert_close(f(x, axis=axis, keepdims=keepdims, **kw), expected, rtol=1e-5)


def test_reduction_dtypes_and_edge_shapes():
    assert tj.sum(tj.asarray(np.ones(3, np.int8))).dtype == tj.int64       # small ints accumulate wide
    assert tj.sum(tj.asarray([True, True])).item() == 2
    assert tj.sum(tj.asarray([1.0, 2.0]), dtype=tj.float64).dtype == tj.float64
    assert tj.max(tj.asarray(3.0)).item() == 3.0                           # 0-d
    assert tj.max(tj.asarray(3.0), axis=()).shape == ()
    assert_close(tj.sum(tj.asarray(np.zeros((2, 0))), axis=0), np.zeros(0))
    assert_close(tj.sum(tj.asarray(np.zeros((2, 0))), axis=1), np.zeros(2))
    assert_close(tj.prod(tj.asarray(np.zeros((0, 3))), axis=0), np.ones(3))
    assert_close(tj.all(tj.asarray(np.zeros(0, bool))), np.array(True))
    assert_close(tj.any(tj.asarray(np.zeros(0, bool))), np.array(False))
    assert tj.max(tj.asarray(np.zeros((0, 3))), axis=1).shape == (0, 1)[:1]
    with pytest.raises(ValueError, match="zero-size"):
        tj.max(tj.asarray(np.zeros((0, 3))))
    with pytest.raises(ValueError, match="out of range"):
        tj.sum(tj.asarray(np.zeros((2, 3))), axis=2)
    with pytest.raises(TypeError, match="floating-point"):
        tj.mean(tj.asarray([1, 2]))


@pytest.mark.parametrize("name", ["argmax", "argmin"])
def test_argmax_argmin(name, rng, jit_backend):
    a = rng.standard_normal((4, 5))
    f = jitted(getattr(tj, name), jit_backend, static_argnames=("axis", "keepdims"))
    for axis in (None, 0, -1):
        for keepdims in (False, True):
            expected = getattr(np, name)(a, axis=axis, keepdims=keepdims)
            assert_close(getattr(tj, name)(tj.asarray(a), axis=axis, keepdims=keepdims), expected,
                         dtype="int64")
            assert_close(f(tj.asarray(a), axis=axis, keepdims=keepdims), expected)


@pytest.mark.parametrize("name,ref,init", [("cumulative_sum", np.cumsum, 0),
                                           ("cumulative_prod", np.cumprod, 1)])
def test_cumulative(name, ref, init, rng, jit_backend):
    fn = getattr(tj, name)
    f = jitted(fn, jit_backend, static_argnames=("axis", "include_initial"))
    a = rng.uniform(0.5, 1.5, (3, 4))
    for axis in (0, 1, -1):
        expected = ref(a, axis=axis)
        assert_close(fn(tj.asarray(a), axis=axis), expected)
        assert_close(f(tj.asarray(a), axis=axis), expected)
        pad = [(0, 0)] * 2
        pad[axis] = (1, 0)
        with_init = np.pad(expected, pad, constant_values=init)
        assert_close(f(tj.asarray(a), axis=axis, include_initial=True), with_init)
    assert_close(fn(tj.asarray(a[0])), ref(a[0]))                   # 1-D: axis optional
    assert fn(tj.asarray(np.ones(3, np.int8))).dtype == tj.int64
    assert fn(tj.asarray(np.ones(3, np.int8)), dtype=tj.int8).dtype == tj.int8
    assert_close(fn(tj.asarray(np.zeros((0, 2))), axis=0, include_initial=True), np.full((1, 2), init))
    with pytest.raises(ValueError, match="axis is required"):
        fn(tj.asarray(a))


def test_diff(rng, jit_backend):
    a = rng.standard_normal((4, 6))
    f = jitted(tj.diff, jit_backend, static_argnames=("axis", "n"))
    for axis, n in [(-1, 1), (0, 2), (1, 0), (0, 5)]:
        assert_close(tj.diff(tj.asarray(a), axis=axis, n=n), np.diff(a, axis=axis, n=n))
        assert_close(f(tj.asarray(a), axis=axis, n=n), np.diff(a, axis=axis, n=n))
    p = rng.standard_normal((4, 1))
    assert_close(tj.diff(tj.asarray(a), prepend=tj.asarray(p), append=tj.asarray(p)),
                 np.diff(a, prepend=p, append=p))


@pytest.mark.parametrize("descending", [False, True])
def test_sort_argsort(descending, rng, jit_backend):
    a = rng.integers(0, 4, (5, 6)).astype(np.float32)           # many ties: checks stability
    for axis in (0, -1):
        idx = np.argsort(-a if descending else a, axis=axis, kind="stable")
        expected = np.take_along_axis(a, idx, axis=axis)
        assert_close(tj.sort(tj.asarray(a), axis=axis, descending=descending), expected)
        assert_close(tj.argsort(tj.asarray(a), axis=axis, descending=descending), idx, dtype="int64")
        f = jitted(lambda x, axis=axis: tj.argsort(x, axis=axis, descending=descending), jit_backend)
        assert_close(f(tj.asarray(a)), idx)
    u = np.array([0, 255, 7, 7, 1], np.uint8)                    # no overflow from negation
    assert tj.sort(tj.asarray(u), descending=True).tolist() == [255, 7, 7, 1, 0]
    n = np.array([2.0, np.nan, -1.0], np.float32)
    assert_close(tj.sort(tj.asarray(n)), np.sort(n))


def test_searchsorted(rng, jit_backend):
    s = np.sort(rng.integers(0, 10, 8)).astype(np.float64)
    v = rng.integers(-1, 11, (3, 4)).astype(np.float64)
    for side in ("left", "right"):
        expected = np.searchsorted(s, v, side=side)
        assert_close(tj.searchsorted(tj.asarray(s), tj.asarray(v), side=side), expected, dtype="int64")
        f = jitted(lambda s, v, side=side: tj.searchsorted(s, v, side=side), jit_backend)
        assert_close(f(tj.asarray(s), tj.asarray(v)), expected)
    perm = rng.permutation(8)
    unsorted = s[perm]
    order = np.argsort(unsorted)
    assert_close(tj.searchsorted(tj.asarray(unsorted), tj.asarray(v), sorter=tj.asarray(order)),
                 np.searchsorted(unsorted, v, sorter=order))


def test_nonzero_eager_and_under_jit(rng, jit_backend):
    a = (rng.random((3, 4)) > 0.5).astype(np.int32)
    for got, want in zip(tj.nonzero(tj.asarray(a)), np.nonzero(a)):
        assert_close(got, want, dtype="int64")
    with pytest.raises(tj.ConcretizationError, match=r"nonzero.*data-dependent[\s\S]*test_statistical.py"):
        jitted(tj.nonzero, jit_backend)(tj.asarray(a))


def test_unique(jit_backend):
    a = np.array([[3.0, 1.0, np.nan], [3.0, np.nan, 2.0]])
    v, idx, inv, counts = np.unique(a.reshape(-1), return_index=True, return_inverse=True,
                                    return_counts=True, equal_nan=False)
    out = tj.unique_all(tj.asarray(a))
    assert_close(out.values, v)
    assert_close(out.indices, idx)
    assert_close(out.inverse_indices, inv.reshape(a.shape))
    assert_close(out.counts, counts)
    assert out.values.shape == (5,)                     # each NaN is distinct
    assert_close(tj.unique_values(tj.asarray(a)), v)
    assert_close(tj.unique_counts(tj.asarray(a)).counts, counts)
    assert_close(tj.unique_inverse(tj.asarray(a)).inverse_indices, inv.reshape(a.shape))
    for fn in (tj.unique_values, tj.unique_counts, tj.unique_inverse, tj.unique_all):
        with pytest.raises(tj.ConcretizationError, match=fn.__name__):
            jitted(fn, jit_backend)(tj.asarray(a))


@pytest.mark.parametrize("fn", ["mean", "var", "std"])
def test_float16_statistics_over_more_elements_than_float16_counts(fn):
    # 70,000 > 65,504, the largest float16: sums and counts accumulate in float32, as NumPy's do
    x = np.linspace(0.5, 1.5, 70_000).astype(np.float16)
    expected = getattr(np, fn)(x.astype(np.float32))
    eager = getattr(tj, fn)(tj.asarray(x))
    jitted = tj.jit(getattr(tj, fn))(tj.asarray(x))
    for r in (eager, jitted):
        assert r.dtype == tj.float16
        np.testing.assert_allclose(float(r), expected, rtol=2e-3)


def test_float16_layer_norm_over_a_long_row():
    x = np.random.default_rng(0).standard_normal((2, 70_000)).astype(np.float16)
    y = tj.nn.functional.layer_norm(tj.asarray(x), 70_000).numpy()
    xf = x.astype(np.float64)
    ref = (xf - xf.mean(1, keepdims=True)) / np.sqrt(xf.var(1, keepdims=True) + 1e-5)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y.astype(np.float64), ref, atol=2e-2)


@pytest.mark.parametrize("shape", [(3, 7), (5, 33), (2, 100), (9, 3, 5)])
@pytest.mark.parametrize("name", ["max", "min", "any", "all"])
def test_bool_column_reductions_under_jit(name, shape):
    # column reductions keep a tile of accumulators; bool ones were i1 arrays, read bit-packed
    # by vector loads and per byte by scalar ones, so some lanes came out wrong
    rng = np.random.default_rng(7)
    f = tj.jit(lambda x: getattr(tj, name)(x, axis=0))
    for _ in range(20):
        b = rng.random(shape) > 0.5
        np.testing.assert_array_equal(f(tj.asarray(b)).numpy(), getattr(np, name)(b, axis=0))


def test_an_integer_sum_of_a_broadcast_view_casts_while_it_reduces():
    # the int64 accumulation once cast the whole view first: 8 bytes per (broadcast) element
    b = tj.broadcast_to(tj.ones((1, 4096), dtype=tj.int8), (4096, 4096))
    assert b.numpy().strides[0] == 0
    import tracemalloc
    tracemalloc.start()
    total = tj.sum(b)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20, f"{peak} bytes allocated for a sum of 16M broadcast int8"    # (not 128 MiB)
    assert int(total) == 4096 * 4096
    np.testing.assert_array_equal(tj.sum(b, axis=0).numpy(), np.full(4096, 4096))
    assert tj.sum(b).dtype == tj.int64
    assert tj.prod(tj.asarray(np.array([[2, 3], [4, 5]], np.int8)), axis=1).numpy().tolist() == [6, 20]
