"""Concatenation, stack, pad, roll, flip and slice assignment are index arithmetic inside fused
kernels (selects by index range, ``kir.Piecewise``), not extern steps: results equal NumPy and
eager, and kernels are counted."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from codegen import kir, ptx
from tracejit import fusion

DTYPES = [np.float32, np.float64, np.int32, np.int64]


def plan_of(f, *args):
    return tj.jit(f).lower(*args).entry.executable.plan


def counts(f, *args) -> tuple[int, int]:
    """(kernels, extern steps) of ``f`` compiled for ``args``."""
    steps = plan_of(f, *args).steps
    return (sum(isinstance(s, fusion.KernelPlan) for s in steps),
            sum(isinstance(s, fusion.ExternPlan) for s in steps))


def arr(rng, shape, dtype=np.float32):
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(-50, 50, shape).astype(dtype)


def check(f, np_f, *xs, rtol=1e-6):
    """``f`` under jit and eagerly equals ``np_f`` on the NumPy inputs."""
    ts = [tj.asarray(x) for x in xs]
    want = np_f(*xs)
    eager = f(*ts).numpy()
    jitted = tj.jit(f)(*ts).numpy()
    assert eager.dtype == want.dtype and jitted.dtype == want.dtype
    np.testing.assert_allclose(eager, want, rtol=rtol)
    np.testing.assert_allclose(jitted, want, rtol=rtol)
    return jitted


# ----------------------------------------------------------------------------- concat / stack

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("sizes", [(3, 4), (1, 5, 2), (2, 1, 1, 3)])
def test_concat_every_axis_and_operand_count(sizes, axis, dtype, rng):
    base = [5, 6, 7]
    xs = []
    for k in sizes:
        shape = list(base)
        shape[axis] = k
        xs.append(arr(rng, tuple(shape), dtype))
    check(lambda *a: tj.concat(list(a), axis=axis) * 2, lambda *a: np.concatenate(a, axis=axis) * 2, *xs)
    assert counts(lambda *a: tj.concat(list(a), axis=axis) * 2, *[tj.asarray(x) for x in xs]) == (1, 0)


def test_concat_with_empty_operands(rng):
    a, b, c = arr(rng, (4, 0)), arr(rng, (4, 3)), arr(rng, (4, 0))
    check(lambda a, b, c: tj.concat([a, b, c], axis=1) + 1, lambda a, b, c: np.concatenate([a, b, c], 1) + 1,
          a, b, c)
    e = arr(rng, (0, 3))
    check(lambda a, e: tj.concat([a, e], axis=0), lambda a, e: np.concatenate([a, e], 0), b, e)


def test_concat_promotes_mixed_dtypes(rng):
    a, b, c = arr(rng, (3, 2), np.int32), arr(rng, (2, 2), np.float32), arr(rng, (1, 2), np.int64)
    out = check(lambda a, b, c: tj.concat([a, b, c]),
                lambda a, b, c: np.concatenate([a, b, c]).astype(np.float32),
                a, b, c)
    assert out.dtype == np.float32


def test_concat_of_broadcast_strided_and_transposed_operands(rng):
    x, y, r = arr(rng, (6, 8)), arr(rng, (8, 6)), arr(rng, (1, 8))

    def f(x, y, r):
        return tj.concat([x[::2, ::-1], y.T, tj.broadcast_to(r, (2, 8)), tj.exp(x[1:3])], axis=0)

    def g(x, y, r):
        return np.concatenate([x[::2, ::-1], y.T, np.broadcast_to(r, (2, 8)), np.exp(x[1:3])], axis=0)
    check(f, g, x, y, r, rtol=1e-5)
    assert counts(f, *map(tj.asarray, (x, y, r))) == (1, 0)


def test_views_of_a_concat_are_index_arithmetic(rng):
    x, y = arr(rng, (5, 4)), arr(rng, (3, 4))

    def f(x, y):
        c = tj.concat([x, y], axis=0)
        return c.T[::-1, 1:8:2] + c[2:6].T[:, ::-1]

    def g(x, y):
        c = np.concatenate([x, y], axis=0)
        return c.T[::-1, 1:8:2] + c[2:6].T[:, ::-1]
    check(f, g, x, y)
    assert counts(f, tj.asarray(x), tj.asarray(y)) == (1, 0)


def test_concat_read_through_a_flattening_reshape_is_stored_first(rng):
    x, y = arr(rng, (3, 4)), arr(rng, (3, 2))
    f = lambda x, y: tj.reshape(tj.concat([x, y], axis=1), (18,)) * 3   # noqa: E731
    check(f, lambda x, y: np.concatenate([x, y], 1).reshape(18) * 3, x, y)


def test_a_reduction_of_a_concat(rng):
    x, y = arr(rng, (7, 5)), arr(rng, (7, 3))
    f = lambda x, y: tj.sum(tj.concat([tj.exp(x), y], axis=1), axis=1)   # noqa: E731
    check(f, lambda x, y: np.exp(x).sum(1) + y.sum(1), x, y, rtol=1e-5)
    assert counts(f, tj.asarray(x), tj.asarray(y))[1] == 0


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_stack(axis, dtype, rng):
    xs = [arr(rng, (3, 4), dtype) for _ in range(3)]
    check(lambda *a: tj.stack(list(a), axis=axis), lambda *a: np.stack(a, axis=axis), *xs)
    assert counts(lambda *a: tj.stack(list(a), axis=axis), *map(tj.asarray, xs)) == (1, 0)


# ----------------------------------------------------------------------------- pad

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, (2, 0), ((0, 3), (1, 2))])
def test_pad_constant(width, dtype, rng):
    x = arr(rng, (4, 5), dtype)
    check(lambda x: tj.pad(x + 1, width, constant_values=7),
          lambda x: np.pad(x + 1, width, constant_values=7), x)
    assert counts(lambda x: tj.pad(x + 1, width, constant_values=7), tj.asarray(x)) == (1, 0)


@pytest.mark.parametrize("mode", ["edge", "reflect", "wrap"])
@pytest.mark.parametrize("width", [1, ((2, 0), (1, 3))])
def test_pad_modes(mode, width, rng):
    x = arr(rng, (4, 5))
    check(lambda x: tj.pad(x * 2, width, mode=mode), lambda x: np.pad(x * 2, width, mode=mode), x)
    assert counts(lambda x: tj.pad(x * 2, width, mode=mode), tj.asarray(x))[1] == 0


def test_pad_of_a_transposed_view_and_a_bool(rng):
    x = arr(rng, (3, 6))
    check(lambda x: tj.pad(x.T[::-1], ((1, 1), (0, 2))), lambda x: np.pad(x.T[::-1], ((1, 1), (0, 2))), x)
    m = x > 0
    check(lambda m: tj.pad(m, 2, constant_values=True), lambda m: np.pad(m, 2, constant_values=True), m)


def test_pad_rejects_bad_arguments():
    x = tj.zeros((3, 3))
    with pytest.raises(ValueError):
        tj.pad(x, ((1, 2), (1, 2), (0, 0)))
    with pytest.raises(ValueError):
        tj.pad(x, 1, mode="nearest")
    with pytest.raises(ValueError):
        tj.pad(x, 3, mode="reflect")


# ----------------------------------------------------------------------------- roll / flip

@pytest.mark.parametrize("shift,axis", [(2, 0), (-1, 1), (13, 1), (-9, 0), ((1, -2), (0, 1)), (3, None),
                                        (0, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_roll(shift, axis, dtype, rng):
    x = arr(rng, (4, 5), dtype)
    check(lambda x: tj.roll(x * 3, shift, axis=axis), lambda x: np.roll(x * 3, shift, axis=axis), x)
    if axis is not None:
        assert counts(lambda x: tj.roll(x * 3, shift, axis=axis), tj.asarray(x)) == (1, 0)


@pytest.mark.parametrize("axis", [0, 1, (0, 1), None])
def test_flip_is_a_view(axis, rng):
    x = arr(rng, (4, 5))
    check(lambda x: tj.flip(x + 1, axis=axis), lambda x: np.flip(x + 1, axis=axis), x)
    assert counts(lambda x: tj.flip(x + 1, axis=axis), tj.asarray(x)) == (1, 0)


# ----------------------------------------------------------------------------- slice assignment

SET_KEYS = [np.s_[1:3], np.s_[::-1], np.s_[4:0:-1, 1:], np.s_[:, 2], np.s_[1:-1, 1:-1], np.s_[2],
            np.s_[..., ::-1]]


@pytest.mark.parametrize("key", SET_KEYS)
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_slice_assignment_fuses(key, dtype, rng):
    x = arr(rng, (5, 6), dtype)
    target = x[key].shape
    v = arr(rng, target, dtype)

    def f(x, v):
        y = x * 2
        y[key] = v + 1
        return y

    def g(x, v):
        y = x * 2
        y[key] = v + 1
        return y
    check(f, g, x, v)
    assert counts(f, tj.asarray(x), tj.asarray(v)) == (1, 0)


def test_slice_assignment_with_broadcast_value_and_scalar(rng):
    x, row = arr(rng, (5, 6)), arr(rng, (6,))

    def f(x, row):
        y = tj.exp(x)
        y[1:4] = row
        y[:, -1] = 0.5
        return y

    def g(x, row):
        y = np.exp(x)
        y[1:4] = row
        y[:, -1] = 0.5
        return y
    check(f, g, x, row, rtol=1e-5)
    assert counts(f, tj.asarray(x), tj.asarray(row)) == (1, 0)


def test_slice_assignment_with_a_long_step_stays_an_extern_and_is_right(rng):
    x, v = arr(rng, (9,)), arr(rng, (3,))

    def f(x, v):
        y = x + 1
        y[1::3] = v
        return y

    def g(x, v):
        y = x + 1
        y[1::3] = v
        return y
    check(f, g, x, v)
    assert counts(f, tj.asarray(x), tj.asarray(v))[1] == 1


def test_in_place_update_of_an_argument_through_a_slice(rng):
    x, v = arr(rng, (6, 4)), arr(rng, (2, 4))

    @tj.jit
    def f(x, v):
        x[1:3] = v * 2
        x[4:] = x[:2]           # reads other rows of x: not done in the same buffer
        return x.sum()

    t = tj.asarray(x.copy())
    f(t, tj.asarray(v))
    want = x.copy()
    want[1:3] = v * 2
    want[4:] = want[:2]
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-6)


# ----------------------------------------------------------------------------- the stencil

def jacobi(u, sweeps=3):
    n = u.shape[0]
    for _ in range(sweeps):
        i = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])
        z = tj.zeros((1, n - 2), dtype=u.dtype)
        i = tj.concat([z, i, z], axis=0)
        zc = tj.zeros((n, 1), dtype=u.dtype)
        u = tj.concat([zc, i, zc], axis=1)
    return u


def jacobi_pad(u, sweeps=3):
    for _ in range(sweeps):
        u = tj.pad(0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:]), 1)
    return u


def jacobi_setitem(u, sweeps=3):
    for _ in range(sweeps):
        u2 = tj.zeros_like(u)
        u2[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])
        u = u2
    return u


def np_jacobi(u, sweeps=3):
    for _ in range(sweeps):
        out = np.zeros_like(u)
        out[1:-1, 1:-1] = 0.25 * (u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:])
        u = out
    return u


@pytest.mark.parametrize("fn", [jacobi, jacobi_pad, jacobi_setitem])
@pytest.mark.parametrize("n", [5, 64, 130])
def test_jacobi_is_one_kernel_per_sweep(fn, n, rng):
    x = arr(rng, (n, n))
    u = tj.asarray(x)
    assert counts(fn, u) == (3, 0)
    check(fn, np_jacobi, x, rtol=1e-5)
    ks = tj.jit(fn).lower(u).kernels
    assert all(any(isinstance(e, kir.Piecewise) for st in k.stages for e in kir.walk(st.expr)) for k in ks)


def test_jacobi_buffers_stay_apart_over_many_calls(rng):
    from test_buffer_plan import _live_values_share_no_buffer
    x = arr(rng, (96, 96))
    u = tj.asarray(x)
    _live_values_share_no_buffer(tj.explain(jacobi, u).compiled.program)
    f = tj.jit(jacobi)
    for _ in range(5):
        np.testing.assert_allclose(f(u).numpy(), np_jacobi(x), rtol=1e-5, atol=1e-6)


def test_jacobi_in_place_on_its_argument(rng):
    x = arr(rng, (40, 40))

    @tj.jit
    def step(u):
        u[...] = jacobi(u, 1)

    t = tj.asarray(x.copy())
    step(t)
    np.testing.assert_allclose(t.numpy(), np_jacobi(x, 1), rtol=1e-5, atol=1e-6)


def test_stencil_differentiates_through_concat_and_pad(rng):
    x = arr(rng, (8, 8))

    def loss(u):
        return tj.sum(jacobi_pad(u, 2) ** 2) + tj.sum(jacobi(u, 1) * 3)
    g_eager = tj.grad(loss)(tj.asarray(x)).numpy()
    g_jit = tj.jit(tj.grad(loss))(tj.asarray(x)).numpy()
    np.testing.assert_allclose(g_jit, g_eager, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- PTX

PTX_PROGRAMS = {
    "jacobi": (jacobi, [tj.spec((64, 64), tj.float32)]),
    "pad_roll": (lambda x: tj.roll(tj.pad(x, ((1, 2), (0, 3)), constant_values=1), 3, axis=1),
                 [tj.spec((16, 20), tj.float64)]),
    "setitem_bool": (lambda x: tj.concat([x > 0, x < -1], axis=1), [tj.spec((8, 8), tj.float32)]),
}


@pytest.mark.parametrize("name", sorted(PTX_PROGRAMS))
def test_selects_by_range_lower_to_ptx_that_assembles(name):
    if not ptx.ptxas_available():
        pytest.skip("ptxas is not on PATH (install the CUDA toolkit)")
    fn, specs = PTX_PROGRAMS[name]
    f = tj.jit(fn)
    cpu, gpu = f.lower(*specs), f.lower(*specs, device="cuda")
    assert [k.key for k in gpu.kernels] == [k.key for k in cpu.kernels]
    for pk in gpu.entry.executable.ptx.values():
        ptx.ptxas_check(pk.ptx, "sm_90")


def test_an_empty_slice_of_a_concat(rng):
    x, y = arr(rng, (3, 4)), arr(rng, (2, 4))
    f = lambda x, y: tj.concat([x, y], axis=0)[7:9] + 1      # noqa: E731
    check(f, lambda x, y: np.concatenate([x, y], 0)[7:9] + 1, x, y)


def test_the_stencil_interior_is_a_vector_loop_without_selects(rng):
    from codegen import cpu
    u = tj.asarray(arr(rng, (64, 64)))
    (k,) = tj.jit(lambda u: jacobi(u, 1)).lower(u).kernels
    ir = cpu.optimized_ir(k)
    assert "x float>" in ir                   # vector loads and stores
    assert "select <" not in ir               # borders are ranges, not per-lane selects
