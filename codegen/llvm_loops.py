"""Counted loops for LLVM IR builders: a ``with`` block per loop, values carried from trip to
trip as phis (the kernel lowering, the GEMM, the step runner)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from codegen.scalar import I64


@dataclass
class Loop:
    i: ir.Value
    carried: list[ir.Value]
    next: list[ir.Value] | None = None      # set by the body: carried values for the next trip


class FunctionBuilder:
    """An IRBuilder in one function, with counted loops that carry SSA values."""

    def __init__(self, fn: ir.Function, builder: ir.IRBuilder | None = None):
        self.fn = fn
        self.b = builder or ir.IRBuilder(fn.append_basic_block("entry"))

    @contextmanager
    def loop(self, lo: ir.Value, hi: ir.Value, step: int | ir.Value = 1, name: str = "i",
             carry: Sequence[ir.Value] = (), tail: bool = False) -> Iterator[Loop]:
        """``for i = lo; i + step <= hi; i += step`` (``i < hi`` with ``tail``: a partial last
        step).  After it, the loop's ``i`` and ``carried`` hold the first index not run and the
        final carried values."""
        b = self.b
        pre = b.block
        head = self.fn.append_basic_block(f"{name}.head")
        body = self.fn.append_basic_block(f"{name}.body")
        done = self.fn.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=name)
        i.add_incoming(lo, pre)
        phis = []
        for v in carry:
            p = b.phi(v.type)
            p.add_incoming(v, pre)
            phis.append(p)
        step = I64(step) if isinstance(step, int) else step
        last = i if tail else b.sub(b.add(i, step), I64(1))
        b.cbranch(b.icmp_signed("<", last, hi), body, done)
        b.position_at_end(body)
        state = Loop(i, phis)
        yield state
        end = b.block
        i.add_incoming(b.add(i, step), end)
        for p, v in zip(phis, state.next if state.next is not None else phis):
            p.add_incoming(v, end)
        b.branch(head)
        b.position_at_end(done)

    def min(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.select(self.b.icmp_signed("<", x, y), x, y)

    def ceil_div(self, x: ir.Value, y: ir.Value) -> ir.Value:
        return self.b.sdiv(self.b.add(x, self.b.sub(y, I64(1))), y)

    def at(self, ptr: ir.Value, offset: ir.Value) -> ir.Value:
        return self.b.gep(ptr, [offset])


def function(module: ir.Module, name: str, args: Sequence[ir.Type], internal: bool = True,
             ret: ir.Type | None = None) -> ir.Function:
    """A ``nounwind``, library-call-free function (internal unless ``internal`` is False)."""
    fn = ir.Function(module, ir.FunctionType(ret or ir.VoidType(), list(args)), name=name)
    fn.attributes.add("nounwind")
    # no library calls: the optimizer would turn copy and zero loops into memcpy/memset
    set.add(fn.attributes, '"no-builtins"')
    if internal:
        fn.linkage = "internal"
    return fn
