"""Counter-based random numbers, built from integer primitives so they also run inside kernels.

A *key* is an int64 tensor of shape ``(2,)``.  Numbers are a pure function of the key and
the element's position: element ``i`` is ``mix(h + (i + 1) * GAMMA)`` with ``h`` derived from
the key and ``mix`` the splitmix64 finalizer, written with iota, int64 add/mul/xor/shift/and.
So a draw is an elementwise expression of ``iota``: eagerly it is a few NumPy ops, under
``jit`` it fuses into the consuming kernel.

There is no unsigned 64-bit dtype: int64 arithmetic wraps like uint64 for add/mul/xor, and
a logical right shift is an arithmetic shift followed by a mask.

Stateful draws (``rand``, ``randn``, ``Dropout``, parameter init) take their keys from a
global generator whose state is an eager int64 tensor ``[seed, counter]`` updated in place:
under ``jit`` the update is a graph mutation written back after each call, so a cached
jitted step draws fresh numbers on every call, exactly as the same code run eagerly.
"""
from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from . import prims as P
from .tensors import Tensor

_GAMMA = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _i64(v: int) -> int:
    """A 64-bit pattern as the signed int64 with the same bits."""
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


def _c(like: Tensor, v: int) -> Tensor:
    return P.full(like.shape, _i64(v), dt.int64)


