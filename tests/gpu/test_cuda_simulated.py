"""The CUDA front end on a simulated device (kernels run on the CPU), so it is tested everywhere;
plus the errors a user gets when CUDA is asked for but cannot be used."""
from __future__ import annotations

import numpy as np
import pytest
from cuda_frontend_cases import *  # noqa: F403
from simulated_cuda import installed

import tracejit as tj
from codegen import ptx
from runtime import cuda
from runtime.ptx_cache import default_ptx_cache
from tracejit import device as tj_device
from tracejit import eager_device


@pytest.fixture
def gpu():
    eager_device.cache_clear()         # cached one-op programs hold the previous device
    with installed() as dev:
        yield dev
    eager_device.cache_clear()


REASON = "no CUDA device: the driver reports 0 GPUs"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(cuda, "_probe_once", lambda: (None, REASON))


def test_to_cuda_names_the_reason(no_cuda):
    x = tj.asarray(np.ones(3, np.float32))
    with pytest.raises(RuntimeError, match=REASON):
        x.to("cuda")
    with pytest.raises(RuntimeError, match=REASON):
        tj.ones(3, device="cuda")


def test_set_default_device_names_the_reason(no_cuda):
    before = tj.default_device()
    with pytest.raises(RuntimeError, match=rf"set_default_device\('cuda'\).*{REASON}"):
        tj.set_default_device("cuda")
    assert tj.default_device() == before


def test_env_default_device_names_the_reason(no_cuda, monkeypatch):
    monkeypatch.setenv("TRACEJIT_DEVICE", "cuda")
    monkeypatch.setattr(tj_device, "_default", None)
    with pytest.raises(RuntimeError, match=rf"TRACEJIT_DEVICE.*{REASON}"):
        tj.zeros(3)


def test_namespace_without_cuda(no_cuda):
    assert not tj.cuda.is_available()
    assert tj.cuda.unavailable_reason() == REASON
    assert tj.cuda.device_count() == 0
    tj.cuda.synchronize()               # nothing to wait for
    with pytest.raises(RuntimeError, match=REASON):
        tj.cuda.memory_stats()


def test_default_device_cuda_places_new_tensors(gpu, monkeypatch):
    monkeypatch.setattr(tj_device, "_default", None)
    tj.set_default_device("cuda")
    assert tj.zeros(3).device == "cuda:0" and tj.arange(4).device == "cuda:0"
    np.testing.assert_array_equal(tj.arange(4).numpy(), np.arange(4))


@pytest.mark.parametrize("impl", ["tracejit jit", "tracejit eager"])
def test_training_benchmark_step_on_cuda(gpu, impl):
    """Benchmark T1's step on a CUDA device: parameters, gradients and AdamW state live on the
    device, and one step matches the float64 NumPy reference the benchmark checks against."""
    from benchmarks import training
    dims, batch = (48, 32, 32, 10), 16
    params, x, y = training.make_problem(dims=dims, batch=batch)
    ref = training.NumpyTrainer(params, x, y, np.float64)
    ref_loss = float(ref.step())
    ref_params = [a.astype(np.float32) for a in ref.params()]
    tr = training.make_trainer(impl, params, x, y, device="cuda")
    assert all(p.device.type == "cuda" for p in tr.p)
    problem, _ = training.check_step(tr, ref_loss, ref_params)
    assert problem == ""
    with pytest.raises(training.Unavailable):
        training.make_trainer("numpy", params, x, y, device="cuda")


def test_zero_dim_tensor_keeps_its_shape_on_the_device(gpu):
    x = tj.asarray(np.float32(2.5)).to("cuda")
    assert x.shape == () and x.device.type == "cuda"
    assert np.asarray(x.to("cpu")).shape == ()


def test_eager_ops_that_make_index_arrays_follow_their_operand_to_the_device(gpu):
    """cross_entropy (a one-hot of the labels), its backward (the seed gradient) and tril (an
    index grid) create arrays on the host; eagerly on a GPU they must land there too."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 2, 3])
    z = tj.asarray(logits, device="cuda", requires_grad=True)
    loss = tj.nn.functional.cross_entropy(z, tj.asarray(labels, device="cuda"))
    loss.backward()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want_grad = (p - np.eye(4, dtype=np.float32)[labels]) / 5
    np.testing.assert_allclose(np.asarray(z.grad.to("cpu")), want_grad, rtol=1e-5, atol=1e-6)
    m = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(tj.tril(tj.asarray(m, device="cuda"), k=1).to("cpu")),
                                  np.tril(m, k=1))


def test_eager_data_dependent_ops_on_the_device(gpu):
    """Boolean-mask reads and writes, nonzero and unique on a GPU tensor: results stay on its
    device and equal NumPy's."""
    a = np.array([[-2.0, 3.0, 0.0], [1.5, -1.0, 4.0]], np.float32)
    x = tj.asarray(a, device="cuda")
    picked = x[x > 0]
    assert picked.device.type == "cuda"
    np.testing.assert_array_equal(np.asarray(picked.to("cpu")), a[a > 0])
    rows, cols = tj.nonzero(x > 0)
    assert rows.device.type == "cuda"
    np.testing.assert_array_equal(np.asarray(cols.to("cpu")), np.nonzero(a > 0)[1])
    u = tj.unique_values(x)
    assert u.device.type == "cuda"
    np.testing.assert_array_equal(np.asarray(u.to("cpu")), np.unique(a))
    x[x < 0] = 0.0
    np.testing.assert_array_equal(np.asarray(x.to("cpu")), np.where(a < 0, 0, a))


