"""tracejit.distributed in one process (no launcher): collectives, hooks, DDP buckets, the sampler.

The multi-process runs are in test_distributed_mpi.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
import tracejit.distributed as dist
from tracejit import nn
from tracejit.data import DistributedSampler, TensorDataset
from tracejit.distributed import process_group


@pytest.fixture
def group():
    if dist.is_initialized():
        dist.destroy_process_group()
    g = dist.init_process_group()
    yield g
    dist.destroy_process_group()


def test_single_process_group(group) -> None:
    assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, "single-process")
    dist.barrier()
    with pytest.raises(RuntimeError, match="already called"):
        dist.init_process_group()


def test_collectives_need_a_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
    with pytest.raises(dist.DistributedError, match="init_process_group"):
        dist.all_reduce(tj.ones(3))
    with pytest.raises(ValueError, match="backend 'nccl'"):
        dist.init_process_group("nccl")


def test_collectives_of_one_rank_against_numpy(group, rng) -> None:
    a = rng.standard_normal((4, 3)).astype(np.float32)
    for op in ("sum", "mean", "max", "min", dist.ReduceOp.AVG):
        x = tj.asarray(a)
        assert dist.all_reduce(x, op=op) is x
        np.testing.assert_array_equal(x.numpy(), a)
    np.testing.assert_array_equal(dist.broadcast(tj.asarray(a), src=0).numpy(), a)
    g = dist.all_gather(tj.asarray(a))
    assert g.shape == (1, 4, 3)
    np.testing.assert_array_equal(g.numpy()[0], a)
    np.testing.assert_array_equal(dist.reduce_scatter(tj.asarray(a)).numpy(), a)


def test_collective_errors_name_the_problem(group) -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        dist.all_reduce(tj.ones(3), op="prod")
    with pytest.raises(TypeError, match="mean.*floating-point"):
        dist.all_reduce(tj.asarray(np.arange(3)), op="mean")
    with pytest.raises(ValueError, match="rank 3 is not in the group"):
        dist.broadcast(tj.ones(3), src=3)
    with pytest.raises(TypeError, match="needs a tracejit Tensor"):
        dist.all_reduce(np.ones(3))
    with pytest.raises(ValueError, match="leading dimension"):
        group.reduce_scatter(np.ones(()), "sum")


def test_a_collective_is_one_host_step_between_fused_kernels(group, rng) -> None:
    def f(x, b):
        y = dist.all_reduced(tj.tanh(x * 2.0 + b), op="mean")
        return tj.exp(y).sum(axis=-1)

    x, b = rng.standard_normal((8, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    jf = tj.jit(f)
    got = jf(tj.asarray(x), tj.asarray(b)).numpy()
    np.testing.assert_allclose(got, f(tj.asarray(x), tj.asarray(b)).numpy(), rtol=2e-6)
    want = np.exp(np.tanh(x.astype(np.float64) * 2 + b)).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    steps = jf.lower(tj.asarray(x), tj.asarray(b)).entry.executable.program.steps
    assert [type(s).__name__ for s in steps] == ["Launch", "Extern", "Launch"]
    assert steps[1].name == "all_reduce"


def test_gradients_of_collectives_are_the_adjoint_collectives(group, rng) -> None:
    a = rng.standard_normal((2, 3)).astype(np.float32)
    w = rng.standard_normal((2, 3)).astype(np.float32)
    for fn, want in ((lambda v: (dist.all_reduced(v) * tj.asarray(w)).sum(), w),
                     (lambda v: (dist.all_gather(v)[0] * tj.asarray(w)).sum(), w),
                     (lambda v: (dist.reduce_scatter(v, op="mean") * tj.asarray(w)).sum(), w),
                     (lambda v: (dist.broadcast(v * 1.0, src=0) * tj.asarray(w)).sum(), w)):
        np.testing.assert_allclose(tj.grad(fn)(tj.asarray(a)).numpy(), want, rtol=1e-6)
        np.testing.assert_allclose(tj.jit(tj.grad(fn))(tj.asarray(a)).numpy(), want, rtol=1e-6)
    with pytest.raises(NotImplementedError, match="all_reduce\\(max\\) has no gradient"):
        tj.grad(lambda v: dist.all_reduced(v, op="max").sum())(tj.asarray(a))


def test_post_accumulate_hooks_fire_when_a_leaf_is_final_before_backward_ends() -> None:
    w1 = tj.asarray(np.array([1.0, -2.0, 3.0], np.float32), requires_grad=True)
    w2 = tj.asarray(np.array([0.5, 0.25, 2.0], np.float32), requires_grad=True)
    x = tj.asarray(np.array([1.0, 2.0, -1.0], np.float32))
    events: list[tuple[str, np.ndarray]] = []
    h1 = w1.register_post_accumulate_grad_hook(lambda t: events.append(("w1", t.grad.numpy().copy())))
    w2.register_post_accumulate_grad_hook(lambda t: events.append(("w2", t.grad.numpy().copy())))

    def loss():
        h = tj.tanh(x * w1)
        return ((h * w2).sum() + (w1 * w1).sum())     # w1 is reached along two paths
    loss().backward()
    assert [name for name, _ in events] == ["w2", "w1"]     # w2's gradient is final first
    h = np.tanh(x * w1.numpy())
    np.testing.assert_allclose(events[0][1], h, rtol=1e-6)
    np.testing.assert_allclose(events[1][1], w2.numpy() * (1 - h * h) * x + 2 * w1.numpy(), rtol=1e-6)
    np.testing.assert_allclose(w1.grad.numpy(), events[1][1])

    h1.remove()
    events.clear()
    order: list[str] = []

    def w2_hook(t):
        order.append("hook")
        tj.autograd.queue_callback(lambda: order.append("callback"))
    w2.register_post_accumulate_grad_hook(w2_hook)
    loss().backward()
    assert [n for n, _ in events] == ["w2"] and order == ["hook", "callback"]
    with pytest.raises(RuntimeError, match="only valid while backward"):
        tj.autograd.queue_callback(lambda: None)


def _mlp(seed: int) -> nn.Module:
    tj.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def test_ddp_buckets_follow_the_cap_in_reverse_parameter_order(group) -> None:
    ddp = nn.parallel.DistributedDataParallel(_mlp(0), bucket_cap_mb=300 * 4 / 2**20)
    # reverse order, 300 elements a bucket: b3 (3) + W3 (48) + b2 (16) = 67; + W2 (256) would pass
    # the cap, so W2 starts the next, b1 (16) joins it (272); W1 (96) starts the third
    assert ddp.bucket_sizes == [67, 272, 96]
    for overlap, early in ((True, 3), (False, 0)):
        ddp.overlap = overlap
        ddp(tj.ones((2, 6))).sum().backward()
        assert ddp.comm_stats.started_early == early
    assert nn.parallel.DistributedDataParallel(_mlp(0)).bucket_sizes == [435]
    with pytest.raises(ValueError, match="bucket_cap_mb must be positive"):
        nn.parallel.DistributedDataParallel(_mlp(0), bucket_cap_mb=0)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_ddp_of_one_rank_trains_like_the_model(group, rng, jit) -> None:
    x = tj.asarray(rng.standard_normal((10, 6)).astype(np.float32))
    y = tj.asarray(rng.integers(0, 3, 10))
    runs = []
    for wrap in (False, True):
        model = _mlp(1)
        net = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1e-4) if wrap else model
        opt = tj.optim.Adam(model.parameters(), lr=1e-2)

        def step(x, y, net=net, opt=opt):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss
        fn = tj.jit(step) if jit else step
        for _ in range(3):
            fn(x, y)
        runs.append([p.numpy() for p in model.parameters()])
        if wrap:
            assert net.comm_stats.steps == (1 if jit else 3)     # under jit the hooks run once, traced
            if not jit:     # every bucket's reduction started from a hook, before the walk ended
                assert net.comm_stats.started_early == len(net.bucket_sizes) > 1
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_ddp_names_parameters_without_gradient(group) -> None:
    model = _mlp(0)
    ddp = nn.parallel.DistributedDataParallel(model)
    out = model[0](tj.ones((2, 6))).sum()           # only the first layer takes part
    with pytest.raises(RuntimeError, match="received no gradient.*2.weight"):
        out.backward()
    ddp(tj.ones((2, 6))).sum().backward()           # the next full step works again
    assert model[4].weight.grad is not None


def test_distributed_sampler_shards_and_epochs() -> None:
    data = TensorDataset(np.arange(10))
    shards = [list(DistributedSampler(data, num_replicas=3, rank=r, seed=5)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    flat = sorted(i for s in shards for i in s)
    assert set(flat) == set(range(10)) and len(flat) == 12      # 2 indices repeated to pad
    s0 = DistributedSampler(data, num_replicas=3, rank=0, seed=5)
    first = list(s0)
    assert list(s0) == first
    s0.set_epoch(1)
    assert list(s0) != first and sorted(list(s0)) != []
    again = DistributedSampler(data, num_replicas=3, rank=0, seed=5)
    again.load_state_dict(s0.state_dict())
    assert list(again) == list(s0)
    dropped = [list(DistributedSampler(data, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    assert [len(s) for s in dropped] == [3, 3, 3] and len({i for s in dropped for i in s}) == 9
    with pytest.raises(ValueError, match="rank 3 is not in"):
        DistributedSampler(data, num_replicas=3, rank=3)


def test_distributed_sampler_without_shuffle_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    data = TensorDataset(np.arange(11))
    for drop_last in (False, True):
        for r in range(4):
            ours = list(DistributedSampler(data, num_replicas=4, rank=r, shuffle=False, drop_last=drop_last))
            theirs = list(torch.utils.data.DistributedSampler(
                range(11), num_replicas=4, rank=r, shuffle=False, drop_last=drop_last))
            assert ours == theirs


def test_data_loader_takes_the_sampler(group) -> None:
    data = TensorDataset(np.arange(12), np.arange(12) * 10)
    sampler = DistributedSampler(data, seed=3)
    loader = tj.data.DataLoader(data, batch_size=5, sampler=sampler, prefetch=0)
    batches = [b[0].numpy().tolist() for b in loader]
    assert len(loader) == 3 and sum(batches, []) == list(sampler)
    with pytest.raises(ValueError, match="sampler and shuffle"):
        tj.data.DataLoader(data, sampler=sampler, shuffle=True)


def test_checkpoint_of_one_rank_round_trips_rng(group, tmp_path) -> None:
    gen = tj.random.Generator(7)
    gen.next_key()
    states = dist.gather_rng_state(gen)
    assert states.shape == (1, 2)
    dist.save({"rng": states, "step": 3}, tmp_path / "c.tjc")
    back = dist.load(tmp_path / "c.tjc")
    gen.next_key()
    dist.restore_rng_state(back["rng"], gen)
    np.testing.assert_array_equal(gen.get_state(), states[0])
    with pytest.raises(ValueError, match="one row per rank"):
        dist.restore_rng_state(np.zeros((2, 2)), gen)


def test_mpi_launch_without_mpi4py_is_a_clear_error(monkeypatch) -> None:
    import builtins
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    real_import = builtins.__import__

    def no_mpi(name, *a, **k):
        if name.startswith("mpi4py"):
            raise ImportError("no mpi4py")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_mpi)
    with pytest.raises(dist.DistributedError, match="mpi4py is not installed"):
        process_group.ProcessGroup()


def test_a_jitted_ddp_step_starts_each_reduction_during_backward_and_waits_after_it(group, rng) -> None:
    model = _mlp(2)
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=300 * 4 / 2**20)
    opt = tj.optim.SGD(model.parameters(), lr=0.1)

    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        return loss
    f = tj.jit(step)
    x, y = tj.asarray(rng.standard_normal((4, 6)).astype(np.float32)), tj.asarray(rng.integers(0, 3, 4))
    f(x, y)
    names = [getattr(s, "name", "kernel") for s in f.lower(x, y).entry.executable.program.steps]
    starts = [i for i, n in enumerate(names) if n == "all_reduce_start"]
    waits = [i for i, n in enumerate(names) if n == "all_reduce_wait"]
    gemms = [i for i, n in enumerate(names) if n == "matmul"]
    assert len(starts) == len(waits) == len(ddp.bucket_sizes) == 3
    assert max(starts) < min(waits)
    # the first bucket (the last layer's gradients) is in flight while the layers below run
    assert sum(starts[0] < g < min(waits) for g in gemms) >= 2, names


def test_ddp_hooks_fire_through_a_jitted_forward_in_an_eager_loop(group, rng) -> None:
    x = tj.asarray(rng.standard_normal((5, 6)).astype(np.float32))
    grads = []
    for wrap in (False, True):
        model = _mlp(3)
        net = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=1e-4) if wrap else model
        forward = tj.jit(net)                   # one compiled tape node; backward stays eager
        (forward(x) ** 2).sum().backward()
        grads.append([p.grad.numpy() for p in model.parameters()])
        if wrap:
            assert net.comm_stats.steps == 1 and net.comm_stats.started_early == len(net.bucket_sizes)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_t1d_table_marks_oversubscribed_worlds_and_missing_frameworks() -> None:
    from benchmarks import ddp_scaling
    row = {"step_s": 0.1, "first_s": 1.0, "wait_s": 0.01, "hidden_share": 0.5, "comm_s": 0.02}
    res = {"cores": 2, "worlds": {
        1: {"tracejit eager": row, "tracejit eager, no overlap": row, "tracejit jit": row,
            "tracejit jit, no overlap": row, "buckets": [10, 20], "torch": {"status": "skipped: no torch"}},
        4: {"tracejit eager": {**row, "step_s": 0.2}, "tracejit eager, no overlap": {**row, "wait_s": 0.02},
            "tracejit jit": row, "tracejit jit, no overlap": row, "torch": {"status": "skipped: no torch"}}}}
    text = ddp_scaling.render(res)
    assert "4 (over)" in text and "skipped: no torch" in text
    assert "5120/s x2.00" in text        # 4 ranks x 256 samples in 0.2 s, twice world 1's rate
    assert "50% of   20.0 ms" in text and "10.0 ms overlapped vs  20.0 ms not" in text
    assert "buckets (elements): [10, 20]" in text
