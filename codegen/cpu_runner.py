"""The launches of a CPU program in one native call (a cached call's per-step cost).

From Python, a launch costs a few microseconds: a ctypes call per range, the hand-off to the
workers (:mod:`codegen.cpu_handoff`) and the wait.  ``tj_run_steps`` walks a program's steps
in machine code instead, and returns to Python only for what needs it: a step that is not a
kernel (an extern), a worker that has gone to sleep (its semaphore is Python's), or a worker
that has not finished within the spin limit (Python waits without burning the core).

Steps are records of int64 words in one array, ``index[k]`` the word where step ``k`` starts::

    [0] kernel address (0: a step for Python)  [1] shape  [2] strides  [3] ptrs
    [4] operands n   [5] ranges r   then n x (slot, byte offset)   then r x (start, end)

Before calling the kernel, ``ptrs[j] = addresses[slot_j] + offset_j`` for each operand (the
buffers of this call).  Ranges after the first go to workers ``workers[0..r-2]``; the first
runs here.  ``serial`` runs every range here (another thread holds the workers).

``tj_run_steps(desc, index, first, n, addresses, workers, state, spin_limit, serial, post,
wait) -> k`` runs steps ``first..n-1`` and returns the step it stopped at (``n`` when done),
with ``state = [why, posted, asleep]``: :data:`DONE`, :data:`PYTHON` (step ``k`` is Python's,
nothing of it ran), :data:`WAKE` (step ``k``'s ranges were posted, the workers in the bit set
``asleep`` must be woken; its first range has not run), or :data:`WAIT` (step ``k`` ran here,
the workers in ``posted`` may still be running it).  ``post`` and ``wait`` are the hand-off's
functions, passed as pointers so this module needs no symbol from another.
"""
from __future__ import annotations

from llvmlite import ir

from codegen import cpu
from codegen.llvm_loops import FunctionBuilder, function
from codegen.scalar import I64

SYMBOL = "tj_run_steps"
DONE, PYTHON, WAKE, WAIT = 0, 1, 2, 3
HEADER_WORDS = 6

_I8P = ir.IntType(8).as_pointer()
_I64P = I64.as_pointer()
_KERNEL = ir.FunctionType(ir.VoidType(), [I64, I64, _I64P, _I64P, _I8P.as_pointer()])
_POST = ir.FunctionType(I64, [_I8P, _I8P, I64, I64, _I8P, _I8P, _I8P])
_WAIT = ir.FunctionType(I64, [_I8P, I64])