def test_module_to_device_and_dropout_train_on_the_device(gpu):
    """``model.to("cuda")`` moves parameters in place (the optimizer keeps them), and a step
    with dropout runs eagerly and jitted on the device."""
    tj.manual_seed(3)
    model = tj.nn.Sequential(tj.nn.Linear(6, 8), tj.nn.ReLU(), tj.nn.Dropout(0.25), tj.nn.Linear(8, 3))
    opt = tj.optim.SGD(model.parameters(), lr=0.1)
    before = [np.asarray(p.detach()).copy() for p in model.parameters()]
    assert model.to("cuda") is model
    assert all(p.device.type == "cuda" for p in model.parameters())
    x = tj.asarray(np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32), device="cuda")
    y = tj.asarray(np.array([0, 2, 1, 1, 0]), device="cuda")

    def step(x, y):
        opt.zero_grad()
        loss = tj.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss
    for f in (step, tj.jit(step)):
        loss = f(x, y)
        assert loss.device.type == "cuda" and np.isfinite(float(np.asarray(loss.to("cpu"))))
    after = [np.asarray(p.detach().to("cpu")) for p in model.parameters()]
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    model.cpu()
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_matmul_with_two_batch_dims_under_jit(gpu, dtype):
    """(2, 1, 3, 4) @ (5, 4, 2): batch dims broadcast from the right, cut into 3-d products."""
    rng = np.random.default_rng(6)
    a = rng.integers(-3, 4, (2, 1, 3, 4)).astype(dtype)
    b = rng.integers(-3, 4, (5, 4, 2)).astype(dtype)
    out = tj.jit(lambda x, y: x @ y)(tj.asarray(a, device="cuda"), tj.asarray(b, device="cuda"))
    assert out.device.type == "cuda" and out.shape == (2, 5, 3, 2)
    np.testing.assert_allclose(np.asarray(out.to("cpu")), a.astype(np.float64) @ b, rtol=1e-6)


def test_interpreter_backend_runs_gpu_programs_on_the_host(gpu):
    """``jit(f, backend="interpret")`` on GPU tensors: the reference executor runs on the host
    and its results land on the device, equal to the compiled program's."""
    a = np.random.default_rng(8).standard_normal((4, 6)).astype(np.float32)

    def f(x):
        return tj.nn.functional.softmax(x * 2, axis=-1).sum(axis=0)
    x = tj.asarray(a, device="cuda")
    ref, comp = tj.jit(f, backend="interpret")(x), tj.jit(f)(x)
    assert ref.device.type == "cuda"
    np.testing.assert_allclose(np.asarray(ref.to("cpu")), np.asarray(comp.to("cpu")), rtol=1e-5)


