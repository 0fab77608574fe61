"""T1D: benchmark T1's training step data-parallel over 1, 2 and 4 MPI ranks (opt-in).

Run ``python -m benchmarks.ddp_scaling [--worlds 1,2,4] [--steps 20]`` or
``python -m benchmarks --only T1D``.  Each rank trains T1's MLP (784-512-512-10, AdamW) on its
own batch of 256 (weak scaling: the global batch is 256 x ranks), one compute thread per rank
(``TRACEJIT_NUM_THREADS=1``, ``torch.set_num_threads(1)``), gradients averaged in 1 MiB buckets
(3 all-reduces a step).  A world larger than the machine's cores is oversubscribed, and the table
marks it.  Per world size, in one ``mpirun`` each:

* tracejit eager with ``DistributedDataParallel`` (MPI), its reductions overlapped with the
  backward pass, and the same with ``overlap=False`` (every reduction after backward), in
  alternating rounds.  *hidden*: of the time the reductions were in flight (each bucket from
  its start until it was seen complete, summed), the share before backward had its last
  gradient; *wait*: what ``backward`` then spends until the reductions are done, overlapped vs
  not.  Both count a slower peer's lateness as reduction time, as it is from this rank's view;
* tracejit jit: the whole step (forward, backward with its collective steps, AdamW) compiled;
* torch eager with ``torch.nn.parallel.DistributedDataParallel`` on Gloo (``bucket_cap_mb=1``).

Before timing, each checks its first step against NumPy in float64 on the concatenated batch
(T1's tolerances), and after timing that every rank holds the same parameters.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import training

KEY = "T1D"
BATCH = training.BATCH            # per rank
BUCKET_MB = 1.0
IMPLS = ("tracejit", "torch")


# ----------------------------------------------------------------------------- inside a rank

def _reference(world: int) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[np.ndarray]]:
    """T1's problem with the batch of every rank, and one AdamW step of it in float64."""
    params, x, y = training.make_problem(0, batch=BATCH * world)
    ref = training.NumpyTrainer(params, x, y, np.float64)
    ref.step()
    return params, x, y, [a.astype(np.float32) for a in ref.params()]


def _check(got: list[np.ndarray], want: list[np.ndarray], what: str) -> None:
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if not np.allclose(a, b, rtol=training.PARAM_RTOL, atol=training.PARAM_ATOL):
            raise AssertionError(f"{what}: parameter {i} after one step differs from NumPy float64 "
                                 f"by {float(np.abs(a - b).max()):.3g}")


