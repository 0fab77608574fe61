"""``tj.custom_op``: a new primitive in the op table, usable eagerly, under ``jit`` and in autograd.

Two kinds:

* **fused** (``lower=`` given): elementwise; operands are promoted and broadcast to one dtype
  and shape like any elementwise function, the result has that shape and dtype; the scalar
  lowering (written with :mod:`tracejit.scalar_expr`) is inlined into the fused kernels;
* **opaque** (no ``lower``): a host step running ``impl`` (a NumPy function) or ``c_function``
  (a ctypes function pointer) on the CPU; under ``jit`` it is an extern step of the program.
  With ``ptx=`` (a kernel's PTX source) it runs on a GPU as that kernel instead of on copies
  of its operands on the host.

Either way the op is one :class:`tracejit.ops.Prim` in ``tracejit.ops.PRIMS``, as every built-in
op is, so tracing, the passes, fusion, autograd and ``explain`` treat it as one of theirs.  Its
implementation's results are checked against its shape/dtype rule on every run (eager and
compiled), so a rule that disagrees with the implementation is an error naming both, never a
silently broadcast or reinterpreted result.
"""
from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from . import ops, prims, scalar_expr
from . import scalar_expr as scalar  # noqa: F401  (tj.custom_ops.scalar: the lowering's functions)
from .errors import TracejitError
from .ops import PRIMS, AVal, Prim
from .tensors import Tensor
from .tracing import grad_enabled

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class CustomOpError(TracejitError):
    """A custom op's definition, rule, implementation or gradient is inconsistent."""


def _as_aval(result: Any, op: str) -> AVal:
    try:
        shape, dtype = result
        return AVal(tuple(int(n) for n in shape), np.dtype(dtype))
    except (TypeError, ValueError) as e:
        raise CustomOpError(f"custom op {op!r}: its rule must return (shape, dtype), got {result!r}") from e


class CustomOp:
    """A registered custom op: call it on tensors (and keyword parameters) like any tj function."""

    def __init__(self, name: str, prim: Prim, fused: bool, n_inputs: int | None,
                 ptx_kernel: Any = None) -> None:
        self.name, self.prim, self.fused, self.n_inputs = name, prim, fused, n_inputs
        self.ptx_kernel = ptx_kernel        # runtime.cuda_user.UserPtxKernel, or None
        self.__name__ = name
        self.__doc__ = prim.doc

    def __repr__(self) -> str:
        kind = "fused" if self.fused else "opaque, PTX kernel" if self.ptx_kernel else "opaque"
        return f"<tj.custom_op {self.name!r} ({kind})>"

    def __call__(self, *args: Any, **params: Any) -> Tensor:
        if self.n_inputs is not None and len(args) != self.n_inputs:
            raise TypeError(f"custom op {self.name!r} takes {self.n_inputs} operands, got {len(args)}")
        if params and self.ptx_kernel is not None:
            raise TypeError(f"custom op {self.name!r} has a PTX kernel, which takes no parameters; "
                            f"got {sorted(params)}")
        for k, v in params.items():
            try:
                hash(v)
            except TypeError:
                raise TypeError(f"custom op {self.name!r}: parameter {k}={v!r} must be hashable "
                                "(parameters are part of the program; pass arrays as operands)") from None
        from .api._convert import as_tensor, operands
        if self.fused:
            tensors = operands(self.name, *args)
        else:
            tensors = [a if isinstance(a, Tensor) else as_tensor(a) for a in args]
        if self.prim.vjp is None and grad_enabled() and any(t.requires_grad for t in tensors):
            # (without a VJP the tape would skip the op, and gradients would silently stop here)
            raise CustomOpError(f"custom op {self.name!r} has no vjp, so it is not differentiable, but an "
                                "operand requires grad: give custom_op(..., vjp=...), or call it under "
                                "tj.no_grad() or on x.detach()")
        return prims.bind(self.name, *tensors, **params)

    def verify(self, *examples: Any, rtol: float = 1e-5, atol: float = 1e-6, eps: float = 1e-6,
               **params: Any) -> None:
        """Check the op's parts against each other on example operands (small arrays): the
        compiled op (its lowering, or its host step) against ``impl``, and the ``vjp`` against
        central differences of ``impl`` in float64.  Raises :class:`CustomOpError` on a mismatch."""
        from .jit import jit
        from .transforms import vjp as tj_vjp
        xs = [np.asarray(e) for e in examples]
        if self.fused:      # the primitive's operands: promoted and broadcast
            from .api._convert import operands
            xs = [np.array(t) for t in operands(self.name, *[Tensor._from_array(x) for x in xs])]
        eager = np.asarray(self(*[Tensor._from_array(x) for x in xs], **params))
        compiled = np.asarray(jit(lambda *ts: self(*ts, **params))(*[Tensor._from_array(x) for x in xs]))
        _compare(self.name, "compiled", compiled, "impl", eager, rtol, atol)
        if self.prim.vjp is None:
            return
        x64 = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in xs]
        out, pullback = tj_vjp(lambda *ts: self(*ts, **params), *[Tensor._from_array(x) for x in x64])
        g = np.random.default_rng(0).standard_normal(np.shape(out))
        grads = pullback(Tensor._from_array(g))
        for i, (x, gr) in enumerate(zip(x64, grads)):
            if x.dtype.kind != "f":
                continue
            numeric = np.zeros_like(x)
            for j in np.ndindex(x.shape):
                hi, lo = x.copy(), x.copy()
                hi[j] += eps
                lo[j] -= eps
                f_hi = self.prim.impl(*x64[:i], hi, *x64[i + 1:], **params)
                f_lo = self.prim.impl(*x64[:i], lo, *x64[i + 1:], **params)
                numeric[j] = ((f_hi - f_lo) * g).sum() / (2 * eps)
            _compare(self.name, f"vjp's gradient {i}", np.asarray(gr), "central differences", numeric,
                     max(rtol, 1e-4), max(atol, 1e-6))


