"""Random expression programs: jit(f)(args) == f(args) eagerly.

A program is a list of steps over a growing list of values: elementwise unary/binary ops
(with broadcasting), reductions over random axes, permutes, reshapes and stepped slices.
"""
from __future__ import annotations

import numpy as np
from conftest import JIT_BACKENDS, assert_close, jitted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracejit as tj

UNARY = [tj.tanh, tj.sin, tj.abs, tj.negative, lambda x: tj.exp(tj.tanh(x)), lambda x: x * 0.5 + 1]
BINARY = [tj.add, tj.subtract, tj.multiply, tj.maximum, lambda a, b: tj.where(a > b, a, b * 2)]
REDUCE = [tj.sum, tj.max, tj.mean, tj.min]


def _broadcastable(s1, s2) -> bool:
    try:
        np.broadcast_shapes(s1, s2)
        return True
    except ValueError:
        return False


@st.composite
def programs(draw):
    n_in = draw(st.integers(1, 3))
    base = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    # inputs: the base shape, or it with some dims set to 1 or dropped from the left
    shapes = []
    for _ in range(n_in):
        s = [1 if draw(st.booleans()) and draw(st.booleans()) else d for d in base]
        shapes.append(tuple(s[draw(st.integers(0, len(s) - 1)):]))
    steps, cur = [], list(shapes)
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "permute", "reshape", "slice"]))
        i = draw(st.integers(0, len(cur) - 1))
        s = cur[i]
        if kind == "unary":
            steps.append(("unary", i, draw(st.integers(0, len(UNARY) - 1))))
        elif kind == "binary":
            j = draw(st.integers(0, len(cur) - 1))
            if not _broadcastable(s, cur[j]):
                continue
            steps.append(("binary", i, j, draw(st.integers(0, len(BINARY) - 1))))
            s = np.broadcast_shapes(s, cur[j])
        elif kind == "reduce" and s:
            axis = draw(st.integers(-len(s), len(s) - 1))
            keep = draw(st.booleans())
            steps.append(("reduce", i, draw(st.integers(0, len(REDUCE) - 1)), axis, keep))
            s = tuple(1 if k == axis % len(s) else d for k, d in enumerate(s)) if keep else \
                tuple(d for k, d in enumerate(s) if k != axis % len(s))
        elif kind == "permute" and s:
            perm = tuple(draw(st.permutations(range(len(s)))))
            steps.append(("permute", i, perm))
            s = tuple(s[p] for p in perm)
        elif kind == "reshape":
            steps.append(("reshape", i))
            s = (int(np.prod(s)),)
        elif kind == "slice" and s and s[0] > 1:
            steps.append(("slice", i, draw(st.sampled_from([-1, 2]))))
            s = (len(range(s[0])[::steps[-1][2]]),) + tuple(s[1:])
        else:
            continue
        cur.append(tuple(s))
    return shapes, steps


def run(steps, *xs):
    vals = list(xs)
    for st_ in steps:
        kind, i = st_[0], st_[1]
        x = vals[i]
        if kind == "unary":
            vals.append(UNARY[st_[2]](x))
        elif kind == "binary":
            vals.append(BINARY[st_[3]](x, vals[st_[2]]))
        elif kind == "reduce":
            vals.append(REDUCE[st_[2]](x, axis=st_[3], keepdims=st_[4]))
        elif kind == "permute":
            vals.append(tj.permute_dims(x, st_[2]))
        elif kind == "reshape":
            vals.append(tj.reshape(x, (-1,)))
        elif kind == "slice":
            vals.append(x[::st_[2]])
    return vals[len(xs):][-3:]          # the last few values: several outputs, some shared


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prog=programs(), dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16))
def test_random_programs_jit_matches_eager(prog, dtype, seed):
    shapes, steps = prog
    rng = np.random.default_rng(seed)
    args = [tj.asarray(rng.standard_normal(s).astype(dtype)) for s in shapes]
    eager = run(steps, *args)
    for backend in JIT_BACKENDS:
        compiled = jitted(lambda *xs: run(steps, *xs), backend)(*args)
        assert len(compiled) == len(eager)
        for c, e in zip(compiled, eager):
            assert c.dtype == e.dtype
            assert_close(c, np.asarray(e), rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
