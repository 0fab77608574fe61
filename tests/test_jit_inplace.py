"""In-place updates under ``jit``: where safe, a kernel writes the updated tensor's own buffer.

Each case runs the same function eagerly and jitted (both backends) and compares every mutated
tensor and every result; the llvm cases also check whether the program updated in place.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj


def in_place_outputs(f, *args) -> dict[int, int]:
    """Output index -> input slot of the updates ``f``'s compiled program makes in place."""
    executable = f.lower(*args).entry.executable
    return dict(getattr(getattr(executable, "program", None), "inplace", {}))


def run_both(fn, make_state, make_args, backend, calls=2):
    """Run ``fn`` eagerly and jitted on fresh copies of the state; return both sides' states."""
    eager_state, jit_state = make_state(), make_state()
    f = jitted(fn(jit_state), backend)
    g = fn(eager_state)
    for _ in range(calls):
        args = make_args()
        expect = g(*[tj.asarray(np.asarray(a)) for a in args])
        got = f(*[tj.asarray(np.asarray(a)) for a in args])
        assert_close(got, np.asarray(expect), rtol=1e-6, atol=1e-6)
    for e, j in zip(eager_state, jit_state):
        assert_close(j, np.asarray(e), rtol=1e-6, atol=1e-6)
    return f, jit_state


def test_sgd_style_update_is_done_in_place(rng, jit_backend):
    base = rng.standard_normal((256, 128)).astype(np.float32)
    grads = rng.standard_normal((256, 128)).astype(np.float32)

    def fn(state):
        w, m = state

        def step(g):
            m[...] = 0.9 * m + g
            w[...] = w - 0.1 * m
            return (w * w).sum()
        return step

    def make_state():
        return [tj.asarray(base.copy()), tj.zeros((256, 128))]

    f, (w, m) = run_both(fn, make_state, lambda: [grads], jit_backend, calls=3)
    storage = w._value
    f(tj.asarray(grads))
    assert w._value is storage                  # still the same buffer, updated
    if jit_backend == "llvm":
        assert len(in_place_outputs(f, tj.asarray(grads))) == 2


def test_mutated_argument_is_updated_in_place(rng, jit_backend):
    a = rng.standard_normal(100_000).astype(np.float32)

    def step(p, g):
        p -= 0.5 * g
        return p.sum()
    f = jitted(step, jit_backend)
    p, g = tj.asarray(a.copy()), tj.asarray(np.ones(100_000, np.float32))
    storage = p._value
    f(p, g)
    out = f(p, g)
    assert p._value is storage
    assert_close(p, a - 1.0, rtol=1e-6, atol=1e-6)
    assert_close(out, np.array((a.astype(np.float64) - 1.0).sum()), rtol=1e-4, atol=1e-2)
    if jit_backend == "llvm":
        assert in_place_outputs(f, p, g) == {1: 0}


def test_old_value_read_after_the_update_is_not_overwritten(rng, jit_backend):
    a = rng.standard_normal((16, 16))

    def fn(state):
        (p,) = state

        def step(g):
            new = p - g
            old_total = (p * 2).sum()           # reads the old p; may be scheduled after `new`
            p[...] = new
            return old_total + p.sum()
        return step
    run_both(fn, lambda: [tj.asarray(a.copy())], lambda: [rng.standard_normal((16, 16))], jit_backend)


@pytest.mark.parametrize("update", ["reverse", "transpose", "roll"])
def test_update_reading_other_elements_of_itself(rng, jit_backend, update):
    a = rng.standard_normal((8, 8))

    def fn(state):
        (p,) = state

        def step(g):
            if update == "reverse":
                p[...] = p[::-1] + g
            elif update == "transpose":
                p[...] = p.mT * 2 + g
            else:
                p[...] = tj.concat([p[:, 1:], p[:, :1]], axis=1) + g
            return g.sum()                      # nothing reads p after the update
        return step
    f, (p,) = run_both(fn, lambda: [tj.asarray(a.copy())], lambda: [rng.standard_normal((8, 8))], jit_backend)


def test_row_kernel_update_reads_the_row_before_writing(rng, jit_backend):
    a = rng.standard_normal((32, 128)).astype(np.float32)

    def fn(state):
        (p,) = state

        def step(g):
            p[...] = p - p.max(axis=1, keepdims=True) + g   # a row kernel: reduce, then store
            return p.mean()
        return step
    run_both(fn, lambda: [tj.asarray(a.copy())],
             lambda: [rng.standard_normal((32, 128)).astype(np.float32)], jit_backend)


def test_update_then_return_the_tensor(rng, jit_backend):
    a = rng.standard_normal(10)

    def step(p, g):
        p += g
        return p
    f = jitted(step, jit_backend)
    p = tj.asarray(a.copy())
    out = f(p, tj.ones(10, dtype=tj.float64))
    assert_close(p, a + 1)
    assert_close(out, a + 1)
    p += 1                                      # the result is the argument, as eagerly
    assert_close(out, a + 2)


def test_same_tensor_passed_twice(rng, jit_backend):
    a = rng.standard_normal(100)

    def step(p, q):
        r = q * 3                               # q aliases p: it must see the old values
        p -= 1.0
        return r.sum() + p.sum()
    f = jitted(step, jit_backend)
    p = tj.asarray(a.copy())
    f(tj.asarray(a.copy()), tj.asarray(a.copy()))   # compile with distinct tensors first
    out = f(p, p)
    assert_close(out, np.array(3 * a.sum() + (a - 1).sum()), rtol=1e-10, atol=1e-10)
    assert_close(p, a - 1)


