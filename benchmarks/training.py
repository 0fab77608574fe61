"""T1: one training step (forward, backward, AdamW) of a 784-512-512-10 ReLU MLP at batch 256.

Every implementation starts from the same NumPy parameters and batch. Before timing, one step is
checked against a float64 NumPy reference: the loss and every parameter after the update.
A wrong gradient flips the sign of an Adam step, moving a weight by ~2*lr, far beyond ``ATOL``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .harness import (
    NUMPY,
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

KEY = "T1"
DIMS = (784, 512, 512, 10)
BATCH = 256
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.999), 1e-8, 1e-2
LOSS_RTOL = 1e-4
PARAM_RTOL, PARAM_ATOL = 1e-3, 1e-4
IMPLS = (NUMPY, TJ_EAGER, TJ_LAZY, TJ_JIT, TORCH, TORCH_COMPILE)


def make_problem(seed: int = 0, dims: Sequence[int] = DIMS, batch: int = BATCH
                 ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Parameters [W1, b1, W2, b2, W3, b3] with W stored (in, out), a batch x and labels y."""
    rng = np.random.default_rng(seed)
    params: list[np.ndarray] = []
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        bound = 1 / np.sqrt(d_in)  # torch.nn.Linear's default init range
        params.append(rng.uniform(-bound, bound, (d_in, d_out)).astype(np.float32))
        params.append(rng.uniform(-bound, bound, (d_out,)).astype(np.float32))
    x = rng.standard_normal((batch, dims[0]), dtype=np.float32)
    y = rng.integers(0, dims[-1], batch).astype(np.int64)
    return params, x, y


def flops_per_step() -> int:
    """Forward matmuls plus the two backward matmuls per layer (elementwise work ignored)."""
    return 3 * 2 * BATCH * sum(a * b for a, b in zip(DIMS[:-1], DIMS[1:], strict=True))


class Trainer:
    """One framework's model and optimizer: ``step()`` trains once and returns the loss."""

    def step(self) -> Any:
        raise NotImplementedError

    def params(self) -> list[np.ndarray]:
        raise NotImplementedError

    def loss_value(self, loss: Any) -> float:
        return float(np.asarray(loss))

    def sync(self, loss: Any) -> None:
        pass


