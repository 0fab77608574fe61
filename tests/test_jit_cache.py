"""The trace cache and the kernel cache seen through ``jit``: memory, disk, corruption, threads."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
from conftest import assert_close

import tracejit as tj
from runtime import kernel_cache

PROGRAM = textwrap.dedent("""
    import json, numpy as np, tracejit as tj
    f = tj.jit(lambda x: tj.tanh(x * 1.25) + tj.exp(-x) * 0.5)
    x = tj.asarray(np.linspace(-3, 3, 1000, dtype=np.float32))
    y = np.asarray(f(x))
    xs = np.asarray(x)
    ok = bool(np.allclose(y, np.tanh(xs * 1.25) + np.exp(-xs) * 0.5, rtol=1e-5, atol=1e-6))
    print(json.dumps(dict(f.cache_info(), ok=ok)))
""")


def run_fresh_process(cache_dir: Path) -> dict:
    env = dict(os.environ, TRACEJIT_CACHE_DIR=str(cache_dir))
    env.pop("TRACEJIT_DISABLE_CACHE", None)
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True)
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_disk_cache_hit_in_a_fresh_process_and_corrupt_entry_rebuilt(tmp_path):
    first = run_fresh_process(tmp_path)
    assert first["ok"] and first["kernels_compiled"] == 1 and first["kernels_disk_hits"] == 0
    second = run_fresh_process(tmp_path)
    assert second["ok"] and second["kernels_compiled"] == 0 and second["kernels_disk_hits"] == 1
    entries = list(tmp_path.glob("*.tjk"))
    assert len(entries) == 1
    data = bytearray(entries[0].read_bytes())
    data[len(data) // 2] ^= 0xFF                      # flip a byte in the payload
    entries[0].write_bytes(bytes(data))
    third = run_fresh_process(tmp_path)
    assert third["ok"] and third["kernels_disk_errors"] == 1 and third["kernels_compiled"] == 1
    entries[0].write_bytes(entries[0].read_bytes()[:40])   # truncated
    fourth = run_fresh_process(tmp_path)
    assert fourth["ok"] and fourth["kernels_compiled"] == 1


def test_new_batch_size_retraces_but_compiles_no_kernel(rng):
    def softmax(x):
        e = tj.exp(x - tj.max(x, axis=-1, keepdims=True))
        return e / tj.sum(e, axis=-1, keepdims=True)
    f = tj.jit(softmax)
    cache = kernel_cache.default_cache()
    a = rng.standard_normal((64, 128)).astype(np.float32)
    f(tj.asarray(a))
    compiled = cache.stats["compiled"] + cache.stats["disk_hits"]
    b = rng.standard_normal((17, 128)).astype(np.float32)
    out = f(tj.asarray(b))
    assert f.cache_info()["traces"] == 2
    assert cache.stats["compiled"] + cache.stats["disk_hits"] == compiled     # served from memory
    e = np.exp(b - b.max(-1, keepdims=True))
    assert_close(out, e / e.sum(-1, keepdims=True), rtol=1e-5)


def test_same_signature_hits_the_trace_cache(rng):
    f = tj.jit(lambda x, y: x * y + 1)
    x = tj.asarray(rng.standard_normal(8).astype(np.float32))
    for _ in range(3):
        f(x, x)
    info = f.cache_info()
    assert info["traces"] == 1 and info["hits"] >= 2


def test_concurrent_calls_from_eight_threads(rng):
    f = tj.jit(lambda x, b: tj.sum(tj.tanh(x + b), axis=-1))
    inputs = [rng.standard_normal((50, 40)).astype(np.float32) for _ in range(8)]
    bias = rng.standard_normal(40).astype(np.float32)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(20):
                results[i] = np.asarray(f(tj.asarray(inputs[i]), tj.asarray(bias)))
        except BaseException as e:   # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(8):
        assert_close(results[i], np.tanh(inputs[i].astype(np.float64) + bias).sum(-1), rtol=1e-5, atol=1e-5)
    assert f.cache_info()["traces"] == 1
