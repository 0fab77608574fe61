"""tj.debug: printing from jitted code at run time, running jitted code eagerly, NaN checks that
name the op and line."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tracejit as tj
from tracejit.debug import NonFiniteError


@pytest.fixture
def nans():
    old = tj.debug.debug_nans(True)
    yield
    tj.debug.debug_nans(old)


def _run_script(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd(), **env}, timeout=300, check=False)


def _step(x, k):
    y = x * 2.0
    tj.debug.print("step {} y={}", k, y)
    s = (y + 1.0).sum()
    tj.debug.print("sum {s:.2f} then {}", "done", s=s)
    return s


def test_print_runs_at_every_call_in_program_order(capsys):
    f = tj.jit(_step)
    x = tj.asarray(np.array([1.0, 2.0], np.float32))
    f(x, 1)
    f(x * 3.0, 2)               # a cached call: the prints still run, with this call's values
    jitted_out = capsys.readouterr().out
    assert f.cache_info()["traces"] == 1
    assert jitted_out == "step 1 y=[2. 4.]\nsum 8.00 then done\nstep 2 y=[ 6. 12.]\nsum 20.00 then done\n"
    _step(x, 1)
    _step(x * 3.0, 2)
    assert capsys.readouterr().out == jitted_out            # eagerly: the same text


def test_print_under_a_differentiable_jit(capsys):
    f = tj.jit(lambda w: _step(w, 0))
    w = tj.asarray(np.array([1.0, -1.0]), requires_grad=True)
    f(w).backward()
    np.testing.assert_array_equal(np.asarray(w.grad), [2.0, 2.0])
    assert capsys.readouterr().out == "step 0 y=[ 2. -2.]\nsum 2.00 then done\n"


def test_print_format_errors_are_raised_at_trace_time():
    with pytest.raises(ValueError, match="does not match its arguments"):
        tj.jit(lambda x: tj.debug.print("{} {}", x) or x)(tj.ones(2))
    with pytest.raises(TypeError, match="format must be a str"):
        tj.debug.print(3, tj.ones(2))


def test_disable_jit_runs_the_python_eagerly():
    calls = []

    def f(x):
        calls.append(1)
        return x * float(x.sum())           # needs a concrete value: fails to trace
    jf = tj.jit(f)
    x = tj.asarray(np.array([1.0, 2.0]))
    with pytest.raises(tj.ConcretizationError):
        jf(x)
    with tj.disable_jit():
        with tj.disable_jit():              # nests
            np.testing.assert_array_equal(np.asarray(jf(x)), [3.0, 6.0])
        np.testing.assert_array_equal(np.asarray(jf(x)), [3.0, 6.0])
    assert len(calls) == 3                  # the failed trace, then two eager runs
    assert tj.debug.flags.jit_disabled == 0
    g = tj.jit(lambda x: x + 1.0)
    g(x)
    with tj.disable_jit():
        g(x)
    assert g.cache_info()["traces"] == 1 and g.cache_info()["hits"] == 0


def test_disable_jit_environment_variable():
    r = _run_script("""
        import numpy as np, tracejit as tj
        @tj.jit
        def f(x):
            print("python value", float(x.sum()))
            return x * 2
        print(np.asarray(f(tj.asarray([1.0, 2.0]))).tolist())
    """, TRACEJIT_DISABLE_JIT="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "python value 3.0\n[2.0, 4.0]\n"


def test_debug_nans_names_the_first_op_and_line(nans):
    def f(x, y):
        a = tj.where(x > 0, tj.log(x), 0.0)         # log of a negative is masked: finite
        b = tj.sqrt(y)                              # the NaN comes from here
        return a + b * 2.0
    jf = tj.jit(f)
    x = tj.asarray(np.array([-1.0, 2.0], np.float32))
    ok = jf(x, tj.asarray(np.array([4.0, 1.0], np.float32)))
    np.testing.assert_allclose(np.asarray(ok), np.asarray(f(x, tj.asarray(np.array([4.0, 1.0], np.float32)))))
    line = f.__code__.co_firstlineno + 2
    with pytest.raises(NonFiniteError, match=rf"contains NaN.*first op that produced NaN: sqrt.*"
                                             rf"test_debug.py:{line}"):
        jf(x, tj.asarray(np.array([4.0, -1.0], np.float32)))
    with pytest.raises(FloatingPointError, match=r"already in argument 1"):
        jf(x, tj.asarray(np.array([np.nan, 1.0], np.float32)))


def test_debug_nans_checks_infinities_and_the_backward_pass(nans):
    def f(x):
        return tj.sqrt(x).sum()
    jf = tj.jit(f)
    line = f.__code__.co_firstlineno + 1
    x = tj.asarray(np.array([0.0, 4.0]), requires_grad=True)
    loss = jf(x)                                    # forward finite
    assert float(loss) == 2.0
    with pytest.raises(NonFiniteError, match=rf"its backward pass\) contains infinity.*test_debug.py:{line}"):
        loss.backward()                             # d sqrt(x)/dx at 0 = inf
    with pytest.raises(NonFiniteError, match="infinity.*div"):
        tj.jit(lambda a, b: a / b)(tj.ones(3), tj.zeros(3))


def test_debug_nans_off_by_default_and_from_the_environment():
    assert not tj.debug.flags.nans or os.environ.get("TRACEJIT_DEBUG_NANS")
    r = _run_script("""
        import numpy as np, tracejit as tj
        f = tj.jit(lambda x: tj.log(x) + 1)
        try:
            f(tj.asarray(np.array([-1.0])))
        except tj.debug.NonFiniteError as e:
            print("caught", "log" in str(e))
    """, TRACEJIT_DEBUG_NANS="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "caught True\n"


def test_print_in_a_gpu_program(capsys):
    from codegen import ptx
    if not ptx.ptxas_available():
        pytest.skip("the simulated GPU assembles every kernel with ptxas, which is not on PATH")
    from tests.gpu.simulated_cuda import installed
    from tracejit import eager_device
    eager_device.cache_clear()
    try:
        with installed():
            x = tj.asarray(np.array([1.0, 2.0], np.float32)).to("cuda")

            def f(x):
                tj.debug.print("gpu {}", x * 2.0)
                return x + 1.0
            jf = tj.jit(f)
            np.testing.assert_array_equal(np.asarray(jf(x).to("cpu")), [2.0, 3.0])
            np.testing.assert_array_equal(np.asarray(jf(x * 3.0).to("cpu")), [4.0, 7.0])
    finally:
        eager_device.cache_clear()
    assert capsys.readouterr().out == "gpu [2. 4.]\ngpu [ 6. 12.]\n"
