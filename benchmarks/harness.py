"""Timing, correctness checks and reporting shared by every benchmark.

Each implementation of a workload is prepared once (inputs converted to its own array type,
outside the timed region), checked once against a float64 NumPy reference, then timed:
warm-up calls, then ``repeats`` samples whose median is reported. A mismatch is reported as
``MISMATCH`` instead of a time, and an implementation that raises as ``error: ...``; neither
stops the suite. Peers that are not installed are skipped with the reason.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import math
import os
import platform
import statistics
import textwrap
import time
import types
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .workloads import GBPS, GFLOPS, US_PER_CALL, Shape, Workload

NUMPY = "numpy"
TJ_EAGER = "tracejit eager"
TJ_JIT = "tracejit jit"
TJ_LAZY = "tracejit lazy"     # the eager code inside ``with tj.lazy():``, flushed at the end of each call
TORCH = "torch eager"
TORCH_COMPILE = "torch.compile"
JAX = "jax.jit"
IMPLS: tuple[str, ...] = (NUMPY, TJ_EAGER, TJ_LAZY, TJ_JIT, TORCH, TORCH_COMPILE, JAX)
# The "best peer" column compares against the fastest implementation that is not tracejit.
PEERS: tuple[str, ...] = (NUMPY, TORCH, TORCH_COMPILE, JAX)


class Unavailable(Exception):
    """An implementation cannot run here (framework missing, no GPU backend, ...): a skip."""


@dataclass(frozen=True)
class Config:
    """What to run and how hard to measure; ``preset`` picks the workload sizes (full, quick or cuda)."""

    preset: str = "full"
    device: str = "cpu"
    repeats: int = 20
    warmup: int = 3
    # ...and at least this long: the previous implementation's threads (OpenBLAS, OpenMP and
    # XLA spin after their work) have gone quiet by then, and the cores are back at full clock.
    warmup_s: float = 0.3
    # Calls shorter than this are batched into one sample so timer resolution doesn't dominate.
    min_sample_s: float = 0.01
    impls: tuple[str, ...] = IMPLS  # which implementations to run

    @classmethod
    def for_args(cls, quick: bool, device: str, impls: Sequence[str] = IMPLS) -> Config:
        impls = tuple(impls)
        if device == "cuda":
            return cls(preset="cuda", device="cuda", repeats=5 if quick else 20, warmup=1 if quick else 3,
                       impls=impls)
        if quick:
            return cls(preset="quick", repeats=5, warmup=1, warmup_s=0.1, min_sample_s=0.005, impls=impls)
        return cls(impls=impls)


@dataclass
class Result:
    """One implementation of one workload at one size."""

    workload: str
    label: str
    impl: str
    status: str  # "ok", "MISMATCH", "error: ...", "skipped: ..."
    metric: str
    median_s: float | None = None
    first_call_s: float | None = None
    samples_s: list[float] = field(default_factory=list)
    bytes: int = 0
    flops: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def spread(self) -> str:
        """Interquartile range relative to the median: how noisy the samples were."""
        if len(self.samples_s) < 4 or not self.median_s:
            return "-"
        q1, _, q3 = statistics.quantiles(self.samples_s, n=4)
        return f"±{(q3 - q1) / 2 / self.median_s:.0%}"

    def throughput(self) -> float | None:
        """GB/s or GFLOP/s achieved by the median call (None for overhead rows)."""
        if not self.ok or not self.median_s:
            return None
        if self.metric == GBPS:
            return self.bytes / self.median_s / 1e9
        if self.metric == GFLOPS:
            return self.flops / self.median_s / 1e9
        return None


# --- frameworks -------------------------------------------------------------------------------

_modules: dict[str, Any] = {}


def framework(name: str) -> Any:
    """Import a framework once; a missing or broken one becomes ``Unavailable`` with the reason."""
    if name not in _modules:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            why = "not installed" if e.name == name else f"not importable ({short_error(e)})"
            _modules[name] = Unavailable(f"{name} {why}")
        except Exception as e:  # an incomplete library may fail with anything, not just ImportError
            _modules[name] = Unavailable(f"{name} not importable ({short_error(e)})")
        else:
            if name == "torch":
                # Use every core, like NumPy's BLAS and XLA do by default.
                mod.set_num_threads(os.cpu_count() or 1)
            _modules[name] = mod
    mod = _modules[name]
    if isinstance(mod, Unavailable):
        raise mod
    return mod


def versions() -> dict[str, str]:
    """Versions of the frameworks that import here."""
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("tracejit", "torch", "jax"):
        try:
            out[name] = getattr(framework(name), "__version__", "unknown")
        except Unavailable:
            out[name] = "not installed"
    return out


def machine_info(device: str) -> dict[str, Any]:
    """CPU model and core count (and the GPU's name when benchmarking CUDA)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {"cpu": model, "cores": os.cpu_count(), "device": device, **versions()}
    if hasattr(os, "getloadavg"):
        # Other processes on a small machine skew timings badly; record how busy it was.
        info["load average"] = f"{os.getloadavg()[0]:.2f}"
    if device == "cuda":
        try:
            info["gpu"] = framework("torch").cuda.get_device_name(0)
        except Exception:
            info["gpu"] = "unknown"
    return info


def cuda_available() -> tuple[bool, str]:
    """Whether any installed framework (tracejit or torch) can see a CUDA device."""
    for name in ("torch", "tracejit"):
        try:
            mod = framework(name)
            if mod.cuda.is_available():
                return True, ""
        except Exception:
            continue
    return False, "no CUDA device visible to torch or tracejit"


# --- preparing implementations ----------------------------------------------------------------

@dataclass
class Prepared:
    """An implementation bound to its converted inputs."""

    run: Callable[[], Any]
    to_numpy: Callable[[Any], np.ndarray]
    sync: Callable[[Any], None]
    fn: Any = None  # the (jitted) function, for ``cache_info`` and the like


def _no_sync(_: Any) -> None:
    pass


def prepare(impl: str, wl: Workload, inputs: Sequence[np.ndarray], device: str) -> Prepared:
    """Build ``impl`` of ``wl`` on ``inputs``; raises ``Unavailable`` when it can't run here."""
    if impl == NUMPY:
        if device != "cpu":
            raise Unavailable("NumPy is CPU only (used as the reference)")
        fn = wl.numpy
        return Prepared(lambda: fn(*inputs), np.asarray, _no_sync)

    if impl in (TJ_EAGER, TJ_JIT, TJ_LAZY):
        tj = framework("tracejit")
        fn = wl.tracejit(tj)
        if impl == TJ_JIT:
            fn = tj.jit(fn)
        elif impl == TJ_LAZY:
            fn = lazily(tj, fn)
        kw = {} if device == "cpu" else {"device": device}
        args = [tj.asarray(a, **kw) for a in inputs]
        sync = _no_sync
        if device != "cpu":
            sync_fn = getattr(getattr(tj, "cuda", None), "synchronize", None)
            sync = (lambda _: sync_fn()) if sync_fn else _no_sync
        return Prepared(lambda: fn(*args), lambda y: np.asarray(_tj_to_host(y)), sync, fn)

    if impl in (TORCH, TORCH_COMPILE):
        torch = framework("torch")
        if wl.torch is None:
            raise Unavailable("no torch version of this workload")
        fn = wl.torch(torch)
        if impl == TORCH_COMPILE:
            # Static shapes: each size gets its own specialised graph, as in steady-state use.
            fn = torch.compile(fn, dynamic=False)
        if device != "cpu" and not torch.cuda.is_available():
            raise Unavailable("torch has no CUDA")
        args = [torch.from_numpy(a).to(device) for a in inputs]
        sync = (lambda _: torch.cuda.synchronize()) if device != "cpu" else _no_sync
        return Prepared(lambda: fn(*args), lambda y: y.detach().cpu().numpy(), sync, fn)

    if impl == JAX:
        jax = framework("jax")
        if wl.jax is None:
            raise Unavailable("no jax version of this workload")
        if device != "cpu" and jax.default_backend() != "gpu":
            raise Unavailable("jax has no GPU backend here")
        fn = jax.jit(wl.jax(jax))
        args = [jax.device_put(a) for a in inputs]
        return Prepared(lambda: fn(*args), np.asarray, lambda y: y.block_until_ready(), fn)

    raise ValueError(f"unknown implementation {impl!r}")


def lazily(tj: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` run in tracejit's lazy mode: recorded, then flushed (compiled or replayed) as the
    block ends, so its results are computed when the call returns."""
    if not hasattr(tj, "lazy"):
        raise Unavailable("tj.lazy not available")

    def run(*args: Any) -> Any:
        with tj.lazy():
            return fn(*args)
    return run


def _tj_to_host(y: Any) -> Any:
    device = str(getattr(y, "device", "cpu"))
    return y.to("cpu") if device != "cpu" and hasattr(y, "to") else y


# --- checking and timing ----------------------------------------------------------------------

def reference(wl: Workload, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """The NumPy version computed in float64, so float32 implementations are judged fairly."""
    out = np.asarray(wl.numpy(*(a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs)))
    return out.astype(np.float32)


def compare(out: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> str:
    """Empty string when ``out`` matches ``ref``, else what is wrong (for the footnotes)."""
    if out.shape != ref.shape:
        return f"shape {out.shape} != expected {ref.shape}"
    if out.dtype != ref.dtype:
        return f"dtype {out.dtype} != expected {ref.dtype}"
    if np.allclose(out, ref, rtol=rtol, atol=atol):
        return ""
    with np.errstate(all="ignore"):
        err = np.abs(out.astype(np.float64) - ref)
        bad = ~np.isclose(out, ref, rtol=rtol, atol=atol)
    worst = np.unravel_index(np.argmax(np.where(np.isnan(err), np.inf, err)), err.shape)
    return (f"{int(bad.sum())}/{out.size} elements outside rtol={rtol:g} atol={atol:g}; "
            f"worst at {tuple(map(int, worst))}: got {out[worst]!r}, expected {ref[worst]!r}")


def time_calls(p: Prepared, cfg: Config) -> list[float]:
    """Per-call seconds for ``cfg.repeats`` samples after ``cfg.warmup`` calls (and
    ``cfg.warmup_s`` seconds).

    Every call is synchronised (jax ``block_until_ready``, CUDA synchronize) so asynchronous
    dispatch can't hide work; calls faster than ``cfg.min_sample_s`` are batched per sample.
    """
    start = time.perf_counter()
    for i in itertools.count():
        if i >= cfg.warmup and time.perf_counter() - start >= cfg.warmup_s:
            break
        p.sync(p.run())
    t0 = time.perf_counter()
    p.sync(p.run())
    once = time.perf_counter() - t0
    inner = max(1, math.ceil(cfg.min_sample_s / max(once, 1e-9)))
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a sample is noise, not the implementation's cost
    try:
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            for _ in range(inner):
                p.sync(p.run())
            samples.append((time.perf_counter() - t0) / inner)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def short_error(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else ""
    return f"{type(e).__name__}: {msg[:100]}" if msg else type(e).__name__


Preparer = Callable[[str, Workload, Sequence[np.ndarray], str], Prepared]


def run_workload(wl: Workload, shape: Shape, cfg: Config, impls: Iterable[str] | None = None,
                 log: Callable[[str], None] | None = None, preparer: Preparer = prepare) -> list[Result]:
    """Check and time ``impls`` (default ``cfg.impls``) of ``wl`` at ``shape``.

    ``preparer`` builds each implementation (tests substitute deliberately broken ones).
    """
    rng = np.random.default_rng(0)
    inputs = wl.make_inputs(shape, rng)
    ref = reference(wl, inputs)
    cost = wl.cost(shape)
    results = []
    for impl in cfg.impls if impls is None else impls:
        r = Result(wl.key, wl.label(shape), impl, "ok", wl.metric, bytes=cost.bytes, flops=cost.flops)
        try:
            # A private copy each: a framework may wrap NumPy memory and an in-place op would leak.
            p = preparer(impl, wl, [a.copy() for a in inputs], cfg.device)
            t0 = time.perf_counter()
            out = p.run()
            p.sync(out)
            r.first_call_s = time.perf_counter() - t0  # includes tracing/compiling for the jits
            problem = compare(p.to_numpy(out), ref, wl.rtol, wl.atol)
            out = None
            if problem:
                r.status, r.detail = "MISMATCH", problem
            else:
                r.samples_s = time_calls(p, cfg)
                r.median_s = statistics.median(r.samples_s)
        except Unavailable as e:
            r.status = f"skipped: {e}"
        except Exception as e:
            r.status = f"error: {short_error(e)}"
        p = out = None
        _release_device_memory(cfg.device)
        results.append(r)
        if log:
            log(f"  {r.label}: {impl}: {r.status}")
    return results


def _release_device_memory(device: str) -> None:
    """On a GPU, hand torch's cached blocks back so the next implementation has the memory."""
    if device != "cpu" and isinstance(_modules.get("torch"), types.ModuleType):
        gc.collect()
        _modules["torch"].cuda.empty_cache()


# --- roof line --------------------------------------------------------------------------------

@dataclass
class Ceilings:
    """This machine's measured limits: memory copy bandwidth and a large SGEMM's rate."""

    copy_gbps: float | None = None
    gemm_gflops: float | None = None
    how: str = ""

    def fraction(self, r: Result) -> float | None:
        t = r.throughput()
        if t is None:
            return None
        ceiling = {GBPS: self.copy_gbps, GFLOPS: self.gemm_gflops}.get(r.metric)
        return t / ceiling if ceiling else None


def measure_ceilings(cfg: Config) -> Ceilings:
    """Copy bandwidth counts read + write of the buffer (2x its size), as GB/s rows do.

    A ceiling is what the machine can do at best, so it takes the fastest repeat, not the median.
    """
    reps = 5 if cfg.repeats < 20 else 10
    if cfg.device == "cpu":
        # 512 MiB each way: beyond the (VM-reported) last-level cache. np.copyto is single-threaded,
        # so also copy in one slice per core and take the better of the two.
        src = np.ones(128 * 2**20, dtype=np.float32)
        dst = np.empty_like(src)
        copy_t = min(_best_time(lambda: np.copyto(dst, src), reps),
                     _best_time(lambda: _threaded_copy(dst, src), reps))
        a = np.ones((2048, 2048), dtype=np.float32)
        gemm_t = _best_time(lambda: a @ a, reps)
        return Ceilings(2 * src.nbytes / copy_t / 1e9, 2 * 2048**3 / gemm_t / 1e9,
                        "numpy copy of 512 MiB, 1 and all threads; numpy float32 matmul 2048^3")
    try:
        torch = framework("torch")
    except Unavailable as e:
        return Ceilings(how=f"no ceiling: {e}")
    src = torch.empty(256 * 2**20, dtype=torch.float32, device=cfg.device)  # 1 GiB
    dst = torch.empty_like(src)
    copy_t = _best_time(lambda: dst.copy_(src), reps, torch.cuda.synchronize)
    a = torch.ones((8192, 8192), dtype=torch.float32, device=cfg.device)
    gemm_t = _best_time(lambda: a @ a, reps, torch.cuda.synchronize)
    return Ceilings(2 * src.numel() * 4 / copy_t / 1e9, 2 * 8192**3 / gemm_t / 1e9,
                    "torch device-to-device copy of 1 GiB; torch float32 matmul 8192^3")


def _threaded_copy(dst: np.ndarray, src: np.ndarray) -> None:
    k = os.cpu_count() or 1
    bounds = [i * len(src) // k for i in range(k + 1)]
    with ThreadPoolExecutor(k) as ex:  # np.copyto releases the GIL
        list(ex.map(lambda i: np.copyto(dst[bounds[i]:bounds[i + 1]], src[bounds[i]:bounds[i + 1]]),
                    range(k)))


def _best_time(fn: Callable[[], Any], reps: int, sync: Callable[[], None] = lambda: None) -> float:
    fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


# --- reporting --------------------------------------------------------------------------------

def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _speedup(base: float | None, t: float | None) -> str:
    return f"{base / t:.2f}x" if base and t else "-"


def render_group(results: Sequence[Result], ceilings: Ceilings | None) -> str:
    """A table for one workload at one size: one row per implementation."""
    if not results:
        return ""
    first = results[0]
    peers = [r for r in results if r.impl in PEERS and r.ok and r.median_s]
    best = min(peers, key=lambda r: r.median_s or math.inf) if peers else None
    numpy_t = next((r.median_s for r in results if r.impl == NUMPY and r.ok), None)
    unit = first.metric if first.metric != US_PER_CALL else "thrpt"
    head = f"{first.label}"
    if first.metric == GBPS:
        head += f"  ({first.bytes / 1e6:.1f} MB moved per call)"
    elif first.metric == GFLOPS:
        head += f"  ({first.flops / 1e9:.3f} GFLOP per call)"
    if best:
        head += f"  best peer: {best.impl}"
    cols = ("implementation", "median", "spread", "1st call", "vs best peer", "vs NumPy", unit, "of roof")
    rows: list[tuple[str, ...]] = [cols]
    for r in results:
        if not r.ok:
            rows.append((r.impl, r.status))  # a status spans the remaining columns
            continue
        t = r.throughput()
        frac = ceilings.fraction(r) if ceilings else None
        rows.append((
            r.impl,
            fmt_time(r.median_s),
            r.spread(),
            fmt_time(r.first_call_s),
            _speedup(best.median_s if best else None, r.median_s),
            _speedup(numpy_t, r.median_s),
            f"{t:.1f}" if t is not None else "-",
            f"{frac:.0%}" if frac is not None else "-",
        ))
    widths = [max(len(row[i]) for row in rows if len(row) == len(cols)) for i in range(len(cols))]
    widths[0] = max(len(row[0]) for row in rows)
    lines = [head]
    for row in rows:
        if len(row) != len(cols):
            lines.append(f"  {row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                          for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    for r in results:
        if r.detail:
            lines.append(f"    {r.impl}: {r.detail}")
    return "\n".join(lines)


LEGEND = ("'spread' is half the interquartile range of the samples over their median.\n"
          "Speedups are (other time) / (this time): >1 means this row is faster. 'of roof' is the\n"
          "achieved GB/s over the measured copy bandwidth (compulsory bytes only; read-only passes and\n"
          "inputs that stay in cache can exceed 100%), or GFLOP/s over a large SGEMM's rate.")


def results_json(results: Sequence[Result]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        d = asdict(r)
        d["throughput"] = r.throughput()
        out.append(d)
    return out


def plot(results: Sequence[Result], path: str, baseline: str = NUMPY) -> str:
    """Bar chart of speedup over ``baseline`` (or over the best peer) per workload; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib not installed (pip install 'tracejit[bench]')"
    labels = list(dict.fromkeys(r.label for r in results))
    impls = [i for i in IMPLS if any(r.impl == i and r.ok for r in results)]
    base: dict[str, float] = {}
    for lab in labels:
        group = [r for r in results if r.label == lab and r.ok and r.median_s]
        pick = [r for r in group if r.impl == baseline] or [r for r in group if r.impl in PEERS]
        if pick:
            base[lab] = min(r.median_s for r in pick if r.median_s)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(labels)), 5))
    width = 0.8 / max(1, len(impls))
    for k, impl in enumerate(impls):
        ys = []
        for lab in labels:
            r = next((r for r in results if r.label == lab and r.impl == impl and r.ok), None)
            ys.append(base[lab] / r.median_s if r and r.median_s and lab in base else 0.0)
        ax.bar([i + k * width for i in range(len(labels))], ys, width, label=impl)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))])
    ax.set_xticklabels(["\n".join(textwrap.wrap(lab, 14)) for lab in labels], fontsize=7)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.set_ylabel(f"speedup over {baseline if baseline in {r.impl for r in results} else 'best peer'}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"plot written to {path}"