def _compare(name: str, what: str, got: np.ndarray, ref_name: str, ref: np.ndarray, rtol: float,
             atol: float) -> None:
    if got.shape != ref.shape or not np.allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True):
        diff = np.max(np.abs(got.astype(np.float64) - ref)) if got.shape == ref.shape else "shape"
        raise CustomOpError(f"custom op {name!r}: {what} disagrees with {ref_name} "
                            f"(max abs difference {diff}; got {got.reshape(-1)[:4]}..., "
                            f"expected {ref.reshape(-1)[:4]}...)")


def custom_op(name: str, impl: Callable[..., Any] | None = None, *,
              rule: Callable[..., Any] | None = None,
              lower: Callable[..., Any] | None = None,
              vjp: Callable[..., Any] | None = None,
              c_function: Any = None,
              ptx: str | None = None,
              ptx_entry: str | None = None,
              n_inputs: int | None = None,
              doc: str = "") -> CustomOp:
    """Register a primitive op ``name`` and return the function that applies it.

    * ``impl(*arrays, **params) -> ndarray``: the NumPy reference (eager mode; opaque ops'
      host step under jit).  Its result must match ``rule`` in shape and dtype.
    * ``rule(*avals, **params) -> (shape, dtype)``: the shape/dtype rule (each aval has ``.shape``
      and ``.dtype``); raise ``TypeError``/``ValueError`` for operands the op does not take.
      Default: the first operand's shape and dtype.  A fused op's result always has its
      operands' common shape and dtype; its rule may only check them.
    * ``lower(*scalars, **params) -> Scalar``: the scalar lowering (see
      :mod:`tracejit.scalar_expr`); makes the op elementwise and fusable.
    * ``vjp(g, out, *inputs, **params) -> tuple``: one gradient (or None) per input, written
      with tj functions (so it traces and fuses under jit).  Without it the op is not
      differentiable.
    * ``c_function``: instead of ``impl``, a ctypes function ``void f(const T *in0, int64_t n0,
      ..., T *out, int64_t n_out)`` on C-contiguous operands (sizes in elements).
    * ``ptx``: for an opaque op, the PTX source of a GPU kernel computing it; on a GPU (eagerly
      and under ``jit``) the op launches it instead of running on the host.  Its entry, named
      ``ptx_entry`` (default ``name``), takes a pointer and an element count per operand, every
      parameter 64-bit: ``.entry NAME(.param .u64 in0, .param .u64 n0, ..., .param .u64 out,
      .param .u64 n_out)``; operands are dense (C-contiguous), the output is allocated by its
      rule, and the launch is a 1-D grid of ``ceil(n_out / 256)`` blocks of 256 threads (check
      the index against ``n_out``).  The kernel takes no parameters; its number of operands is
      ``n_inputs`` (default: what the entry's parameters give).  The entry and its parameters are
      checked here (:class:`CustomOpError` naming the op); ``impl`` remains the op on the CPU.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"custom_op: name must be an identifier, got {name!r}")
    if name in PRIMS:
        raise ValueError(f"custom_op: an op named {name!r} already exists; pick another name")
    if (impl is None) == (c_function is None):
        raise TypeError(f"custom_op {name!r}: give exactly one of impl (a NumPy function) and c_function")
    if lower is not None and c_function is not None:
        raise TypeError(f"custom_op {name!r}: a fused op (lower=) takes a NumPy impl, not c_function")
    if lower is not None and ptx is not None:
        raise TypeError(f"custom_op {name!r}: a fused op (lower=) is compiled into kernels; ptx= is for "
                        "opaque ops")
    for what, fn in (("impl", impl), ("rule", rule), ("lower", lower), ("vjp", vjp)):
        if fn is not None and not callable(fn):
            raise TypeError(f"custom_op {name!r}: {what} must be callable, got {type(fn).__name__}")
    fused = lower is not None
    ptx_kernel = _ptx_kernel(name, ptx, ptx_entry or name, n_inputs) if ptx is not None else None
    if ptx_kernel is not None:
        n_inputs = ptx_kernel.n_inputs
    infer = _infer(name, rule, fused)
    run = _c_impl(name, c_function, infer) if c_function is not None else impl
    prim = Prim(name, "elementwise" if fused else "host", infer, _checked_impl(name, run, infer),
                _lowering(name, lower) if fused else None,
                _checked_vjp(name, vjp) if vjp is not None else None,
                doc or (getattr(impl, "__doc__", None) or ""))
    ops._register(prim)
    if not fused:
        from runtime import cpu
        cpu.register_extern(name, prim.impl)
    if ptx_kernel is not None:
        from runtime import cuda_user
        cuda_user.register(ptx_kernel)
    return CustomOp(name, prim, fused, n_inputs, ptx_kernel)


def _ptx_kernel(name: str, ptx: str, entry: str, n_inputs: int | None) -> Any:
    """The op's PTX checked against the kernel convention (before anything is registered)."""
    from runtime import cuda_user
    try:
        return cuda_user.check(name, ptx, entry, n_inputs)
    except (TypeError, ValueError) as e:
        raise CustomOpError(f"custom op {name!r}: {e}") from None


