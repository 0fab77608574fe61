"""``f.explain(*args)``: what the compiler did with a function, and why.

Prints a summary first (graph size, kernels by kind, the largest kernels, fusion boundaries
grouped by reason, peak memory, compile time by phase), then the detail: the optimized graph,
each kernel with the graph nodes fused into it, why every value that lives in memory does
(each is a fusion boundary, with the user's line that made it), the kernels' loop-level IR,
the buffer plan, and — on request — the LLVM IR or PTX and a DOT rendering.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from codegen import kir
from codegen.scalar import itemsize

from . import fusion
from .compiler import CompiledProgram, peak_bytes
from .ops import PRIMS

KERNEL_KINDS = ("elementwise", "row reduction", "column reduction", "matmul", "host step")
PHASES = ("trace", "optimize", "partition", "fusion", "schedule", "codegen")
TOP = 5         # largest kernels listed in the summary


def kernel_kind(kernel: kir.Kernel) -> str:
    """``elementwise``, ``row reduction`` (lanes along the reduced rows) or ``column reduction``
    (lanes across outer points), as the CPU code generator vectorizes it."""
    if kernel.n_reduce == 0:
        return "elementwise"
    from codegen.cpu import _row_mode
    return "row reduction" if _row_mode(kernel) else "column reduction"


def reason_kind(reason: str) -> str:
    """A boundary's reason without the node names and numbers in it, for grouping."""
    r = re.sub(r" by %\d+$", "", reason)           # "read through a view by %12"
    r = re.sub(r" %\d+", "", r)
    r = re.sub(r"used by \d+ consumers", "used by several consumers", r)
    return re.sub(r" \(cost \d+\)", "", r)


