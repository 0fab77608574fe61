"""Lazy mode (``with tj.lazy():``): the same results as eager, ops recorded and flushed compiled.

Each test compares lazy mode with the same code run eagerly (and with NumPy where the values
are simple), and checks when the pending graph is flushed and how often it compiles.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tracejit as tj
from tests.conftest import assert_close
from tracejit import lazy_mode


def counts() -> dict[str, int]:
    return dict(lazy_mode.stats)


def delta(before: dict[str, int]) -> dict[str, int]:
    return {k: lazy_mode.stats[k] - before[k] for k in before}


def test_ops_are_pending_until_observed(rng: np.random.Generator) -> None:
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    x, y = tj.asarray(a), tj.asarray(b)
    before = counts()
    with tj.lazy():
        z = tj.tanh(x * 1.5 + y).sum(axis=-1)
        w = z * 2
        assert z.is_tracer and w.is_tracer and tj.lazy_mode.is_lazy()
        assert delta(before)["flushes"] == 0
        got = w.numpy()                       # observed: flushed once, both now eager
        assert not z.is_tracer and delta(before)["flushes"] == 1
    want = np.tanh(a.astype(np.float64) * 1.5 + b).sum(axis=-1) * 2
    assert_close(got, want)
    assert_close(z, want / 2)
    assert not tj.lazy_mode.is_lazy()


@pytest.mark.parametrize("observe", ["item", "bool", "repr", "dlpack", "float", "exit", "index"])
def test_each_observation_flushes(observe: str) -> None:
    x = tj.asarray(np.arange(4, dtype=np.float32))
    with tj.lazy():
        s = (x * x).sum()
        i = tj.astype(s, tj.int64)
        if observe == "item":
            assert s.item() == 14.0
        elif observe == "bool":
            assert bool(s > 10) is True           # Python control flow on a value
        elif observe == "repr":
            assert "14." in repr(s)
        elif observe == "dlpack":
            assert np.from_dlpack(s) == 14.0
        elif observe == "float":
            assert float(s) == 14.0
        elif observe == "index":
            assert [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150][i] == 150
        if observe != "exit":
            assert not s.is_tracer
    assert not s.is_tracer and s.item() == 14.0


def test_repeating_steps_compile_once() -> None:
    """A loop whose iterations record the same ops compiles one program and replays it, new
    data and a changing Python float (a learning rate) included."""
    rng = np.random.default_rng(0)
    w = tj.asarray(rng.standard_normal(8).astype(np.float32))
    want = w.numpy().astype(np.float64).copy()
    before = counts()
    for step in range(4):
        data = rng.standard_normal(8).astype(np.float32)
        lr = 0.1 / (step + 1)
        with tj.lazy():
            w -= lr * tj.asarray(data) * w
        want -= lr * data * want
    assert_close(w, want, rtol=1e-5)
    d = delta(before)
    assert d["flushes"] == 4 and d["compiles"] <= 1 and d["hits"] >= 3


def test_shape_and_dtype_errors_at_record_time() -> None:
    x = tj.asarray(np.ones((2, 3), np.float32))
    y = tj.asarray(np.ones((4,), np.float32))
    before = counts()
    with tj.lazy():
        z = x * 2
        with pytest.raises(ValueError, match=r"cannot be broadcast together") as eager_like:
            z + y
        # the error is raised where the op is, before anything ran
        assert eager_like.traceback[0].name == "test_shape_and_dtype_errors_at_record_time"
        assert delta(before)["flushes"] == 0
        with pytest.raises(TypeError, match="bitwise_and"):
            tj.bitwise_and(z, z)
        assert z.is_tracer
    assert_close(z, np.full((2, 3), 2.0))


def test_in_place_updates_and_views_keep_eager_meaning() -> None:
    def program(x: tj.Tensor) -> tuple[tj.Tensor, tj.Tensor, tj.Tensor]:
        v = x[1:]                # a view of an eager tensor
        v *= 10                  # writes through to x
        y = x + 1
        u = y.reshape(2, 3)      # a view of a pending value
        u[0] = -1.0              # writes through to y
        t = y.T if y.ndim == 2 else y[::2]
        return y, u, t

    a = np.arange(6, dtype=np.float32)
    xe, xl = tj.asarray(a.copy()), tj.asarray(a.copy())
    want = program(xe)
    with tj.lazy():
        got = program(xl)
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), e.numpy())
    np.testing.assert_array_equal(xl.numpy(), xe.numpy())
    # after the flush the views still share memory with their base, as eagerly
    got[1][1] = 7.0
    want[1][1] = 7.0
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
    np.testing.assert_array_equal(got[2].numpy(), want[2].numpy())


def test_write_of_an_aliased_eager_tensor() -> None:
    """``b`` is an eager view of ``a`` made before the block: a write of ``a`` shows in ``b``."""
    a = tj.asarray(np.arange(5, dtype=np.float32))
    b = a[1:3]
    with tj.lazy():
        a += 1
        c = b * 2
        b[0] = 100.0
        d = a * 1
    np.testing.assert_array_equal(c.numpy(), [4.0, 6.0])
    np.testing.assert_array_equal(d.numpy(), [1.0, 100.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(a.numpy(), d.numpy())


def test_results_that_are_inputs_get_their_own_memory() -> None:
    x = tj.asarray(np.arange(3, dtype=np.float32))
    with tj.lazy():
        y = x * 1           # simplified to x by the passes: still a new tensor
        z = x * 1
    y += 1
    np.testing.assert_array_equal(x.numpy(), [0, 1, 2])
    np.testing.assert_array_equal(z.numpy(), [0, 1, 2])


def test_random_numbers_and_generator_state_match_eager() -> None:
    tj.manual_seed(3)
    want = [tj.rand(5).numpy(), tj.randn(2, 3).numpy()]
    after = tj.rand(2).numpy()
    tj.manual_seed(3)
    with tj.lazy():
        got = [tj.rand(5), tj.randn(2, 3)]
    np.testing.assert_array_equal(got[0].numpy(), want[0])
    np.testing.assert_array_equal(got[1].numpy(), want[1])
    np.testing.assert_array_equal(tj.rand(2).numpy(), after)
    with tj.lazy():
        r = tj.rand(3)
        tj.manual_seed(3)         # a reset while a draw is pending: the draw happens first
        s = tj.rand(5)
    np.testing.assert_array_equal(s.numpy(), want[0])
    assert not np.array_equal(r.numpy(), want[0][:3])


def _train(mode: str, steps: int = 3) -> tuple[list[float], list[np.ndarray]]:
    nn, F = tj.nn, tj.nn.functional
    rng = np.random.default_rng(0)
    tj.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4))
    opt = tj.optim.Adam(model.parameters(), lr=1e-2)
    tj.manual_seed(1)
    losses = []
    for _ in range(steps):
        x = tj.asarray(rng.standard_normal((8, 12)).astype(np.float32))
        y = tj.asarray(rng.integers(0, 4, 8))
        with tj.lazy() if mode == "lazy" else _nothing():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, [p.numpy().copy() for p in model.parameters()]


class _nothing:  # noqa: N801
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


def test_training_step_matches_eager_and_compiles_once() -> None:
    """Forward, backward, dropout and an Adam update recorded into one graph per step."""
    want_losses, want_params = _train("eager")
    before = counts()
    got_losses, got_params = _train("lazy")
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-5)
    for g, e in zip(got_params, want_params):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
    d = delta(before)
    assert d["flushes"] == 3 and d["compiles"] <= 1, d


def test_in_place_update_of_a_leaf_that_requires_grad_raises() -> None:
    w = tj.asarray(np.ones(3, np.float32), requires_grad=True)
    with tj.lazy():
        with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
            w += 1
        with tj.no_grad():
            w -= 1
    np.testing.assert_array_equal(w.numpy(), np.zeros(3))


def test_size_bound_flushes_a_growing_graph() -> None:
    x = tj.asarray(np.zeros(4, np.float32))
    before = counts()
    with tj.lazy(max_nodes=16):
        for _ in range(40):
            x = x + 1.0
        assert delta(before)["flushes"] >= 2
    np.testing.assert_array_equal(x.numpy(), np.full(4, 40.0))


def test_jit_and_data_dependent_ops_inside_lazy() -> None:
    f = tj.jit(lambda a: tj.exp(a) - 1)
    a = np.array([-1.0, 0.5, 2.0], np.float32)
    x = tj.asarray(a)
    with tj.lazy():
        y = f(x) * 2                     # a jitted function is recorded into the pending graph
        big = y[y > 0]                   # boolean mask: a data-dependent shape, flushes to read it
        n = tj.nonzero(y > 0)[0]
    assert_close(y, (np.exp(a.astype(np.float64)) - 1) * 2)
    np.testing.assert_array_equal(big.numpy(), y.numpy()[y.numpy() > 0])
    np.testing.assert_array_equal(n.numpy(), [1, 2])


def test_whole_program_lazy_from_the_environment(tmp_path: os.PathLike) -> None:
    script = textwrap.dedent("""
        import numpy as np, tracejit as tj
        from tracejit import lazy_mode
        x = tj.asarray(np.arange(4, dtype=np.float32))
        y = tj.exp(x) * 2
        assert y.is_tracer and lazy_mode.is_lazy()
        print(np.round(y.numpy(), 4).tolist(), lazy_mode.stats["flushes"])
    """)
    env = dict(os.environ, TRACEJIT_LAZY="1", PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    values, flushes = out.stdout.strip().rsplit(" ", 1)
    assert values == str(np.round(np.exp(np.arange(4, dtype=np.float32)) * 2, 4).tolist())
    assert flushes == "1"


def test_an_out_of_range_index_raises_even_when_nothing_reads_the_gather():
    x = tj.asarray(np.arange(4.0))
    with pytest.raises(IndexError, match="out of range"):
        with tj.lazy():
            tj.take(x, tj.asarray(np.array([7])), axis=0)     # result dropped, as eagerly it raises
    with pytest.raises(IndexError, match="out of range"):
        with tj.lazy():
            tj.take(tj.asarray(np.zeros((1, 0))), tj.asarray(np.array([4])), axis=0)   # of no data
    with tj.lazy():
        y = tj.take(x, tj.asarray(np.array([1, -1])), axis=0)
        np.testing.assert_array_equal(y.numpy(), [1.0, 3.0])


def test_a_different_structure_with_the_same_op_count_compiles_anew() -> None:
    """The cached program is found by the recorded structure, not the number of ops: swapped
    operands or another op in the same place are new programs with their own results."""
    a = np.array([1.0, 2.0, 4.0], np.float32)
    b = np.array([0.5, 3.0, -1.0], np.float32)
    x, y = tj.asarray(a), tj.asarray(b)
    steps = [(lambda p, q: (p - q) * q, (a - b) * b), (lambda p, q: (q - p) * q, (b - a) * b),
             (lambda p, q: (p * q) - q, a * b - b), (lambda p, q: (p - q) * q, (a - b) * b)]
    before = counts()
    for fn, want in steps:
        with tj.lazy():
            got = fn(x, y).numpy()
        np.testing.assert_array_equal(got, want)
    d = delta(before)
    assert d["flushes"] == 4 and d["hits"] >= 1 and d["compiles"] + d["hits"] == 4
    assert d["hits"] <= 1, d            # only the repeated first structure may be found


def test_a_changed_python_float_gets_its_new_value() -> None:
    """A float of a cached program is an input: a new value is used, not the first one; a zero
    keeps its sign (-0.0 is not 0.0) and a number takes each operand's dtype."""
    a = np.array([-1.0, 2.0, 3.0], np.float32)
    x = tj.asarray(a)
    x64 = tj.asarray(a.astype(np.float64))
    for c in (0.3, 0.7, 2.5, 0.3):
        with tj.lazy():
            y, y64 = x * c + c, c * x64
            got, got64 = y.numpy(), y64.numpy()
        np.testing.assert_array_equal(got, a * np.float32(c) + np.float32(c))
        np.testing.assert_array_equal(got64, c * a.astype(np.float64))
        assert got.dtype == np.float32 and got64.dtype == np.float64
    for zero in (0.0, -0.0, 0.0):
        with tj.lazy():
            got = (x * zero).numpy()
        np.testing.assert_array_equal(np.signbit(got), np.signbit(a * np.float32(zero)))


