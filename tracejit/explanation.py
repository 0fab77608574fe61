"""``f.explain(*args)``: what the compiler did with a function, and why.

Prints the optimized graph, each kernel with the graph nodes fused into it, why every value
that lives in memory does (each is a fusion boundary), the kernels' loop-level IR, the buffer
plan with peak memory, and — on request — the LLVM IR or PTX and a DOT rendering.
"""
from __future__ import annotations

from typing import Any

from codegen import kir

from . import fusion
from .compiler import CompiledProgram, peak_bytes


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**16 else f"{n} B"


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

    def groups_text(self) -> str:
        if self.compiled is None:
            return f"(backend {self.entry.backend!r}: no fusion; ops run one at a time)"
        plan = self.compiled.plan
        names = self.compiled.graph.names()
        lines = []
        for k, step in enumerate(plan.steps):
            if isinstance(step, fusion.KernelPlan):
                members = sorted(step.members, key=lambda n: names.get(n, ""))
                ops = ", ".join(f"{names[m]}={self.compiled.graph.node(m).op}" for m in members if m in names)
                lines.append(f"kernel {k}: {step.kernel.name}  shape={step.shape}  fuses [{ops}]")
                for node, _ in step.outputs:
                    lines.append(f"    writes {names[node]}: {plan.materialized.get(node, 'stage output')}")
            else:
                n = self.compiled.graph.node(step.node)
                lines.append(f"extern {k}: {n.op} -> {names[step.node]}: {plan.materialized[step.node]}")
        for node, (base, view) in plan.aliases.items():
            lines.append(f"view {names[node]} = strided view of {names[base]} "
                         f"(strides {view.strides}, offset {view.offset}): no copy")
        return "\n".join(lines)

    def boundaries(self) -> dict[str, str]:
        """Each value that lives in memory, by its printed name, and why."""
        if self.compiled is None:
            return {}
        names = self.compiled.graph.names()
        return {names[n]: why for n, why in self.compiled.plan.materialized.items() if n in names}

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

    def to_dot(self) -> str:
        """Graphviz DOT of the graph with each fused kernel drawn as a cluster."""
        clusters: dict[int, int] = {}
        if self.compiled is not None:
            for k, step in enumerate(self.compiled.plan.steps):
                for m in (step.members if isinstance(step, fusion.KernelPlan) else {step.node}):
                    clusters.setdefault(m, k)
        g = self.compiled.graph if self.compiled else self.graph
        return g.to_dot(clusters)

    def to_svg(self) -> str:
        """SVG rendering of :meth:`to_dot` (needs the ``dot`` program from Graphviz)."""
        import subprocess
        return subprocess.run(["dot", "-Tsvg"], input=self.to_dot(), capture_output=True, text=True,
                              check=True).stdout

    # ------------------------------------------------------------------ printing
    def __str__(self) -> str:
        parts = [
            "== graph (optimized) ==", str(self.compiled.graph if self.compiled else self.graph),
            "", "== kernels and fusion boundaries ==", self.groups_text(),
        ]
        if self.compiled is not None:
            parts += ["", "== kernel IR ==", self.kernel_ir_text(),
                      "", "== buffer plan ==", self.buffer_plan_text(),
                      "", "(LLVM IR / PTX of kernel i: .llvm_ir(i); graph as DOT: .to_dot())"]
        return "\n".join(parts)

    __repr__ = __str__
