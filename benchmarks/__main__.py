"""Command line: ``python -m benchmarks [--quick] [--device cuda] [--only W1,W3] [--impls ...]
[--json F] [--plot F]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from typing import Any

from . import (
    array_api_ext,
    cnn,
    compile_latency,
    compile_scaling,
    ddp_scaling,
    eager_dispatch,
    sequence_models,
    serving,
    training,
    training_utils,
    transformer,
)
from .harness import (
    IMPLS,
    LEGEND,
    Config,
    Result,
    cuda_available,
    machine_info,
    measure_ceilings,
    plot,
    render_group,
    results_json,
    run_workload,
)
from .workloads import WORKLOADS

ALL_KEYS = [w.key for w in WORKLOADS] + [training.KEY, compile_latency.KEY, eager_dispatch.KEY]
# run only when named in --only (they take minutes, or keep the default run short)
OPT_IN = [compile_scaling.KEY, transformer.KEY, *cnn.KEYS, *sequence_models.KEYS, *training_utils.KEYS,
          serving.KEY, ddp_scaling.KEY, array_api_ext.KEY]


def selected(only: str | None) -> list[str]:
    """Keys to run; ``W5`` selects both W5a and W5b. Unknown keys are an error."""
    if not only:
        return ALL_KEYS
    keys: list[str] = []
    for item in (s.strip() for s in only.split(",") if s.strip()):
        matches = [k for k in ALL_KEYS + OPT_IN if k.lower() == item.lower()
                   or (k[:-1].lower() == item.lower() and k[-1] in "ab")]
        if not matches:
            raise SystemExit(f"unknown workload {item!r}; choose from {', '.join(ALL_KEYS + OPT_IN)}")
        keys += [m for m in matches if m not in keys]
    return keys


def selected_impls(impls: str | None) -> list[str]:
    """Implementations to run, in the table's order. Unknown names are an error."""
    if not impls:
        return list(IMPLS)
    wanted = [s.strip() for s in impls.split(",") if s.strip()]
    unknown = [w for w in wanted if w not in IMPLS]
    if unknown:
        raise SystemExit(f"unknown implementation(s) {', '.join(unknown)}; choose from {', '.join(IMPLS)}")
    return [i for i in IMPLS if i in wanted]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (about a minute)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(ALL_KEYS)} (W5 = W5a,W5b), "
                    f"or the opt-in {','.join(OPT_IN)}")
    ap.add_argument("--impls", help=f"comma-separated subset of: {', '.join(IMPLS)}")
    ap.add_argument("--json", metavar="PATH", help="write every result as JSON")
    ap.add_argument("--plot", metavar="PATH", help="write a speedup chart (needs matplotlib)")
    args = ap.parse_args(argv)
    keys = selected(args.only)
    cfg = Config.for_args(args.quick, args.device, selected_impls(args.impls))

    if cfg.device == "cuda":
        ok, why = cuda_available()
        if not ok:
            print(f"CUDA benchmarks skipped: {why}.")
            return 0

    started = time.perf_counter()
    info = machine_info(cfg.device)
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))
    ceilings = measure_ceilings(cfg)
    if ceilings.copy_gbps:
        print(f"roof line: copy {ceilings.copy_gbps:.1f} GB/s, SGEMM {ceilings.gemm_gflops:.0f} GFLOP/s "
              f"({ceilings.how})")
    else:
        print(f"roof line: {ceilings.how}")
    print(f"preset {cfg.preset}: median of {cfg.repeats} samples after {cfg.warmup} warm-up calls\n",
          flush=True)

    results: list[Result] = []
    for wl in WORKLOADS:
        if wl.key not in keys:
            continue
        for shape in wl.sizes[cfg.preset]:
            log(f"[bench] {wl.label(shape)}")
            group = run_workload(wl, shape, cfg)
            results += group
            print(render_group(group, ceilings) + "\n", flush=True)

    if training.KEY in keys:
        log(f"[bench] {training.KEY} training step")
        group = training.run(cfg)
        results += group
        print(render_group(group, ceilings) + "\n", flush=True)

    if transformer.KEY in keys and cfg.device == "cpu":
        log(f"[bench] {transformer.KEY} transformer training step")
        group = transformer.run(cfg, log)
        results += group
        print(render_group(group, ceilings) + "\n", flush=True)

    for key in (k for k in cnn.KEYS if k in keys and cfg.device == "cpu"):
        log(f"[bench] {key} {cnn.label(key)}")
        group = cnn.run(cfg, key, log)
        results += group
        print(render_group(group, ceilings) + "\n", flush=True)

    for key in (k for k in sequence_models.KEYS if k in keys):
        log(f"[bench] {key} sequence model")
        group = sequence_models.run(key, cfg, log)
        results += group
        print(render_group(group, ceilings) + "\n", flush=True)
    if "U1" in keys:
        log("[bench] U1 scheduled, clipped training step")
        group = training_utils.run_u1(cfg, log)
        results += group
        print(render_group(group, ceilings) + "\n", flush=True)
    if "U2" in keys:
        log("[bench] U2 autocast matmul")
        for group in training_utils.run_u2(cfg, log):
            results += group
            print(render_group(group, ceilings) + "\n", flush=True)

    c1: dict[str, Any] | None = None
    if compile_latency.KEY in keys:
        log(f"[bench] {compile_latency.KEY} compile latency (fresh processes)")
        c1 = compile_latency.run(cfg, log)
        print(compile_latency.render(c1) + "\n", flush=True)

    c2: dict[str, Any] | None = None
    if compile_scaling.KEY in keys and cfg.device == "cpu":
        log(f"[bench] {compile_scaling.KEY} compile time by model size (fresh processes)")
        impls = tuple(i for i in compile_scaling.IMPLS if i in cfg.impls)
        c2 = compile_scaling.run(compile_scaling.MODELS, impls, log)
        print(compile_scaling.render(c2) + "\n", flush=True)

    t1d: dict[str, Any] | None = None
    if ddp_scaling.KEY in keys and cfg.device == "cpu":
        log(f"[bench] {ddp_scaling.KEY} data-parallel T1 over MPI ranks (mpirun)")
        t1d = ddp_scaling.run(steps=10 if cfg.preset == "quick" else 20, log=log)
        print(ddp_scaling.render(t1d) + "\n", flush=True)

    d1: list[dict[str, Any]] | None = None
    if eager_dispatch.KEY in keys and cfg.device == "cpu":
        log(f"[bench] {eager_dispatch.KEY} eager op cost")
        d1 = eager_dispatch.run(200 if cfg.preset == "quick" else 2000)
        print(eager_dispatch.render(d1) + "\n", flush=True)

    s1: dict[str, Any] | None = None
    if serving.KEY in keys and cfg.device == "cpu":
        log(f"[bench] {serving.KEY} export, load and serve")
        s1 = serving.run(10 if cfg.preset == "quick" else 50)
        print(serving.render(s1) + "\n", flush=True)

    x1: dict[str, Any] | None = None
    if array_api_ext.KEY in keys and cfg.device == "cpu":
        log(f"[bench] {array_api_ext.KEY} linalg, fft and complex")
        x1 = array_api_ext.run(cfg.impls)
        print(array_api_ext.render(x1) + "\n", flush=True)

    print(LEGEND)
    load = f", load average now {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"total {time.perf_counter() - started:.0f} s{load}")

    if args.json:
        doc = {"machine": info, "config": asdict(cfg), "ceilings": asdict(ceilings),
               "results": results_json(results), "compile_latency": c1,
               "compile_scaling": c2, "eager_dispatch": d1, "serving": s1, "ddp_scaling": t1d,
               "array_api_ext": x1}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        print(plot(results, args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
