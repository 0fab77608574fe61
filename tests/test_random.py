"""Counter-based random numbers: determinism, statistics, keys, and jit parity."""
from __future__ import annotations

import numpy as np
import pytest

import tracejit as tj
from tracejit import random as R


def test_same_key_same_numbers_different_keys_differ() -> None:
    k = R.key(42)
    np.testing.assert_array_equal(R.uniform(k, (5,)).numpy(), R.uniform(k, (5,)).numpy())
    assert not np.array_equal(R.uniform(R.key(43), (5,)).numpy(), R.uniform(k, (5,)).numpy())
    ks = R.split(k, 3)
    assert ks.shape == (3, 2) and ks.dtype == tj.int64
    draws = [R.uniform(ks[i], (4,)).numpy() for i in range(3)]
    assert not np.array_equal(draws[0], draws[1])
    assert not np.array_equal(R.fold_in(k, 1).numpy(), R.fold_in(k, 2).numpy())


@pytest.mark.parametrize("dtype", [tj.float32, tj.float64])
def test_uniform_statistics(dtype) -> None:
    u = R.uniform(R.key(0), (200_000,), dtype).numpy()
    assert u.dtype == dtype and u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    hist = np.histogram(u, bins=20, range=(0, 1))[0] / u.size
    assert np.abs(hist - 0.05).max() < 0.003
    bits = (u * 2 ** 20).astype(np.int64)           # no correlation between neighbours
    assert abs(np.corrcoef(bits[:-1], bits[1:])[0, 1]) < 0.01
    a = R.uniform(R.key(0), (100,), dtype, minval=-3.0, maxval=-1.0).numpy()
    assert a.min() >= -3.0 and a.max() < -1.0


def test_normal_bernoulli_randint() -> None:
    n = R.normal(R.key(1), (200_000,)).numpy()
    assert np.isfinite(n).all() and abs(n.mean()) < 0.01 and abs(n.std() - 1) < 0.01
    assert abs(((n > 1.96) | (n < -1.96)).mean() - 0.05) < 0.003
    m = R.normal(R.key(1), (1000,), mean=5.0, std=0.1).numpy()
    assert abs(m.mean() - 5.0) < 0.02
    b = R.bernoulli(R.key(2), 0.3, (100_000,)).numpy()
    assert b.dtype == np.bool_ and abs(b.mean() - 0.3) < 0.01
    r = R.randint(R.key(3), (10_000,), -2, 5).numpy()
    assert r.min() == -2 and r.max() == 4
    p = R.permutation(R.key(4), 50).numpy()
    assert sorted(p.tolist()) == list(range(50))


def test_global_generator_and_manual_seed() -> None:
    tj.manual_seed(7)
    a = R.rand(3, 4).numpy()
    b = R.randn((3, 4)).numpy()
    tj.manual_seed(7)
    np.testing.assert_array_equal(R.rand(3, 4).numpy(), a)
    np.testing.assert_array_equal(R.randn(3, 4).numpy(), b)
    assert not np.array_equal(R.rand(3, 4).numpy(), a)


def test_jit_matches_eager_and_advances_the_generator(jit_backend: str) -> None:
    k = R.key(9)
    f = tj.jit(lambda key: R.normal(key, (6,)) + R.uniform(key, (6,)), backend=jit_backend)
    np.testing.assert_allclose(f(k).numpy(), (R.normal(k, (6,)) + R.uniform(k, (6,))).numpy(), rtol=1e-6)
    g = tj.jit(lambda x: x + R.rand(4), backend=jit_backend)
    tj.manual_seed(11)
    jitted = [g(tj.zeros(4)).numpy() for _ in range(3)]
    tj.manual_seed(11)
    eager = [R.rand(4).numpy() for _ in range(3)]
    for a, b in zip(jitted, eager):
        np.testing.assert_array_equal(a, b)


def test_bad_key_is_rejected() -> None:
    with pytest.raises(TypeError, match="random key"):
        R.uniform(tj.asarray([1.0, 2.0]), (3,))
