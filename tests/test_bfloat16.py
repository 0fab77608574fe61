"""bfloat16: conversions bit-exact with ml_dtypes, float32 compute with one rounding per op, fused
casts on the CPU and in PTX, promotion and gradients as PyTorch, and ``tj.autocast``."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import tracejit as tj
from codegen import ptx

BF = ml_dtypes.bfloat16
F = tj.nn.functional


def _bits(x) -> np.ndarray:
    return np.asarray(x).view(np.uint16)


def _special_f32(rng) -> np.ndarray:
    random_bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00001, 0xFFA00000, 0x00000001,
                      0x80000001, 0x3F808000, 0x3F818000, 0x3F808001, 0x7F7F8000, 0x00008000, 0x80000000],
                     np.uint32)     # max, inf, NaNs with payloads, subnormals, ties, overflow by rounding
    return np.concatenate([random_bits, edges]).view(np.float32)


def test_conversions_to_bfloat16_match_ml_dtypes(rng) -> None:
    x32 = _special_f32(rng)
    x64 = np.concatenate([rng.standard_normal(5000) * np.exp(rng.uniform(-90, 90, 5000)),
                          [1 + 2**-8 + 2**-30, 1 + 2**-8, 1e300, -1e300, 1e-300, np.nan, -0.0]])
    i64 = np.concatenate([rng.integers(-2**40, 2**40, 3000), [2**24 + 2**16 + 1, -(2**24 + 2**16 + 1)]])
    i32 = rng.integers(-2**31, 2**31, 3000).astype(np.int32)
    i8 = np.arange(-128, 128, dtype=np.int8)
    flags = rng.integers(0, 2, 10).astype(bool)
    h = rng.standard_normal(1000).astype(np.float16)
    ins = (x32, x64, i64, i32, i8, flags, h)

    def to_bf16(*xs):
        return tuple(tj.astype(x, tj.bfloat16) for x in xs)

    with np.errstate(all="ignore"):
        want = [a.astype(BF) for a in ins]
    eager = to_bf16(*[tj.asarray(a) for a in ins])
    compiled = tj.jit(to_bf16)(*[tj.asarray(a) for a in ins])
    for w, e, c in zip(want, eager, compiled):
        assert e.dtype == tj.bfloat16 and c.dtype == tj.bfloat16
        np.testing.assert_array_equal(_bits(e), _bits(w))
        np.testing.assert_array_equal(_bits(c), _bits(w))


def test_conversions_from_bfloat16_jit_equals_eager(rng) -> None:
    b = tj.asarray(_special_f32(rng).astype(BF))
    dsts = (tj.float32, tj.float64, tj.float16, tj.int32, tj.int64, tj.int8, tj.uint8, tj.bool)

    def from_bf16(x):
        return tuple(tj.astype(x, d) for d in dsts)

    eager, compiled = from_bf16(b), tj.jit(from_bf16)(b)
    np.testing.assert_array_equal(eager[0].numpy(), np.asarray(b.numpy(), np.float32))   # exact widening
    for d, e, c in zip(dsts, eager, compiled):
        assert c.dtype == d
        np.testing.assert_array_equal(c.numpy(), e.numpy(), err_msg=str(d))
    # to integers bfloat16 follows float32's rules (NaN -> int32 minimum), the same in kernels
    np.testing.assert_array_equal(eager[3].numpy(), np.asarray(b.numpy(), np.float32).astype(np.int32))


def test_arithmetic_computes_in_float32_and_rounds_once_per_op(rng) -> None:
    x = rng.standard_normal((7, 33)).astype(np.float32).astype(BF)
    y = rng.uniform(0.5, 2, (7, 33)).astype(np.float32).astype(BF)

    def f(a, b):
        return tj.exp(a) * b + a, a / b, tj.sqrt(b), tj.maximum(a, b), a > b

    X, Y = x.astype(np.float32), y.astype(np.float32)
    with np.errstate(all="ignore"):
        want = (((np.exp(X).astype(BF).astype(np.float32) * Y).astype(BF).astype(np.float32) + X).astype(BF),
                (X / Y).astype(BF), np.sqrt(Y).astype(BF), np.maximum(X, Y).astype(BF), X > Y)
    eager, compiled = f(tj.asarray(x), tj.asarray(y)), tj.jit(f)(tj.asarray(x), tj.asarray(y))
    for i, (w, e, c) in enumerate(zip(want, eager, compiled)):
        assert e.dtype == w.dtype and c.dtype == w.dtype
        if i == 0:    # exp: ours vs NumPy's float32 exp differ by an ulp of float32 at most
            np.testing.assert_allclose(np.asarray(e.numpy(), np.float32), w.astype(np.float32), rtol=2**-7)
        else:
            np.testing.assert_array_equal(np.asarray(e.numpy()), w)
        np.testing.assert_array_equal(np.asarray(c.numpy()).view(np.uint8),
                                      np.asarray(e.numpy()).view(np.uint8))
    # reductions accumulate in float32 and round the total once
    s = tj.sum(tj.asarray(x), axis=1)
    assert s.dtype == tj.bfloat16
    np.testing.assert_array_equal(_bits(s), _bits(X.astype(np.float64).sum(1).astype(np.float32).astype(BF)))
    sj = tj.jit(lambda a: tj.sum(a, axis=1))(tj.asarray(x))
    np.testing.assert_allclose(np.asarray(sj.numpy(), np.float32), np.asarray(s.numpy(), np.float32),
                               rtol=2**-8)


def test_matches_torch_bfloat16(rng) -> None:
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(4000).astype(np.float32)
    y = rng.standard_normal(4000).astype(np.float32)
    tx, ty = torch.tensor(x).bfloat16(), torch.tensor(y).bfloat16()
    jx, jy = tj.astype(tj.asarray(x), tj.bfloat16), tj.astype(tj.asarray(y), tj.bfloat16)
    np.testing.assert_array_equal(_bits(jx), tx.view(torch.int16).numpy().view(np.uint16))
    for op in ("add", "mul", "div", "sub"):       # correctly rounded in float32, then to bfloat16: exact
        t = getattr(torch, op)(tx, ty)
        j = getattr(tj, {"div": "divide", "mul": "multiply", "sub": "subtract"}.get(op, op))(jx, jy)
        np.testing.assert_array_equal(_bits(j), t.view(torch.int16).numpy().view(np.uint16), err_msg=op)
    np.testing.assert_allclose(np.asarray(tj.tanh(jx).numpy(), np.float32), torch.tanh(tx).float().numpy(),
                               rtol=2**-7, atol=1e-6)
    # promotion as torch: with float32 -> float32, with float16 -> float32, with ints -> bfloat16
    for other in (tj.float32, tj.float16, tj.float64, tj.int32, tj.bool):
        tother = getattr(torch, np.dtype(other).name if other != tj.bool else "bool")
        assert tj.result_type(tj.bfloat16, other).name == str(torch.promote_types(torch.bfloat16, tother))[6:]
    assert (jx * 2.0).dtype == tj.bfloat16 and (jx + 1).dtype == tj.bfloat16
    fi = tj.finfo(tj.bfloat16)
    assert (fi.bits, fi.eps, fi.max) == (16, torch.finfo(torch.bfloat16).eps, torch.finfo(torch.bfloat16).max)


def test_gradients_through_bfloat16_match_torch(rng) -> None:
    torch = pytest.importorskip("torch")
    w0 = rng.standard_normal((5, 3)).astype(np.float32)
    x0 = rng.standard_normal((4, 5)).astype(np.float32)
    w = tj.asarray(w0.astype(BF), requires_grad=True)
    tw = torch.tensor(w0).bfloat16().requires_grad_()
    loss = tj.sum(tj.tanh(tj.asarray(x0.astype(BF)) @ w) ** 2)
    tloss = (torch.tanh(torch.tensor(x0).bfloat16() @ tw) ** 2).sum()
    loss.backward()
    tloss.backward()
    assert w.grad.dtype == tj.bfloat16
    np.testing.assert_allclose(float(loss), float(tloss), rtol=2**-6)
    np.testing.assert_allclose(np.asarray(w.grad.numpy(), np.float32), tw.grad.float().numpy(),
                               rtol=3e-2, atol=3e-2)


def test_casts_fuse_into_one_kernel_as_integer_ops_and_ptx_cvt() -> None:
    def f(a, b):
        return tj.astype(tj.exp(tj.astype(a, tj.float32)) * b + 1.5, tj.bfloat16)

    specs = (tj.spec((1000,), tj.bfloat16), tj.spec((1000,), tj.float32))
    cpu = tj.jit(f).lower(*specs)
    assert len(cpu.kernels) == 1
    ir_text = cpu.kernels[0].source
    # rounding is integer arithmetic in the kernel, not a call into a conversion routine
    assert "lshr" in ir_text and "shl" in ir_text and "truncsfbf" not in ir_text and " bfloat " not in ir_text
    if not ptx.ptxas_available():
        pytest.skip("ptxas is not on PATH")
    gpu = tj.jit(f).lower(*specs, device="cuda")
    assert len(gpu.kernels) == 1 and "cvt.rn.bf16.f32" in gpu.kernels[0].source
    for pk in gpu.entry.executable.ptx.values():
        ptx.ptxas_check(pk.ptx, "sm_90")


def test_storage_interop_and_serialization(tmp_path, rng) -> None:
    a = rng.standard_normal((3, 4)).astype(BF)
    t = tj.asarray(a)
    assert t.dtype == tj.bfloat16 and t.numpy().dtype == BF
    np.testing.assert_array_equal(_bits(t.T), _bits(a.T))
    assert tj.asarray([1.5, 2.25], dtype="bfloat16").dtype == tj.bfloat16
    tj.save({"w": t}, str(tmp_path / "w.tj"))
    back = tj.load_state(str(tmp_path / "w.tj"))["w"]
    assert back.dtype == tj.bfloat16
    np.testing.assert_array_equal(_bits(back), _bits(a))


# ---------------------------------------------------------------------------- autocast

@pytest.mark.parametrize("low", [tj.bfloat16, tj.float16])
def test_autocast_matmul_rounds_operands_and_accumulates_in_float32(low, rng) -> None:
    a = rng.standard_normal((33, 70)).astype(np.float32)
    b = rng.standard_normal((70, 17)).astype(np.float32)
    lo = np.dtype(low)
    ref = (a.astype(lo).astype(np.float64) @ b.astype(lo).astype(np.float64)).astype(lo)
    with tj.autocast(dtype=low):
        y = tj.asarray(a) @ tj.asarray(b)
        y64 = tj.asarray(a.astype(np.float64)) @ tj.asarray(b.astype(np.float64))    # float64: untouched
    assert y.dtype == low and y64.dtype == tj.float64
    # float32 accumulation of exact products: the correctly rounded result but for rare near-ties
    mismatch = np.asarray(y.numpy()).view(np.uint16) != ref.view(np.uint16)
    assert mismatch.mean() < 0.01
    np.testing.assert_allclose(np.asarray(y.numpy(), np.float64), ref.astype(np.float64),
                               rtol=2**-7, atol=1e-3)
    assert (tj.asarray(a) @ tj.asarray(b)).dtype == tj.float32          # off again after the block


def test_autocast_matches_torch_forward_and_backward(rng) -> None:
    torch = pytest.importorskip("torch")
    tj.manual_seed(0)
    lin = tj.nn.Linear(24, 8)
    tlin = torch.nn.Linear(24, 8)
    with torch.no_grad():
        tlin.weight.copy_(torch.tensor(lin.weight.numpy()))
        tlin.bias.copy_(torch.tensor(lin.bias.numpy()))
    x = rng.standard_normal((16, 24)).astype(np.float32)
    y = rng.integers(0, 8, 16)
    with tj.autocast(dtype=tj.bfloat16):
        out = lin(tj.asarray(x))
        loss = F.cross_entropy(out, tj.asarray(y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tout = tlin(torch.tensor(x))
        tloss = torch.nn.functional.cross_entropy(tout, torch.tensor(y))
    assert out.dtype == tj.bfloat16 and tout.dtype == torch.bfloat16
    np.testing.assert_allclose(np.asarray(out.numpy(), np.float32), tout.detach().float().numpy(),
                               rtol=2**-6, atol=2e-2)
    loss.backward()
    tloss.backward()
    np.testing.assert_allclose(float(loss), float(tloss), rtol=2e-2)
    np.testing.assert_allclose(lin.weight.grad.numpy(), tlin.weight.grad.numpy(), rtol=5e-2, atol=5e-3)


def test_autocast_under_jit_equals_eager_and_keys_the_trace(rng) -> None:
    a = tj.asarray(rng.standard_normal((8, 16)).astype(np.float32))
    b = tj.asarray(rng.standard_normal((16, 4)).astype(np.float32))
    f = tj.jit(lambda a, b: F.relu(a @ b) * 2.0)
    plain = f(a, b)
    with tj.autocast(dtype=tj.bfloat16):
        low = f(a, b)
        eager_low = F.relu(a @ b) * 2.0
        with tj.autocast(enabled=False):
            off = f(a, b)
    with tj.autocast(dtype=tj.float16):
        half = f(a, b)
    dtypes = (plain.dtype, low.dtype, off.dtype, half.dtype)
    assert dtypes == (tj.float32, tj.bfloat16, tj.float32, tj.float16)
    np.testing.assert_array_equal(_bits(low), _bits(eager_low))
    np.testing.assert_array_equal(off.numpy(), plain.numpy())
    assert f.cache_info()["traces"] == 3           # off, bfloat16, float16; the disabled block reused "off"

    @tj.autocast(dtype=tj.bfloat16)
    def decorated(a, b):
        return a @ b

    assert decorated(a, b).dtype == tj.bfloat16
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        tj.autocast(dtype=tj.float32)
    with pytest.raises(ValueError, match="device_type"):
        tj.autocast("tpu")


@pytest.mark.parametrize("mode", ["bfloat16 parameters", "autocast"])
def test_jitted_training_step_equals_eager(mode, rng) -> None:
    xs = [rng.standard_normal((8, 6)).astype(np.float32)]
    ys = [rng.integers(0, 4, 8)]
    runs = {}
    for how in ("eager", "jit"):
        tj.manual_seed(2)
        model = tj.nn.Sequential(tj.nn.Linear(6, 16), tj.nn.ReLU(), tj.nn.Linear(16, 4))
        if mode == "bfloat16 parameters":
            model = model.to(tj.bfloat16)
        opt = tj.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def step(x, y, model=model, opt=opt):
            opt.zero_grad()
            if mode == "autocast":
                with tj.autocast(dtype=tj.bfloat16):
                    logits = model(x)
            else:
                logits = model(tj.astype(x, tj.bfloat16))
            loss = F.cross_entropy(tj.astype(logits, tj.float32), y)
            loss.backward()
            opt.step()
            return loss

        fn = tj.jit(step) if how == "jit" else step
        losses = [float(fn(tj.asarray(xs[0]), tj.asarray(ys[0]))) for _ in range(6)]
        runs[how] = losses, [np.asarray(p.numpy(), np.float32) for p in model.parameters()]
        assert all(p.dtype == (tj.bfloat16 if mode != "autocast" else tj.float32) for p in model.parameters())
        if how == "jit":
            assert fn.cache_info()["traces"] == 1
    (le, pe), (lj, pj) = runs["eager"], runs["jit"]
    assert le[-1] < le[0]
    np.testing.assert_allclose(lj, le, rtol=2e-2)
    for a, b in zip(pj, pe):        # bfloat16 rounding: summation order may move a value by an ulp
        np.testing.assert_allclose(a, b, rtol=2**-6, atol=2e-3)


def test_explain_prints_bfloat16_values() -> None:
    x = tj.astype(tj.asarray(np.ones((4, 4), np.float32)), tj.bfloat16)
    text = str(tj.jit(lambda a: a @ a + 1).explain(x))
    assert "bf16[4,4]" in text
