"""``explain``'s summary (kernels by kind, boundaries by reason, phases) and the user's source
lines carried by graph nodes into explain and ``TRACEJIT_LOG`` lines."""
from __future__ import annotations

import inspect
import logging
import os

import numpy as np

import tracejit as tj
from tracejit import fusion
from tracejit.explanation import KERNEL_KINDS, reason_kind

HERE = os.path.basename(__file__)


def _line_of(fn, text: str) -> int:
    """The line number of ``fn``'s first source line containing ``text``."""
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


def program(x, w):
    h = x @ w
    m = tj.mean(h, axis=0)
    s = tj.nn.functional.softmax(h, axis=-1)
    c = tj.concat([s, h], axis=0)
    return c, m


def args():
    rng = np.random.default_rng(0)
    return (tj.asarray(rng.standard_normal((16, 8)).astype(np.float32)),
            tj.asarray(rng.standard_normal((8, 8)).astype(np.float32)))


def test_summary_comes_first_and_counts_kernels_by_kind():
    ex = tj.explain(program, *args())
    text = str(ex)
    assert text.startswith("== summary ==\ngraph: ")
    assert text.index("== summary ==") < text.index("== graph (optimized) ==") \
        < text.index("== kernels and fusion boundaries ==")
    steps = ex.compiled.plan.steps
    kinds = ex.kernel_kinds()
    assert list(kinds) == list(KERNEL_KINDS)
    assert sum(kinds.values()) == len(steps)
    kernels = [s for s in steps if isinstance(s, fusion.KernelPlan)]
    assert kinds["elementwise"] == sum(s.kernel.n_reduce == 0 for s in kernels)
    assert kinds["row reduction"] + kinds["column reduction"] == sum(s.kernel.n_reduce > 0 for s in kernels)
    assert kinds["column reduction"] >= 1          # the mean over axis 0
    assert kinds["row reduction"] >= 1             # softmax's max and sum
    assert kinds["matmul"] == 1 and kinds["host step"] == 0
    summary = ex.summary()
    assert f"steps: {len(steps)}: {len(kernels)} kernels (" in summary
    assert "1 matmul" in summary and "largest kernels by fused nodes:" in summary
    assert "peak temporary + output memory:" in summary


def test_boundary_reasons_are_counted():
    ex = tj.explain(program, *args())
    reasons = ex.boundary_reasons()
    materialized = ex.compiled.plan.materialized
    assert sum(reasons.values()) == len(materialized)
    assert reasons["graph output"] == len(set(ex.compiled.graph.outputs))
    assert reasons["result of matmul (extern step)"] == 1
    assert list(reasons.values()) == sorted(reasons.values(), reverse=True)
    summary = ex.summary()
    assert f"fusion boundaries: {len(materialized)} values in memory" in summary
    assert f"    {reasons['graph output']}  graph output" in summary


def test_reason_kinds_drop_node_names_and_numbers():
    assert reason_kind("read through a view by %12") == "read through a view"
    assert reason_kind("used by 3 consumers; too costly to recompute (cost 8)") == \
        "used by several consumers; too costly to recompute"
    assert reason_kind("copied: read by reshape %4, which no strides can express") == \
        "copied: read by reshape, which no strides can express"
    assert reason_kind("operand of concat") == "operand of concat"


def test_compile_phases_are_recorded():
    f = tj.jit(program)
    ex = f.explain(*args())
    phases = ex.phase_times
    for p in ("trace", "optimize", "fusion", "schedule", "codegen"):
        assert p in phases and phases[p] >= 0, p
    assert ex.compiled.phase_times.keys() == {"fusion", "schedule", "codegen"}
    src = ex.compiled.kernel_sources
    assert set(src) == {"compiled", "disk_hits", "memory_hits"}
    assert sum(src.values()) == ex.compiled.n_kernels
    assert "compile time: " in ex.summary() and "trace " in ex.summary()
    passes = ex.entry.traced.pass_times
    assert {"dce", "simplify", "fold", "cse", "verify"} <= set(passes) and min(passes.values()) >= 0
    assert sum(passes.values()) <= phases["optimize"]
    assert "optimize by pass: dce " in ex.summary()


def test_phases_of_a_differentiable_call_include_the_partition():
    w = tj.asarray(np.ones((8, 8), np.float32), requires_grad=True)
    f = tj.jit(lambda x: tj.sum(tj.tanh(x @ w)))
    entry = f.lower(args()[0]).entry
    assert entry.phase_times["partition"] >= 0


def test_boundaries_in_explain_name_the_users_line():
    ex = tj.explain(program, *args())
    mm = f"({HERE}:{_line_of(program, 'x @ w')})"
    mean = f"({HERE}:{_line_of(program, 'tj.mean')})"
    text = ex.groups_text()
    assert f"extern 0: matmul -> c: result of matmul (extern step)  {mm}" in text
    assert any(line.startswith("    writes") and line.endswith(mean) for line in text.splitlines())


def test_rewritten_and_gradient_nodes_keep_the_source():
    def f(a, b):
        return (a @ b).mT                   # rewritten to b.mT @ a.mT
    a, b = args()
    lowered = tj.jit(f).lower(a, b)
    line = f"{HERE}:{_line_of(f, '(a @ b).mT')}"
    g = lowered.graph
    (mm,) = [n for n in g.g if g.node(n).op == "matmul"]
    assert g.node(mm).source == line

    w = tj.asarray(np.ones((8, 8), np.float32), requires_grad=True)

    def loss(x):
        h = tj.tanh(x @ w)
        return tj.sum(h)
    x = args()[0]
    step = tj.jit(lambda x: (loss(x).backward(), w.grad)[1])
    g = step.lower(x).graph
    tanh_line = f"{HERE}:{_line_of(loss, 'tj.tanh')}"
    matmuls = [g.node(n) for n in g.g if g.node(n).op == "matmul"]
    assert len(matmuls) >= 2                # forward and the weight gradient
    assert all(n.source == tanh_line for n in matmuls), [n.source for n in matmuls]


def test_log_lines_carry_the_users_file_and_line(caplog):
    def f(x, w):
        h = x @ w
        return tj.sum(tj.exp(h), axis=-1)
    with caplog.at_level(logging.INFO, logger="tracejit.fusion"), \
            caplog.at_level(logging.INFO, logger="tracejit.kernels"):
        tj.jit(f)(*args())
    mm = f"({HERE}:{_line_of(f, 'x @ w')})"
    red = f"({HERE}:{_line_of(f, 'tj.sum')})"
    fusion_lines = [r.getMessage() for r in caplog.records if r.name == "tracejit.fusion"]
    kernel_lines = [r.getMessage() for r in caplog.records if r.name == "tracejit.kernels"]
    assert any("lives in memory: result of matmul (extern step)" in m and m.endswith(mm)
               for m in fusion_lines)
    assert any("lives in memory: graph output" in m and m.endswith(red) for m in fusion_lines)
    assert kernel_lines and all(m.endswith(red) for m in kernel_lines)


def test_source_is_not_part_of_node_equality():
    from tracejit.graph import Node
    from tracejit.ops import AVal
    aval = AVal((2,), np.dtype(np.float32))
    assert Node("exp", (0,), {}, aval, "a.py:1") == Node("exp", (0,), {}, aval, "b.py:2")
