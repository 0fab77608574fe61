"""PTX generation: hand-built kernels are lowered and assembled with ``ptxas`` (no GPU needed)."""
from __future__ import annotations

import shutil

import pytest

from codegen import kir, ptx, scalar
from codegen.kir import Acc, Const, Index, Kernel, Load, Op, Operand, Reduce, Store

pytestmark = pytest.mark.skipif(shutil.which("ptxas") is None,
                                reason="ptxas (CUDA toolkit) not on PATH: PTX cannot be assembled")

FLOATS = ("float16", "float32", "float64")
INTS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
NUMERIC = INTS + FLOATS


def _math_problem() -> str | None:
    """Why transcendental ops cannot be lowered yet (None when they can)."""
    f = "float32"
    c = Operand(f, ("c",))
    k = Kernel("probe", 1, 0, (c,), (c,), (Store(0, Op("exp", (Load(0),), f)),))
    try:
        ptx.lower_to_llvm(k)
    except (ImportError, AttributeError, NotImplementedError) as e:
        return f"transcendental lowering unavailable: {e!r}"
    return None


MATH_PROBLEM = _math_problem()
HAS_MATHLIB = MATH_PROBLEM is None
MATH = {"exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos",
        "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "pow", "atan2", "sigmoid",
        "logaddexp", "hypot"}


def assemble(k: Kernel, arch: str = "sm_90") -> ptx.PtxKernel:
    pk = ptx.compile_kernel(k, arch)
    ptx.ptxas_check(pk.ptx, arch)
    # LLVM aborts the process on llvm.exp.* & co. for NVPTX: no external math may be referenced
    assert "llvm." not in pk.ptx and ".extern" not in pk.ptx
    return pk


def op_dtypes(op: str) -> tuple[tuple[str, ...], str]:
    """(operand dtypes the op accepts, kind of result)."""
    if op in ("floor", "ceil", "round", "trunc", "abs", "neg", "sign", "square", "add", "sub", "mul",
              "max", "min", "floordiv", "mod"):
        return NUMERIC, "same"
    if op in ("isnan", "isinf", "isfinite", "signbit", "eq", "ne", "lt", "le", "gt", "ge"):
        return NUMERIC, "bool"
    if op in ("not",):
        return ("bool",), "bool"
    if op in ("and", "or", "xor", "invert"):
        return INTS + ("bool",), "same"
    if op in ("shl", "shr"):
        return INTS, "same"
    return FLOATS, "same"  # div, reciprocal, transcendental, rounding helpers


ELEMENTWISE_OPS = sorted(op for op in kir.SCALAR_OPS if op not in ("where", "cast"))


@pytest.mark.parametrize("op", ELEMENTWISE_OPS)
def test_every_scalar_op_every_dtype(op):
    if op in MATH and not HAS_MATHLIB:
        pytest.skip(MATH_PROBLEM)
    dtypes, result = op_dtypes(op)
    arity = kir.SCALAR_OPS[op]
    inputs, outputs, stages = [], [], []
    for dt in dtypes:
        args = []
        for _ in range(arity):
            inputs.append(Operand(dt, ("s", "c")))
            args.append(Load(len(inputs) - 1))
        out_dt = "bool" if result == "bool" else dt
        outputs.append(Operand(out_dt, ("s", "c")))
        stages.append(Store(len(outputs) - 1, Op(op, tuple(args), out_dt)))
    assemble(Kernel(f"op_{op}", 2, 0, tuple(inputs), tuple(outputs), tuple(stages)))


@pytest.mark.parametrize("src", ("bool",) + NUMERIC)
def test_casts_between_all_dtypes(src):
    dsts = ("bool",) + NUMERIC
    k = Kernel(f"cast_{src}", 1, 0, (Operand(src, ("c",)),), tuple(Operand(d, ("c",)) for d in dsts),
               tuple(Store(i, Op("cast", (Load(0),), d)) for i, d in enumerate(dsts)))
    assemble(k)


def test_where_with_consts_and_index():
    f = "float32"
    cond = Op("lt", (Index(1), Const(3, "int64")), "bool")
    body = Op("where", (cond, Load(0), Const(-1.5, f)), f)
    k = Kernel("where", 2, 0, (Operand(f, ("c", "c")),), (Operand(f, ("c", "c")),), (Store(0, body),))
    assemble(k)