def _touched_bytes(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> int:
    """Bytes of an operand a step reads or writes once (broadcast dims count once)."""
    return math.prod(n for n, s in zip(shape, strides) if s != 0) * itemsize


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**16 else f"{n} B"


def _seconds(t: float) -> str:
    return f"{t:.2f} s" if t >= 1 else f"{t * 1e3:.1f} ms"


class Explanation:
    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self.graph = entry.traced.graph
        exe = entry.executable
        self.compiled: CompiledProgram | None = exe if isinstance(exe, CompiledProgram) else None

    # ------------------------------------------------------------------ parts
    @property
    def kernels(self) -> list[kir.Kernel]:
        return self.compiled.kernels if self.compiled else []

    def _names(self) -> dict[int, str]:
        if getattr(self, "_names_memo", None) is None:
            self._names_memo = self.compiled.graph.names() if self.compiled else self.graph.names()
        return self._names_memo

    def _at(self, nid: int) -> str:
        g = self.compiled.graph if self.compiled else self.graph
        where = g.node(nid).source if nid in g else ""
        return f"  ({where})" if where else ""

    def groups_text(self) -> str:
        if self.compiled is None:
            return f"(backend {self.entry.backend!r}: no fusion; ops run one at a time)"
        plan = self.compiled.plan
        g = self.compiled.graph
        names = self._names()
        order = {nid: k for k, nid in enumerate(names)}     # (printing order)
        lines = []
        for k, step in enumerate(plan.steps):
            if isinstance(step, fusion.KernelPlan):
                members = sorted((m for m in step.members if m in names), key=order.__getitem__)
                ops = ", ".join(f"{names[m]}={g.node(m).op}" for m in members)
                lines.append(f"kernel {k}: {step.kernel.name}  shape={step.shape}  fuses [{ops}]")
                for node in dict.fromkeys(node for node, _ in step.outputs):    # (complex: two parts)
                    lines.append(f"    writes {names[node]}: {plan.materialized.get(node, 'stage output')}"
                                 f"{self._at(node)}")
            else:
                n = g.node(step.node)
                lines.append(f"extern {k}: {n.op} -> {names[step.node]}: {plan.materialized[step.node]}"
                             f"{self._at(step.node)}")
        for node, (base, view) in plan.aliases.items():
            lines.append(f"view {names[node]} = strided view of {names[base]} "
                         f"(strides {view.strides}, offset {view.offset}): no copy")
        return "\n".join(lines)

    def boundaries(self) -> dict[str, str]:
        """Each value that lives in memory, by its printed name, and why."""
        if self.compiled is None:
            return {}
        names = self._names()
        return {names[n]: why for n, why in self.compiled.plan.materialized.items() if n in names}

    # ------------------------------------------------------------------ summary
    def kernel_kinds(self) -> dict[str, int]:
        """Steps by kind (:data:`KERNEL_KINDS`): fused kernels by loop shape, extern steps by op kind."""
        counts = dict.fromkeys(KERNEL_KINDS, 0)
        for step in self.compiled.plan.steps if self.compiled else ():
            counts[self._kind(step)] += 1
        return counts

    def _kind(self, step: Any) -> str:
        if isinstance(step, fusion.KernelPlan):
            return kernel_kind(step.kernel)
        op = self.compiled.graph.node(step.node).op
        return "matmul" if PRIMS[op].kind == "matmul" else "host step"

    def step_bytes(self, step: Any) -> int:
        """Bytes a step reads and writes (each operand's elements once)."""
        g = self.compiled.graph
        if isinstance(step, fusion.KernelPlan):
            # (operand dtypes: a complex buffer is read or written as two float parts)
            views = step.inputs + step.outputs
            operands = step.kernel.inputs + step.kernel.outputs
            return sum(_touched_bytes(v.shape, v.strides, itemsize(o.dtype))
                       for (_, v), o in zip(views, operands))
        out = g.node(step.node)
        return sum(_touched_bytes(v.shape, v.strides, g.node(n).dtype.itemsize) for n, v in step.inputs) \
            + math.prod(out.shape) * out.dtype.itemsize

    def boundary_reasons(self) -> dict[str, int]:
        """How many values live in memory for each kind of reason (see :func:`reason_kind`),
        most common first."""
        if self.compiled is None:
            return {}
        c = Counter(reason_kind(why) for n, why in self.compiled.plan.materialized.items()
                    if n in self.compiled.graph)
        return dict(c.most_common())

    @property
    def phase_times(self) -> dict[str, float]:
        """Seconds per compile phase (trace, optimize, partition, fusion, schedule, codegen)."""
        return dict(getattr(self.entry, "phase_times", {}) or {})

    def summary(self) -> str:
        g = self.graph
        lines = [f"graph: {len(g)} nodes after optimization ({len(g.inputs)} inputs, "
                 f"{len(g.outputs)} outputs)"]
        stats = getattr(self.entry.traced, "pass_stats", {}) or {}
        if any(stats.values()):
            lines[-1] += "; passes changed " + ", ".join(f"{k} {v}" for k, v in stats.items() if v)
        if self.compiled is None:
            lines.append(f"backend {self.entry.backend!r}: no fusion; ops run one at a time")
        else:
            plan, cg, names = self.compiled.plan, self.compiled.graph, self._names()
            kinds = self.kernel_kinds()
            n_k = self.compiled.n_kernels
            fused = ", ".join(f"{kinds[k]} {k}{'s' if kinds[k] != 1 and k.endswith('n') else ''}"
                              for k in KERNEL_KINDS[:3] if kinds[k])
            ext = ", ".join(f"{kinds[k]} {k}{'s' if kinds[k] != 1 else ''}" for k in KERNEL_KINDS[3:]
                            if kinds[k])
            lines.append(f"steps: {len(plan.steps)}: {n_k} kernels ({fused or 'none'})"
                         + (f"; {ext}" if ext else ""))
            hosts = Counter(cg.node(s.node).op for s in plan.steps
                            if not isinstance(s, fusion.KernelPlan) and self._kind(s) == "host step")
            if hosts:
                lines.append("  host steps: " + ", ".join(f"{op} x{n}" for op, n in hosts.most_common()))
            kernels = [(k, s) for k, s in enumerate(plan.steps) if isinstance(s, fusion.KernelPlan)]
            sizes = {k: self.step_bytes(s) for k, s in enumerate(plan.steps)}

            def row(k: int, s: fusion.KernelPlan) -> str:
                n = len(s.members)
                return (f"    kernel {k} {s.kernel.name} ({self._kind(s)}, shape {s.shape}): "
                        f"{n} node{'s' if n != 1 else ''}, {_mib(sizes[k])}{self._at(s.root)}")
            if kernels:
                lines.append("largest kernels by fused nodes:")
                lines += [row(k, s) for k, s in sorted(kernels, key=lambda ks: -len(ks[1].members))[:TOP]]
                lines.append("largest steps by bytes moved:")
                for k, s in sorted(enumerate(plan.steps), key=lambda ks: -sizes[ks[0]])[:TOP]:
                    if isinstance(s, fusion.KernelPlan):
                        lines.append(row(k, s))
                    else:
                        lines.append(f"    extern {k} {cg.node(s.node).op} -> {names[s.node]}: "
                                     f"{_mib(sizes[k])}{self._at(s.node)}")
            reasons = self.boundary_reasons()
            lines.append(f"fusion boundaries: {sum(reasons.values())} values in memory"
                         f" ({len(plan.aliases)} more are views of them, no copy)")
            width = max((len(str(n)) for n in reasons.values()), default=1)
            lines += [f"    {n:>{width}}  {why}" for why, n in reasons.items()]
            lines.append(f"peak temporary + output memory: {_mib(peak_bytes(self.compiled.program))}")
        phases = self.phase_times
        if phases:
            order = [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]
            text = ", ".join(f"{p} {_seconds(phases[p])}" for p in order)
            src = getattr(self.compiled, "kernel_sources", {}) if self.compiled else {}
            if src:
                text += (f" ({src.get('compiled', 0)} kernels compiled, {src.get('disk_hits', 0)} loaded "
                         f"from disk, {src.get('memory_hits', 0)} from memory)")
            lines.append(f"compile time: {_seconds(sum(phases.values()))}: {text}")
            by_pass = getattr(self.entry.traced, "pass_times", {}) or {}
            if by_pass:
                lines.append("    optimize by pass: "
                             + ", ".join(f"{p} {_seconds(t)}" for p, t in by_pass.items()))
        return "\n".join(lines)

    def buffer_plan_text(self) -> str:
        if self.compiled is None:
            return ""
        p = self.compiled.program
        lines = []
        for s, (nbytes, dtype) in enumerate(zip(p.slot_nbytes, p.slot_dtypes)):
            kind = "input" if s < p.n_inputs else "constant" if s in p.constants else \
                f"reuses slot {p.aliases[s]}" if s in p.aliases else "allocated"
            lines.append(f"slot {s}: {dtype} {_mib(nbytes)} ({kind})")
        lines.append(f"peak temporary + output memory: {_mib(peak_bytes(p))}")
        return "\n".join(lines)

    def kernel_ir_text(self) -> str:
        return "\n\n".join(kir.format_kernel(k) for k in self.kernels)

    def llvm_ir(self, index: int = 0) -> str:
        """The optimized LLVM IR (CPU) or PTX (CUDA) of kernel ``index``."""
        k = self.kernels[index]
        if self.entry.device.type == "cuda":
            from codegen import ptx
            return ptx.compile_kernel(k).ptx
        from codegen import cpu
        return cpu.optimized_ir(k)

    @staticmethod
    def step_members(step: Any) -> set[int]:
        """The graph nodes a program step computes (a kernel's fused nodes, a host step's node)."""
        return step.members if isinstance(step, fusion.KernelPlan) else {step.node}

    def to_dot(self) -> str:
        """Graphviz DOT of the graph with each fused kernel drawn as a cluster."""
        clusters: dict[int, int] = {}
        if self.compiled is not None:
            for k, step in enumerate(self.compiled.plan.steps):
                for m in self.step_members(step):
                    clusters.setdefault(m, k)
        g = self.compiled.graph if self.compiled else self.graph
        return g.to_dot(clusters)

    def to_svg(self, path: str | None = None) -> str:
        """SVG rendering of :meth:`to_dot` by Graphviz's ``dot`` (also written to ``path`` if given)."""
        import shutil
        import subprocess
        dot = shutil.which("dot")
        if dot is None:
            raise RuntimeError("explain().to_svg needs the `dot` program from Graphviz (not on PATH): "
                               "install it (apt-get install graphviz, brew install graphviz, conda install "
                               "graphviz, or https://graphviz.org/download/), or save .to_dot() to a .dot "
                               "file and render it elsewhere")
        svg = subprocess.run([dot, "-Tsvg"], input=self.to_dot(), capture_output=True, text=True,
                             check=True).stdout
        if path is not None:
            with open(path, "w") as f:
                f.write(svg)
        return svg

    def _repr_svg_(self) -> str | None:
        """The graph drawn in a notebook when Graphviz is installed (the text otherwise)."""
        import shutil
        return self.to_svg() if shutil.which("dot") else None

    # ------------------------------------------------------------------ printing
    def __str__(self) -> str:
        parts = [
            "== summary ==", self.summary(), "",
            "== graph (optimized) ==", str(self.compiled.graph if self.compiled else self.graph),
            "", "== kernels and fusion boundaries ==", self.groups_text(),
        ]
        if self.compiled is not None:
            parts += ["", "== kernel IR ==", self.kernel_ir_text(),
                      "", "== buffer plan ==", self.buffer_plan_text(),
                      "", "(LLVM IR / PTX of kernel i: .llvm_ir(i); graph as DOT: .to_dot())"]
        return "\n".join(parts)

    __repr__ = __str__
