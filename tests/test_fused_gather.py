"""Gathers inside kernels: ``take``, integer-array indexing and ``Embedding`` under ``jit`` are
indexed loads in the kernel that reads them (their indices checked first, on the host), with
eager results, a clear error for an index out of range, and no one-hot temporary."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj

pytest.importorskip("tracejit.compiler", reason="needs the llvm backend")


def _steps(f, *args) -> tuple[int, list[str]]:
    """(kernels, host step names) of ``f``'s compiled program for ``args``."""
    prog = f.lower(*args).entry.executable
    from runtime import program as rp
    hosts = [s.name for s in prog.program.steps if isinstance(s, rp.Extern)]
    return prog.n_kernels, hosts


def test_an_embedding_lookup_and_its_consumers_are_one_kernel(rng):
    table = rng.standard_normal((50, 8)).astype(np.float32)
    pos = rng.standard_normal((6, 8)).astype(np.float32)
    ids = rng.integers(-50, 50, (3, 6))          # negative ids count from the end, as in NumPy
    W, P = tj.asarray(table), tj.asarray(pos)

    @tj.jit
    def f(i):
        return tj.take(W, tj.reshape(i, (-1,)), axis=0).reshape(3, 6, 8) * 2 + P

    np.testing.assert_array_equal(f(tj.asarray(ids)).numpy(),
                                  table[ids.reshape(-1)].reshape(3, 6, 8) * np.float32(2) + pos)
    kernels, hosts = _steps(f, tj.asarray(ids))
    assert kernels == 1 and hosts == ["index_check"], (kernels, hosts)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_take_along_any_axis_with_a_matrix_of_indices_read_transposed(rng, axis):
    x = rng.standard_normal((4, 7, 5)).astype(np.float32)
    idx = rng.integers(0, x.shape[axis], (3, 2))
    f = tj.jit(lambda t, i: tj.permute_dims(tj.take(t, tj.reshape(i, (-1,)), axis=axis), (2, 0, 1)) + 1)
    want = np.transpose(np.take(x, idx.reshape(-1), axis=axis), (2, 0, 1)) + np.float32(1)
    np.testing.assert_array_equal(f(tj.asarray(x), tj.asarray(idx)).numpy(), want)


def test_integer_array_indexing_under_jit_matches_numpy(rng):
    x = rng.standard_normal((9, 4)).astype(np.float64)
    idx = np.array([8, 0, -1, 3, 3])
    f = tj.jit(lambda t, i: t[i] * t[i])
    np.testing.assert_array_equal(f(tj.asarray(x), tj.asarray(idx)).numpy(), x[idx] * x[idx])


def test_an_index_out_of_range_raises_naming_the_users_line():
    W = tj.asarray(np.ones((5, 3), np.float32))

    @tj.jit
    def f(i):
        return tj.take(W, i, axis=0) + 1       # the line the error names

    f(tj.asarray(np.array([0, 4, -5])))
    with pytest.raises(IndexError, match=r"size 5.*test_fused_gather.py:\d+"):
        f(tj.asarray(np.array([1, 5])))
    with pytest.raises(IndexError):
        f(tj.asarray(np.array([-6])))


def test_embedding_training_step_under_jit_equals_eager(rng):
    def make():
        tj.random.manual_seed(3)
        emb, head = tj.nn.Embedding(40, 8), tj.nn.Linear(8, 5)
        opt = tj.optim.SGD(list(emb.parameters()) + list(head.parameters()), lr=0.5)

        def step(i, y):
            opt.zero_grad()
            loss = tj.nn.functional.cross_entropy(head(emb(i)).mean(axis=1), y)
            loss.backward()
            opt.step()
            return loss
        return emb, step

    (emb_e, step_e), (emb_j, step_j) = make(), make()
    step_j = tj.jit(step_j)
    for _ in range(3):
        i = tj.asarray(rng.integers(0, 40, (6, 4)))      # repeated ids: their gradients add up
        y = tj.asarray(rng.integers(0, 5, 6))
        np.testing.assert_allclose(float(step_j(i, y)), float(step_e(i, y)), rtol=1e-5)
    np.testing.assert_allclose(emb_j.weight.numpy(), emb_e.weight.numpy(), rtol=1e-5, atol=1e-6)


def test_a_large_vocabulary_lookup_allocates_no_tokens_by_vocabulary_temporary(rng):
    emb = tj.nn.Embedding(32000, 16)
    ids = tj.asarray(rng.integers(0, 32000, (8, 128)))
    f = tj.jit(lambda i: emb(i) + 1)
    with tj.no_grad():
        np.testing.assert_array_equal(f(ids).numpy(), emb.weight.numpy()[ids.numpy()] + np.float32(1))
        program = f.lower(ids).entry.executable.program
    temporaries = [program.slot_nbytes[s] for s in range(program.n_inputs, len(program.slot_nbytes))]
    assert max(temporaries) <= 8 * 128 * 16 * 4, temporaries     # the output, nothing vocabulary-sized
