"""Native hand-off of kernel ranges between threads (the CPU worker pool's fast path).

Waking a sleeping thread and waiting on a condition variable cost 15-150 us per launch on
a small VM, more than many kernels take.  These three functions move that hand-off into
machine code: a worker spins on its control block for a while after each job (so launches in
quick succession find it awake), and only then goes to sleep, returning to its caller, which
blocks on a semaphore.  The poster learns from the block whether the worker went to sleep and
so whether to release that semaphore.

A control block is 512 bytes of int64s, written by the poster in its first cache line and by
the worker in two others (no false sharing)::

    [0] seq    [1] fn    [2] start    [3] end    [4] shape    [5] strides    [6] ptrs
    [16] done: the last seq the worker finished
    [32] asleep: 1 once the worker has left its spin loop

``post(block, fn, start, end, shape, strides, ptrs) -> was_asleep`` publishes a job;
``serve(block, spin_cycles) -> 0`` runs jobs until none came for ``spin_cycles``;
``wait(block, spin_cycles) -> finished`` spins until the job is done (1) or the time passes (0).
x86-64 only: spinning uses ``pause`` and the time-stamp counter.
"""
from __future__ import annotations

import llvmlite.binding as llvm

from codegen import cpu

BLOCK_BYTES = 512
SYMBOLS = ("tj_handoff_post", "tj_handoff_serve", "tj_handoff_wait")

_IR = r"""
declare void @llvm.x86.sse2.pause()
declare i64 @llvm.readcyclecounter()

define i64 @tj_handoff_post(ptr %c, ptr %fn, i64 %a, i64 %b, ptr %sh, ptr %st, ptr %pp) nounwind {
  %p1 = getelementptr i64, ptr %c, i64 1
  store ptr %fn, ptr %p1
  %p2 = getelementptr i64, ptr %c, i64 2
  store i64 %a, ptr %p2
  %p3 = getelementptr i64, ptr %c, i64 3
  store i64 %b, ptr %p3
  %p4 = getelementptr i64, ptr %c, i64 4
  store ptr %sh, ptr %p4
  %p5 = getelementptr i64, ptr %c, i64 5
  store ptr %st, ptr %p5
  %p6 = getelementptr i64, ptr %c, i64 6
  store ptr %pp, ptr %p6
  %s = load i64, ptr %c
  %s1 = add i64 %s, 1
  store atomic i64 %s1, ptr %c seq_cst, align 8
  %pa = getelementptr i64, ptr %c, i64 32
  %was = atomicrmw xchg ptr %pa, i64 0 seq_cst
  ret i64 %was
}

define i64 @tj_handoff_wait(ptr %c, i64 %limit) nounwind {
entry:
  %s = load i64, ptr %c
  %pd = getelementptr i64, ptr %c, i64 16
  %t0 = call i64 @llvm.readcyclecounter()
  br label %poll
poll:
  %d = load atomic i64, ptr %pd acquire, align 8
  %ok = icmp eq i64 %d, %s
  br i1 %ok, label %done, label %spin
spin:
  call void @llvm.x86.sse2.pause()
  %t = call i64 @llvm.readcyclecounter()
  %el = sub i64 %t, %t0
  %late = icmp sgt i64 %el, %limit
  br i1 %late, label %out, label %poll
done:
  ret i64 1
out:
  ret i64 0
}

define i64 @tj_handoff_serve(ptr %c, i64 %limit) nounwind {
entry:
  %pd = getelementptr i64, ptr %c, i64 16
  %pa = getelementptr i64, ptr %c, i64 32
  br label %idle
idle:
  %t0 = call i64 @llvm.readcyclecounter()
  br label %poll
poll:
  %seen = load i64, ptr %pd
  %s = load atomic i64, ptr %c acquire, align 8
  %new = icmp ne i64 %s, %seen
  br i1 %new, label %run, label %spin
spin:
  call void @llvm.x86.sse2.pause()
  %t = call i64 @llvm.readcyclecounter()
  %el = sub i64 %t, %t0
  %late = icmp sgt i64 %el, %limit
  br i1 %late, label %sleep, label %poll
sleep:
  ; announce sleep, then look once more: a job posted in between is either seen here or
  ; its poster sees asleep = 1 and releases the semaphore (seq_cst orders the two)
  store atomic i64 1, ptr %pa seq_cst, align 8
  %s2 = load atomic i64, ptr %c seq_cst, align 8
  %new2 = icmp ne i64 %s2, %seen
  br i1 %new2, label %wake, label %out
wake:
  store atomic i64 0, ptr %pa seq_cst, align 8
  br label %run
run:
  %job = load atomic i64, ptr %c acquire, align 8
  %p1 = getelementptr i64, ptr %c, i64 1
  %fn = load ptr, ptr %p1
  %p2 = getelementptr i64, ptr %c, i64 2
  %a = load i64, ptr %p2
  %p3 = getelementptr i64, ptr %c, i64 3
  %b = load i64, ptr %p3
  %p4 = getelementptr i64, ptr %c, i64 4
  %sh = load ptr, ptr %p4
  %p5 = getelementptr i64, ptr %c, i64 5
  %st = load ptr, ptr %p5
  %p6 = getelementptr i64, ptr %c, i64 6
  %pp = load ptr, ptr %p6
  call void %fn(i64 %a, i64 %b, ptr %sh, ptr %st, ptr %pp)
  store atomic i64 %job, ptr %pd release, align 8
  br label %idle
out:
  ret i64 0
}
"""


def supported() -> bool:
    """Whether the host can run the hand-off (x86-64: ``pause`` and the time-stamp counter)."""
    return llvm.get_process_triple().startswith("x86_64")


def compile_handoff() -> cpu.CpuArtifact:
    """Assemble the hand-off functions to host object code (exports :data:`SYMBOLS`)."""
    return cpu.CpuArtifact(SYMBOLS[0], cpu.assemble(_IR), _IR)
