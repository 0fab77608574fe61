"""Writes through views under jit behave as eagerly: they reach the base, other views and the caller.

Every pattern runs eagerly and jitted on equal copies of its input; the results and the
caller's tensor afterwards must be equal.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import JIT_BACKENDS, jitted

import tracejit as tj


def _write_slice(x):
    v = x[1:]
    v *= 10
    return x.sum()


def _write_stepped(x):
    v = x[::2]
    v += 1
    return x * 1


def _write_row_then_slice(x):
    r = x[0]
    r[1:] = 5.0
    return x * 1


def _write_transpose(x):
    t = x.T
    t[0] = 0.0
    return t * 1


def _write_reshape_view(x):
    y = x.reshape(2, 6)
    y[1] += 1
    return x * 1


def _write_reshape_copy(x):
    y = x.T.reshape(-1)     # NumPy copies here: the write stays in y
    y += 1
    return y * 1


def _other_view_sees_write(x):
    a = x[1:]
    b = x[:2]
    a *= 2
    return b * 1


def _view_sees_base_write(x):
    v = x[1:]
    x += 1
    return v * 1


def _nested_views(x):
    v = x[1:, :][:, ::2]
    v -= 3
    w = v[:, 1:]
    w *= -1
    return x * 1, v * 1


def _new_axis_view(x):
    y = x[None]
    y[0, 1] = 7.0
    return x * 1


def _negative_step(x):
    v = x[::-1]
    v[0] = 100.0
    return x.sum(axis=0)


def _setitem_on_view_then_read_root_twice(x):
    v = x[:, 1:3]
    v[...] = 0.0
    s = x.sum()
    v += 2
    return s, x * 1


PATTERNS_1D = [_write_slice, _write_stepped, _other_view_sees_write, _view_sees_base_write, _negative_step]
PATTERNS_2D = [_write_row_then_slice, _write_transpose, _write_reshape_view, _write_reshape_copy,
               _nested_views, _new_axis_view, _setitem_on_view_then_read_root_twice, _negative_step]


def _check(fn, x0: np.ndarray, backend: str) -> None:
    xe = tj.asarray(x0.copy())
    xj = tj.asarray(x0.copy())
    expected = fn(xe)
    got = jitted(fn, backend)(xj)
    for e, g in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(xj), np.asarray(xe), rtol=1e-6)


@pytest.mark.parametrize("backend", JIT_BACKENDS)
@pytest.mark.parametrize("fn", PATTERNS_1D, ids=lambda f: f.__name__)
def test_view_writes_1d(fn, backend):
    _check(fn, np.arange(1.0, 7.0, dtype=np.float32), backend)


@pytest.mark.parametrize("backend", JIT_BACKENDS)
@pytest.mark.parametrize("fn", PATTERNS_2D, ids=lambda f: f.__name__)
def test_view_writes_2d(fn, backend):
    _check(fn, np.arange(12.0, dtype=np.float32).reshape(3, 4), backend)


def test_write_through_a_view_of_a_captured_tensor():
    state = tj.zeros((4,))

    def f(x):
        v = state[2:]
        v += x
        return state * 1

    jf = tj.jit(f)
    out = jf(tj.ones((2,)))
    np.testing.assert_array_equal(np.asarray(out), [0, 0, 1, 1])
    np.testing.assert_array_equal(np.asarray(state), [0, 0, 1, 1])
    jf(tj.ones((2,)))
    np.testing.assert_array_equal(np.asarray(state), [0, 0, 2, 2])


def test_write_into_a_broadcast_view_is_refused():
    def f(x):
        y = tj.broadcast_to(x[None], (3, 4))
        y += 1
        return y

    with pytest.raises(ValueError):         # NumPy: the broadcast view is read-only
        f(tj.zeros((4,)))
    with pytest.raises(tj.UnsupportedUnderJitError, match="broadcast view"):
        tj.jit(f)(tj.zeros((4,)))


def test_updating_an_argument_that_aliases_another_is_refused():
    def f(a, b):
        a += 1
        return b * 1

    x = tj.zeros((4,))
    with pytest.raises(tj.UnsupportedUnderJitError, match="shares memory with argument 1"):
        tj.jit(f)(x, x[1:])
    np.testing.assert_array_equal(np.asarray(tj.jit(f)(x, tj.zeros((3,)))), np.zeros(3))


def test_updating_a_captured_view_of_another_capture_is_refused():
    base = tj.zeros((4,))
    view = base[1:]

    def g(y):
        view[...] = y
        return base * 1

    with pytest.raises(tj.UnsupportedUnderJitError, match="view sharing its memory"):
        tj.jit(g)(tj.ones((3,)))


@pytest.mark.parametrize("name", ["reshape_copies", "transpose_back_is_a_view", "slice_then_reshape"])
def test_writes_after_a_reshape_of_a_strided_argument_match_eager(name, rng):
    # whether a reshape is a view (a write reaches the argument) or a copy depends on the
    # caller's strides: NumPy copies a transposed array's flattening but not its transpose's
    def reshape_copies(x):
        r = x.reshape(12)
        r += 3
        return x * 1, r

    def transpose_back_is_a_view(x):
        r = tj.matrix_transpose(x).reshape(12)
        r *= 2
        return x * 1, r

    def slice_then_reshape(x):
        r = x[1:3].reshape(6)
        r -= 1
        return x * 1, r

    f = locals()[name]
    data = rng.standard_normal((3, 4))      # the arguments are its transpose, a strided view
    x_eager, x_jit = (tj.matrix_transpose(tj.asarray(data.copy())) for _ in range(2))
    expected = [r.numpy() for r in f(x_eager)]
    got = [r.numpy() for r in tj.jit(f)(x_jit)]
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e)
    np.testing.assert_allclose(x_jit.numpy(), x_eager.numpy())


def test_a_row_major_and_a_transposed_argument_get_their_own_traces(rng):
    def f(x):
        r = x.reshape(-1)
        r += 1
        return x * 1
    jf = tj.jit(f)
    a = tj.asarray(rng.standard_normal((2, 3)))
    t = tj.matrix_transpose(tj.asarray(rng.standard_normal((3, 2))))
    for x in (a, t, a):
        before = x.numpy().copy()
        out = jf(x).numpy()
        # a row-major argument is updated through its flattening; a transposed one is not
        expected = before + 1 if x is a else before
        np.testing.assert_allclose(out, expected)


@pytest.mark.parametrize("backend", JIT_BACKENDS)
def test_a_value_read_before_a_write_through_its_view_keeps_the_old_elements(backend):
    def g(x):
        v = x[0:1]
        c = v * 1           # simplified to the slice itself: an output viewing the argument
        v *= -1
        return c
    x = tj.asarray([2.0, 3.0])
    np.testing.assert_array_equal(jitted(g, backend)(x).numpy(), [2.0])
    np.testing.assert_array_equal(x.numpy(), [-2.0, 3.0])


@pytest.mark.parametrize("make", [lambda x: tj.astype(x, tj.int64), lambda x: x * 2],
                         ids=["astype", "elementwise"])
def test_write_into_reshape_of_a_value_computed_from_a_transposed_input(make) -> None:
    """A computed value is row-major eagerly as in a trace, whatever its operand's layout, so its
    reshape is a view in both and the write reaches it in both (NumPy would keep the operand's
    column-major layout, copy in the reshape, and jit would differ)."""
    def f(x):
        v = make(x)
        w = v.reshape(-1)
        w *= -2
        return v, w

    x = np.arange(4, dtype=np.int32).reshape(2, 2).T + 1          # column-major
    eager = f(tj.asarray(x))
    jitted = tj.jit(f)(tj.asarray(x))
    for e, j in zip(eager, jitted):
        np.testing.assert_array_equal(e.numpy(), j.numpy())
    np.testing.assert_array_equal(eager[0].numpy(), make(tj.asarray(x)).numpy() * -2)


def _returns_slice(x):
    return x[1:]


def _returns_argument(x):
    return x


def _returns_reshape_and_transpose(x):
    return x.reshape(2, 6), x.T


def _updates_then_returns_row(x):
    x += 1
    return x[0], x.sum()


@pytest.mark.parametrize("backend", JIT_BACKENDS)
@pytest.mark.parametrize("fn", [_returns_slice, _returns_argument, _returns_reshape_and_transpose,
                                _updates_then_returns_row], ids=lambda f: f.__name__)
def test_a_result_viewing_an_argument_shares_its_memory(fn, backend):
    """Eagerly ``return x[1:]`` is a view: a later write to ``x`` shows in it and a write into it
    reaches ``x``.  A compiled call (the first and a cached one) gives the same view."""
    jf = jitted(fn, backend)
    for _ in range(2):
        xe, xj = (tj.asarray(np.arange(12.0, dtype=np.float32).reshape(3, 4)) for _ in range(2))
        if fn is _returns_slice or fn is _returns_argument:
            xe, xj = xe.reshape(-1), xj.reshape(-1)
        outs = [fn(xe), jf(xj)]
        outs = [list(o) if isinstance(o, tuple) else [o] for o in outs]
        for x in (xe, xj):
            x[(0,) * x.ndim] = -7.0         # the argument written after the call
        for o in outs:
            o[0][(-1,) * o[0].ndim] = 99.0   # and the first result written
        np.testing.assert_array_equal(xj.numpy(), xe.numpy())
        for e, g in zip(*outs):
            np.testing.assert_array_equal(g.numpy(), e.numpy())


def test_a_result_viewing_a_transposed_argument_matches_numpy_views():
    def f(x):
        return x[:, 1], x.reshape(-1)       # a column view; a flattening NumPy copies

    data = np.arange(6.0).reshape(2, 3)
    xe, xj = (tj.matrix_transpose(tj.asarray(data.copy())) for _ in range(2))
    outs = [f(xe), tj.jit(f)(xj)]
    xe[0, 1] = xj[0, 1] = 50.0
    for e, g in zip(*outs):
        np.testing.assert_array_equal(g.numpy(), e.numpy())
    assert outs[1][0].numpy()[0] == 50.0 and 50.0 not in outs[1][1].numpy()


def test_a_result_viewing_a_captured_tensor_shares_its_memory():
    table = tj.zeros((4, 2))

    def row(i):
        return table[1], i * 2

    r, _ = tj.jit(row)(tj.asarray(1.0))
    table[1, 0] = 3.0
    np.testing.assert_array_equal(r.numpy(), [3.0, 0.0])


def test_gradient_flows_through_a_result_viewing_an_argument():
    w = tj.tensor(np.arange(4.0), requires_grad=True)

    def f(w):
        return w[1:]

    out = tj.jit(f)(w)
    (out * tj.asarray([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(out.numpy(), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("mode", ["jit", "lazy"])
def test_a_written_capture_keeps_its_memory_layout(mode):
    """A captured eager tensor that is a transposed view stays one after an in-place write in
    the trace: a reshape of it is then a copy, as eagerly, and a write into that copy stays there."""
    def make():
        return tj.asarray(np.arange(8, dtype=np.float32).reshape(2, 4)).T

    def step(w):
        w += 1.0
        r = tj.reshape(w, (8,))
        r[0] = 50.0
        return w * 1, r * 1

    w_eager = make()
    want = [t.numpy() for t in step(w_eager)]
    w = make()
    if mode == "jit":
        got = tj.jit(lambda: step(w))()
    else:
        with tj.lazy():
            got = step(w)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), e)
    np.testing.assert_array_equal(w.numpy(), w_eager.numpy())
