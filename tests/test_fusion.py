"""Fusion is judged by counting kernels (and reading explain's reasons), not only by results."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import tracejit as tj
import tracejit.nn.functional as F
from codegen import kir
from tracejit import fusion


def kernels(f, *args, **kwargs) -> list[kir.Kernel]:
    return tj.jit(f).lower(*args, **kwargs).kernels


def externs(f, *args) -> list[str]:
    plan = tj.jit(f).lower(*args).entry.executable.plan
    return [type(s).__name__ for s in plan.steps if isinstance(s, fusion.ExternPlan)]


def t(rng, *shape, dtype=np.float32):
    return tj.asarray(rng.standard_normal(shape).astype(dtype))


def w1(x, b):
    return (tj.tanh(x * 1.5 + b) * 0.5 + 0.5) * tj.exp(-x * x) + tj.sin(x)


def softmax(x):
    m = tj.max(x, axis=-1, keepdims=True)
    e = tj.exp(x - m)
    return e / tj.sum(e, axis=-1, keepdims=True)


def test_elementwise_chain_is_one_kernel(rng):
    x, b = t(rng, 1000), t(rng, 1000)
    assert len(kernels(w1, x, b)) == 1
    xs = np.asarray(x).astype(np.float64)
    bs = np.asarray(b).astype(np.float64)
    expected = (np.tanh(xs * 1.5 + bs) * 0.5 + 0.5) * np.exp(-xs * xs) + np.sin(xs)
    assert_close(tj.jit(w1)(x, b), expected, rtol=1e-5, atol=1e-6)


def test_lerp_with_broadcast_weight_is_one_kernel(rng):
    a, b, w = t(rng, 64, 32), t(rng, 64, 32), t(rng, 32)
    assert len(kernels(lambda a, b, w: a * (1 - w) + b * w, a, b, w)) == 1


@pytest.mark.parametrize("fn", [softmax, lambda x: F.softmax(x, axis=-1), lambda x: F.log_softmax(x, axis=-1),
                                lambda x: F.logsumexp(x, axis=-1)])
def test_softmax_family_is_one_kernel(fn, rng):
    x = t(rng, 16, 128)
    ks = kernels(fn, x)
    assert len(ks) == 1
    assert ks[0].n_reduce == 1 and sum(isinstance(s, kir.Reduce) for s in ks[0].stages) == 2


def test_layer_norm_is_one_kernel(rng):
    x, w, b = t(rng, 8, 64), t(rng, 64), t(rng, 64)
    ks = kernels(lambda x, w, b: F.layer_norm(x, (64,), w, b, eps=1e-5), x, w, b)
    assert len(ks) == 1
    xs = np.asarray(x).astype(np.float64)
    ref = (xs - xs.mean(-1, keepdims=True)) / np.sqrt(xs.var(-1, keepdims=True) + 1e-5) * np.asarray(w) + \
        np.asarray(b)
    assert_close(tj.jit(lambda x, w, b: F.layer_norm(x, (64,), w, b, eps=1e-5))(x, w, b), ref, rtol=1e-4,
                 atol=1e-5)


@pytest.mark.parametrize("reduce", [lambda y: tj.sum(y), lambda y: tj.sum(y, axis=1),
                                    lambda y: tj.mean(y, axis=0),
                                    lambda y: tj.max(y, axis=-1, keepdims=True)])
def test_chain_ending_in_reduction_is_one_kernel(reduce, rng):
    x = t(rng, 32, 48)
    assert len(kernels(lambda x: reduce(tj.exp(x * 0.5) + 1), x)) == 1


def test_large_full_reduction_is_split_for_threads_and_stays_accurate(rng):
    x = tj.asarray(rng.random(1 << 20).astype(np.float32))
    f = tj.jit(lambda x: tj.sum(x))
    ks = f.lower(x).kernels
    assert len(ks) == 2 and ks[0].n_outer == 1          # partial sums over rows, then their sum
    assert abs(float(f(x)) - np.asarray(x).astype(np.float64).sum()) < 1e-5 * (1 << 19)


def test_views_are_index_arithmetic(rng):
    x = t(rng, 6, 8)
    f = lambda x: tj.exp(x.T[::2, 1:]) + x[1:, ::-2].T.reshape(4, 5)[:, :1].sum()   # noqa: E731
    ks = kernels(f, x)
    assert len(ks) <= 2
    xs = np.asarray(x)
    assert_close(tj.jit(f)(x), np.exp(xs.T[::2, 1:]) + xs[1:, ::-2].T.reshape(4, 5)[:, :1].sum(), rtol=1e-5)


def test_cheap_shared_values_are_recomputed_costly_ones_stored(rng):
    x = t(rng, 256)
    cheap = lambda x: (x * 2, (x * 2) + 1)                                     # noqa: E731
    costly = lambda x: (tj.exp(tj.sin(tj.tanh(x))) + 1) * 2 + tj.exp(tj.sin(tj.tanh(x)))  # noqa: E731
    ks = kernels(cheap, x)                              # x*2 recomputed, both outputs in one kernel
    assert len(ks) == 1 and len(ks[0].outputs) == 2
    f = tj.jit(lambda x: (lambda s: (s * 2, s + 3))(tj.exp(tj.sin(tj.tanh(x)))))
    e = f.explain(x)
    assert any("too costly to recompute" in why for why in e.boundaries().values())
    assert len(kernels(costly, x)) == 1                 # CSE makes it one value used twice in one kernel


def test_stored_value_and_its_pointwise_readers_are_one_kernel(rng):
    """A costly value read by two later kernels is stored, and those readers are computed by the
    kernel storing it (one launch), reading the value as it computes it."""
    x, y = t(rng, 64, 32), t(rng, 64, 32)

    def chain(x, y):
        s = tj.exp(tj.sin(tj.tanh(x)))         # stored: read by two consumers
        u = tj.exp(tj.cos(s * y))               # stored too
        return s, u * 2 + s, tj.sqrt(tj.abs(u)) + u
    ks = kernels(chain, x, y)
    assert len(ks) == 1, [k.name for k in ks]
    s = np.exp(np.sin(np.tanh(np.asarray(x))))
    u = np.exp(np.cos(s * np.asarray(y)))
    for got, want in zip(tj.jit(chain)(x, y), (s, u * 2 + s, np.sqrt(np.abs(u)) + u)):
        assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_reader_of_a_shifted_stored_value_stays_a_kernel_of_its_own(rng):
    """A kernel reading a stored value at another point than where it is written (a shifted
    slice) cannot compute it as it goes: it stays a separate launch, and the result is right."""
    x = t(rng, 65)

    def shifted(x):
        s = tj.exp(tj.sin(tj.tanh(x)))
        return s, s[1:] - s[:-1]
    ks = kernels(shifted, x)
    assert len(ks) == 2
    s = np.exp(np.sin(np.tanh(np.asarray(x))))
    got = tj.jit(shifted)(x)
    assert_close(got[1], s[1:] - s[:-1], rtol=1e-5, atol=1e-6)


def test_matmul_is_an_extern_with_fused_epilogue(rng):
    x, w, b = t(rng, 16, 32), t(rng, 32, 8), t(rng, 8)
    f = lambda x, w, b: tj.maximum(x @ w + b, 0)  # noqa: E731
    assert len(kernels(f, x, w, b)) == 1 and externs(f, x, w, b) == ["ExternPlan"]
    g = lambda x, w: x @ w.T                      # a transposed operand is a strided view, not a copy  # noqa: E731
    assert len(kernels(g, x, t(rng, 8, 32))) == 0


def test_mlp_forward_kernels(rng):
    x, w1_, b1, w2, b2 = t(rng, 4, 12), t(rng, 12, 16), t(rng, 16), t(rng, 16, 3), t(rng, 3)

    def mlp(x, w1, b1, w2, b2):
        return F.log_softmax(F.relu(x @ w1 + b1) @ w2 + b2, axis=-1)
    assert len(kernels(mlp, x, w1_, b1, w2, b2)) == 2   # relu epilogue, then bias + log_softmax


def test_explain_names_each_boundary(rng):
    x, w = t(rng, 8, 16), t(rng, 16, 4)
    e = tj.jit(lambda x, w: tj.tanh(x) @ w).explain(x, w)
    reasons = e.boundaries()
    assert "graph output" in reasons.values()
    assert any("operand of matmul" in why for why in reasons.values())
    text = str(e)
    for section in ("== graph (optimized) ==", "== kernels and fusion boundaries ==", "== kernel IR ==",
                    "== buffer plan ==", "peak temporary + output memory"):
        assert section in text
    assert "define" in e.llvm_ir(0)                     # LLVM IR of the first kernel
    dot = e.to_dot()
    assert dot.startswith("digraph") and "cluster_0" in dot


def test_explain_reports_copy_for_inexpressible_reshape(rng):
    x = t(rng, 4, 6)
    e = tj.jit(lambda x: (x.T + 1).reshape(24) * 2).explain(x)
    assert len(e.kernels) >= 1
    res = tj.jit(lambda x: x.T.reshape(24) * 2)(x)
    assert_close(res, np.asarray(x).T.reshape(24) * 2)


def test_buffer_plan_reuses_dead_temporaries(rng):
    x = t(rng, 64, 64)

    def chain(x):                   # three materialized temporaries in a row, only the last is returned
        a = tj.tanh(x) @ x
        b = tj.tanh(a) @ x
        c = tj.tanh(b) @ x
        return c
    prog = tj.jit(chain).lower(x).entry.executable.program
    assert prog.aliases, "a dead temporary's buffer should be reused"
    xs = np.asarray(x).astype(np.float64)
    ref = np.tanh(np.tanh(np.tanh(xs) @ xs) @ xs) @ xs
    assert_close(tj.jit(chain)(x), ref, rtol=1e-4, atol=1e-3)


def test_group_graph_is_acyclic_and_steps_are_ordered(rng):
    x = t(rng, 32, 32)

    def f(x):
        s = tj.sum(x, axis=0)               # a reduction read both broadcast and directly
        return x / s, s * 2, tj.exp(x) @ x
    compiled = tj.jit(f).lower(x).entry.executable
    plan, g = compiled.plan, compiled.graph
    produced: set[int] = set()
    for step in plan.steps:                 # every buffer is written before it is read
        for node, _ in step.inputs:
            while node in plan.aliases:
                node = plan.aliases[node][0]
            assert node in produced or g.node(node).op in ("input", "constant"), node
        produced.update([step.node] if isinstance(step, fusion.ExternPlan) else [o for o, _ in step.outputs])
    xs = np.asarray(x).astype(np.float64)
    out = tj.jit(f)(x)
    assert_close(out[0], xs / xs.sum(0), rtol=1e-4)
    assert_close(out[1], xs.sum(0) * 2, rtol=1e-4)
    assert_close(out[2], np.exp(xs) @ xs, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("tri", [tj.triu, tj.tril])
def test_a_triangle_mask_read_flat_is_stored_first(tri, rng):
    # the mask's 2-D index ramps cannot be read through the flattening reshape: the masked
    # matrix is stored and the flat argmin reads it back
    x = rng.standard_normal((4, 5)).astype(np.float32)
    f = tj.jit(lambda a: (tj.argmin(tri(a)), tj.argmax(tri(a, k=1))))
    got = [int(r) for r in f(tj.asarray(x))]
    ref_tri = np.triu if tri is tj.triu else np.tril
    assert got == [int(np.argmin(ref_tri(x))), int(np.argmax(ref_tri(x, k=1)))]


def test_value_read_through_disjoint_slices_is_computed_by_its_reader(rng):
    """A value read through four disjoint slices (an LSTM's gate pre-activations) is computed by
    the kernel reading the slices, each element once, not stored first."""
    x, y = t(rng, 8, 64), t(rng, 8, 64)

    def gates(x, y):
        z = x * 2.0 + y * 3.0 - x * y
        i, f, g, o = (z[:, 16 * k:16 * (k + 1)] for k in range(4))
        return tj.tanh(i) * tj.tanh(f) + tj.tanh(g) * tj.tanh(o)
    ks = kernels(gates, x, y)
    assert len(ks) == 1, [k.name for k in ks]
    z = np.asarray(x) * 2.0 + np.asarray(y) * 3.0 - np.asarray(x) * np.asarray(y)
    want = np.tanh(z[:, :16]) * np.tanh(z[:, 16:32]) + np.tanh(z[:, 32:48]) * np.tanh(z[:, 48:])
    assert_close(tj.jit(gates)(x, y), want, rtol=1e-5, atol=1e-6)


def test_readers_collapsing_one_space_differently_are_one_kernel(rng):
    """An LSTM step: the gates read strided slices of a product (launched over (batch, hidden)),
    the cell reads the stored gates and its state contiguously (collapsing to batch * hidden
    elements); the cell is still computed by the gates' kernel, over (batch, hidden)."""
    x, w, c0 = t(rng, 8, 16), t(rng, 16, 64), t(rng, 8, 16)

    def step(x, w, c0):
        z = x @ w
        i, f, g, o = (tj.sigmoid(z[:, 16 * k:16 * (k + 1)]) for k in range(4))
        c = f * c0 + i * tj.tanh(g)
        return i, f, g, o, c, o * tj.tanh(c)
    ks = kernels(step, x, w, c0)
    assert len(ks) == 1, [(k.name, k.ndim) for k in ks]
    assert ks[0].ndim == 2
    z = np.asarray(x).astype(np.float64) @ np.asarray(w)
    i, f, g, o = (1 / (1 + np.exp(-z[:, 16 * k:16 * (k + 1)])) for k in range(4))
    c = f * np.asarray(c0) + i * np.tanh(g)
    for got, want in zip(tj.jit(step)(x, w, c0), (i, f, g, o, c, o * np.tanh(c))):
        assert_close(got, want, rtol=1e-5, atol=1e-6)
