"""Run under mpirun: every collective, eager and under jit, against NumPy on what each rank sent."""
from __future__ import annotations

import numpy as np

import tracejit as tj
import tracejit.distributed as dist


def sent(rank: int, shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """What rank ``rank`` contributes: distinct per rank, with values where max and sum differ."""
    base = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    return (np.cos(base * (rank + 1)) * 10 + rank).astype(dtype)


def close(got: tj.Tensor, want: np.ndarray, what: str, rtol: float = 1e-6) -> None:
    g = got.numpy()
    if g.shape != want.shape or g.dtype != want.dtype or not np.allclose(g, want, rtol=rtol, atol=1e-6):
        raise AssertionError(f"rank {dist.get_rank()}: {what}: got {g!r}, want {want!r}")


def main() -> None:
    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    everyone = np.stack([sent(r, (2, 3)) for r in range(world)])

    for op, want in (("sum", everyone.sum(0)), ("mean", everyone.mean(0)), ("max", everyone.max(0)),
                     ("min", everyone.min(0))):
        x = tj.asarray(sent(rank, (2, 3)))
        out = dist.all_reduce(x, op=op)
        if out is not x:
            raise AssertionError("all_reduce must update its tensor in place and return it")
        close(x, want.astype(np.float32), f"all_reduce({op})", rtol=1e-5)
    ints = dist.all_reduce(tj.asarray(np.array([rank, 2 * rank + 1], dtype=np.int64)))
    want_ints = np.array([sum(range(world)), sum(2 * r + 1 for r in range(world))], dtype=np.int64)
    close(ints, want_ints, "int64 sum")
    halves = dist.all_reduce(tj.asarray(sent(rank, (5,), "float16")), op="max")
    close(halves, np.stack([sent(r, (5,), "float16") for r in range(world)]).max(0), "float16 max")

    src = world - 1
    close(dist.broadcast(tj.asarray(sent(rank, (4,))), src=src), sent(src, (4,)), f"broadcast(src={src})")
    close(dist.all_gather(tj.asarray(sent(rank, (2, 3)))), everyone, "all_gather")
    big = np.stack([sent(r, (2 * world, 3)) for r in range(world)])
    close(dist.reduce_scatter(tj.asarray(sent(rank, (2 * world, 3)))), big.sum(0)[2 * rank:2 * rank + 2],
          "reduce_scatter(sum)", rtol=1e-5)

    # under jit: a collective between two kernels
    def f(x: tj.Tensor) -> tj.Tensor:
        y = dist.all_reduced(tj.exp(x * 0.1) + 1.0, op="sum")
        return (y * y).sum(axis=1)
    x = tj.asarray(sent(rank, (2, 3)))
    jf = tj.jit(f)
    close(jf(x), f(x).numpy(), "jit(all_reduced) vs eager")
    want = ((np.exp(everyone.astype(np.float64) * 0.1) + 1).sum(0) ** 2).sum(1).astype(np.float32)
    close(jf(x), want, "jit(all_reduced) vs NumPy", rtol=1e-5)
    steps = jf.lower(x).entry.executable.program.steps
    kinds = [type(s).__name__ for s in steps]
    if kinds != ["Launch", "Extern", "Launch"]:
        raise AssertionError(f"expected kernel, collective, kernel; got {kinds}")

    # gradients through collectives, eager and jitted: d/dw sum(all_reduced(x * w)) = world * x
    for name, fn in (("eager", lambda w: dist.all_reduced(x * w).sum()),
                     ("jit", tj.jit(lambda w: dist.all_reduced(x * w).sum()))):
        w = tj.asarray(np.ones((2, 3), np.float32), requires_grad=True)
        fn(w).backward()
        close(w.grad, world * sent(rank, (2, 3)), f"gradient through all_reduced ({name})", rtol=1e-5)
    g = tj.grad(lambda v: (dist.all_gather(v) * tj.asarray(everyone)).sum())(tj.asarray(sent(rank, (2, 3))))
    close(g, world * sent(rank, (2, 3)), "gradient through all_gather", rtol=1e-5)

    # broadcast's gradient: every rank's use of src's value, summed on src, zero elsewhere
    wr = tj.asarray(sent(rank, (4,)))
    gb = tj.grad(lambda v: (dist.broadcast(v * 1.0, src=src) * wr).sum())(tj.ones(4))
    want_b = np.stack([sent(r, (4,)) for r in range(world)]).sum(0) if rank == src else np.zeros(4)
    close(gb, want_b.astype(np.float32), "gradient through broadcast", rtol=1e-5)

    dist.barrier()
    if rank == 0:
        print(f"collectives ok on {world} ranks", flush=True)


if __name__ == "__main__":
    main()
