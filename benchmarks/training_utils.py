"""U1: a scheduled, clipped training step; U2: matmul in bfloat16 under autocast.

U1 is T1's MLP step (784-512-512-10, batch 256, AdamW) plus what real training loops add around
it: ``clip_grad_norm_(params, 1.0)`` before the update and a schedule that changes the learning
rate after every step (linear warm-up, then cosine: ``SequentialLR(LinearLR, CosineAnnealingLR)``).
Before timing, each implementation runs four steps from the same start; its losses must match
torch eager's.  The jitted step must keep one trace while the rate moves (the table says so).

U2 multiplies (1024, 1024) by (1024, 1024) float32 matrices under ``autocast(bfloat16)``:
operands rounded to bfloat16, float32 accumulation, a bfloat16 result; next to it the plain
float32 product.  Results are checked against the float64 product of the rounded operands.

Run ``python -m benchmarks --only U1,U2`` (opt-in keys).
"""
from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .harness import (
    JAX,
    NUMPY,
    TJ_EAGER,
    TJ_JIT,
    TORCH,
    TORCH_COMPILE,
    Config,
    Prepared,
    Result,
    Unavailable,
    framework,
    short_error,
    time_calls,
)
from .training import BATCH, BETAS, DIMS, EPS, LR, WEIGHT_DECAY, flops_per_step, make_problem
from .workloads import GFLOPS

KEYS = ("U1", "U2")
WARMUP_STEPS, T_MAX, MAX_NORM = 50, 500, 1.0
CHECK_STEPS, LOSS_RTOL = 4, 1e-4
MATMUL_N = 1024


# ---------------------------------------------------------------------------- U1

