"""S1: an exported MLP (784-256-10, softmax) loaded from its file and served over HTTP.

Three parts, one process each where a fresh process matters:

* calls: median time per call of the loaded export next to ``tj.jit`` of the same function,
  NumPy, torch eager, ``torch.compile`` and ``jax.jit``, at batch 1, 32 and 256 (the export was
  made once, with a symbolic batch);
* cold start: a fresh process (empty kernel cache) loading the file and making its first call,
  against a fresh process tracing and compiling the function with ``tj.jit``;
* serving: ``python -m tracejit.serve`` in a child process, 16 client threads here sending
  one-row JSON requests; requests per second and latency percentiles with dynamic batching
  (``--max-batch 64``) and without (``--max-batch 1``).

``python -m benchmarks --only S1`` (opt-in) or ``python -m benchmarks.serving``.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

KEY = "S1"
SIZES = (784, 256, 10)
BATCHES = (1, 32, 256)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child_env(**extra: str) -> dict[str, str]:
    """This environment with this checkout first on the path: children import the tracejit the
    benchmark runs."""
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _weights() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    (a, b, c) = SIZES
    return [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
        np.zeros(b, np.float32),
        (rng.standard_normal((b, c)) / np.sqrt(b)).astype(np.float32),
        np.zeros(c, np.float32),
    ]


def _tj_function() -> Callable:
    import tracejit as tj
    import tracejit.nn.functional as F

    w1, b1, w2, b2 = (tj.asarray(w) for w in _weights())
    return lambda x: F.softmax(F.relu(x @ w1 + b1) @ w2 + b2, axis=-1)


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _peers(x: np.ndarray) -> dict[str, Callable[[], Any]]:
    w1, b1, w2, b2 = _weights()
    out: dict[str, Callable[[], Any]] = {}

    def np_mlp():
        z = np.maximum(x @ w1 + b1, 0) @ w2 + b2
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    out["numpy"] = np_mlp
    try:
        import torch

        tw = [torch.from_numpy(w) for w in (w1, b1, w2, b2)]
        tx = torch.from_numpy(x)

        def t_mlp(a):
            return torch.softmax(torch.relu(a @ tw[0] + tw[1]) @ tw[2] + tw[3], dim=-1)

        with torch.no_grad():
            out["torch eager"] = lambda: t_mlp(tx)
            compiled = torch.compile(t_mlp)
            out["torch.compile"] = lambda: compiled(tx)
    except Exception as e:  # noqa: BLE001  (a missing or failing peer is reported, not fatal)
        print(f"torch unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        import jax
        import jax.numpy as jnp

        jw = [jnp.asarray(w) for w in (w1, b1, w2, b2)]
        jf = jax.jit(lambda a: jax.nn.softmax(jax.nn.relu(a @ jw[0] + jw[1]) @ jw[2] + jw[3], axis=-1))
        jx = jnp.asarray(x)
        out["jax.jit"] = lambda: jf(jx).block_until_ready()
    except Exception as e:  # noqa: BLE001
        print(f"jax unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    return out


def run_calls(path: str, repeats: int) -> list[dict[str, Any]]:
    import tracejit as tj

    loaded = tj.load(path)
    jitted = tj.jit(_tj_function())
    rows = []
    for batch in BATCHES:
        x = np.random.default_rng(batch).standard_normal((batch, SIZES[0])).astype(np.float32)
        tx = tj.asarray(x)
        impls = {"tj.load (export)": lambda x=x: loaded(x), "tj.jit": lambda tx=tx: jitted(tx), **_peers(x)}
        ref = impls["numpy"]()
        for name, fn in impls.items():
            got = np.asarray(fn())
            assert np.allclose(got, ref, rtol=1e-4, atol=1e-6), f"{name} disagrees with NumPy"
            rows.append({"batch": batch, "impl": name, "median_s": _median_time(fn, repeats)})
    return rows


_COLD_CHILD = """
import sys, time, numpy as np
t0 = time.perf_counter()
import tracejit as tj
t1 = time.perf_counter()
x = np.ones((32, 784), np.float32)
if sys.argv[1] == "load":
    f = tj.load(sys.argv[2]); f(x)
