"""X1: the Array API extensions and complex dtypes, next to NumPy, PyTorch and JAX.

Four problems, the same data for every implementation:

* ``linalg``: for a batch of 64 symmetric positive-definite 32 x 32 float64 matrices ``a`` and
  right-hand sides ``b`` (64, 32, 4): ``solve(a, b) + inv(a) @ b + cholesky(a) @ b``, and
  ``slogdet(a)[1]``;
* ``fft``: a low-pass filter of 64 float32 signals of 4096 samples, ``irfft(rfft(x) * mask)``;
* ``complex``: ``abs(exp(z * w) + sqrt(z))`` on 2**20 complex64 values;
* ``complex_chain``: ``real(exp(z * w + 1j)) * 2`` on 2**22 complex64 values.

tracejit runs the decompositions and transforms as host steps (NumPy's LAPACK and pocketfft),
so those numbers measure the cost of that route against the peers' native kernels; both
complex problems are one kernel under jit.  ``python -m benchmarks --only X1`` (opt-in) or
``python -m benchmarks.array_api_ext``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .harness import (
    IMPLS,
    JAX,
    NUMPY,
    TJ_EAGER,
    TJ_JIT,
    TORCH,
    TORCH_COMPILE,
    Unavailable,
    framework,
    short_error,
)

KEY = "X1"
BATCH, N, K = 64, 32, 4
SIGNALS, SAMPLES = 64, 4096
COMPLEX_SIZE = 2 ** 20
CHAIN_SIZE = 2 ** 22


def _data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((BATCH, N, N))
    z = rng.standard_normal(COMPLEX_SIZE) + 1j * rng.standard_normal(COMPLEX_SIZE)
    w = rng.standard_normal(COMPLEX_SIZE) + 1j * rng.standard_normal(COMPLEX_SIZE)
    mask = np.zeros(SAMPLES // 2 + 1, np.float32)
    mask[: SAMPLES // 8] = 1
    return {"a": m @ np.swapaxes(m, -1, -2) + N * np.eye(N), "b": rng.standard_normal((BATCH, N, K)),
            "x": rng.standard_normal((SIGNALS, SAMPLES)).astype(np.float32), "mask": mask,
            "z": z.astype(np.complex64), "w": w.astype(np.complex64),
            "z4": _complex(rng, CHAIN_SIZE), "w4": _complex(rng, CHAIN_SIZE)}


def _complex(rng: np.random.Generator, n: int) -> np.ndarray:
    z = np.empty(n, np.complex64)
    z.real, z.imag = rng.standard_normal(n), rng.standard_normal(n)
    return z


def _problems(xp: Any, la: Any, fft: Any) -> dict[str, tuple[Callable, tuple[str, ...]]]:
    def linalg(a, b):
        return la.solve(a, b) + la.inv(a) @ b + la.cholesky(a) @ b, la.slogdet(a)[1]

    def lowpass(x, mask):
        return fft.irfft(fft.rfft(x) * mask, n=SAMPLES)

    def cplx(z, w):
        return xp.abs(xp.exp(z * w) + xp.sqrt(z))

    def chain(z, w):
        return xp.real(xp.exp(z * w + 1j)) * 2
    return {"linalg": (linalg, ("a", "b")), "fft": (lowpass, ("x", "mask")), "complex": (cplx, ("z", "w")),
            "complex_chain": (chain, ("z4", "w4"))}


def _implementations(impl: str) -> tuple[dict[str, Callable], Callable[[np.ndarray], Any], Callable]:
    """(problem name -> callable, array converter, blocker) for one implementation."""
    if impl == NUMPY:
        return {k: f for k, (f, _) in _problems(np, np.linalg, np.fft).items()}, np.asarray, lambda r: r
    if impl in (TJ_EAGER, TJ_JIT):
        tj = framework("tracejit")
        fns = {k: f for k, (f, _) in _problems(tj, tj.linalg, tj.fft).items()}
        if impl == TJ_JIT:
            fns = {k: tj.jit(f) for k, f in fns.items()}
        return fns, tj.asarray, lambda r: [np.asarray(t) for t in (r if isinstance(r, tuple) else (r,))]
    if impl in (TORCH, TORCH_COMPILE):
        torch = framework("torch")
        fns = {k: f for k, (f, _) in _problems(torch, torch.linalg, torch.fft).items()}
        if impl == TORCH_COMPILE:
            fns = {k: torch.compile(f) for k, f in fns.items()}
        return fns, torch.from_numpy, lambda r: r
    if impl == JAX:
        jax = framework("jax")
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        fns = {k: jax.jit(f) for k, (f, _) in _problems(jnp, jnp.linalg, jnp.fft).items()}
        return fns, jnp.asarray, lambda r: jax.block_until_ready(r)
    raise Unavailable(f"{impl} has no X1 implementation")


def _median_time(fn: Callable, args: tuple, block: Callable, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        block(fn(*args))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn(*args))
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def run(impls: tuple[str, ...] = IMPLS, repeats: int = 20, warmup: int = 3) -> dict[str, dict[str, Any]]:
    """{problem: {impl: median seconds, or the reason it did not run}}; results are checked
    against NumPy's (a run that disagrees is reported, not timed)."""
    data = _data()
    ref_fns = {k: f for k, (f, _) in _problems(np, np.linalg, np.fft).items()}
    inputs = {k: names for k, (_, names) in _problems(np, np.linalg, np.fft).items()}
    out: dict[str, dict[str, Any]] = {k: {} for k in inputs}
    for impl in impls:
        try:
            fns, convert, block = _implementations(impl)
        except Unavailable as e:
            for k in out:
                out[k][impl] = str(e)
            continue
        for name, fn in fns.items():
            args = tuple(convert(data[n]) for n in inputs[name])
            try:
                got = fn(*args)
                want = ref_fns[name](*(data[n] for n in inputs[name]))
                pairs = zip(got if isinstance(got, tuple) else (got,),
                            want if isinstance(want, tuple) else (want,))
                for g, w in pairs:
                    np.testing.assert_allclose(np.asarray(g), w, rtol=2e-4, atol=2e-4)
                out[name][impl] = _median_time(fn, args, block, repeats, warmup)
            except Exception as e:  # noqa: BLE001 - a peer that fails is reported with its reason
                out[name][impl] = f"failed: {short_error(e)}"
    return out


def render(results: dict[str, dict[str, Any]]) -> str:
    lines = ["X1: Array API extensions and complex (median; ratio to NumPy)", ""]
    for name, row in results.items():
        base = row.get(NUMPY)
        lines.append(f"  {name}:")
        for impl, v in row.items():
            if isinstance(v, float):
                ratio = f"  {v / base:5.2f}x NumPy" if isinstance(base, float) else ""
                lines.append(f"    {impl:16s} {v * 1e3:9.3f} ms{ratio}")
            else:
                lines.append(f"    {impl:16s} {v}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(run()))