class _Step:
    """One framework's scheduled, clipped step: ``run()`` trains once and returns the loss."""

    def __init__(self, impl: str, params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> None:
        self.impl = impl
        if impl in (TORCH, TORCH_COMPILE):
            self._torch(params, x, y, compiled=impl == TORCH_COMPILE)
        elif impl in (TJ_EAGER, TJ_JIT):
            self._tracejit(params, x, y, jitted=impl == TJ_JIT)
        else:
            raise Unavailable("no optimizers, clipping or schedules to compare against")

    def _torch(self, params: list[np.ndarray], x: np.ndarray, y: np.ndarray, compiled: bool) -> None:
        torch = framework("torch")
        ws = [torch.tensor(p.T.copy() if p.ndim == 2 else p.copy(), requires_grad=True) for p in params]
        sched_mod = torch.optim.lr_scheduler
        opt = torch.optim.AdamW(ws, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
        sched = sched_mod.SequentialLR(opt, [sched_mod.LinearLR(opt, 0.1, total_iters=WARMUP_STEPS),
                                             sched_mod.CosineAnnealingLR(opt, T_MAX)], [WARMUP_STEPS])
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        F = torch.nn.functional

        def forward(x: Any) -> Any:
            h = x
            for i in range(0, len(ws), 2):
                h = F.linear(h, ws[i], ws[i + 1])
                if i + 2 < len(ws):
                    h = torch.relu(h)
            return h

        fwd = torch.compile(forward) if compiled else forward

        def run() -> Any:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(fwd(tx), ty)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ws, MAX_NORM)
            opt.step()
            sched.step()
            return loss.detach()

        self.run, self.value = run, lambda loss: float(loss.item())
        self.detail = lambda: ""

    def _tracejit(self, params: list[np.ndarray], x: np.ndarray, y: np.ndarray, jitted: bool) -> None:
        tj = framework("tracejit")
        ps = [tj.asarray(p.copy(), requires_grad=True) for p in params]
        S = tj.optim.lr_scheduler
        opt = tj.optim.AdamW(ps, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
        sched = S.SequentialLR(opt, [S.LinearLR(opt, 0.1, total_iters=WARMUP_STEPS),
                                     S.CosineAnnealingLR(opt, T_MAX)], [WARMUP_STEPS])
        F = tj.nn.functional
        tx, ty = tj.asarray(x), tj.asarray(y)

        def train_step(x: Any, y: Any) -> Any:
            opt.zero_grad()
            h = x
            for i in range(0, len(ps), 2):
                h = h @ ps[i] + ps[i + 1]
                if i + 2 < len(ps):
                    h = F.relu(h)
            loss = F.cross_entropy(h, y)
            loss.backward()
            tj.nn.utils.clip_grad_norm_(ps, MAX_NORM)
            opt.step()
            return loss

        fn = tj.jit(train_step) if jitted else train_step

        def run() -> Any:
            loss = fn(tx, ty)
            sched.step()
            return loss

        self.run, self.value = run, lambda loss: float(np.asarray(loss))
        self.detail = (lambda: f"{fn.cache_info()['traces']} trace(s), {sched.last_epoch} lr changes") \
            if jitted else (lambda: "")


def run_u1(cfg: Config, log: Callable[[str], None] | None = None) -> list[Result]:
    label = (f"U1 train step MLP {'-'.join(map(str, DIMS))} batch {BATCH}, AdamW + clip_grad_norm_ + "
             "warm-up/cosine schedule")
    params, x, y = make_problem()
    try:
        reference: list[float] | None = _torch_reference(params, x, y)
    except Unavailable:
        reference = None
    results = []
    for impl in (i for i in (TJ_EAGER, TJ_JIT, TORCH, TORCH_COMPILE, NUMPY, JAX) if i in cfg.impls):
        r = Result("U1", label, impl, "ok", GFLOPS, flops=flops_per_step())
        try:
            if cfg.device != "cpu":
                raise Unavailable("CPU only")
            st = _Step(impl, params, x, y)
            t0 = time.perf_counter()
            losses = [st.value(st.run()) for _ in range(CHECK_STEPS)]
            r.first_call_s = time.perf_counter() - t0
            if reference is None:
                raise Unavailable("torch, the reference, is not installed")
            if not np.allclose(losses, reference, rtol=LOSS_RTOL, atol=0):
                r.status, r.detail = "MISMATCH", f"losses {losses} != torch eager's {reference}"
            else:
                r.samples_s = time_calls(Prepared(st.run, np.asarray, lambda _: None), cfg)
                r.median_s = statistics.median(r.samples_s)
                r.detail = st.detail()
        except Unavailable as e:
            r.status = f"skipped: {e}"
        except Exception as e:
            r.status = f"error: {short_error(e)}"
        st = None
        gc.collect()
        results.append(r)
        if log:
            log(f"  {label}: {impl}: {r.status}")
    return results


def _torch_reference(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> list[float]:
    st = _Step(TORCH, params, x, y)
    return [st.value(st.run()) for _ in range(CHECK_STEPS)]


# ---------------------------------------------------------------------------- U2

def _matmul_impl(impl: str, a: np.ndarray, b: np.ndarray, reduced: bool) -> Callable[[], np.ndarray]:
    if impl == NUMPY:
        if reduced:
            raise Unavailable("NumPy has no bfloat16 matmul")
        return lambda: a @ b
    if impl in (TJ_EAGER, TJ_JIT):
        tj = framework("tracejit")
        ta, tb = tj.asarray(a), tj.asarray(b)
        f = tj.jit(lambda p, q: p @ q) if impl == TJ_JIT else (lambda p, q: p @ q)
        if not reduced:
            return lambda: f(ta, tb)

        def run_tj() -> Any:
            with tj.autocast(dtype=tj.bfloat16):
                return f(ta, tb)
        return run_tj
    if impl in (TORCH, TORCH_COMPILE):
        torch = framework("torch")
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        mm = torch.compile(lambda p, q: p @ q) if impl == TORCH_COMPILE else (lambda p, q: p @ q)
        if not reduced:
            return lambda: mm(ta, tb)

        def run_torch() -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return mm(ta, tb)
        return run_torch
    if impl == JAX:
        jax = framework("jax")
        jnp = jax.numpy
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        if not reduced:
            f32 = jax.jit(lambda p, q: p @ q)
            return lambda: f32(ja, jb).block_until_ready()
        bf = jax.jit(lambda p, q: jnp.matmul(p.astype(jnp.bfloat16), q.astype(jnp.bfloat16),
                                             preferred_element_type=jnp.float32).astype(jnp.bfloat16))
        return lambda: bf(ja, jb).block_until_ready()
    raise Unavailable(impl)


def _host(y: Any) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach()
        return y.float().numpy() if str(y.dtype) == "torch.bfloat16" else y.numpy()
    return np.asarray(np.asarray(y), np.float64)


def run_u2(cfg: Config, log: Callable[[str], None] | None = None) -> list[list[Result]]:
    import ml_dtypes
    n = MATMUL_N
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    groups = []
    for reduced in (False, True):
        if reduced:
            lo = ml_dtypes.bfloat16
            ref = a.astype(lo).astype(np.float64) @ b.astype(lo).astype(np.float64)
            rtol, atol, what = 2**-7, 1e-2, "autocast bfloat16 (float32 accumulation)"
        else:
            ref, rtol, atol, what = a.astype(np.float64) @ b.astype(np.float64), 1e-4, 1e-3, "float32"
        label = f"U2 matmul ({n},{n})@({n},{n}) {what}"
        group = []
        for impl in (i for i in (NUMPY, TJ_EAGER, TJ_JIT, TORCH, TORCH_COMPILE, JAX) if i in cfg.impls):
            r = Result("U2", label, impl, "ok", GFLOPS, flops=2 * n**3)
            try:
                if cfg.device != "cpu":
                    raise Unavailable("CPU only")
                fn = _matmul_impl(impl, a, b, reduced)
                t0 = time.perf_counter()
                out = _host(fn())
                r.first_call_s = time.perf_counter() - t0
                if not np.allclose(out, ref, rtol=rtol, atol=atol):
                    r.status = "MISMATCH"
                    r.detail = f"max |err| {np.abs(out - ref).max():.3g} (rtol {rtol:g}, atol {atol:g})"
                else:
                    r.samples_s = time_calls(Prepared(fn, np.asarray, lambda _: None), cfg)
                    r.median_s = statistics.median(r.samples_s)
            except Unavailable as e:
                r.status = f"skipped: {e}"
            except Exception as e:
                r.status = f"error: {short_error(e)}"
            gc.collect()
            group.append(r)
            if log:
                log(f"  {label}: {impl}: {r.status}")
        groups.append(group)
    return groups