def test_shared_numbers_are_not_results() -> None:
    """A Python number's broadcast, shared within the pending graph, is not computed as a result
    of the flush unless something references it."""
    x = tj.asarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    with tj.lazy():
        y = x * 0.3 + 0.7
        z = (y * 0.3).sum()
        del y
        lazy_mode.flush()
    assert len(lazy_mode.programs()[-1].program.outputs) == 1
    assert_close(z, ((np.arange(6.0) * 0.3 + 0.7) * 0.3).sum())


def test_an_unhashable_param_still_makes_a_key() -> None:
    rec = lazy_mode.Recording()
    rec.add("input", (), {}, tj.ops.AVal((2,), np.dtype(np.float32)))
    rec.add("custom", (0,), {"sizes": [1, 2]}, tj.ops.AVal((2,), np.dtype(np.float32)))
    other = lazy_mode.Recording()
    other.add("input", (), {}, tj.ops.AVal((2,), np.dtype(np.float32)))
    other.add("custom", (0,), {"sizes": [1, 3]}, tj.ops.AVal((2,), np.dtype(np.float32)))
    assert hash(rec.structure_key()) is not None and rec.structure_key() != other.structure_key()


def test_broadcast_operands_match_eager_with_and_without_the_tape() -> None:
    """An op's broadcast operand: recorded without view bookkeeping when no tape keeps it, as a
    view when one does; writes of its base afterwards reach neither the result nor the gradient
    computed before them, as eagerly."""
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.array([1.0, -2.0, 3.0, 0.5], np.float32)

    def run(lazy: bool) -> list[np.ndarray]:
        x, y = tj.asarray(a.copy(), requires_grad=True), tj.asarray(b.copy())
        s = tj.asarray(np.float32(1.5))
        ctx = tj.lazy() if lazy else _nothing()
        with ctx:
            z = x * y + s               # y and s broadcast for a taped op
            with tj.no_grad():
                w = y / s + tj.asarray(a) * y       # broadcasts no tape keeps
            z.sum().backward()
            y[0] = 10.0                 # the base written after the ops that read it
            s += 1.0
            out = [z.numpy(), w.numpy(), x.grad.numpy(), y.numpy(), s.numpy()]
        return out

    for got, want in zip(run(True), run(False)):
        np.testing.assert_array_equal(got, want)
