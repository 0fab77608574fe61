"""ATTN1: attention forward+backward; LSTM1: an LSTM training step (opt-in: ``--only ATTN1,LSTM1``).

ATTN1: ``softmax(q @ k.T / sqrt(d)) @ v`` at batch 8, heads 8, sequence 512, head dim 64, with the
gradients of ``sum(out * g)`` with respect to q, k and v.  Checked against a float64 NumPy
forward and hand-written backward; NumPy float32 runs the same formulas.

LSTM1: one training step of a single-layer LSTM (input and hidden 256) over a sequence of 64 at
batch 64: forward over the sequence, ``mean(out ** 2)``, backward, SGD (lr 0.1).  Checked
against torch in float64 (the loss and ``weight_hh_l0`` after the step).
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
    compare,
    framework,
    short_error,
    time_calls,
)
from .workloads import GFLOPS

ATTN_KEY, LSTM_KEY = "ATTN1", "LSTM1"
KEYS = (ATTN_KEY, LSTM_KEY)
ATTN_SHAPE = (8, 8, 512, 64)           # batch, heads, sequence, head dim
LSTM_SHAPE = (64, 64, 256)             # sequence, batch, hidden (= input size)
LR = 0.1
RTOL, ATOL = 1e-3, 1e-4
IMPLS = (NUMPY, TJ_EAGER, TJ_JIT, TORCH, TORCH_COMPILE, JAX)


# ------------------------------------------------------------------ S1 attention

def attention_problem(shape: tuple[int, ...] = ATTN_SHAPE, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]    # q, k, v, g


def numpy_attention_grads(q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray) -> list[np.ndarray]:
    """(dq, dk, dv) of ``sum(attention(q, k, v) * g)`` in the arrays' own dtype."""
    scale = 1.0 / np.sqrt(q.shape[-1])
    s = q @ np.swapaxes(k, -1, -2) * scale
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    dv = np.swapaxes(p, -1, -2) @ g
    dp = g @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return [ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, dv]


def attention_flops(shape: tuple[int, ...] = ATTN_SHAPE) -> int:
    b, h, n, d = shape
    return 6 * 2 * b * h * n * n * d          # 2 forward matmuls, 4 backward


def _attention_impl(impl: str, arrays: list[np.ndarray]) -> Prepared:
    if impl == NUMPY:
        return Prepared(lambda: numpy_attention_grads(*arrays), lambda r: r, lambda _: None)
    if impl in (TJ_EAGER, TJ_JIT):
        tj = framework("tracejit")
        q, k, v, g = (tj.asarray(a) for a in arrays)

        def loss(q: Any, k: Any, v: Any) -> Any:
            return (tj.nn.functional.scaled_dot_product_attention(q, k, v) * g).sum()
        fn = tj.grad(loss, argnums=(0, 1, 2))
        fn = tj.jit(fn) if impl == TJ_JIT else fn
        return Prepared(lambda: fn(q, k, v), lambda r: [x.numpy() for x in r], lambda _: None, fn)
    if impl in (TORCH, TORCH_COMPILE):
        torch = framework("torch")
        q, k, v = (torch.from_numpy(a.copy()).requires_grad_() for a in arrays[:3])
        g = torch.from_numpy(arrays[3])

        def forward(q: Any, k: Any, v: Any) -> Any:
            return (torch.nn.functional.scaled_dot_product_attention(q, k, v) * g).sum()
        fwd = torch.compile(forward, dynamic=False) if impl == TORCH_COMPILE else forward

        def run() -> list[Any]:
            for t in (q, k, v):
                t.grad = None
            fwd(q, k, v).backward()
            return [q.grad, k.grad, v.grad]
        return Prepared(run, lambda r: [x.numpy() for x in r], lambda _: None)
    if impl == JAX:
        jax = framework("jax")
        jnp = jax.numpy
        q, k, v, g = (jax.device_put(a) for a in arrays)

        def t(x: Any) -> Any:      # jax.nn.dot_product_attention takes (batch, seq, heads, dim)
            return jnp.swapaxes(x, 1, 2)

        def jloss(q: Any, k: Any, v: Any) -> Any:
            return (t(jax.nn.dot_product_attention(t(q), t(k), t(v))) * g).sum()
        fn = jax.jit(jax.grad(jloss, argnums=(0, 1, 2)))
        return Prepared(lambda: fn(q, k, v), lambda r: [np.asarray(x) for x in r],
                        lambda r: r[0].block_until_ready())
    raise ValueError(impl)


