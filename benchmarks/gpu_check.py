"""One command for a GPU machine: the GPU tests, then the GPU benchmark, then a short table.

    python benchmarks/gpu_check.py [--quick]

Installs nothing.  Runs ``pytest -m gpu tests/gpu -q`` and ``python -m benchmarks --device cuda``
(W1 at 256M elements, W2, W3/W4 at (65536, 1024) and (8192, 8192), W6 at batch 4096, and the
T1 training step, each against torch eager and torch.compile where torch is installed), then
prints per workload the median time, GB/s (GFLOP/s for T1) and the fraction of the
device-to-device copy bandwidth measured with torch.
Without a usable GPU it says why and exits 0.  Exit status: 1 if the tests failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = "W1,W2,W3,W4,W6,T1"


def gpu_unavailable_reason() -> str | None:
    """None when tracejit can use a GPU, else why not (pycuda missing, no driver, no device)."""
    sys.path.insert(0, str(ROOT))
    from runtime import cuda
    return cuda.unavailable_reason()


def run(cmd: list[str]) -> int:
    print(f"$ {' '.join(cmd)}", flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def table(doc: dict) -> str:
    """ms, GB/s and fraction of the copy roof line per (workload, implementation)."""
    copy = (doc.get("ceilings") or {}).get("copy_gbps")
    head = (f"{'workload':<34} {'implementation':<16} {'ms':>9} {'GB/s':>8} {'of copy':>8} "
            f"{'GFLOP/s':>8}  status")
    lines = [head, "-" * len(head)]
    for r in doc["results"]:
        t = r.get("median_s")
        ms = f"{t * 1e3:.3f}" if t else "-"
        gbps = r["bytes"] / t / 1e9 if t and r.get("bytes") else None
        gflops = r["flops"] / t / 1e9 if t and r.get("flops") else None
        frac = f"{gbps / copy:.0%}" if gbps and copy else "-"
        lines.append(f"{r['label'][:34]:<34} {r['impl']:<16} {ms:>9} {f'{gbps:.0f}' if gbps else '-':>8} "
                     f"{frac:>8} {f'{gflops:.0f}' if gflops else '-':>8}  {r['status']}")
    roof = f"{copy:.0f} GB/s (torch device-to-device copy)" if copy else "not measured"
    lines.append(f"copy roof line: {roof}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats in the benchmark")
    args = ap.parse_args(argv)

    reason = gpu_unavailable_reason()
    if reason is not None:
        print(f"GPU check skipped: {reason}")
        return 0

    tests_rc = run([sys.executable, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q"])

    fd, out = tempfile.mkstemp(prefix="tracejit-gpu-", suffix=".json")
    os.close(fd)
    bench = [sys.executable, "-m", "benchmarks", "--device", "cuda", "--only", WORKLOADS, "--json", out]
    bench_rc = run(bench + (["--quick"] if args.quick else []))
    try:
        doc = json.loads(Path(out).read_text()) if bench_rc == 0 else None
    except (OSError, json.JSONDecodeError):
        doc = None
    finally:
        Path(out).unlink(missing_ok=True)

    print()
    print(f"GPU tests: {'passed' if tests_rc == 0 else f'FAILED (exit {tests_rc})'}")
    print(table(doc) if doc else f"GPU benchmark: no results (exit {bench_rc})")
    return 1 if tests_rc not in (0, 5) else 0      # 5: pytest collected nothing


if __name__ == "__main__":
    sys.exit(main())
