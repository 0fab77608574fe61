"""Graph passes change the printed graph as they should (DCE, CSE, folding, simplification)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, jitted

import tracejit as tj

SPEC = tj.spec((4, 6), tj.float32)


def graph_text(fn, *specs, backend="interpret", **kw) -> str:
    return str(jitted(fn, backend, **kw).lower(*specs).graph)


def ops(text: str) -> list[str]:
    """The op names in a graph's text, in order."""
    return [line.split("=", 1)[1].split()[0].split("[")[0] for line in text.splitlines() if " = " in line]


def test_identities_removed():
    assert ops(graph_text(lambda x: x * 1 - 0 + (-0.0), SPEC)) == []
    assert ops(graph_text(lambda x: x + 0, tj.spec((3,), tj.int32))) == []
    # -0.0 + 0.0 is +0.0: a float x + 0 stays an addition
    assert ops(graph_text(lambda x: x + 0, SPEC)).count("add") == 1
    assert ops(graph_text(lambda x: x / 1.0, SPEC)) == []
    assert ops(graph_text(lambda x: tj.negative(tj.negative(x)), SPEC)) == []
    assert ops(graph_text(lambda x: tj.astype(tj.astype(x, tj.float32, copy=False), tj.float32,
                                              copy=False), SPEC)) == []
    assert "logical_not" not in graph_text(lambda x: tj.logical_not(tj.logical_not(x > 0)), SPEC)


def test_float_zero_products_are_kept():
    # x * 0 is not 0 for inf/nan, so it must stay for floats, but folds for integers
    assert "mul" in ops(graph_text(lambda x: x * 0.0, SPEC))
    assert "mul" not in ops(graph_text(lambda x: x * 0, tj.spec((3,), tj.int32)))
    assert "sub" not in ops(graph_text(lambda x: x - x, tj.spec((3,), tj.int32)))


def test_cse_merges_duplicates():
    text = graph_text(lambda x: tj.exp(x) + tj.exp(x), SPEC)
    assert ops(text).count("exp") == 1
    text = graph_text(lambda x: tj.sum(x * 2, axis=1) - tj.sum(x * 2, axis=1), SPEC)
    assert ops(text).count("reduce_sum") == 1 and ops(text).count("mul") == 1


def test_dce_removes_unused_work():
    def f(x):
        unused = tj.sin(x) * 3  # noqa: F841
        tj.matmul(x, x.T)
        return x + 1
    text = graph_text(f, SPEC)
    assert "sin" not in text and "matmul" not in text and "add" in text


def test_constants_folded():
    text = graph_text(lambda x: x * (tj.asarray(2.0) * 3.0 + 1.0), SPEC)
    assert ops(text).count("mul") == 1 and "add" not in ops(text)
    assert "7." in text
    text = graph_text(lambda x: x + tj.sum(tj.arange(4.0)), SPEC)
    assert "reduce_sum" not in text and "6." in text


def test_folded_scalar_keeps_its_shape(jit_backend):
    """A constant expression folded to a 0-d value stays 0-d (NumPy's ascontiguousarray would
    make it 1-d, and the graph would no longer verify)."""
    f = jitted(lambda x: x + tj.exp(tj.asarray(2.0, dtype=tj.float32)) * 3.0, jit_backend)
    out = f(tj.asarray(np.float32(1.0)))
    assert out.shape == ()
    assert_close(out, np.array(1 + np.exp(np.float32(2.0)) * 3, np.float32), rtol=1e-6, atol=0)


def test_movement_chains_merged():
    text = graph_text(lambda x: tj.reshape(tj.reshape(x, (24,)), (6, 4)), SPEC)
    assert ops(text) == ["reshape"]
    assert ops(graph_text(lambda x: tj.reshape(tj.reshape(x, (24,)), (4, 6)), SPEC)) == []
    assert ops(graph_text(lambda x: x.T.T, SPEC)) == []
    assert ops(graph_text(lambda x: tj.permute_dims(tj.permute_dims(tj.reshape(x, (2, 2, 6)), (1, 2, 0)),
                                                    (2, 0, 1)), SPEC)) == ["reshape"]
    assert ops(graph_text(lambda x: x[:, :], SPEC)) == []


@pytest.mark.parametrize("fn", [
    lambda x: x * 1 + tj.exp(x) * tj.exp(x) - 0,
    lambda x: tj.reshape(tj.reshape(x, (24,)), (6, 4)) * (tj.asarray(2.0) + 1.0),
    lambda x: tj.sum(x[::2] * 2, axis=-1) + tj.sum(x[::2] * 2, axis=-1),
])
def test_optimized_graph_computes_the_same(fn, rng, jit_backend):
    a = rng.standard_normal((4, 6)).astype(np.float32)
    assert_close(jitted(fn, jit_backend)(tj.asarray(a)), np.asarray(fn(tj.asarray(a))))


def test_sum_of_disjoint_pads_is_one_concatenation() -> None:
    """The gradient of a tensor sliced into pieces (pads of each piece's gradient, summed) is a
    concatenation plus zero: the same values, -0.0 turned to +0.0 as the sum does."""
    x = np.array([[-0.0, 1.5, 2.0, -3.0, 4.0, 5.0, -0.0, 7.0]], np.float32)

    def f(a):
        pieces = [a[:, 1:3] * 1.0, a[:, 3:6] * -1.0, a[:, 6:8]]
        out = None
        for lo, p in zip((1, 3, 6), pieces):
            padded = tj.pad(p, ((0, 0), (lo, 8 - lo - p.shape[1])))
            out = padded if out is None else out + padded
        return out

    got = tj.jit(f)(tj.asarray(x)).numpy()
    want = f(tj.asarray(x)).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    g = tj.jit(f).lower(tj.asarray(x)).graph
    kinds = [g.node(n).op for n in g.topo()]
    assert kinds.count("pad") == 1 and kinds.count("concat") == 1, kinds     # one pad: column 0