def test_ops_without_gpu_kernels_run_on_the_host_inside_a_gpu_program(gpu):
    """sort, take, cumulative_sum and searchsorted have no GPU kernel: a jitted GPU program runs
    them as host steps (operands downloaded, NumPy, result uploaded) between its kernels."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal((3, 7)).astype(np.float32)
    idx = np.array([6, 0, 3])

    def f(x, i):
        s = tj.sort(x * 2, axis=1)
        return tj.take(tj.cumulative_sum(s, axis=1), i, axis=1) + 1

    out = tj.jit(f)(tj.asarray(a, device="cuda"), tj.asarray(idx, device="cuda"))
    assert out.device.type == "cuda"
    np.testing.assert_allclose(np.asarray(out.to("cpu")),
                               np.take(np.cumsum(np.sort(a * 2, axis=1), axis=1), idx, axis=1) + 1, rtol=1e-6)
    lowered = tj.jit(lambda x: tj.sort(x)).lower(tj.spec((5,), tj.float32, device="cuda"))
    assert "sort" in lowered.as_text()       # lowered for the GPU, sort as a host step


def test_data_loader_batches_stay_on_the_host_with_a_gpu_default(gpu, monkeypatch):
    """As in PyTorch: the loader's (background) threads never touch a GPU; batches are host
    tensors whatever the default device, moved with ``.to(device)``."""
    monkeypatch.setattr(tj_device, "_default", None)
    tj.set_default_device("cuda")
    ds = tj.data.TensorDataset(np.arange(12.0).reshape(6, 2), np.arange(6))
    batches = list(tj.data.DataLoader(ds, batch_size=4))
    assert all(t.device.type == "cpu" for batch in batches for t in batch)
    assert batches[0][0].to("cuda").device.type == "cuda"


def test_training_example_runs_on_the_device(gpu, monkeypatch, capsys):
    """examples/train_mlp.py --device cuda: model moved with .to, batches per step, eager and
    jitted runs agree."""
    import runpy
    from pathlib import Path
    script = Path(__file__).resolve().parents[2] / "examples" / "train_mlp.py"
    monkeypatch.setattr("sys.argv", ["train_mlp.py", "--epochs", "1", "--samples", "256",
                                     "--batch-size", "64", "--device", "cuda"])
    runpy.run_path(str(script), run_name="__main__")
    assert "-> agree" in capsys.readouterr().out


@pytest.mark.parametrize("axis", [0, 1])
def test_an_embedding_gradient_is_the_gpu_scatter_kernel(gpu, axis):
    # the indices checked by the program's index_check step: the base copied in, then the
    # column-per-thread kernel (run by the thread emulator), not a round trip through the host
    rng = np.random.default_rng(axis)
    table = rng.standard_normal((6, 9, 4)).astype(np.float32)
    ids = rng.integers(-table.shape[axis], table.shape[axis], 11)
    ids[:3] = 2
    up = rng.standard_normal(table.shape[:axis] + (11,) + table.shape[axis + 1:]).astype(np.float32)
    U = tj.asarray(up).to("cuda")

    def loss(t, i):
        return (tj.take(t, i, axis=axis) * U).sum()
    got = tj.jit(tj.grad(loss))(tj.asarray(table).to("cuda"), tj.asarray(ids).to("cuda"))
    want = np.zeros_like(table)
    np.add.at(np.moveaxis(want, axis, 0), ids, np.moveaxis(up, axis, 0))
    np.testing.assert_allclose(got.to("cpu").numpy(), want, rtol=1e-6, atol=1e-6)
    assert gpu.indexed_launches == ["scatter_add"]


@pytest.mark.parametrize("axis", [0, 2])
def test_a_gather_is_the_gpu_take_kernel(gpu, axis):
    rng = np.random.default_rng(axis)
    table = rng.standard_normal((5, 3, 7)).astype(np.float32)
    ids = rng.integers(-table.shape[axis], table.shape[axis], (2, 4))
    f = tj.jit(lambda t, i: tj.take(t, tj.reshape(i, (-1,)), axis=axis) * 2)
    got = f(tj.asarray(table).to("cuda"), tj.asarray(ids).to("cuda")).to("cpu").numpy()
    np.testing.assert_array_equal(got, np.take(table, ids.reshape(-1), axis=axis) * np.float32(2))
    assert gpu.indexed_launches == ["take"]
    with pytest.raises(IndexError):
        f(tj.asarray(table).to("cuda"), tj.asarray(np.full((2, 4), table.shape[axis])).to("cuda"))


def _weights_after_steps(wrap) -> np.ndarray:
    tj.manual_seed(0)
    m = tj.nn.Linear(3, 2).to("cuda")
    opt = tj.optim.SGD(m.parameters(), lr=0.1)

    def update(x):
        opt.step()
        return x * 1
    update = wrap(update)
    for k in range(3):
        opt.zero_grad()
        m(tj.asarray(np.full((4, 3), k + 1.0, np.float32)).to("cuda")).sum().backward()
        update(tj.ones(1).to("cuda"))
    return m.weight.numpy()


def test_a_jitted_optimizer_step_reads_each_steps_gradients_on_the_device(gpu):
    """The program reads a parameter's ``.grad`` of the moment (a device array) at every call."""
    np.testing.assert_allclose(_weights_after_steps(tj.jit), _weights_after_steps(lambda f: f), rtol=1e-6)


def test_a_program_reading_only_captured_gpu_tensors_launches_assembled_kernels(gpu):
    """No tensor arguments: the captured parameters make it a GPU program, whose kernels (and
    GEMM) the simulated device assembled with ptxas, as a driver would load them."""
    tj.manual_seed(2)
    model = tj.nn.Linear(4, 3).to("cuda")
    f = tj.jit(lambda: (model.weight @ model.weight.T).sum() * 2)
    w = model.weight.detach().numpy()
    np.testing.assert_allclose(f().numpy(), (w @ w.T).sum() * 2, rtol=1e-5)
    entry, = f.entries()
    assert entry.device == "cuda:0" and gpu.launches >= 2
    if ptx.ptxas_available():
        keys = {default_ptx_cache().get(k, gpu.arch).key for k in entry.executable.kernels}
        assert keys and keys <= gpu.assembled
        assert any(k.startswith("matmul_") for k in gpu.assembled)


def test_lowering_for_declared_specs_takes_host_captures_as_data(gpu):
    """Specs declare the target (export compiles a model's host parameters into a GPU program):
    a host capture is uploaded there; a GPU capture still cannot feed a CPU program."""
    on_host = tj.asarray(np.ones((3, 2), np.float32))
    on_device = on_host.to("cuda")
    lowered = tj.jit(lambda x: x @ on_host).lower(tj.spec((4, 3), tj.float32, device="cuda"))
    assert lowered.entry.device == "cuda:0"
    with pytest.raises(ValueError, match=r"cpu \(the arguments\).*cuda:0 \(a captured tensor"):
        tj.jit(lambda x: x @ on_device).lower(tj.spec((4, 3), tj.float32))