def _shr(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 bit patterns."""
    return P.bind("and", P.bind("shr", x, _c(x, s)), _c(x, (1 << (64 - s)) - 1))


def _mix(z: Tensor) -> Tensor:
    """splitmix64's finalizer: a bijection on 64-bit patterns with good avalanche."""
    z = P.mul(P.bind("xor", z, _shr(z, 30)), _c(z, _M1))
    z = P.mul(P.bind("xor", z, _shr(z, 27)), _c(z, _M2))
    return P.bind("xor", z, _shr(z, 31))


def _as_key(key: Any) -> Tensor:
    if not isinstance(key, Tensor) or key.shape != (2,) or key.dtype != dt.int64:
        raise TypeError(f"expected a random key (int64 tensor of shape (2,), from tj.random.key(seed)), "
                        f"got {getattr(key, 'aval', type(key).__name__)}")
    return key


def key(seed: int) -> Tensor:
    """A random key from an integer seed."""
    return P.constant(np.array([_i64(int(seed)), 0], dtype=np.int64))


def bits(key: Tensor, shape: Sequence[int]) -> Tensor:
    """Random int64 bit patterns of ``shape``, a pure function of ``key``."""
    key = _as_key(key)
    shape = tuple(int(s) for s in shape)
    k0 = P.reshape(P.slice(key, start=(0,), stop=(1,), step=(1,)), shape=())
    k1 = P.reshape(P.slice(key, start=(1,), stop=(2,), step=(1,)), shape=())
    h = _mix(P.add(_mix(P.bind("xor", k0, _c(k0, _GAMMA))), k1))
    n = math.prod(shape)
    i = P.iota((n,), 0, dt.int64, like=key)
    hb = P.broadcast_to(h, (n,))
    z = _mix(P.add(hb, P.mul(P.add(i, _c(i, 1)), _c(i, _GAMMA))))
    return P.reshape(z, shape=shape)


def split(key: Tensor, num: int = 2) -> Tensor:
    """``num`` new independent keys, as an int64 tensor of shape ``(num, 2)`` (index it for one)."""
    b = bits(key, (num, 2))
    return b


def fold_in(key: Tensor, data: int) -> Tensor:
    """A new key from ``key`` and an integer (e.g. a step or layer number)."""
    return bits(P.add(_as_key(key), P.constant(np.array([0, _i64(int(data))], dtype=np.int64))), (2,))


def uniform(key: Tensor, shape: Sequence[int] = (), dtype: Any = None, minval: float = 0.0,
            maxval: float = 1.0) -> Tensor:
    """Uniform floats in ``[minval, maxval)``."""
    dtype = dt.canonical(dtype or dt.default_float)
    if not dt.is_float(dtype):
        raise TypeError(f"uniform needs a floating-point dtype, got {dtype.name}")
    z = bits(key, shape)
    # the top mantissa-width bits, scaled: exact in the target dtype and strictly below 1
    m = {2: 11, 4: 24, 8: 53}[dtype.itemsize]
    u = P.mul(P.cast(_shr(z, 64 - m), dtype), P.full(z.shape, 2.0 ** -m, dtype))
    if (minval, maxval) != (0.0, 1.0):
        u = P.add(P.mul(u, P.full(z.shape, maxval - minval, dtype)), P.full(z.shape, minval, dtype))
    return u


def normal(key: Tensor, shape: Sequence[int] = (), dtype: Any = None, mean: float = 0.0,
           std: float = 1.0) -> Tensor:
    """Standard normal floats (Box-Muller on two uniform draws), scaled by ``std`` around ``mean``."""
    dtype = dt.canonical(dtype or dt.default_float)
    shape = tuple(int(s) for s in shape)
    u = uniform(key, (2,) + shape, dt.float64 if dtype == dt.float64 else dt.float32)
    n = math.prod(shape)
    u = P.reshape(u, shape=(2, n))
    u1 = P.reshape(P.slice(u, start=(0, 0), stop=(1, n), step=(1, 1)), shape=(n,))
    u2 = P.reshape(P.slice(u, start=(1, 0), stop=(2, n), step=(1, 1)), shape=(n,))
    one = P.full((n,), 1.0, u.dtype)
    # 1 - u1 lies in (0, 1]: the log is finite
    r = P.sqrt(P.mul(P.full((n,), -2.0, u.dtype), P.log(P.sub(one, u1))))
    z = P.mul(r, P.cos(P.mul(P.full((n,), 2 * math.pi, u.dtype), u2)))
    if (mean, std) != (0.0, 1.0):
        z = P.add(P.mul(z, P.full((n,), std, u.dtype)), P.full((n,), mean, u.dtype))
    return P.reshape(P.cast(z, dtype), shape=shape)


def bernoulli(key: Tensor, p: float = 0.5, shape: Sequence[int] = ()) -> Tensor:
    """Booleans that are True with probability ``p``."""
    u = uniform(key, shape, dt.float32)
    return P.lt(u, P.full(u.shape, p, dt.float32))


def randint(key: Tensor, shape: Sequence[int], low: int, high: int) -> Tensor:
    """Integers in ``[low, high)`` (int64; modulo bias is below 2**-40 for ranges under 2**23)."""
    z = _shr(bits(key, shape), 1)
    return P.add(P.bind("mod", z, P.full(z.shape, high - low, dt.int64)), P.full(z.shape, low, dt.int64))


def permutation(key: Tensor, n: int) -> Tensor:
    """A random permutation of ``range(n)`` (int64; sorts random bits, so eager or host-side)."""
    return P.bind("argsort", bits(key, (n,)), axis=0, descending=False, stable=True)


# ----------------------------------------------------------------------------- the global generator

def _settle(state: Tensor) -> None:
    """Before a direct write of the state: a pending lazy update of it (or read) runs first."""
    from .tracing import current_trace
    trace = current_trace()
    if trace is not None and trace.is_lazy:
        trace.flush()


_generators: weakref.WeakSet[Generator] = weakref.WeakSet()


def is_generator_state(t: Any) -> bool:
    """Whether ``t`` is a generator's state: host memory whatever the device of the tensors its
    keys make (eagerly the bits are made on the host and moved to their operand's device)."""
    return any(g.state is t for g in list(_generators))


class Generator:
    """Stateful source of keys: ``[seed, counter]`` in an eager host tensor, advanced in place."""

    def __init__(self, seed: int = 0) -> None:
        self.state = Tensor._from_array(np.array([_i64(seed), 0], dtype=np.int64))
        _generators.add(self)

    def manual_seed(self, seed: int) -> Generator:
        # in place, so jitted functions that captured the state see the reset
        _settle(self.state)
        self.state._value[...] = (_i64(int(seed)), 0)
        return self

    def next_key(self) -> Tensor:
        """A fresh key; advances the counter (a graph mutation when traced)."""
        k = P.add(self.state, P.constant(np.zeros(2, dtype=np.int64)))
        self.state._assign(P.add(self.state, P.constant(np.array([0, 1], dtype=np.int64))))
        return k

    def get_state(self) -> np.ndarray:
        return self.state.numpy().copy()

    def set_state(self, state: Any) -> None:
        _settle(self.state)
        self.state._value[...] = np.asarray(state, dtype=np.int64)


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Seed the global generator (parameter init, ``rand``/``randn``, dropout)."""
    return default_generator.manual_seed(seed)


def _gen(generator: Generator | None) -> Generator:
    return default_generator if generator is None else generator


def _shape(size: tuple) -> tuple[int, ...]:
    if len(size) == 1 and not isinstance(size[0], int):
        return tuple(size[0])
    return tuple(size)


def rand(*size: Any, dtype: Any = None, generator: Generator | None = None) -> Tensor:
    """Uniform ``[0, 1)`` numbers from the global generator, PyTorch style: ``rand(2, 3)``."""
    return uniform(_gen(generator).next_key(), _shape(size), dtype)


def randn(*size: Any, dtype: Any = None, generator: Generator | None = None) -> Tensor:
    """Standard normal numbers from the global generator: ``randn(2, 3)``."""
    return normal(_gen(generator).next_key(), _shape(size), dtype)


__all__ = ["key", "split", "fold_in", "bits", "uniform", "normal", "bernoulli", "randint", "permutation",
           "Generator", "default_generator", "manual_seed", "rand", "randn"]