def _infer(name: str, rule: Callable[..., Any] | None, fused: bool) -> Callable[..., AVal]:
    def infer(*avals: AVal, **params: Any) -> AVal:
        if not avals:
            raise TypeError(f"custom op {name!r} needs at least one operand")
        if fused:
            ops._same(name, *avals)
        if rule is None:
            return avals[0]
        out = _as_aval(rule(*avals, **params), name)
        if fused and out != avals[0]:
            raise CustomOpError(f"custom op {name!r} is fused (has a lowering), so its result has its "
                                f"operands' shape and dtype {avals[0]}; its rule says {out}")
        return out
    return infer


def _checked_impl(name: str, impl: Callable[..., Any],
                  infer: Callable[..., AVal]) -> Callable[..., np.ndarray]:
    def run(*arrays: np.ndarray, **params: Any) -> np.ndarray:
        want = infer(*(AVal(np.shape(a), np.asarray(a).dtype) for a in arrays), **params)
        got = np.asarray(impl(*arrays, **params))
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CustomOpError(
                f"custom op {name!r}: its implementation returned {got.dtype.name}{list(got.shape)} "
                f"but its rule says {want.dtype.name}{list(want.shape)} for operands "
                f"{', '.join(f'{np.asarray(a).dtype.name}{list(np.shape(a))}' for a in arrays)}")
        return got
    return run


def _lowering(name: str, lower: Callable[..., Any]) -> Callable[..., Any]:
    def lowered(args: list, dtype: str, **params: Any) -> Any:
        try:
            result = lower(*(scalar_expr.Scalar(a, dtype) for a in args), **params)
            return scalar_expr.unwrap(result, dtype, name)
        except TypeError as e:      # the user's lowering, not the compiler: say so
            raise CustomOpError(f"custom op {name!r}: its scalar lowering failed for {dtype}: {e}") from e
    return lowered


def _checked_vjp(name: str, vjp: Callable[..., Any]) -> Callable[..., tuple]:
    def checked(g: Tensor, out: Tensor, *inputs: Tensor, **params: Any) -> tuple:
        grads = vjp(g, out, *inputs, **params)
        if not isinstance(grads, (tuple, list)):
            grads = (grads,)
        if len(grads) != len(inputs):
            raise CustomOpError(f"custom op {name!r}: its vjp returned {len(grads)} gradients for "
                                f"{len(inputs)} inputs")
        result = []
        for i, (gr, x) in enumerate(zip(grads, inputs)):
            if gr is not None:
                if not isinstance(gr, Tensor):
                    raise CustomOpError(f"custom op {name!r}: its vjp's gradient {i} is a "
                                        f"{type(gr).__name__}, not a tensor")
                if gr.shape != x.shape:
                    raise CustomOpError(f"custom op {name!r}: its vjp's gradient {i} has shape "
                                        f"{gr.shape}, input {i} has shape {x.shape}")
                if gr.dtype != x.dtype:
                    gr = prims.cast(gr, dtype=x.dtype)
            result.append(gr)
        return tuple(result)
    return checked


def _c_impl(name: str, fn: Any, infer: Callable[..., AVal]) -> Callable[..., np.ndarray]:
    if not callable(fn):
        raise TypeError(f"custom_op {name!r}: c_function must be a ctypes function, got {type(fn).__name__}")
    fn.restype = None

    def run(*arrays: np.ndarray, **params: Any) -> np.ndarray:
        if params:
            raise TypeError(f"custom op {name!r}: a C function takes no parameters, got {sorted(params)}")
        ins = [np.ascontiguousarray(a) for a in arrays]
        want = infer(*(AVal(a.shape, a.dtype) for a in ins))
        out = np.empty(want.shape, want.dtype)
        call: list[Any] = []
        for a in ins:
            call += [ctypes.c_void_p(a.ctypes.data), ctypes.c_int64(a.size)]
        call += [ctypes.c_void_p(out.ctypes.data), ctypes.c_int64(out.size)]
        fn(*call)
        return out
    return run


__all__ = ["custom_op", "CustomOp", "CustomOpError", "scalar"]
