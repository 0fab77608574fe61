"""T2: one training step (forward, backward, AdamW) of a small transformer block.

The model is C2's ``gpt`` (``compile_scaling.py``): token and position embeddings, one causal
self-attention layer of 4 heads written with matmul and softmax, a GELU MLP, three LayerNorms and
a linear head; vocabulary 65, context 32, width 64, here at batch ``BATCH``. Every implementation
is built by the same step builders as C2's and starts from the same NumPy parameters and batch.

Before timing, each implementation's losses over its first ``CHECK_STEPS`` steps are checked
against torch eager in float64 (so the second and later losses also check the gradients and the
update), and tracejit lazy and jit against tracejit eager, more tightly: they run the same ops.
Without torch, tracejit eager is the reference.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import compile_scaling as c2
from .harness import (
    JAX,
    TJ_EAGER,
    TJ_JIT,
    TJ_LAZY,
    TORCH,
    TORCH_COMPILE,
    Config,
    Prepared,
    Result,
    Unavailable,
    framework,
    lazily,
    short_error,
    time_calls,
)
from .workloads import GFLOPS

KEY = "T2"
MODEL = "gpt"
BATCH = 32
CHECK_STEPS = 3
# float32 against the float64 reference, three steps in: the loss (4.65 to 4.32) agrees to within
# 1e-6, while a step that does not train misses it by 4%.
LOSS_RTOL = 1e-4
# tracejit lazy and jit against tracejit eager: the same float32 ops, possibly fused or reordered.
AGREE_RTOL = 1e-5
IMPLS = (TJ_EAGER, TJ_LAZY, TJ_JIT, TORCH, TORCH_COMPILE, JAX)
_TRACEJIT = (TJ_EAGER, TJ_LAZY, TJ_JIT)

Params = Mapping[str, np.ndarray]


def flops_per_step(batch: int = BATCH) -> int:
    """Forward matmuls (the attention ones dense, masked scores included) plus the two backward
    matmuls each; embeddings, softmax, LayerNorm and the optimizer ignored."""
    w, t, v = c2.WIDTH, c2.CONTEXT, c2.VOCAB
    per_token = 2 * w * (3 * w + w + 4 * w + 4 * w + v) + 2 * 2 * t * w
    return 3 * batch * t * per_token


def _no_sync(_: Any) -> None:
    pass


def _tracejit(impl: str, params: Params, x: np.ndarray, y: np.ndarray) -> Prepared:
    step, tj = c2.tracejit_step(MODEL, params)
    fn = tj.jit(step) if impl == TJ_JIT else lazily(tj, step) if impl == TJ_LAZY else step
    xt, yt = tj.asarray(x), tj.asarray(y)
    return Prepared(lambda: fn(xt, yt), np.asarray, _no_sync, fn)


def _torch(impl: str, params: Params, x: np.ndarray, y: np.ndarray) -> Prepared:
    step, torch = c2.torch_step(MODEL, params)
    fn = torch.compile(step) if impl == TORCH_COMPILE else step
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return Prepared(lambda: fn(xt, yt), lambda loss: loss.detach().numpy(), _no_sync, fn)


def _jax(params: Params, x: np.ndarray, y: np.ndarray) -> Prepared:
    jax = framework("jax")
    fn = jax.jit(c2.jax_step(MODEL))
    state = list(c2.jax_state(params))
    xj, yj = jax.device_put(x), jax.device_put(y)

    def run() -> Any:
        loss, *state[:] = fn(*state, xj, yj)  # the step is functional: carry (P, m, v, t) along
        return loss
    return Prepared(run, np.asarray, lambda loss: loss.block_until_ready(), fn)


def prepare(impl: str, params: Params, x: np.ndarray, y: np.ndarray) -> Prepared:
    """``impl``'s training step on private copies of ``params`` and the batch."""
    # A framework may wrap NumPy memory without copying and then train in place.
    params, x, y = {k: a.copy() for k, a in params.items()}, x.copy(), y.copy()
    if impl in _TRACEJIT:
        return _tracejit(impl, params, x, y)
    if impl in (TORCH, TORCH_COMPILE):
        return _torch(impl, params, x, y)
    if impl == JAX:
        return _jax(params, x, y)
    raise ValueError(impl)


def reference_losses(params: Params, x: np.ndarray, y: np.ndarray, steps: int = CHECK_STEPS) -> list[float]:
    """Losses of the first ``steps`` steps of torch eager in float64 (``Unavailable`` without torch)."""
    step, torch = c2.torch_step(MODEL, {k: a.astype(np.float64) for k, a in params.items()})
    xt, yt = torch.from_numpy(x.copy()), torch.from_numpy(y.copy())
    return [float(step(xt, yt).detach()) for _ in range(steps)]


def compare_losses(got: Sequence[float], want: Sequence[float], rtol: float, what: str) -> str:
    """Empty string when every loss matches, else the first step that does not."""
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if not np.isclose(g, w, rtol=rtol, atol=0):
            return f"loss at step {i + 1} is {g!r}, {what} has {w!r} (rtol {rtol:g})"
    return ""


def first_losses(p: Prepared, steps: int = CHECK_STEPS) -> tuple[list[float], float]:
    """The losses of ``p``'s first ``steps`` steps and the seconds its first step took."""
    losses, first_s = [], 0.0
    for i in range(steps):
        t0 = time.perf_counter()
        loss = p.run()
        p.sync(loss)
        if i == 0:
            first_s = time.perf_counter() - t0  # includes tracing and compiling for the JITs
        losses.append(float(p.to_numpy(loss)))
    return losses, first_s


def run(cfg: Config, log: Callable[[str], None] | None = None, batch: int = BATCH) -> list[Result]:
    """Check and time one training step per implementation (CPU)."""
    label = f"{KEY} train step transformer block (width {c2.WIDTH}, 4 heads, context {c2.CONTEXT}) " \
            f"batch {batch}"
    params, (x, y) = c2.problem(MODEL, batch)
    try:
        ref, ref_name = reference_losses(params, x, y), "torch eager float64"
    except Unavailable:
        ref, ref_name = None, TJ_EAGER
    eager: list[float] | None = None
    results = []
    for impl in (i for i in IMPLS if i in cfg.impls):
        r = Result(KEY, label, impl, "ok", GFLOPS, flops=flops_per_step(batch))
        p: Prepared | None = None
        try:
            p = prepare(impl, params, x, y)
            losses, r.first_call_s = first_losses(p)
            if impl == TJ_EAGER:
                eager = losses
                ref = ref or losses
            problem = compare_losses(losses, ref, LOSS_RTOL, ref_name) if ref else \
                f"no reference: neither torch nor {TJ_EAGER} ran"
            if not problem and impl in _TRACEJIT and eager is not None:
                problem = compare_losses(losses, eager, AGREE_RTOL, TJ_EAGER)
            if problem:
                r.status, r.detail = "MISMATCH", problem
            else:
                r.samples_s = time_calls(p, cfg)
                r.median_s = statistics.median(r.samples_s)
        except Unavailable as e:
            r.status = f"skipped: {e}"
        except Exception as e:
            r.status = f"error: {short_error(e)}"
        # The next implementation is timed with this one's model and optimizer state freed.
        p = None
        gc.collect()
        results.append(r)
        if log:
            log(f"  {label}: {impl}: {r.status}")
    return results