class NumpyTrainer(Trainer):
    """Hand-written backward pass and AdamW (torch's formulation); float64 makes it the reference."""

    def __init__(self, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, dtype: Any) -> None:
        self.p = [a.astype(dtype) for a in params]
        self.m = [np.zeros_like(a) for a in self.p]
        self.v = [np.zeros_like(a) for a in self.p]
        self.x, self.y, self.t = x.astype(dtype), y, 0

    def step(self) -> Any:
        x, y, p = self.x, self.y, self.p
        acts, pre = [x], []
        for i in range(0, len(p), 2):
            z = acts[-1] @ p[i] + p[i + 1]
            pre.append(z)
            acts.append(np.maximum(z, 0) if i + 2 < len(p) else z)
        logits = acts[-1]
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -logp[np.arange(len(y)), y].mean()
        dz = np.exp(logp)
        dz[np.arange(len(y)), y] -= 1
        dz /= len(y)
        grads: list[np.ndarray] = [np.empty(0)] * len(p)
        for layer in reversed(range(len(p) // 2)):
            grads[2 * layer] = acts[layer].T @ dz
            grads[2 * layer + 1] = dz.sum(axis=0)
            if layer:
                dz = (dz @ p[2 * layer].T) * (pre[layer - 1] > 0)
        self.t += 1
        b1, b2 = BETAS
        for i, g in enumerate(grads):
            p[i] *= 1 - LR * WEIGHT_DECAY
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            m_hat = self.m[i] / (1 - b1**self.t)
            v_hat = self.v[i] / (1 - b2**self.t)
            p[i] -= LR * m_hat / (np.sqrt(v_hat) + EPS)
        return loss

    def params(self) -> list[np.ndarray]:
        return self.p


class TorchTrainer(Trainer):
    """``torch.nn`` MLP with ``torch.optim.AdamW``; compiled means the model (forward and backward)
    goes through ``torch.compile`` while the optimizer step stays eager."""

    def __init__(self, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, compiled: bool,
                 device: str = "cpu") -> None:
        torch = self.torch = framework("torch")
        if device != "cpu" and not torch.cuda.is_available():
            raise Unavailable("torch has no CUDA device here")
        nn = torch.nn
        layers: list[Any] = []
        for i in range(0, len(params), 2):
            lin = nn.Linear(*params[i].shape)
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(params[i].T.copy()))  # torch stores (out, in)
                lin.bias.copy_(torch.from_numpy(params[i + 1]))
            layers += [lin, nn.ReLU()]
        self.linears = layers[0::2]
        self.model = nn.Sequential(*layers[:-1]).to(device)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=BETAS, eps=EPS,
                                     weight_decay=WEIGHT_DECAY)
        self.x, self.y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.on_gpu = device != "cpu"

    def step(self) -> Any:
        self.opt.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.cross_entropy(self.forward(self.x), self.y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def params(self) -> list[np.ndarray]:
        out = []
        for lin in self.linears:
            out += [lin.weight.detach().cpu().numpy().T, lin.bias.detach().cpu().numpy()]
        return out

    def loss_value(self, loss: Any) -> float:
        return float(loss.item())

    def sync(self, loss: Any) -> None:
        if self.on_gpu:
            self.torch.cuda.synchronize()


class TracejitTrainer(Trainer):
    """Tensors with ``requires_grad`` and ``tj.optim.AdamW``; the jitted variant wraps the very
    same step function in ``tj.jit``, the lazy one runs it inside ``tj.lazy()``. Parameters are
    captured, not passed: under ``jit`` an argument becomes a tracer, while captured eager tensors
    are what the optimizer updates."""

    def __init__(self, params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, jitted: bool,
                 device: str = "cpu", lazy: bool = False) -> None:
        tj = self.tj = framework("tracejit")
        for needed in ("nn", "optim"):
            if not hasattr(tj, needed):
                raise Unavailable(f"tj.{needed} not available yet")
        if not hasattr(tj.optim, "AdamW"):
            raise Unavailable("tj.optim.AdamW not available yet")
        F = tj.nn.functional
        if device != "cpu" and not tj.cuda.is_available():
            raise Unavailable(f"tracejit has no CUDA device here: {tj.cuda.unavailable_reason()}")
        self.on_gpu = device != "cpu"
        self.p = [tj.asarray(a, requires_grad=True, device=device) for a in params]
        opt = tj.optim.AdamW(self.p, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
        self.x, self.y = tj.asarray(x, device=device), tj.asarray(y, device=device)

        params_ = self.p

        def train_step(x: Any, y: Any) -> Any:
            opt.zero_grad()
            h = x
            for i in range(0, len(params_), 2):
                h = h @ params_[i] + params_[i + 1]
                if i + 2 < len(params_):
                    h = F.relu(h)
            loss = F.cross_entropy(h, y)
            loss.backward()
            opt.step()
            return loss

        self.fn: Callable[..., Any] = tj.jit(train_step) if jitted else \
            lazily(tj, train_step) if lazy else train_step

    def step(self) -> Any:
        return self.fn(self.x, self.y)

    def params(self) -> list[np.ndarray]:
        return [np.asarray(t.detach().to("cpu")) for t in self.p]

    def loss_value(self, loss: Any) -> float:
        return float(np.asarray(loss.to("cpu")))

    def sync(self, loss: Any) -> None:
        if self.on_gpu:
            self.tj.cuda.synchronize()


def make_trainer(impl: str, params: list[np.ndarray], x: np.ndarray, y: np.ndarray,
                 device: str = "cpu") -> Trainer:
    # Private copies: a framework may wrap NumPy memory without copying and then train in place.
    params, x, y = [p.copy() for p in params], x.copy(), y.copy()
    if impl == NUMPY:
        if device != "cpu":
            raise Unavailable("NumPy runs on the CPU only")
        return NumpyTrainer(params, x, y, np.float32)
    if impl in (TORCH, TORCH_COMPILE):
        return TorchTrainer(params, x, y, compiled=impl == TORCH_COMPILE, device=device)
    if impl in (TJ_EAGER, TJ_JIT, TJ_LAZY):
        return TracejitTrainer(params, x, y, jitted=impl == TJ_JIT, device=device, lazy=impl == TJ_LAZY)
    raise ValueError(impl)


def check_step(tr: Trainer, ref_loss: float, ref_params: Sequence[np.ndarray]) -> tuple[str, float]:
    """Run one step; return (problem or "", seconds the step took)."""
    t0 = time.perf_counter()
    loss = tr.step()
    tr.sync(loss)
    seconds = time.perf_counter() - t0
    got = tr.loss_value(loss)
    if not np.isclose(got, ref_loss, rtol=LOSS_RTOL, atol=0):
        return f"loss {got!r} != expected {ref_loss!r} (rtol {LOSS_RTOL:g})", seconds
    for i, (a, b) in enumerate(zip(tr.params(), ref_params, strict=True)):
        if a.shape != b.shape or not np.allclose(a, b, rtol=PARAM_RTOL, atol=PARAM_ATOL):
            err = np.abs(a - b).max() if a.shape == b.shape else f"shape {a.shape} vs {b.shape}"
            return (f"parameter {i} after one AdamW step differs (max |err| {err}, "
                    f"rtol {PARAM_RTOL:g} atol {PARAM_ATOL:g})"), seconds
    return "", seconds


def run(cfg: Config, log: Callable[[str], None] | None = None) -> list[Result]:
    """Check and time one training step per implementation on ``cfg.device``."""
    label = f"{KEY} train step MLP {'-'.join(map(str, DIMS))} batch {BATCH}"
    params, x, y = make_problem()
    ref = NumpyTrainer(params, x, y, np.float64)
    ref_loss = float(ref.step())
    ref_params = [a.astype(np.float32) for a in ref.params()]
    results = []
    for impl in (i for i in IMPLS if i in cfg.impls):
        r = Result(KEY, label, impl, "ok", GFLOPS, flops=flops_per_step())
        try:
            tr = make_trainer(impl, params, x, y, cfg.device)
            problem, r.first_call_s = check_step(tr, ref_loss, ref_params)
            if problem:
                r.status, r.detail = "MISMATCH", problem
            else:
                r.samples_s = time_calls(Prepared(tr.step, np.asarray, tr.sync), cfg)
                r.median_s = statistics.median(r.samples_s)
        except Unavailable as e:
            r.status = f"skipped: {e}"
        except Exception as e:
            r.status = f"error: {short_error(e)}"
        # The next implementation is timed with this one's model, tape and optimizer state freed
        # (reference cycles included: collection is off while timing).
        tr = None
        gc.collect()
        results.append(r)
        if log:
            log(f"  {label}: {impl}: {r.status}")
    return results
