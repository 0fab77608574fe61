"""Error messages a user can act on: they name the op, both shapes/dtypes/devices, the line."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import jitted

import tracejit as tj
from tracejit.tensors import Device, Tensor

# tests count traces through a closure list the traced function appends to: jit warns about that
pytestmark = pytest.mark.filterwarnings("ignore:jit.*changed Python state")


def test_shape_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        tj.zeros((2, 3)) + tj.zeros(4)
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(2, 3\)"):
        tj.zeros((2, 3)) @ tj.zeros((2, 3))
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(2, 3\)"):
        tj.reshape(tj.zeros((2, 3)), (4, 2))


def test_shape_mismatch_under_jit(jit_backend):
    with pytest.raises(ValueError, match=r"multiply: shapes \(3,\) and \(5,\)"):
        jitted(lambda x, y: x * y, jit_backend)(tj.zeros(3), tj.zeros(5))


def test_dtype_errors():
    with pytest.raises(TypeError, match="bitwise_and needs integer or boolean operands, got float32"):
        tj.bitwise_and(tj.zeros(2), tj.zeros(2))
    with pytest.raises(TypeError, match="negative needs a numeric dtype, got bool"):
        tj.negative(tj.asarray([True]))
    with pytest.raises(TypeError, match="in-place op would change dtype int64 to float32"):
        x = tj.asarray([1, 2])
        x += 1.5
    with pytest.raises(TypeError, match="data type not understood"):
        tj.zeros(2, dtype="nonsense")


@pytest.mark.parametrize("convert,what", [(bool, "bool"), (float, "float"), (int, "int"),
                                          (lambda t: t.item(), "item"), (lambda t: t.numpy(), "numpy")])
def test_concretization_names_line_and_ways_out(convert, what, jit_backend):
    def f(x):
        return convert(x.sum())
    with pytest.raises(tj.ConcretizationError) as info:
        jitted(f, jit_backend)(tj.ones(3))
    msg = str(info.value)
    assert what in msg and "test_errors.py:" in msg
    assert "return convert(x.sum())" in msg or f"t.{what}()" in msg      # the user's own line
    assert "static_argnames" in msg and "tracejit.where" in msg and "eagerly" in msg


def test_if_on_traced_value(jit_backend):
    def f(x):
        if x.sum() > 0:
            return x
        return -x
    with pytest.raises(tj.ConcretizationError, match=r"bool\(tensor\)[\s\S]*if x.sum\(\) > 0"):
        jitted(f, jit_backend)(tj.ones(3))


def test_boolean_mask_under_jit(jit_backend):
    with pytest.raises(tj.ConcretizationError, match=r"boolean-mask[\s\S]*test_errors.py[\s\S]*where"):
        jitted(lambda x: x[x > 0], jit_backend)(tj.ones(3))


def test_mixing_devices_names_both():
    cpu = tj.asarray(np.ones(3, np.float32))
    fake = Tensor._from_array(np.ones(3, np.float32), Device("cuda"))
    with pytest.raises(ValueError, match=r"add: operands are on different devices \(cpu and cuda:0\)"):
        cpu + fake
    with pytest.raises(ValueError, match=r"different devices: cpu, cuda:0"):
        tj.jit(lambda a, b: a + b, backend="interpret")(cpu, fake)


def test_unsupported_update_under_jit_names_it():
    x = tj.asarray(np.arange(6.0))

    i = tj.asarray([0, 2])

    def f(a, i):
        a[i] = 1.0       # a traced integer-array key: no compiled form
        return a
    with pytest.raises(tj.UnsupportedUnderJitError, match=r"(?s)x\[key\] = value .* not .*test_errors.py"):
        tj.jit(f)(x, i)
    with pytest.raises(NotImplementedError):      # (it is one too, for code that catches that)
        tj.jit(f)(x, i)


def test_leaked_tracer(jit_backend):
    leaked = []

    def f(x):
        leaked.append(x * 2)
        return x
    jitted(f, jit_backend)(tj.ones(2))
    with pytest.raises(tj.TracejitError, match=r"escaped from the jitted function[\s\S]*test_errors.py"):
        leaked[0] + 1


def test_item_and_bool_on_wrong_sizes():
    with pytest.raises(ValueError, match="ambiguous"):
        bool(tj.ones(3))
    with pytest.raises(ValueError, match=r"one element, got shape \(3,\)"):
        tj.ones(3).item()
    with pytest.raises(TypeError, match="create tensors with tracejit.asarray"):
        Tensor([1, 2])


def test_unsupported_under_jit_names_the_users_line():
    def f(x, i):
        x[i] = 1.0       # assignment at traced indices has no compiled form
        return x
    with pytest.raises(tj.UnsupportedUnderJitError) as info:
        tj.jit(f)(tj.zeros((3,)), tj.asarray([0, 1]))
    assert "test_errors.py" in str(info.value)


def test_a_compiler_failure_says_it_is_internal_and_how_to_keep_working(monkeypatch):
    import tracejit.compiler as compiler

    def broken(*args, **kwargs):
        raise KeyError("boom")
    monkeypatch.setattr(compiler, "compile_graph", broken)
    with pytest.raises(tj.InternalCompilerError, match="bug in tracejit.*backend='interpret'"):
        tj.jit(lambda x: x + 1)(tj.zeros((2,)))


def test_tj_explain_stays_the_function_after_it_ran():
    # the module holding Explanation was once named like the function, and importing it on
    # the first call rebound ``tj.explain`` to the module
    x = tj.ones((3,))
    tj.explain(lambda a: a + 1, x)
    assert callable(tj.explain)
    assert "kernel" in str(tj.explain(lambda a: a * 2, x))
