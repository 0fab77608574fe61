"""Data-parallel training of a small MLP on MPI ranks.

    mpirun -n 2 python examples/train_ddp.py                 # add --oversubscribe beyond the cores
    mpirun -n 2 python examples/train_ddp.py --jit --check   # compiled step, checked on rank 0
    python examples/train_ddp.py                             # one process: the same script

Each rank initializes its own weights and trains on its shard of the data
(``DistributedSampler``); ``DistributedDataParallel`` starts every rank from rank 0's weights
and averages the gradients, so the ranks stay equal.  ``--check`` has rank 0 train the same model
alone on the concatenation of every rank's batch, step by step, and compare the parameters.
``--resume-check`` saves a checkpoint (rank 0 writes) after the first epoch, trains on, then
builds a fresh model on every rank, resumes from the checkpoint (parameters, optimizer, sampler
epoch, each rank's random generator: the model has dropout) and checks it ends where the
uninterrupted run ended.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tracejit as tj  # noqa: E402
import tracejit.distributed as dist  # noqa: E402
from tracejit import nn  # noqa: E402
from tracejit.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402

DIMS = (20, 32, 32, 4)


def make_data(n: int, seed: int = 0) -> TensorDataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIMS[0])).astype(np.float32)
    y = rng.integers(0, DIMS[-1], n).astype(np.int64)
    return TensorDataset(x, y)


def make_model(seed: int, dropout: float) -> nn.Module:
    tj.manual_seed(seed)
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(DIMS[:-1], DIMS[1:])):
        layers.append(nn.Linear(a, b))
        if i + 2 < len(DIMS):
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def make_step(model: nn.Module, opt: Any, jit: bool) -> Any:
    def step(x: tj.Tensor, y: tj.Tensor) -> tj.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return tj.jit(step) if jit else step


def params_of(model: nn.Module) -> list[np.ndarray]:
    return [p.numpy().copy() for p in model.parameters()]


class Run:
    """One rank's model, optimizer, sampler and loader."""

    def __init__(self, args: argparse.Namespace, data: TensorDataset, init_seed: int, seed: int) -> None:
        self.model = make_model(init_seed, args.dropout)     # DDP then broadcasts rank 0's weights
        self.ddp = nn.parallel.DistributedDataParallel(self.model, bucket_cap_mb=args.bucket_mb)
        self.opt = tj.optim.SGD(self.model.parameters(), lr=args.lr, momentum=0.9)
        self.sampler = DistributedSampler(data, shuffle=True, seed=seed)
        self.loader = DataLoader(data, batch_size=args.batch, sampler=self.sampler, prefetch=0)
        self.step = make_step(self.ddp, self.opt, args.jit)
        self.epoch = 0

    def train_epoch(self) -> float:
        self.sampler.set_epoch(self.epoch)
        loss = 0.0
        for x, y in self.loader:
            loss = float(self.step(x, y))
        self.epoch += 1
        return loss

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optim": self.opt.state_dict(),
                "sampler": self.sampler.state_dict(), "epoch": self.epoch,
                "rng": dist.gather_rng_state()}

    def resume(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optim"])
        self.sampler.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        dist.restore_rng_state(state["rng"])


def check_against_one_process(args: argparse.Namespace, data: TensorDataset, run: Run) -> None:
    """Rank 0: the same steps by one process on each step's concatenated batch."""
    world = dist.get_world_size()
    model = make_model(args.seed, 0.0)
    opt = tj.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    step = make_step(model, opt, jit=False)
    for epoch in range(args.epochs):
        shards = []
        for r in range(world):
            s = DistributedSampler(data, num_replicas=world, rank=r, shuffle=True, seed=args.seed)
            s.set_epoch(epoch)
            shards.append(np.fromiter(iter(s), dtype=np.int64))
        for start in range(0, len(shards[0]), args.batch):
            idx = np.concatenate([sh[start:start + args.batch] for sh in shards])
            step(*data.get_batch(idx))
    for i, (a, b) in enumerate(zip(params_of(run.model), params_of(model))):
        err = float(np.abs(a - b).max())
        if not np.allclose(a, b, rtol=1e-5, atol=1e-6):
            raise AssertionError(f"parameter {i} differs from the one-process run by {err:.3g}")
    print(f"check: {world} ranks match one process on the concatenated batch "
          f"({args.epochs} epochs, {len(params_of(model))} parameters)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jit", action="store_true", help="compile the training step with tj.jit")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="per rank")
    ap.add_argument("--steps-per-epoch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--bucket-mb", type=float, default=0.004, help="small, so the MLP makes several buckets")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", action="store_true", help="compare with one process (rank 0)")
    ap.add_argument("--resume-check", action="store_true", help="checkpoint, resume, compare")
    args = ap.parse_args()

    dist.init_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    data = make_data(world * args.batch * args.steps_per_epoch, seed=args.seed)
    tj.manual_seed(args.seed)
    run = Run(args, data, args.seed + rank, args.seed)    # each rank initializes its own weights
    tj.manual_seed(args.seed + 1000 * rank)      # each rank its own dropout masks
    if rank == 0:
        print(f"{world} rank(s), buckets of {run.ddp.bucket_sizes} elements, jit={args.jit}", flush=True)

    if args.resume_check:
        folder = dist.broadcast_object(tempfile.mkdtemp(prefix="ddp-") if rank == 0 else None, src=0)
        path = os.path.join(folder, "ckpt.tjc")
        run.train_epoch()
        dist.save(run.state(), path)
        for _ in range(1, args.epochs):
            run.train_epoch()
        finished = params_of(run.model)
        fresh = Run(args, data, args.seed + 1, args.seed + 1)    # other weights and shuffle seed, epoch 0
        tj.manual_seed(12345)                              # and another generator state
        fresh.resume(dist.load(path))
        for _ in range(fresh.epoch, args.epochs):
            fresh.train_epoch()
        for i, (a, b) in enumerate(zip(finished, params_of(fresh.model))):
            if not np.array_equal(a, b):
                raise AssertionError(f"rank {rank}: parameter {i} after resuming differs by "
                                     f"{float(np.abs(a - b).max()):.3g}")
        dist.barrier()
        if rank == 0:
            os.remove(path)
            os.rmdir(os.path.dirname(path))
            print(f"resume: every rank ends where the uninterrupted run ended ({args.epochs} epochs)",
                  flush=True)
        return

    for _ in range(args.epochs):
        loss = run.train_epoch()
        if rank == 0:
            print(f"epoch {run.epoch}: loss {loss:.4f}", flush=True)
    mine = np.concatenate([p.reshape(-1) for p in params_of(run.model)])
    gathered = dist.all_gather(tj.asarray(mine)).numpy()
    if not all(np.array_equal(gathered[0], g) for g in gathered):
        raise AssertionError("the ranks' parameters differ after training")
    if args.check and rank == 0:
        check_against_one_process(args, data, run)
    dist.barrier()


if __name__ == "__main__":
    main()