def _timed(step: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def child_tracejit(steps: int) -> dict[str, Any]:
    import tracejit as tj
    import tracejit.distributed as dist
    from tracejit import nn

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    params, x, y, ref = _reference(world)
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    xs, ys = tj.asarray(x[mine]), tj.asarray(y[mine])
    rows: dict[str, Any] = {}
    for mode in ("eager", "jit"):
        linears = [nn.Linear(*params[i].shape) for i in range(0, len(params), 2)]
        for lin, i in zip(linears, range(0, len(params), 2)):
            lin.load_state_dict({"weight": params[i].T.copy(), "bias": params[i + 1]})
        model = nn.Sequential(linears[0], nn.ReLU(), linears[1], nn.ReLU(), linears[2])
        ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=BUCKET_MB)
        opt = tj.optim.AdamW(model.parameters(), lr=training.LR, betas=training.BETAS, eps=training.EPS,
                             weight_decay=training.WEIGHT_DECAY)

        def step(x: Any, y: Any, ddp: Any = ddp, opt: Any = opt) -> Any:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(ddp(x), y)
            loss.backward()
            opt.step()
            return loss
        fn = tj.jit(step) if mode == "jit" else step
        t0 = time.perf_counter()
        float(fn(xs, ys))
        first = time.perf_counter() - t0
        _check([np.asarray(lin.weight.numpy().T if k == 0 else lin.bias.numpy())
                for lin in linears for k in (0, 1)], ref, f"tracejit {mode}")
        for _ in range(3):
            fn(xs, ys)
        ddp.overlap = False
        fn(xs, ys)                 # under jit: the second program (overlap is guarded, it re-traces)
        dist.barrier()
        group = dist.process_group.current()
        times: dict[bool, list[float]] = {True: [], False: []}
        waits: dict[bool, list[float]] = {True: [], False: []}
        comm = hidden = 0.0
        for _ in range(max(1, steps // 5)):          # rounds in turn: drift weighs on both alike
            for overlap in (True, False):
                ddp.overlap = overlap
                for _ in range(5):
                    group.tagged_log.clear()
                    t0 = time.perf_counter()
                    fn(xs, ys)
                    times[overlap].append(time.perf_counter() - t0)
                    if mode == "eager":
                        c, h, wait = ddp.comm_stats.comm_s, ddp.comm_stats.hidden_s, ddp.comm_stats.wait_s
                    else:       # the compiled step's start/wait pairs; backward ends at the first wait
                        log = group.tagged_log
                        end = min((asked for _, _, asked in log), default=0.0)
                        c = sum(done - start for start, done, _ in log)
                        h = sum(max(0.0, min(done, end) - start) for start, done, _ in log)
                        wait = max((done for _, done, _ in log), default=end) - end
                    waits[overlap].append(wait)
                    if overlap:
                        comm, hidden = comm + c, hidden + h
        name = f"tracejit {mode}"
        rows[name] = {"step_s": statistics.median(times[True]), "first_s": first,
                      "wait_s": statistics.median(waits[True]),
                      "hidden_share": hidden / comm if comm else 0.0,
                      "comm_s": comm / len(times[True])}
        rows[f"{name}, no overlap"] = {"step_s": statistics.median(times[False]),
                                       "wait_s": statistics.median(waits[False])}
        rows["buckets"] = ddp.bucket_sizes
        flat = np.concatenate([p.numpy().reshape(-1) for p in model.parameters()])
        every = dist.all_gather(tj.asarray(flat)).numpy()
        if not all(np.array_equal(every[0], e) for e in every):
            raise AssertionError(f"tracejit {mode}: the ranks' parameters differ after training")
    return rows


def child_torch(steps: int) -> dict[str, Any]:
    import torch
    import torch.distributed as tdist

    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1")))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    params, x, y, ref = _reference(world)
    mine = slice(rank * BATCH, (rank + 1) * BATCH)
    tr = training.TorchTrainer(params, x[mine], y[mine], compiled=False)
    tr.model = torch.nn.parallel.DistributedDataParallel(tr.model, bucket_cap_mb=BUCKET_MB)
    tr.forward = tr.model
    t0 = time.perf_counter()
    tr.step()
    first = time.perf_counter() - t0
    _check(tr.params(), ref, "torch")
    for _ in range(3):
        tr.step()
    tdist.barrier()
    row = {"step_s": statistics.median(_timed(tr.step, steps)), "first_s": first}
    flat = torch.cat([p.detach().reshape(-1) for p in tr.model.parameters()])
    every = [torch.empty_like(flat) for _ in range(world)]
    tdist.all_gather(every, flat)
    if not all(torch.equal(every[0], e) for e in every):
        raise AssertionError("torch: the ranks' parameters differ after training")
    tdist.destroy_process_group()
    return {"torch eager (gloo)": row}


# ----------------------------------------------------------------------------- the parent

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, impl: str, steps: int, timeout_s: float = 600) -> dict[str, Any]:
    """One ``mpirun`` of ``world`` ranks; rank 0's rows, or ``{"status": why}``."""
    if shutil.which("mpirun") is None:
        return {"status": "skipped: no mpirun (pip install 'tracejit[distributed]')"}
    cmd = ["mpirun", "-n", str(world), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TRACEJIT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    cmd += [sys.executable, "-m", "benchmarks.ddp_scaling", "--child", impl, "--steps", str(steps)]
    try:
        proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": f"error: timed out after {timeout_s:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    return {"status": "error: " + " | ".join(tail)}


def run(worlds: tuple[int, ...] = (1, 2, 4), steps: int = 20, impls: tuple[str, ...] = IMPLS,
        log: Callable[[str], None] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"cores": os.cpu_count(), "worlds": {}}
    for w in worlds:
        rows: dict[str, Any] = {}
        for impl in impls:
            got = launch(w, impl, steps)
            if log:
                log(f"  {KEY} world {w} {impl}: {got.get('status', 'ok')}")
            if "status" in got:
                rows[impl] = got
            else:
                rows.update(got)
        out["worlds"][w] = rows
    return out


def render(res: dict[str, Any]) -> str:
    cores = res["cores"]
    lines = [f"{KEY} T1 data-parallel: {BATCH} samples per rank per step, 1 thread per rank, "
             f"{cores} cores; median step time, samples/s over all ranks (x: vs world size 1)"]
    names = ("tracejit eager", "tracejit eager, no overlap", "tracejit jit", "tracejit jit, no overlap",
             "torch eager (gloo)")
    base: dict[str, float] = {}
    head = f"{'ranks':>10} | " + " | ".join(f"{n:>30}" for n in names)
    lines += [head, "-" * len(head)]
    hidden_lines = []
    for w, rows in res["worlds"].items():
        w = int(w)
        cells = []
        for n in names:
            r = rows.get(n)
            if r is None:
                why = next((v["status"] for v in rows.values() if isinstance(v, dict) and "status" in v), "-")
                cells.append(f"{why[:30]:>30}")
                continue
            sps = w * BATCH / r["step_s"]
            base.setdefault(n, sps)
            cells.append(f"{r['step_s'] * 1e3:7.1f} ms {sps:7.0f}/s x{sps / base[n]:4.2f}")
        mark = " (over)" if w > cores else ""
        lines.append(f"{w:>3}{mark:>7} | " + " | ".join(cells))
        for mode in ("eager", "jit"):
            ov, no = rows.get(f"tracejit {mode}"), rows.get(f"tracejit {mode}, no overlap")
            if ov and no and w > 1:
                hidden_lines.append(
                    f"{w:>3}{mark:>7} | tracejit {mode:>5}: {ov['hidden_share']:4.0%} of "
                    f"{ov['comm_s'] * 1e3:6.1f} ms "
                    f"of reductions in flight before backward ended; wait after backward "
                    f"{ov['wait_s'] * 1e3:5.1f} ms overlapped vs {no['wait_s'] * 1e3:5.1f} ms not")
    lines += ["hidden behind backward (per step, rank 0):"] + hidden_lines
    any_rows = next((r for r in res["worlds"].values() if "buckets" in r), None)
    if any_rows:
        mib = sum(any_rows["buckets"]) * 4 / 2**20
        lines.append(f"buckets (elements): {any_rows['buckets']}; {mib:.2f} MiB of gradients all-reduced "
                     "per rank per step; (over) = more ranks than cores")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", default="1,2,4")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        rows = (child_tracejit if args.child == "tracejit" else child_torch)(args.steps)
        rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
        if rank == 0:
            print("RESULT " + json.dumps(rows), flush=True)
        return
    worlds = tuple(int(w) for w in args.worlds.split(","))
    res = run(worlds, args.steps, tuple(args.impls.split(",")),
              log=lambda m: print(m, file=sys.stderr, flush=True))
    print(render(res))


if __name__ == "__main__":
    main()