def run_attention(cfg: Config, log: Callable[[str], None] | None = None,
                  shape: tuple[int, ...] = ATTN_SHAPE) -> list[Result]:
    label = f"{ATTN_KEY} attention fwd+bwd b{shape[0]} h{shape[1]} seq {shape[2]} dim {shape[3]}"
    arrays = attention_problem(shape)
    ref = numpy_attention_grads(*(a.astype(np.float64) for a in arrays))
    results = []
    for impl in (i for i in IMPLS if i in cfg.impls):
        r = Result(ATTN_KEY, label, impl, "ok", GFLOPS, flops=attention_flops(shape))
        try:
            p = _attention_impl(impl, arrays)
            t0 = time.perf_counter()
            out = p.run()
            p.sync(out)
            r.first_call_s = time.perf_counter() - t0
            problems = [compare(np.asarray(a, np.float64), e, RTOL, ATOL)
                        for a, e in zip(p.to_numpy(out), ref)]
            problems = [f"d{n}: {m}" for n, m in zip("qkv", problems) if m]
            if problems:
                r.status, r.detail = "MISMATCH", "; ".join(problems)
            else:
                r.samples_s = time_calls(p, cfg)
                r.median_s = statistics.median(r.samples_s)
        except Unavailable as e:
            r.status = f"skipped: {e}"
        except Exception as e:
            r.status = f"error: {short_error(e)}"
        p = None
        gc.collect()
        results.append(r)
        if log:
            log(f"  {label}: {impl}: {r.status}")
    return results


# ------------------------------------------------------------------ LSTM1 LSTM training step

def lstm_problem(shape: tuple[int, ...] = LSTM_SHAPE, seed: int = 0
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """torch-layout LSTM parameters (uniform in ±1/sqrt(hidden), as torch) and an input (L, N, H)."""
    seq, batch, hidden = shape
    rng = np.random.default_rng(seed)
    b = 1 / np.sqrt(hidden)
    params = {name: rng.uniform(-b, b, s).astype(np.float32) for name, s in (
        ("weight_ih_l0", (4 * hidden, hidden)), ("weight_hh_l0", (4 * hidden, hidden)),
        ("bias_ih_l0", (4 * hidden,)), ("bias_hh_l0", (4 * hidden,)))}
    return params, rng.standard_normal((seq, batch, hidden), dtype=np.float32)


def lstm_flops(shape: tuple[int, ...] = LSTM_SHAPE) -> int:
    seq, batch, hidden = shape
    return 3 * 2 * 2 * seq * batch * hidden * 4 * hidden    # two projections, forward + 2x backward


class _TorchLSTM:
    def __init__(self, params: dict[str, np.ndarray], x: np.ndarray, compiled: bool,
                 dtype: Any = None) -> None:
        torch = self.torch = framework("torch")
        dtype = dtype or torch.float32
        hidden = x.shape[-1]
        self.model = torch.nn.LSTM(hidden, hidden).to(dtype)
        self.model.load_state_dict({k: torch.from_numpy(v).to(dtype) for k, v in params.items()})
        self.x = torch.from_numpy(x).to(dtype)
        self.fwd = torch.compile(self.model, dynamic=False) if compiled else self.model
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)

    def step(self) -> Any:
        self.opt.zero_grad(set_to_none=True)
        out, _ = self.fwd(self.x)
        loss = (out * out).mean()
        loss.backward()
        self.opt.step()
        return loss.detach()

    def weight_hh(self) -> np.ndarray:
        return self.model.weight_hh_l0.detach().double().numpy()


class _TracejitLSTM:
    def __init__(self, params: dict[str, np.ndarray], x: np.ndarray, jitted: bool) -> None:
        tj = framework("tracejit")
        hidden = x.shape[-1]
        self.model = tj.nn.LSTM(hidden, hidden)
        self.model.load_state_dict(params)
        self.x = tj.asarray(x)
        opt = tj.optim.SGD(self.model.parameters(), lr=LR)
        model = self.model

        def step(x: Any) -> Any:
            opt.zero_grad()
            out, _ = model(x)
            loss = (out * out).mean()
            loss.backward()
            opt.step()
            return loss
        self.fn = tj.jit(step) if jitted else step

    def step(self) -> Any:
        return self.fn(self.x)

    def weight_hh(self) -> np.ndarray:
        return self.model.weight_hh_l0.numpy().astype(np.float64)