else:
    sys.path.insert(0, sys.argv[3])
    from benchmarks.serving import _tj_function
    f = tj.jit(_tj_function()); f(tj.asarray(x))
print(t1 - t0, time.perf_counter() - t1)
"""


def run_cold(path: str) -> dict[str, float]:
    env = _child_env(TRACEJIT_DISABLE_CACHE="1")
    out = {}
    for mode in ("load", "jit"):
        r = subprocess.run(
            [sys.executable, "-c", _COLD_CHILD, mode, path, ROOT],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
            check=True,
        )
        out[mode] = float(r.stdout.split()[1])
    return out


def run_serving(path: str, max_batch: int, clients: int = 16, per_client: int = 150) -> dict[str, Any]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracejit.serve", path, "--port", "0", "--max-batch", str(max_batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_child_env(),
    )
    try:
        port = int(proc.stdout.readline().split("http://127.0.0.1:")[1].split()[0])
        x = np.random.default_rng(1).standard_normal((1, SIZES[0])).astype(np.float32)
        body = json.dumps({"input": x.tolist()}).encode()
        latencies: list[float] = []
        errors = []
        lock = threading.Lock()

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            mine = []
            for _ in range(per_client):
                t0 = time.perf_counter()
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                mine.append(time.perf_counter() - t0)
                if r.status != 200:
                    errors.append(r.status)
            conn.close()
            with lock:
                latencies.extend(mine)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/metrics")
        metrics = json.loads(conn.getresponse().read())
        lat = np.array(latencies) * 1e3
        return {
            "max_batch": max_batch,
            "requests": len(lat),
            "errors": len(errors),
            "rps": len(lat) / wall,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "model_calls": metrics["model_calls"],
            "largest_batch": metrics["largest_batch"],
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(repeats: int = 50) -> dict[str, Any]:
    import tracejit as tj

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mlp.tjx")
        t0 = time.perf_counter()
        exp = tj.export(_tj_function(), tj.spec(("batch", SIZES[0]), tj.float32))
        export_s = time.perf_counter() - t0
        exp.save(path)
        return {
            "export_s": export_s,
            "file_bytes": os.path.getsize(path),
            "calls": run_calls(path, repeats),
            "cold": run_cold(path),
            "serving": [run_serving(path, 64), run_serving(path, 1)],
        }


def render(doc: dict[str, Any]) -> str:
    lines = [
        f"S1: exported MLP {'-'.join(map(str, SIZES))} (export {doc['export_s']:.1f} s, "
        f"file {doc['file_bytes'] / 1024:.0f} KiB)",
        "",
        "| batch | impl | median | vs tj.load |",
        "|---|---|---|---|",
    ]
    for batch in BATCHES:
        rows = [r for r in doc["calls"] if r["batch"] == batch]
        base = next(r["median_s"] for r in rows if r["impl"] == "tj.load (export)")
        for r in rows:
            lines.append(
                f"| {batch} | {r['impl']} | {r['median_s'] * 1e6:.1f} us | {r['median_s'] / base:.2f}x |"
            )
    c = doc["cold"]
    lines += [
        "",
        f"cold start, fresh process, empty kernel cache, first call at batch 32 (after import): "
        f"tj.load {c['load'] * 1e3:.0f} ms, tj.jit {c['jit'] * 1e3:.0f} ms",
        "",
        "| serving | requests | errors | req/s | p50 | p99 | model calls | largest batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in doc["serving"]:
        lines.append(
            f"| max batch {s['max_batch']} | {s['requests']} | {s['errors']} | {s['rps']:.0f} | "
            f"{s['p50_ms']:.1f} ms | {s['p99_ms']:.1f} ms | {s['model_calls']} | {s['largest_batch']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(run()))