def build() -> ir.Module:
    """The runner's LLVM module."""
    module = ir.Module(name=SYMBOL)
    fn = function(module, SYMBOL, [_I64P, _I64P, I64, I64, _I64P, _I64P, _I64P, I64, I64, _I8P, _I8P],
                  internal=False, ret=I64)
    desc, index, first, n, addrs, workers, state, limit, serial, post_p, wait_p = fn.args
    e = FunctionBuilder(fn)
    b = e.b
    post = b.bitcast(post_p, _POST.as_pointer())
    wait = b.bitcast(wait_p, _WAIT.as_pointer())

    def word(ptr: ir.Value, i) -> ir.Value:
        return b.load(e.at(ptr, i if isinstance(i, ir.Value) else I64(i)))

    def stop(k: ir.Value, why: int, posted: ir.Value, asleep: ir.Value) -> None:
        for i, v in enumerate((I64(why), posted, asleep)):
            b.store(v, e.at(state, I64(i)))
        b.ret(k)

    def worker(r: ir.Value) -> ir.Value:       # the control block of the worker of range r >= 1
        return b.inttoptr(word(workers, b.sub(r, I64(1))), _I8P)

    with e.loop(first, n, 1, "step") as step:
        k = step.i
        rec = e.at(desc, word(index, k))
        kernel_addr = word(rec, 0)
        python_bb, native_bb = fn.append_basic_block("python"), fn.append_basic_block("native")
        b.cbranch(b.icmp_signed("==", kernel_addr, I64(0)), python_bb, native_bb)
        b.position_at_end(python_bb)
        stop(k, PYTHON, I64(0), I64(0))
        b.position_at_end(native_bb)
        kernel = b.inttoptr(kernel_addr, _KERNEL.as_pointer())
        shape, strides = (b.inttoptr(word(rec, i), _I64P) for i in (1, 2))
        ptrs = b.inttoptr(word(rec, 3), _I64P)
        n_ops, n_ranges = word(rec, 4), word(rec, 5)
        with e.loop(I64(0), n_ops, 1, "op") as op:
            pair = b.add(I64(HEADER_WORDS), b.mul(op.i, I64(2)))
            slot, offset = word(rec, pair), word(rec, b.add(pair, I64(1)))
            b.store(b.add(word(addrs, slot), offset), e.at(ptrs, op.i))
        ranges = e.at(rec, b.add(I64(HEADER_WORDS), b.mul(n_ops, I64(2))))
        args = [shape, strides, b.bitcast(ptrs, _I8P.as_pointer())]

        def bounds(r: ir.Value) -> tuple[ir.Value, ir.Value]:
            return word(ranges, b.mul(r, I64(2))), word(ranges, b.add(b.mul(r, I64(2)), I64(1)))

        local = b.or_(b.icmp_signed("!=", serial, I64(0)), b.icmp_signed("<=", n_ranges, I64(1)))
        here_bb, spread_bb, next_bb = (fn.append_basic_block(x) for x in ("here", "spread", "next"))
        b.cbranch(local, here_bb, spread_bb)

        b.position_at_end(here_bb)
        with e.loop(I64(0), n_ranges, 1, "r") as r:
            b.call(kernel, [*bounds(r.i), *args])
        b.branch(next_bb)

        b.position_at_end(spread_bb)
        kernel_i8 = b.bitcast(kernel, _I8P)
        shape_i8, strides_i8, ptrs_i8 = (b.bitcast(x, _I8P) for x in (shape, strides, ptrs))
        with e.loop(I64(1), n_ranges, 1, "post", carry=[I64(0), I64(0)]) as r:
            posted, asleep = r.carried
            lo, hi = bounds(r.i)
            was = b.call(post, [worker(r.i), kernel_i8, lo, hi, shape_i8, strides_i8, ptrs_i8])
            bit = b.shl(I64(1), b.sub(r.i, I64(1)))
            slept = b.icmp_signed("!=", was, I64(0))
            r.next = [b.or_(posted, bit), b.select(slept, b.or_(asleep, bit), asleep)]
        posted, asleep = r.carried
        wake_bb, run_bb = fn.append_basic_block("wake"), fn.append_basic_block("run")
        b.cbranch(b.icmp_signed("!=", asleep, I64(0)), wake_bb, run_bb)
        b.position_at_end(wake_bb)
        stop(k, WAKE, posted, asleep)
        b.position_at_end(run_bb)
        b.call(kernel, [*bounds(I64(0)), *args])
        # wait for each worker in turn; once one is late, leave the rest to Python as well
        with e.loop(I64(1), n_ranges, 1, "wait", carry=[I64(0)]) as r:
            (late,) = r.carried
            bit = b.shl(I64(1), b.sub(r.i, I64(1)))
            skipped = b.or_(late, bit)
            wait_bb, join_bb = fn.append_basic_block("wait.one"), fn.append_basic_block("wait.join")
            pre = b.block
            b.cbranch(b.icmp_signed("==", late, I64(0)), wait_bb, join_bb)
            b.position_at_end(wait_bb)
            finished = b.call(wait, [worker(r.i), limit])
            now_late = b.select(b.icmp_signed("!=", finished, I64(0)), I64(0), bit)
            waited = b.block
            b.branch(join_bb)
            b.position_at_end(join_bb)
            phi = b.phi(I64)
            phi.add_incoming(skipped, pre)
            phi.add_incoming(now_late, waited)
            r.next = [phi]
        (late,) = r.carried
        late_bb = fn.append_basic_block("late")
        b.cbranch(b.icmp_signed("!=", late, I64(0)), late_bb, next_bb)
        b.position_at_end(late_bb)
        stop(k, WAIT, late, I64(0))
        b.position_at_end(next_bb)
    for i in range(3):
        b.store(I64(0), e.at(state, I64(i)))
    b.ret(n)
    return module


def compile_runner() -> cpu.CpuArtifact:
    """Assemble the runner to host object code (exports :data:`SYMBOL`)."""
    text = str(build())
    return cpu.CpuArtifact(SYMBOL, cpu.assemble(text), text)