def test_captured_view_and_read_only_storage(rng, jit_backend):
    base = rng.standard_normal((6, 10))
    p = tj.asarray(base.copy())[:, ::2]             # a strided view: updated through a copy
    frozen = base.copy()
    frozen.flags.writeable = False

    def step(g):
        p[...] = p * 2 + g
        return p.sum()
    f = jitted(step, jit_backend)
    f(tj.ones((6, 5), dtype=tj.float64))
    assert_close(p, base[:, ::2] * 2 + 1)

    def step2(x, g):
        x += g
        return x.sum()
    f2 = jitted(step2, jit_backend)
    with pytest.raises(ValueError):                 # NumPy refuses to write a read-only array
        f2(tj.asarray(frozen), tj.ones((6, 10), dtype=tj.float64))


def test_same_tensor_passed_twice_and_read_after_the_update(rng, jit_backend):
    a = rng.standard_normal(20_000)

    def step(p, q):
        p -= 1.0
        return (q * p).sum()                    # q is p: it sees the update, as eagerly
    f = jitted(step, jit_backend)
    for _ in range(2):      # aliased and distinct calls in turn: each has its own trace
        out = f(tj.asarray(a.copy()), tj.asarray(a.copy()))
        assert_close(out, np.array((a * (a - 1)).sum()), rtol=1e-10, atol=1e-8)
        p = tj.asarray(a.copy())
        eager = tj.asarray(a.copy())
        out = f(p, p)
        assert_close(out, np.asarray(step(eager, eager)), rtol=1e-10, atol=1e-8)
        assert_close(out, np.array(((a - 1) * (a - 1)).sum()), rtol=1e-10, atol=1e-8)
        assert_close(p, a - 1)
        out = f(p, p)
        assert_close(out, np.array(((a - 2) * (a - 2)).sum()), rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("order", ["read_first", "write_first"])
def test_one_kernel_stores_the_update_and_reads_the_old_value(rng, jit_backend, order):
    a = rng.standard_normal((128, 256)).astype(np.float32)

    def fn(state):
        (p,) = state

        def step(g):
            if order == "read_first":
                y = p + 1
                p[...] = g * 2
            else:
                p[...] = g * 2
                y = g + 1
            return y
        return step
    run_both(fn, lambda: [tj.asarray(a.copy())],
             lambda: [rng.standard_normal((128, 256)).astype(np.float32)], jit_backend)


def test_read_after_store_rule():
    """A later stage may reuse an earlier stage's load of the old value only without reduce dims."""
    from codegen import kir
    from tracejit.compiler import _read_after_store
    from tracejit.fusion import KernelPlan
    from tracejit.views import View

    def plan(n_reduce, stages):
        ops = tuple(kir.Operand("float32", ("c",) * 2) for _ in range(2))
        k = kir.Kernel("k", 2, n_reduce, ops, ops, tuple(stages))
        v = View.contiguous((4, 4))
        return KernelPlan(k, (4, 4), [(10, v), (11, v)], [(20, v), (21, v)], set(), 20)

    x, other = kir.Load(0), kir.Load(1)
    store_first = [kir.Store(0, other), kir.Store(1, x)]          # out0 (node 20) stored, then x read
    assert _read_after_store(plan(0, store_first), 20, [0])
    load_first = [kir.Store(0, kir.Op("add", (x, other), "float32")), kir.Store(1, x)]
    assert not _read_after_store(plan(0, load_first), 20, [0])     # the later read reuses the load
    assert _read_after_store(plan(1, load_first), 20, [0])         # a row kernel's later pass re-reads
    assert not _read_after_store(plan(1, [kir.Reduce("sum", x, "float32"), kir.Store(0, x)]), 20, [0])


def test_slice_assignment_then_a_value_computed_before_it(jit_backend):
    # the update is one kernel that stores a piecewise value (the assigned slice, the rest of x)
    # and computes cos(old x): where the slice was assigned the store loads nothing, so an
    # update in place would let the later stage read the new element
    def f(x):
        c = tj.cos(x)
        x[:1] = 1
        return c * 2

    for make in (lambda: tj.asarray(np.int8([-6, 8])), lambda: tj.asarray(np.float32([3.0, 0.5, -2.0]))):
        xe, xj = make(), make()
        expected = f(xe)
        got = jitted(f, jit_backend)(xj)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(xj.numpy(), xe.numpy())


def test_read_after_store_counts_a_load_inside_one_piece_as_conditional():
    from codegen import kir
    from tracejit.compiler import _read_after_store
    from tracejit.fusion import KernelPlan
    from tracejit.views import View

    ops = tuple(kir.Operand("float32", ("c",)) for _ in range(2))
    x = kir.Load(0)
    piecewise = kir.Piecewise(0, (1,), (kir.Const(1.0, "float32"), x))
    stages = (kir.Store(0, piecewise), kir.Store(1, kir.Op("cos", (x,), "float32")))
    k = kir.Kernel("k", 1, 0, ops, ops, stages)
    v = View.contiguous((4,))
    assert _read_after_store(KernelPlan(k, (4,), [(10, v), (11, v)], [(20, v), (21, v)], set(), 20), 20, [0])
