"""C1: compile latency, measured in fresh processes so nothing is warm by accident.

For each JIT (tracejit, torch.compile, jax.jit) two child processes share a new, empty on-disk
cache directory: the first call of W1 in the first child is a cold compile, the same call in the
second child shows what the disk cache saves. The first tracejit child then also runs W3 at
(8192, 1024) and (4096, 1024) with one jitted function: kernels take their sizes as arguments,
so the second shape must re-trace but compile no new kernel (read from ``f.cache_info()``).

Children are ``python -m benchmarks.compile_latency --child IMPL ...``; they print one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .harness import (
    JAX,
    TJ_JIT,
    TORCH_COMPILE,
    Config,
    Unavailable,
    compare,
    fmt_time,
    framework,
    prepare,
    reference,
    short_error,
)
from .workloads import W1, W3

KEY = "C1"
IMPLS = (TJ_JIT, TORCH_COMPILE, JAX)
SHAPES_W3 = ((8192, 1024), (4096, 1024))
_MARK = "C1-RESULT "
_FRAMEWORK = {TJ_JIT: "tracejit", TORCH_COMPILE: "torch", JAX: "jax"}
_CHILD_TIMEOUT_S = 600


def cache_env(impl: str, cache_dir: str) -> dict[str, str]:
    """Environment pointing ``impl``'s persistent compile cache at ``cache_dir``."""
    if impl == TJ_JIT:
        return {"TRACEJIT_CACHE_DIR": cache_dir}
    if impl == TORCH_COMPILE:
        return {"TORCHINDUCTOR_CACHE_DIR": os.path.join(cache_dir, "inductor"),
                "TRITON_CACHE_DIR": os.path.join(cache_dir, "triton")}
    # jax only persists compiles slower than 1 s by default; persist all, like the others do.
    return {"JAX_COMPILATION_CACHE_DIR": cache_dir, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def kernel_counts(info: Any) -> tuple[int | None, int | None]:
    """(kernels compiled, kernels loaded from disk) from a ``cache_info()`` dict or namedtuple."""
    if hasattr(info, "_asdict"):
        d = info._asdict()
    else:
        d = dict(info) if isinstance(info, Mapping) else vars(info)

    def pick(*names: str) -> int | None:
        return next((int(d[n]) for n in names if n in d), None)

    return (pick("kernels_compiled", "compiled", "kernel_compiles", "compiles"),
            pick("kernels_disk_hits", "kernels_loaded", "loaded_from_disk", "disk_hits", "loaded"))


def _jsonable(info: Any) -> Any:
    try:
        d = info._asdict() if hasattr(info, "_asdict") else dict(info)
    except (TypeError, ValueError):
        return repr(info)
    plain = (int, float, str, bool, type(None))
    return {str(k): v if isinstance(v, plain) else repr(v) for k, v in d.items()}


# --- child process ----------------------------------------------------------------------------

def _child(impl: str, n: int, device: str, shape_change: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    framework(_FRAMEWORK[impl])
    out["import_s"] = time.perf_counter() - t0
    inputs = W1.make_inputs((n,), np.random.default_rng(0))
    p = prepare(impl, W1, inputs, device)
    t0 = time.perf_counter()
    y = p.run()
    p.sync(y)
    out["first_call_s"] = time.perf_counter() - t0
    out["problem"] = compare(p.to_numpy(y), reference(W1, inputs), W1.rtol, W1.atol)
    t0 = time.perf_counter()
    p.sync(p.run())
    out["second_call_s"] = time.perf_counter() - t0
    if impl == TJ_JIT:
        out["cache_info"] = _jsonable(p.fn.cache_info())
        out["kernels"] = kernel_counts(p.fn.cache_info())
        if shape_change:
            try:
                out["shape_change"] = _shape_change(device)
            except Exception as e:
                out["shape_change"] = {"error": short_error(e)}
    return out


def _shape_change(device: str) -> dict[str, Any]:
    """One jitted softmax called at two row counts; counts kernels compiled by each call."""
    tj = framework("tracejit")
    f = tj.jit(W3.tracejit(tj))
    kw = {} if device == "cpu" else {"device": device}
    res: dict[str, Any] = {"shapes": [list(s) for s in SHAPES_W3], "compiled": [], "first_call_s": [],
                           "problems": []}
    before, _ = kernel_counts(f.cache_info())
    for shape in SHAPES_W3:
        inputs = W3.make_inputs(shape, np.random.default_rng(0))
        x = tj.asarray(inputs[0], **kw)
        t0 = time.perf_counter()
        y = np.asarray(f(x))  # to host: also waits for the result
        res["first_call_s"].append(time.perf_counter() - t0)
        after, _ = kernel_counts(f.cache_info())
        res["compiled"].append(None if after is None or before is None else after - before)
        res["problems"].append(compare(y, reference(W3, inputs), W3.rtol, W3.atol))
        before = after
    res["cache_info"] = _jsonable(f.cache_info())
    return res


# --- parent -----------------------------------------------------------------------------------

def _spawn(impl: str, n: int, device: str, env: dict[str, str], shape_change: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.compile_latency", "--child", impl, "--n", str(n),
           "--device", device] + (["--shape-change"] if shape_change else [])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        proc = subprocess.run(cmd, env={**os.environ, **env}, cwd=root, capture_output=True, text=True,
                              timeout=_CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"status": f"error: timed out after {_CHILD_TIMEOUT_S} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"status": f"error: child exited {proc.returncode}: {tail[:120]}"}


def run(cfg: Config, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Cold and warm first-call latency of W1 for each JIT, plus tracejit's W3 shape change."""
    # Compile time barely depends on size; 16M keeps the children's reference checks quick on GPUs.
    n = min(W1.sizes[cfg.preset][0][0], 16 * 2**20)
    rows = []
    for impl in (i for i in IMPLS if i in cfg.impls):
        with tempfile.TemporaryDirectory(prefix="bench-c1-") as cache_dir:
            env = cache_env(impl, cache_dir)
            for phase in ("cold", "warm"):
                row = _spawn(impl, n, cfg.device, env, shape_change=impl == TJ_JIT and phase == "cold")
                row.setdefault("status", "MISMATCH" if row.get("problem") else "ok")
                row.update(impl=impl, phase=phase)
                rows.append(row)
                if log:
                    log(f"  {KEY} {impl} {phase} disk cache: {row['status']}")
                if row["status"] != "ok":
                    break  # a failed cold run says all there is to say
    return {"n": n, "device": cfg.device, "rows": rows}


def render(c1: Mapping[str, Any]) -> str:
    lines = [f"{KEY} compile latency: first call of W1 (N={c1['n']}) in a fresh process"]
    cols = ("implementation", "disk cache", "import", "first call", "second call", "kernels compiled/loaded")
    table = [cols]
    for r in c1["rows"]:
        if r["status"] != "ok":
            table.append((r["impl"], r["phase"], r["status"]))
            continue
        kernels = r.get("kernels")
        kc = "-" if not kernels else "/".join("?" if k is None else str(k) for k in kernels)
        table.append((r["impl"], r["phase"], fmt_time(r["import_s"]), fmt_time(r["first_call_s"]),
                      fmt_time(r["second_call_s"]), kc))
    widths = [max(len(t[i]) for t in table if len(t) == len(cols)) for i in range(len(cols))]
    for t in table:
        if len(t) != len(cols):
            lines.append(f"  {t[0]:<{widths[0]}}  {t[1]:<{widths[1]}}  {t[2]}")
        else:
            lines.append("  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                          for i, (c, w) in enumerate(zip(t, widths, strict=True))))
    sc = next((r.get("shape_change") for r in c1["rows"] if r.get("shape_change")), None)
    if sc and "error" in sc:
        lines.append(f"  W3 shape change under one tj.jit: error: {sc['error']}")
    elif sc:
        shapes = " -> ".join("x".join(map(str, s)) for s in sc["shapes"])
        new = sc["compiled"][-1]
        verdict = ("unknown (cache_info has no kernel-compile count)" if new is None
                   else "ok, re-trace only" if new == 0 else "expected 0: kernels must not depend on sizes")
        lines.append(f"  W3 softmax {shapes} under one tj.jit: kernels compiled by the new shape: "
                     f"{'?' if new is None else new} ({verdict}); "
                     f"its first call {fmt_time(sc['first_call_s'][-1])}")
        for shape, problem in zip(sc["shapes"], sc["problems"], strict=True):
            if problem:
                lines.append(f"    MISMATCH at {'x'.join(map(str, shape))}: {problem}")
    for r in c1["rows"]:
        if r.get("problem"):
            lines.append(f"    {r['impl']} {r['phase']}: {r['problem']}")
    return "\n".join(lines)


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", choices=IMPLS, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shape-change", action="store_true")
    a = ap.parse_args(argv)
    try:
        out = _child(a.child, a.n, a.device, a.shape_change)
    except Unavailable as e:
        out = {"status": f"skipped: {e}"}
    except Exception as e:
        out = {"status": f"error: {short_error(e)}"}
    print(_MARK + json.dumps(out), flush=True)


if __name__ == "__main__":
    _main()
