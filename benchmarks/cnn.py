"""CNN1/CNN2: convolutional training steps, tracejit (eager, jit) next to torch eager and torch.compile.

* CNN1: a LeNet-5 step (conv 1->6 5x5 pad 2, relu, max pool, conv 6->16 5x5, relu, max pool,
  400-120-84-10, cross-entropy, SGD with momentum) on a batch of 256 28x28 images;
* CNN2: a ResNet basic block (conv 3x3 - batch norm - relu - conv 3x3 - batch norm, plus the
  input, relu; batch norm in training mode) forward and backward on (16, 32, 16, 16).

Every implementation starts from the same weights (torch's init, loaded into tracejit through
``load_state_dict``) and input. Before timing, one step is checked against torch eager: the
loss and every parameter after the SGD step (CNN1), the loss and every gradient (CNN2).

Run with ``python -m benchmarks --only CNN1,CNN2`` (opt-in) or ``python -m benchmarks.cnn``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .harness import (
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
from .workloads import GFLOPS

KEYS = ("CNN1", "CNN2")
IMPLS = (TJ_EAGER, TJ_JIT, TORCH, TORCH_COMPILE)
LENET_BATCH, LR, MOMENTUM = 256, 0.05, 0.9
BLOCK_SHAPE = (16, 32, 16, 16)
RTOL, ATOL = 1e-3, 1e-4


def _conv_flops(n: int, c_in: int, c_out: int, k: int, out_hw: int) -> int:
    return 2 * n * c_out * out_hw * out_hw * c_in * k * k


def lenet_flops() -> int:
    """Forward conv and linear multiply-adds, times 3 for the backward (elementwise ignored)."""
    n = LENET_BATCH
    fwd = (_conv_flops(n, 1, 6, 5, 28) + _conv_flops(n, 6, 16, 5, 10)
           + 2 * n * (400 * 120 + 120 * 84 + 84 * 10))
    return 3 * fwd


def block_flops() -> int:
    n, c, h, _ = BLOCK_SHAPE
    return 3 * 2 * _conv_flops(n, c, c, 3, h)


def _torch_lenet(torch: Any) -> Any:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def _tj_lenet(tj: Any) -> Any:
    nn = tj.nn
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def _block(nn: Any, channels: int) -> Any:
    """The same basic block in either framework (they share these names)."""

    class BasicBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.relu = nn.ReLU()

        def forward(self, x: Any) -> Any:
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + x)

    return BasicBlock()


class Problem:
    """The torch reference model, its state and the input, shared by every implementation."""

    def __init__(self, key: str) -> None:
        torch = framework("torch")
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        self.key = key
        if key == "CNN1":
            self.model = _torch_lenet(torch)
            self.x = rng.standard_normal((LENET_BATCH, 1, 28, 28)).astype(np.float32)
            self.y = rng.integers(0, 10, LENET_BATCH).astype(np.int64)
        else:
            self.model = _block(torch.nn, BLOCK_SHAPE[1])
            self.x = rng.standard_normal(BLOCK_SHAPE).astype(np.float32)
            self.y = None
        self.state = {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}


class Runner:
    """One implementation: ``step()`` runs the timed work and returns the loss; ``check()`` gives
    what one step must agree on (loss and, per parameter name, the parameter or its gradient)."""

    def __init__(self, impl: str, prob: Problem) -> None:
        self.key = prob.key
        if impl in (TORCH, TORCH_COMPILE):
            self._torch(prob, impl == TORCH_COMPILE)
        else:
            self._tracejit(prob, impl == TJ_JIT)

    def _torch(self, prob: Problem, compiled: bool) -> None:
        torch = framework("torch")
        model = _torch_lenet(torch) if self.key == "CNN1" else _block(torch.nn, BLOCK_SHAPE[1])
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in prob.state.items()})
        fwd = torch.compile(model) if compiled else model
        x = torch.from_numpy(prob.x.copy())
        if self.key == "CNN1":
            y = torch.from_numpy(prob.y.copy())
            opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

            def step() -> Any:
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(fwd(x), y)
                loss.backward()
                opt.step()
                return loss.detach()
        else:
            def step() -> Any:
                model.zero_grad(set_to_none=True)
                loss = fwd(x).mean()
                loss.backward()
                return loss.detach()
        self.step, self.model = step, model

    def _tracejit(self, prob: Problem, jitted: bool) -> None:
        tj = framework("tracejit")
        if not hasattr(tj.nn, "Conv2d"):
            raise Unavailable("tj.nn.Conv2d not available")
        model = _tj_lenet(tj) if self.key == "CNN1" else _block(tj.nn, BLOCK_SHAPE[1])
        model.load_state_dict(prob.state)
        x = tj.asarray(prob.x.copy())
        if self.key == "CNN1":
            y = tj.asarray(prob.y.copy())
            opt = tj.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)

            def step(x: Any, y: Any) -> Any:
                opt.zero_grad()
                loss = tj.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                return loss
            fn = tj.jit(step) if jitted else step
            self.step = lambda: fn(x, y)
        else:
            def fwd_bwd(x: Any) -> Any:
                model.zero_grad()
                loss = tj.mean(model(x))
                loss.backward()
                return loss
            fn = tj.jit(fwd_bwd) if jitted else fwd_bwd
            self.step = lambda: fn(x)
        self.model = model

    def outcome(self, loss: Any) -> dict[str, np.ndarray]:
        """The loss and, per parameter, its value (CNN1, after the update) or gradient (CNN2)."""
        out = {"loss": np.asarray(float(loss))}
        for name, p in self.model.named_parameters():
            t = p if self.key == "CNN1" else p.grad
            out[name] = t.detach().numpy() if hasattr(t, "detach") else np.asarray(t)
        return out


def _mismatch(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> str:
    for name, ref in want.items():
        a = got.get(name)
        if a is None or a.shape != ref.shape or not np.allclose(a, ref, rtol=RTOL, atol=ATOL):
            err = np.abs(a - ref).max() if a is not None and a.shape == ref.shape else "shape"
            return f"{name} differs from torch eager's (max |err| {err}, rtol {RTOL:g} atol {ATOL:g})"
    return ""


def label(key: str) -> str:
    if key == "CNN1":
        return f"CNN1 train step LeNet-5 28x28 batch {LENET_BATCH} (SGD momentum)"
    return f"CNN2 ResNet basic block fwd+bwd {'x'.join(map(str, BLOCK_SHAPE))} (batch norm training)"


def run(cfg: Config, key: str, log: Callable[[str], None] | None = None) -> list[Result]:
    """Check each implementation's first step against torch eager's, then time its steps."""
    prob = Problem(key)
    ref = Runner(TORCH, prob)
    want = ref.outcome(ref.step())
    flops = lenet_flops() if key == "CNN1" else block_flops()
    results = []
    for impl in (i for i in IMPLS if i in cfg.impls):
        r = Result(key, label(key), impl, "ok", GFLOPS, flops=flops)
        runner = None
        try:
            runner = Runner(impl, prob)
            t0 = time.perf_counter()
            loss = runner.step()
            r.first_call_s = time.perf_counter() - t0
            problem = _mismatch(runner.outcome(loss), want)
            if problem:
                r.status, r.detail = "MISMATCH", problem
            else:
                r.samples_s = time_calls(Prepared(runner.step, np.asarray, lambda _: None), cfg)
                r.median_s = statistics.median(r.samples_s)
        except Unavailable as e:
            r.status = f"skipped: {e}"
        except Exception as e:
            r.status = f"error: {short_error(e)}"
        runner = None
        gc.collect()
        results.append(r)
        if log:
            log(f"  {r.label}: {impl}: {r.status}")
    return results


def main() -> None:
    import argparse

    from .harness import render_group
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="CNN1,CNN2")
    args = ap.parse_args()
    cfg = Config.for_args(args.quick, "cpu")
    for key in args.only.split(","):
        print(render_group(run(cfg, key.strip()), None) + "\n", flush=True)


if __name__ == "__main__":
    main()