@pytest.mark.parametrize("layouts", [
    (("c", "c"), ("c", "c")),          # contiguous: vector path
    (("b", "c"), ("c", "c")),          # row broadcast
    (("s", "b"), ("s", "c")),          # column broadcast
    (("s", "s"), ("s", "s")),          # transposed / strided: scalar path
    (("b", "b"), ("s", "c")),          # scalar broadcast
])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "bool"])
def test_broadcast_and_strided_layouts(layouts, dtype):
    op = "or" if dtype == "bool" else "add"
    k = Kernel("bcast", 2, 0, (Operand(dtype, layouts[0]), Operand(dtype, ("s", "c"))),
               (Operand(dtype, layouts[1]),), (Store(0, Op(op, (Load(0), Load(1)), dtype)),))
    pk = assemble(k)
    # in1 is always contiguous in its last dim, so the kernel is vectorised
    assert pk.vector_width == min(8, 16 // scalar.itemsize(dtype))


def test_contiguous_f32_uses_16_byte_vector_accesses():
    f = "float32"
    k = Kernel("axpy", 1, 0, (Operand(f, ("c",)), Operand(f, ("c",))), (Operand(f, ("c",)),),
               (Store(0, Op("add", (Op("mul", (Load(0), Const(2.0, f)), f), Load(1)), f)),))
    pk = assemble(k)
    assert pk.vector_width == 4
    assert "ld.global.v4" in pk.ptx and "st.global.v4" in pk.ptx


def test_rank0_and_high_rank_elementwise():
    f = "float32"
    assemble(Kernel("r0", 0, 0, (Operand(f, ()),), (Operand(f, ()),), (Store(0, Op("neg", (Load(0),), f)),)))
    lay = ("s", "b", "s", "c", "c")
    assemble(Kernel("r5", 5, 0, (Operand(f, lay),), (Operand(f, ("s",) * 4 + ("c",)),),
                    (Store(0, Op("square", (Load(0),), f)),)))


def test_multiple_outputs_share_subexpressions():
    f = "float32"
    t = Op("mul", (Load(0), Load(1)), f)
    c = Operand(f, ("c",))
    k = Kernel("two", 1, 0, (c, c), (c, c),
               (Store(0, t), Store(1, Op("add", (t, Const(1.0, f)), f))))
    assemble(k)


@pytest.mark.parametrize("op", ["sum", "prod", "max", "min", "argmax", "argmin"])
@pytest.mark.parametrize("dtype", [*FLOATS, "int32", "int64", "uint8", "int8", "bool"])
def test_row_reductions(op, dtype):
    if dtype == "bool" and op in ("sum", "prod"):
        pytest.skip("the front end casts bool before sum/prod")
    acc = "int64" if op.startswith("arg") else dtype
    k = Kernel(f"red_{op}", 2, 1, (Operand(dtype, ("s", "c")),), (Operand(acc, ("c", "b")),),
               (Reduce(op, Load(0), acc), Store(0, Acc(0))))
    pk = assemble(k)
    assert "shfl.sync.bfly" in pk.ptx and "bar.sync" in pk.ptx


def test_reduction_over_several_dims_and_column_layout():
    f = "float32"
    # outer (i0), reduce (i1, i2); input read column-wise (strided reduce dims)
    k = Kernel("sum3", 3, 2, (Operand(f, ("c", "s", "s")),), (Operand(f, ("c", "b", "b")),),
               (Reduce("sum", Load(0), f), Store(0, Acc(0))))
    assemble(k)
    # full reduction: no outer dims
    assemble(Kernel("full", 2, 2, (Operand(f, ("s", "c")),), (Operand(f, ("b", "b")),),
                    (Reduce("max", Load(0), f), Store(0, Acc(0)))))


def softmax_kernel(dtype: str = "float32") -> Kernel:
    f = dtype
    x = Load(0)
    e = Op("exp", (Op("sub", (x, Acc(0)), f),), f)
    return Kernel("softmax", 2, 1, (Operand(f, ("s", "c")),), (Operand(f, ("s", "c")),),
                  (Reduce("max", x, f), Reduce("sum", e, f), Store(0, Op("div", (e, Acc(1)), f), True)))


def layernorm_kernel() -> Kernel:
    f = "float32"
    x = Load(0)
    mean = Op("div", (Acc(0), Load(3)), f)  # in3: the row length as a broadcast scalar
    d = Op("sub", (x, mean), f)
    var = Op("div", (Acc(1), Load(3)), f)
    y = Op("mul", (d, Op("rsqrt", (Op("add", (var, Const(1e-5, f)), f),), f)), f)
    y = Op("add", (Op("mul", (y, Load(1)), f), Load(2)), f)
    return Kernel("layernorm", 2, 1,
                  (Operand(f, ("s", "c")), Operand(f, ("b", "c")), Operand(f, ("b", "c")),
                   Operand(f, ("b", "b"))),
                  (Operand(f, ("s", "c")), Operand(f, ("c", "b"))),
                  (Reduce("sum", x, f), Reduce("sum", Op("square", (d,), f), f),
                   Store(0, y, True), Store(1, mean)))


@pytest.mark.parametrize("arch", ["sm_90", "sm_75", "sm_80"])
def test_softmax_is_one_kernel(arch):
    if not HAS_MATHLIB:
        pytest.skip(MATH_PROBLEM)
    pk = assemble(softmax_kernel(), arch)
    assert pk.ptx.count(".entry") == 1 and pk.ptx.count("bar.sync") == 4


@pytest.mark.parametrize("arch", ["sm_90", "sm_75"])
def test_layernorm_is_one_kernel(arch):
    pk = assemble(layernorm_kernel(), arch)
    assert pk.ptx.count(".entry") == 1


def test_argmax_then_elementwise_consumer():
    k = Kernel("argmax_plus", 2, 1, (Operand("float32", ("s", "c")),), (Operand("int64", ("c", "b")),),
               (Reduce("argmax", Load(0), "int64"),
                Store(0, Op("add", (Acc(0), Const(1, "int64")), "int64"))))
    assemble(k)


def test_int_kernels():
    i = "int32"
    body = Op("xor", (Op("shl", (Load(0), Const(3, i)), i), Op("mod", (Load(0), Load(1)), i)), i)
    assemble(Kernel("ints", 1, 0, (Operand(i, ("c",)), Operand(i, ("s",))), (Operand(i, ("c",)),),
                    (Store(0, body),)))
    q = "int64"
    assemble(Kernel("isum", 2, 1, (Operand(q, ("s", "c")),), (Operand(q, ("c", "b")),),
                    (Reduce("sum", Op("floordiv", (Load(0), Const(7, q)), q), q), Store(0, Acc(0)))))


def test_launch_geometry():
    f = "float32"
    ew = Kernel("ew", 2, 0, (Operand(f, ("c", "c")),), (Operand(f, ("c", "c")),), (Store(0, Load(0)),))
    assert ptx.launch_geometry(ew, (10, 1000)) == (-(-10 * 250 // 256), 256, 0)
    assert ptx.launch_geometry(ew, (0, 5))[0] == 1            # empty launch still valid
    assert ptx.launch_geometry(ew, (1 << 20, 1 << 12))[0] == ptx.MAX_GRID
    red = Kernel("red", 2, 1, (Operand(f, ("s", "c")),), (Operand(f, ("c", "b")),),
                 (Reduce("sum", Load(0), f), Store(0, Acc(0))))
    assert ptx.launch_geometry(red, (7, 10)) == (7, 32, 0)
    assert ptx.launch_geometry(red, (7, 100)) == (7, 128, 0)
    assert ptx.launch_geometry(red, (7, 100000)) == (7, 256, 0)
    with pytest.raises(ValueError, match="expects 2"):
        ptx.launch_geometry(red, (7,))


def test_param_types_and_entry():
    k = softmax_kernel("float64") if HAS_MATHLIB else layernorm_kernel()
    n = len(k.inputs) + len(k.outputs)
    assert ptx.param_types(k) == "P" * n + "q" * (k.ndim * (1 + n))
    pk = assemble(k)
    assert f".entry {pk.entry}(" in pk.ptx and pk.key == k.key


def test_arch_names():
    assert ptx.arch_of((8, 6)) == "sm_86" and ptx.arch_of("90") == "sm_90"
    assert ptx.arch_of("sm_90a") == "sm_90a"
    with pytest.raises(ValueError, match="sm_75"):
        ptx.arch_of("sm_70")


def test_ptxas_check_reports_errors():
    with pytest.raises(ptx.PtxasError, match="ptxas"):
        ptx.ptxas_check(".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k() { bogus; }\n")
