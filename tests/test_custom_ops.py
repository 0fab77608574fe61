"""tj.custom_op: fused ops (scalar lowering) and opaque ops (NumPy or C), eager, under jit and
in autograd, against NumPy and torch; definitions whose parts disagree are clear errors."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tracejit as tj
from tests.custom_ptx import affine_np, affine_ptx
from tracejit.custom_ops import CustomOpError, custom_op
from tracejit.custom_ops import scalar as s
from tracejit.ops import PRIMS


def _swish_np(x, *, beta=1.0):
    return (x / (1 + np.exp(-beta * x))).astype(x.dtype)


def _swish_vjp(g, out, x, *, beta=1.0):
    sig = tj.nn.functional.sigmoid(x * beta)
    return (g * (sig * (1 + beta * x * (1 - sig))),)


swish = custom_op("t_swish", _swish_np, lower=lambda x, *, beta=1.0: x * s.sigmoid(x * beta), vjp=_swish_vjp)
scaled_gap = custom_op("t_scaled_gap", lambda a, b, *, k: ((a - b) * k).astype(a.dtype),
                       lower=lambda a, b, *, k: (a - b) * k,
                       vjp=lambda g, out, a, b, *, k: (g * k, -g * k))


def _cummax_rule(x):
    if len(x.shape) < 1:
        raise ValueError("t_cummax needs at least one dimension")
    return x.shape, x.dtype


cummax = custom_op("t_cummax", lambda x: np.maximum.accumulate(x, axis=-1), rule=_cummax_rule)
row_norms = custom_op("t_row_norms", lambda x: np.sqrt((x.astype(np.float64) ** 2).sum(-1)),
                      rule=lambda x: (x.shape[:-1], np.float64))


def test_one_entry_in_the_op_table():
    assert PRIMS["t_swish"] is swish.prim and PRIMS["t_swish"].kind == "elementwise"
    assert PRIMS["t_cummax"].kind == "host"
    assert tj.custom_op is custom_op


def test_fused_op_eager_matches_numpy_and_torch(rng):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((5, 7)).astype(np.float32)
    y = swish(tj.asarray(a), beta=1.0)
    assert y.dtype == tj.float32 and y.shape == (5, 7)
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(np.asarray(y), a64 / (1 + np.exp(-a64)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(y), torch.nn.functional.silu(torch.from_numpy(a)).numpy(),
                               rtol=1e-6, atol=1e-7)


def test_fused_op_fuses_under_jit_and_equals_eager(rng):
    a = tj.asarray(rng.standard_normal((6, 9)).astype(np.float32))

    def f(x):
        return swish(x * 2.0 + 1.0, beta=1.5).sum(axis=-1)
    jf = tj.jit(f)
    lo = jf.lower(a)
    assert len(lo.kernels) == 1                            # mul, add, swish and the sum: one kernel
    assert "t_swish[beta=1.5]" in str(lo.graph)
    np.testing.assert_allclose(np.asarray(jf(a)), np.asarray(f(a)), rtol=1e-5, atol=1e-6)


def test_fused_op_broadcasts_and_promotes_like_elementwise(rng):
    a = rng.standard_normal((3, 1)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float64)
    y = scaled_gap(tj.asarray(a), tj.asarray(b), k=3)
    assert y.shape == (3, 4) and y.dtype == tj.float64
    np.testing.assert_allclose(np.asarray(y), (a - b) * 3, rtol=1e-12)
    jy = tj.jit(lambda a, b: scaled_gap(a, b, k=3))(tj.asarray(a), tj.asarray(b))
    np.testing.assert_allclose(np.asarray(jy), np.asarray(y), rtol=1e-12)


def test_fused_op_gradient_matches_torch_eager_and_jit(rng):
    torch = pytest.importorskip("torch")
    a = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((5,)).astype(np.float32)

    def loss(x, y):
        return (swish(x, beta=1.0) * scaled_gap(x, y, k=2.0)).sum()
    g_eager = tj.grad(loss, argnums=(0, 1))(tj.asarray(a), tj.asarray(b))
    g_jit = tj.jit(tj.grad(loss, argnums=(0, 1)))(tj.asarray(a), tj.asarray(b))
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (torch.nn.functional.silu(ta) * (ta - tb) * 2.0).sum().backward()
    for got, want in [(g_eager[0], ta.grad), (g_eager[1], tb.grad), (g_jit[0], ta.grad), (g_jit[1], tb.grad)]:
        np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=1e-5, atol=1e-5)


def test_opaque_op_eager_and_as_a_host_step_under_jit(rng):
    a = rng.standard_normal((3, 8)).astype(np.float32)
    want = np.maximum.accumulate(a, axis=-1)
    np.testing.assert_array_equal(np.asarray(cummax(tj.asarray(a))), want)
    try:
        import torch
    except ImportError:         # (torch is optional: NumPy is the reference)
        pass
    else:
        np.testing.assert_array_equal(torch.cummax(torch.from_numpy(a), dim=-1).values.numpy(), want)

    def f(x):
        return cummax(x * 2.0) + 1.0, row_norms(x)
    jf = tj.jit(f)
    got, norms = jf(tj.asarray(a))
    np.testing.assert_allclose(np.asarray(got), want * 2 + 1, rtol=1e-6)
    assert norms.dtype == tj.float64 and norms.shape == (3,)
    np.testing.assert_allclose(np.asarray(norms), np.linalg.norm(a.astype(np.float64), axis=-1), rtol=1e-12)
    assert "t_cummax" in str(jf.lower(tj.asarray(a)).graph)
    with pytest.raises(ValueError, match="at least one dimension"):
        cummax(tj.asarray(1.0))


def test_op_without_vjp_refuses_gradients():
    x = tj.asarray(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(CustomOpError, match="has no vjp"):
        cummax(x)
    with tj.no_grad():
        np.testing.assert_array_equal(np.asarray(cummax(x)), np.ones((2, 3)))
    np.testing.assert_array_equal(np.asarray(cummax(x.detach())), np.ones((2, 3)))


def test_c_function_pointer_eager_and_under_jit(tmp_path, rng):
    cc = shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (cc) on PATH")
    src = tmp_path / "affine.c"
    src.write_text("#include <stdint.h>\n"
                   "void affine(const float *x, int64_t nx, float *out, int64_t n) {\n"
                   "  for (int64_t i = 0; i < n; i++) out[i] = 3.0f * x[i] + 0.5f; }\n")
    lib = tmp_path / "libaffine.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    fn = ctypes.CDLL(str(lib)).affine
    affine = custom_op("t_c_affine", c_function=fn,
                       vjp=lambda g, out, x: (g * 3.0,))
    a = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(affine(tj.asarray(a))), 3 * a + 0.5, rtol=1e-6)
    strided = tj.asarray(a).T                                      # made contiguous for C
    np.testing.assert_allclose(np.asarray(affine(strided)), 3 * a.T + 0.5, rtol=1e-6)
    jf = tj.jit(lambda x: affine(x + 1.0).sum())
    np.testing.assert_allclose(float(jf(tj.asarray(a))), (3 * (a.astype(np.float64) + 1) + 0.5).sum(),
                               rtol=1e-5)
    x = tj.asarray(a, requires_grad=True)
    affine(x).sum().backward()
    np.testing.assert_array_equal(np.asarray(x.grad), np.full_like(a, 3.0))


def test_rule_disagreeing_with_implementation_is_an_error():
    wrong_dtype = custom_op("t_wrong_dtype", lambda x: x.astype(np.float64))       # rule: like x
    wrong_shape = custom_op("t_wrong_shape", lambda x: x.sum(-1), rule=lambda x: (x.shape, x.dtype))
    x = tj.ones((2, 3))
    with pytest.raises(CustomOpError,
                       match=r"'t_wrong_dtype'.*returned float64\[2, 3\].*rule says float32\[2, 3\]"):
        wrong_dtype(x)
    with pytest.raises(CustomOpError,
                       match=r"'t_wrong_shape'.*returned float32\[2\].*rule says float32\[2, 3\]"):
        wrong_shape(x)
    with pytest.raises(CustomOpError, match="t_wrong_shape"):     # under jit too (the host step checks)
        tj.jit(lambda x: wrong_shape(x * 2.0))(x)


def test_fused_rule_and_lowering_must_keep_the_dtype():
    to_bool = custom_op("t_to_bool", lambda x: x > 0, lower=lambda x: x > 0)
    x = tj.ones((4,))
    with pytest.raises(CustomOpError, match="returned bool"):
        to_bool(x)
    with pytest.raises(CustomOpError, match="lowering gives bool"):
        tj.jit(lambda x: to_bool(x) * 2.0)(x)
    casts = custom_op("t_rule_casts", lambda x: x, rule=lambda x: (x.shape, np.float64), lower=lambda x: x)
    with pytest.raises(CustomOpError, match="fused"):
        casts(x)
    branchy = custom_op("t_branchy", lambda x: np.abs(x), lower=lambda x: x if x > 0 else -x)
    with pytest.raises(CustomOpError, match="where"):
        tj.jit(lambda x: branchy(x))(x)


def test_vjp_with_the_wrong_shape_is_an_error():
    bad = custom_op("t_bad_vjp", lambda x: x * 2, lower=lambda x: x * 2,
                    vjp=lambda g, out, x: (g.sum(),))
    x = tj.asarray(np.ones(3), requires_grad=True)
    with pytest.raises(CustomOpError, match=r"gradient 0 has shape \(\).*input 0 has shape \(3,\)"):
        bad(x).sum().backward()


def test_bad_definitions():
    with pytest.raises(ValueError, match="already exists"):
        custom_op("exp", np.exp)
    with pytest.raises(ValueError, match="already exists"):
        custom_op("t_swish", _swish_np)
    with pytest.raises(ValueError, match="identifier"):
        custom_op("my op", np.exp)
    with pytest.raises(TypeError, match="exactly one of impl"):
        custom_op("t_neither")
    with pytest.raises(TypeError, match="lower must be callable"):
        custom_op("t_lower_not_callable", np.exp, lower="x * 2")
    with pytest.raises(TypeError, match="hashable"):
        scaled_gap(tj.ones(2), tj.ones(2), k=[1, 2])
    with pytest.raises(TypeError, match="takes 1 operands"):
        custom_op("t_arity", np.exp, n_inputs=1)(tj.ones(2), tj.ones(2))


def test_verify_checks_lowering_and_vjp_against_the_implementation(rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    swish.verify(a, beta=1.5)                                   # consistent: no error
    scaled_gap.verify(a, a[0], k=2.0)
    cummax.verify(a)                                            # opaque, no vjp: compiled vs impl
    lowering_off = custom_op("t_lowering_off", lambda x: x * 2, lower=lambda x: x * 3)
    with pytest.raises(CustomOpError, match="'t_lowering_off': compiled disagrees with impl"):
        lowering_off.verify(a)
    vjp_off = custom_op("t_vjp_off", lambda x: x * 2, lower=lambda x: x * 2, vjp=lambda g, out, x: (g,))
    with pytest.raises(CustomOpError, match="'t_vjp_off': vjp's gradient 0 disagrees with central"):
        vjp_off.verify(a)


def test_example_script_runs():
    r = subprocess.run([sys.executable, "examples/custom_op.py"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.getcwd()}, check=False)
    assert r.returncode == 0, r.stderr
    loss_line, grad_line = r.stdout.strip().splitlines()
    parts = loss_line.split()
    assert float(parts[4]) == pytest.approx(float(parts[7]), rel=1e-6)    # jit loss == eager loss
    assert float(grad_line.split()[-1]) < 1e-6
    assert len(open("examples/custom_op.py").read().splitlines()) < 40


def test_fused_op_lowers_to_ptx_that_assembles():
    from codegen import ptx
    if not ptx.ptxas_available():
        pytest.skip("ptxas is not on PATH (install the CUDA toolkit)")
    f = tj.jit(lambda x: swish(x * 2.0, beta=1.5).sum(axis=-1))
    gpu = f.lower(tj.spec((64, 256), tj.float32), device="cuda")      # no GPU needed to lower
    assert len(gpu.kernels) == 1
    for pk in gpu.entry.executable.ptx.values():
        ptx.ptxas_check(pk.ptx, "sm_90")


ptx_affine = custom_op("t_ptx_affine", affine_np, ptx=affine_ptx("t_ptx_affine"))


def test_ptx_op_assembles_and_a_device_program_launches_it(rng):
    from codegen import ptx
    from runtime.program import Extern
    if not ptx.ptxas_available():
        pytest.skip("ptxas is not on PATH (install the CUDA toolkit)")
    kernel = ptx_affine.ptx_kernel
    assert (kernel.entry, kernel.n_inputs, kernel.arch) == ("t_ptx_affine", 1, "sm_90")
    ptx.ptxas_check(kernel.ptx, "sm_90")
    f = tj.jit(lambda x: ptx_affine(x * 2.0) + 1.0)
    gpu = f.lower(tj.spec((8, 300), tj.float32), device="cuda")      # no GPU needed to lower
    externs = [s for s in gpu.entry.executable.program.steps if isinstance(s, Extern)]
    assert [s.name for s in externs] == ["t_ptx_affine"]
    assert gpu.entry.executable.ptx[kernel.key] is kernel            # listed with the program's PTX
    for pk in gpu.entry.executable.ptx.values():
        ptx.ptxas_check(pk.ptx, "sm_90")
    a = rng.standard_normal((8, 300)).astype(np.float32)              # the CPU runs impl
    np.testing.assert_allclose(np.asarray(f(tj.asarray(a))), (3 * (2 * a) + 0.5) + 1, rtol=1e-6)


def test_bad_ptx_is_refused_naming_the_op():
    def refused(name, pattern, **kw):
        with pytest.raises(CustomOpError, match=rf"custom op {name!r}: .*{pattern}"):
            custom_op(name, affine_np, **kw)
        assert name not in PRIMS                                       # nothing half-registered
    refused("t_ptx_wrong_entry", r"no \.entry named 't_ptx_wrong_entry' \(entries found: other\)",
            ptx=affine_ptx("other"))
    refused("t_ptx_other_entry", r"no \.entry named 'kern'", ptx=affine_ptx("t_ptx_other_entry"),
            ptx_entry="kern")
    refused("t_ptx_commented", r"entries found: none", ptx="// .entry t_ptx_commented(.param .u64 a)")
    refused("t_ptx_three", r"has 3 parameters, it must take a pointer and a count",
            ptx=affine_ptx("t_ptx_three", ".param .u64 in0, .param .u64 out, .param .u64 n_out"))
    refused("t_ptx_arity", r"has 4 parameters, it must take 6: \.entry t_ptx_arity\(\.param \.u64 in0, "
            r"\.param \.u64 n0, \.param \.u64 in1", ptx=affine_ptx("t_ptx_arity"), n_inputs=2)
    u32_count = ".param .u64 in0, .param .u32 n0, .param .u64 out, .param .u64 n_out"
    refused("t_ptx_u32", r"parameter 1 .*\.u32 n0.* not a 64-bit", ptx=affine_ptx("t_ptx_u32", u32_count))
    refused("t_ptx_bytes", r"must be PTX source text", ptx=b".entry t_ptx_bytes()")
    with pytest.raises(TypeError, match="'t_ptx_fused'.*opaque"):
        custom_op("t_ptx_fused", affine_np, lower=lambda x: x * 3 + 0.5, ptx=affine_ptx("t_ptx_fused"))


def test_ptx_op_takes_its_kernels_operands_and_no_parameters():
    assert ptx_affine.n_inputs == 1 and "PTX" in repr(ptx_affine)
    with pytest.raises(TypeError, match="takes 1 operands"):
        ptx_affine(tj.ones(2), tj.ones(2))
    with pytest.raises(TypeError, match="'t_ptx_affine' has a PTX kernel, which takes no parameters"):
        ptx_affine(tj.ones(2), k=1)
