"""scatter_add (the gradient of ``take``, ``Embedding`` and integer-array indexing) as a
generated CPU kernel: ``np.add.at``'s results eagerly and under ``jit``, and under ``jit`` a
step of the native runner, not a NumPy host step, when its indices were checked."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit import nn, prims

pytest.importorskip("tracejit.compiler", reason="needs the llvm backend")

from runtime import cpu as rcpu  # noqa: E402
from runtime import cpu_scatter  # noqa: E402

CASES = [((50, 8), 0, (3, 6)), ((4, 7, 5), 1, (9,)), ((4, 7, 5), 2, (2, 3)), ((4, 7, 5), 0, (6,)),
         ((65, 64), 0, (8, 32)), ((3, 70, 33), 1, (200,)), ((5, 3), 0, (0,)), ((6,), 0, (10,))]


def reference(base: np.ndarray, idx: np.ndarray, src: np.ndarray, axis: int) -> np.ndarray:
    out = base.copy()
    moved = np.moveaxis(out, axis, 0)
    rows = np.moveaxis(src.reshape(base.shape[:axis] + (idx.size,) + base.shape[axis + 1:]), axis, 0)
    np.add.at(moved, idx.reshape(-1), rows)
    return out


def operands(rng, shape, axis, ishape, dtype, low=None):
    n = shape[axis]
    base = rng.standard_normal(shape).astype(dtype)
    idx = rng.integers(-n if low is None else low, n, ishape)
    src = rng.standard_normal(shape[:axis] + ishape + shape[axis + 1:]).astype(dtype)
    return base, idx, src


def prepared_steps(f, *args) -> list:
    prog = f.lower(*args).entry.executable
    f(*args)                                # (the CPU program is made by the first call)
    return prog._run.steps


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("shape,axis,ishape", CASES)
def test_eager_scatter_add_equals_add_at(rng, dtype, shape, axis, ishape):
    base, idx, src = operands(rng, shape, axis, ishape, dtype)
    got = prims.scatter_add(tj.asarray(base), tj.asarray(idx), tj.asarray(src), axis=axis).numpy()
    np.testing.assert_array_equal(got, reference(base, idx, src, axis))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,axis,ishape", [((3, 70, 33), 1, (200,)), ((32000, 32), 0, (1024,)),
                                               ((5, 20000), 1, (40,)), ((2000, 3, 1), 0, (500,))])
def test_kernel_split_over_columns_equals_add_at(rng, threads, shape, axis, ishape, monkeypatch):
    # ranges of whole rows (33 columns), of 64-byte pieces of rows, of the before-axis dims:
    # each element has one owner
    monkeypatch.setattr(cpu_scatter, "SMALL_WORK", 0)
    monkeypatch.setattr(cpu_scatter, "num_threads", lambda: threads)
    base, idx, src = operands(rng, shape, axis, ishape, np.float32, low=0)
    got = cpu_scatter.scatter_add(base, idx, src, axis)
    np.testing.assert_array_equal(got, reference(base, idx, src, axis))


def test_ranges_split_rows_at_cache_lines_or_not_at_all():
    assert cpu_scatter.plan((1, 32000, 1024, 128), "float32", 2) == [(0, 64), (64, 128)]
    assert cpu_scatter.plan((1, 32000, 1024, 128), "float64", 3) == [(0, 40), (40, 80), (80, 128)]
    assert cpu_scatter.plan((1, 32000, 1024, 4), "float32", 2) == [(0, 4)]
    assert cpu_scatter.plan((3, 7000, 200, 33), "float32", 3) == [(0, 33), (33, 66), (66, 99)]
    assert cpu_scatter.plan((1, 65, 256, 64), "float32", 2) == [(0, 64)]       # small: one thread
    assert cpu_scatter.plan((4, 0, 0, 0), "float32", 2) == []


def test_a_broadcast_base_is_a_fill(rng):
    base, idx, src = operands(rng, (40, 24), 0, (30,), np.float64, low=0)
    full = np.broadcast_to(np.float64(2.5), base.shape)
    np.testing.assert_array_equal(cpu_scatter.scatter_add(full, idx, src, 0), reference(full, idx, src, 0))


def test_eager_index_out_of_range_raises(rng):
    base, idx, src = operands(rng, (5, 3), 0, (2,), np.float32)
    for bad in ([0, 5], [-6, 1]):
        with pytest.raises(IndexError, match="size 5"):
            prims.scatter_add(tj.asarray(base), tj.asarray(np.array(bad)), tj.asarray(src), axis=0)


def test_other_dtypes_take_numpy(rng):
    base, idx, src = operands(rng, (9, 4), 0, (12,), np.float16)
    got = prims.scatter_add(tj.asarray(base), tj.asarray(idx), tj.asarray(src), axis=0).numpy()
    np.testing.assert_array_equal(got, reference(base, idx, src, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis,ishape", CASES)
def test_take_gradient_under_jit_is_a_kernel_equal_to_add_at(rng, dtype, shape, axis, ishape, monkeypatch):
    table, idx, _ = operands(rng, shape, axis, ishape, dtype)     # negative ids through index_check
    weight = rng.standard_normal(shape[:axis] + ishape + shape[axis + 1:]).astype(dtype)
    W = tj.asarray(weight)

    def loss(t, i):
        return (tj.take(t, i, axis=axis) * W).sum()
    f = tj.jit(tj.grad(loss))
    want = reference(np.zeros_like(table), idx, weight, axis)
    np.testing.assert_array_equal(tj.grad(loss)(tj.asarray(table), tj.asarray(idx)).numpy(), want)
    steps = prepared_steps(f, tj.asarray(table), tj.asarray(idx))
    assert any(isinstance(s, rcpu._PreparedScatter) for s in steps)
    assert not any(isinstance(s, rcpu._ExternCall) and s.step.name == "scatter_add" for s in steps)
    # the NumPy reference is never called: the kernel runs in the native step runner
    monkeypatch.setitem(rcpu.EXTERNS, "scatter_add", lambda *a, **k: pytest.fail("NumPy scatter_add ran"))
    np.testing.assert_array_equal(f(tj.asarray(table), tj.asarray(idx)).numpy(), want)


def test_unchecked_indices_under_jit_stay_a_numpy_step(rng):
    base, idx, src = operands(rng, (7, 5), 0, (9,), np.float32)
    f = tj.jit(lambda b, i, s: prims.scatter_add(b, i, s, axis=0))
    args = [tj.asarray(x) for x in (base, idx, src)]
    np.testing.assert_array_equal(f(*args).numpy(), reference(base, idx, src, 0))
    steps = prepared_steps(f, *args)
    assert not any(isinstance(s, rcpu._PreparedScatter) for s in steps)
    with pytest.raises(IndexError):
        f(args[0], tj.asarray(np.array([0, 7])), tj.asarray(src[:2]))


def test_index_add_style_base_under_jit(rng):
    # a computed base (not zeros) is stored and copied into the output by the kernel
    base, idx, src = operands(rng, (11, 6), 0, (20,), np.float64)
    f = tj.jit(lambda b, i, s: prims.scatter_add(b * 2, _checked(i, b.shape[0]), s, axis=0))
    args = [tj.asarray(x) for x in (base, idx, src)]
    np.testing.assert_array_equal(f(*args).numpy(), reference(base * 2, idx, src, 0))
    assert any(isinstance(s, rcpu._PreparedScatter) for s in prepared_steps(f, *args))


def _checked(i, size):
    return prims.bind("index_check", i, size=size)


def _embedding_grads(jit: bool, vocab: int, width: int, ids: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    tj.manual_seed(0)
    emb = nn.Embedding(vocab, width)
    up = tj.asarray(upstream)

    def step(i):
        (emb(i) * up).sum().backward()
    (tj.jit(step) if jit else step)(tj.asarray(ids))
    return emb.weight.grad.numpy()


@pytest.mark.parametrize("vocab,width,ids_shape", [(65, 64, (8, 32)), (32000, 128, (8, 128))])
def test_embedding_gradient_under_jit_equals_eager_and_torch(rng, vocab, width, ids_shape):
    ids = rng.integers(0, vocab, ids_shape)
    ids[0, :4] = 5                                                  # repeated ids
    upstream = rng.standard_normal(ids_shape + (width,)).astype(np.float32)
    eager = _embedding_grads(False, vocab, width, ids, upstream)
    np.testing.assert_array_equal(_embedding_grads(True, vocab, width, ids, upstream), eager)
    np.testing.assert_array_equal(eager, reference(np.zeros((vocab, width), np.float32), ids, upstream, 0))
    torch = pytest.importorskip("torch")
    e = torch.nn.Embedding(vocab, width)
    (e(torch.from_numpy(ids)) * torch.from_numpy(upstream)).sum().backward()
    np.testing.assert_allclose(eager, e.weight.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_embedding_gradient_under_jit_is_one_native_step_and_no_fill(rng):
    tj.manual_seed(0)
    vocab, width, ids = 32000, 128, tj.asarray(rng.integers(0, 32000, (8, 128)))
    emb = nn.Embedding(vocab, width)
    up = tj.asarray(rng.standard_normal((8, 128, width)).astype(np.float32))

    def step(i):
        emb.weight.grad = None
        (emb(i) * up).sum().backward()
    f = tj.jit(step)
    low = f.lower(ids).entry.executable
    program = low.program
    from runtime import program as rp
    names = [s.name for s in program.steps if isinstance(s, rp.Extern)]
    assert names == ["index_check", "scatter_add"], names
    # the zeros the gradient starts from are a number the kernel fills with, not a buffer a
    # kernel writes first; no tokens x vocabulary temporary anywhere
    table_bytes = vocab * width * 4
    made = program.slot_nbytes[program.n_inputs:]
    # (the gradient itself, unless computed in place in the last call's .grad)
    assert sum(n >= table_bytes for n in made) == (0 if program.inplace else 1)
    assert max(program.slot_nbytes) < 1024 * vocab
    assert all(isinstance(s, rp.Extern) or s.shape != (vocab * width,) for s in program.steps)
    f(ids)
    assert isinstance(low._run.steps[-1], rcpu._PreparedScatter)