class _JaxLSTM:
    def __init__(self, params: dict[str, np.ndarray], x: np.ndarray) -> None:
        jax = framework("jax")
        jnp, lax = jax.numpy, jax.lax
        self.p = {k: jax.device_put(v) for k, v in params.items()}
        self.x = jax.device_put(x)
        hidden = x.shape[-1]

        def loss_fn(p: dict[str, Any], x: Any) -> Any:
            xp = x @ p["weight_ih_l0"].T + p["bias_ih_l0"] + p["bias_hh_l0"]

            def cell(carry: Any, xt: Any) -> Any:
                h, c = carry
                z = xt + h @ p["weight_hh_l0"].T
                i, f, g, o = (z[:, j * hidden:(j + 1) * hidden] for j in range(4))
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), h
            zero = jnp.zeros((x.shape[1], hidden), x.dtype)
            _, out = lax.scan(cell, (zero, zero), xp)
            return (out * out).mean()

        @jax.jit
        def step(p: dict[str, Any], x: Any) -> Any:
            loss, grads = jax.value_and_grad(loss_fn)(p, x)
            return loss, {k: p[k] - LR * grads[k] for k in p}
        self.fn = step

    def step(self) -> Any:
        loss, self.p = self.fn(self.p, self.x)
        return loss

    def weight_hh(self) -> np.ndarray:
        return np.asarray(self.p["weight_hh_l0"], dtype=np.float64)


def _lstm_impl(impl: str, params: dict[str, np.ndarray], x: np.ndarray) -> Any:
    params, x = {k: v.copy() for k, v in params.items()}, x.copy()
    if impl == NUMPY:
        raise Unavailable("NumPy has no autograd (the recurrent backward is not hand-written here)")
    if impl in (TORCH, TORCH_COMPILE):
        return _TorchLSTM(params, x, compiled=impl == TORCH_COMPILE)
    if impl in (TJ_EAGER, TJ_JIT):
        return _TracejitLSTM(params, x, jitted=impl == TJ_JIT)
    if impl == JAX:
        return _JaxLSTM(params, x)
    raise ValueError(impl)


def run_lstm(cfg: Config, log: Callable[[str], None] | None = None,
             shape: tuple[int, ...] = LSTM_SHAPE) -> list[Result]:
    label = f"{LSTM_KEY} LSTM train step seq {shape[0]} batch {shape[1]} hidden {shape[2]}"
    params, x = lstm_problem(shape)
    torch = framework("torch")
    ref = _TorchLSTM(params, x, compiled=False, dtype=torch.float64)
    ref_loss = float(ref.step())
    ref_w = ref.weight_hh()
    results = []
    for impl in (i for i in IMPLS if i in cfg.impls):
        r = Result(LSTM_KEY, label, impl, "ok", GFLOPS, flops=lstm_flops(shape))
        tr = None
        try:
            tr = _lstm_impl(impl, params, x)
            t0 = time.perf_counter()
            loss = float(np.asarray(tr.step()))
            r.first_call_s = time.perf_counter() - t0
            problem = ""
            if not np.isclose(loss, ref_loss, rtol=1e-4, atol=0):
                problem = f"loss {loss!r} != expected {ref_loss!r}"
            else:
                problem = compare(tr.weight_hh(), ref_w, RTOL, ATOL)
                problem = f"weight_hh_l0 after one step: {problem}" if problem else ""
            if problem:
                r.status, r.detail = "MISMATCH", problem
            else:
                r.samples_s = time_calls(Prepared(tr.step, np.asarray, lambda loss: np.asarray(loss)), cfg)
                r.median_s = statistics.median(r.samples_s)
        except Unavailable as e:
            r.status = f"skipped: {e}"
        except Exception as e:
            r.status = f"error: {short_error(e)}"
        tr = None
        gc.collect()
        results.append(r)
        if log:
            log(f"  {label}: {impl}: {r.status}")
    return results


def run(key: str, cfg: Config, log: Callable[[str], None] | None = None) -> list[Result]:
    """Run ATTN1 or LSTM1 (the quick preset runs each at a quarter of its sequence length)."""
    quick = cfg.preset == "quick"
    if key == ATTN_KEY:
        b, h, n, d = ATTN_SHAPE
        return run_attention(cfg, log, (b, h, n // 4, d) if quick else ATTN_SHAPE)
    seq, batch, hidden = LSTM_SHAPE
    return run_lstm(cfg, log, (seq // 4, batch, hidden) if quick else LSTM_SHAPE)
