"""Random programs through the compiler: fused LLVM kernels must equal eager evaluation.

Beyond the expression programs of test_programs_hypothesis.py these mix in matmul, inputs
that are non-contiguous views (transposed, stepped slices), zero-size dimensions and
float64/int32 data, and check the compiled kernels against eager NumPy-backed evaluation.
"""
from __future__ import annotations

import numpy as np
from conftest import assert_close
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracejit as tj

UNARY = {"tanh": tj.tanh, "exp_neg_sq": lambda x: tj.exp(-x * x), "sin": tj.sin, "abs": tj.abs,
         "affine": lambda x: x * 1.5 - 0.25}
BINARY = {"add": tj.add, "mul": tj.multiply, "max": tj.maximum, "sub": tj.subtract,
          "where": lambda a, b: tj.where(a > b, a - b, b * 0.5)}


def make_input(rng: np.random.Generator, shape: tuple[int, ...], dtype, layout: str) -> tj.Tensor:
    """A tensor of ``shape`` whose memory is contiguous, transposed, or a stepped slice."""
    if layout == "transposed" and len(shape) >= 2:
        base = rng.standard_normal(shape[::-1]).astype(dtype)
        return tj.asarray(base).T if len(shape) == 2 else tj.permute_dims(tj.asarray(base),
                                                                          tuple(range(len(shape)))[::-1])
    if layout == "stepped" and shape:
        base = rng.standard_normal((shape[0] * 2,) + shape[1:]).astype(dtype)
        return tj.asarray(base)[::2]
    return tj.asarray(rng.standard_normal(shape).astype(dtype))


@st.composite
def programs(draw):
    rows = draw(st.sampled_from([0, 1, 3, 5]))
    cols = draw(st.integers(1, 6))
    inner = draw(st.integers(1, 5))
    layouts = st.sampled_from(["contiguous", "transposed", "stepped"])
    inputs = [((rows, cols), draw(layouts)), ((cols,), "contiguous"), ((cols, inner), draw(layouts))]
    steps = []
    for _ in range(draw(st.integers(2, 7))):
        kind = draw(st.sampled_from(["unary", "binary", "bias", "reduce", "matmul", "transpose_back"]))
        if kind == "unary":
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY)))))
        elif kind == "binary":
            steps.append(("binary", draw(st.sampled_from(sorted(BINARY)))))
        elif kind == "reduce":
            name = draw(st.sampled_from(["sum", "max", "mean"]))
            steps.append(("reduce", name, draw(st.sampled_from([0, 1])), draw(st.booleans())))
        else:
            steps.append((kind,))
    return inputs, steps


def run(inputs, steps):
    """Interpret a program: ``x`` is the running (rows, cols) value."""
    x, b, w = inputs
    for step in steps:
        if x.ndim != 2:                             # a reduction dropped a dim: the program ends
            break
        if step[0] == "unary":
            x = UNARY[step[1]](x)
        elif step[0] == "binary":
            x = BINARY[step[1]](x, x.T.T * 0.5)
        elif step[0] == "bias":
            x = x + b
        elif step[0] == "reduce":
            name, axis, keep = step[1:]
            if name == "max" and x.shape[axis] == 0:
                continue
            reduce = getattr(tj, name)
            x = reduce(x, axis=axis, keepdims=True) + x if keep else reduce(x, axis=axis)
        elif step[0] == "matmul" and x.shape[1] == w.shape[0]:
            x = tj.tanh(x @ w) @ w.T                 # (rows, cols) again
        elif step[0] == "transpose_back":
            x = (x.T * 2).T
    return x


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**32 - 1))
def test_compiled_equals_eager(program, dtype, seed):
    rng = np.random.default_rng(seed)
    specs, steps = program
    inputs = [make_input(rng, shape, dtype, layout) for shape, layout in specs]
    eager = run(inputs, steps)
    compiled = tj.jit(lambda x, b, w: run([x, b, w], steps), backend="llvm")(*inputs)
    tol = 2e-4 if dtype == np.float32 else 1e-9
    assert compiled.dtype == eager.dtype and compiled.shape == eager.shape
    assert_close(compiled, np.asarray(eager), rtol=tol, atol=tol)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([(0, 4), (3, 0), (0, 0), (2, 3)]), st.sampled_from(["int32", "int64", "bool"]))
def test_integer_and_bool_programs_with_empty_dims(shape, dtype):
    rng = np.random.default_rng(0)
    a = tj.asarray((rng.integers(-5, 5, shape)).astype(dtype))
    b = tj.asarray((rng.integers(-5, 5, shape[-1:])).astype(dtype))

    def f(a, b):
        if a.dtype == tj.bool:
            return tj.logical_xor(a, b), tj.any(a, axis=0), tj.sum(a, axis=1)
        return (a * 3 - b) // 2, tj.max(tj.abs(a) + 1, axis=0) if shape[0] else a.T, tj.sum(a, axis=1)
    for got, want in zip(tj.jit(f, backend="llvm")(a, b), f(a, b)):
        assert got.dtype == want.dtype
        assert_close(got, np.asarray(want))
