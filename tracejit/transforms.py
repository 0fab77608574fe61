"""Functional autodiff: ``grad``, ``value_and_grad`` and ``vjp`` over pytrees of tensors.

These never mark the caller's tensors: each differentiated tensor is replaced by a fresh
alias (same memory, or the same traced node under ``jit``) that requires grad, and the
gradients are read off the tape for those aliases.  When the inputs already carry a tape
(``grad(grad(f))``) the alias is an identity op on it and the backward pass is built with grad
mode on, so the result can be differentiated again.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from . import dtypes as dt
from . import prims as P
from . import tracing
from .autograd import run_backward
from .pytree import flatten, unflatten
from .tensors import Tensor

_depth = threading.local()   # how many functional transforms are running on this thread


def _nesting() -> int:
    return getattr(_depth, "n", 0)


def _alias(x: Any) -> Any:
    """A fresh tensor requiring grad with ``x``'s value, differentiable w.r.t. ``x`` if ``x`` is."""
    if not isinstance(x, Tensor):
        if isinstance(x, (float, int)) and not isinstance(x, bool):
            x = P.constant(x, dt.default_float)
        else:
            return x
    if not dt.is_inexact(x.dtype):
        return x
    if x.requires_grad and tracing.grad_enabled():
        return P.reshape(x, shape=x.shape)          # identity op on the outer tape
    if x._trace is not None:
        t = Tensor._tracer(x._trace, x._node, x._aval, x._device)
    else:
        t = Tensor._from_array(x._value, x._device)
    t.requires_grad = True
    return t


def _is_tensor(x: Any) -> bool:
    return isinstance(x, Tensor)


def _strip(tree: Any, keep_graph: bool) -> Any:
    if keep_graph:
        return tree
    leaves, td = flatten(tree, is_leaf=_is_tensor)
    return unflatten(td, [x.detach() if isinstance(x, Tensor) and x._grad_fn is not None else x
                          for x in leaves])


def _vjp_core(fn: Callable, args: tuple, argnums: tuple[int, ...], has_aux: bool):
    """Run ``fn`` on aliased ``args``; return (output, aux, flat aliases, tree defs, create_graph)."""
    args = list(args)
    flat, trees = [], []
    outer = _nesting() > 0 or any(
        isinstance(x, Tensor) and x.requires_grad
        for i in argnums for x in flatten(args[i], is_leaf=_is_tensor)[0])
    create_graph = outer and tracing.grad_enabled()
    for i in argnums:
        leaves, td = flatten(args[i], is_leaf=_is_tensor)
        aliases = [_alias(x) for x in leaves]
        args[i] = unflatten(td, aliases)
        flat.append(aliases)
        trees.append(td)
    _depth.n = _nesting() + 1
    try:
        with _grad_on():
            res = fn(*args)
    finally:
        _depth.n -= 1
    out, aux = res if has_aux else (res, None)
    if has_aux and not (isinstance(res, tuple) and len(res) == 2):
        raise TypeError("has_aux=True needs the function to return a pair (output, aux)")
    return out, aux, flat, trees, create_graph


class _grad_on:  # noqa: N801
    def __enter__(self) -> None:
        self.prev = tracing.set_grad_enabled(True)

    def __exit__(self, *exc: Any) -> None:
        tracing.set_grad_enabled(self.prev)


def _pull(outs: list[Tensor], cots: list[Tensor | None], flat: list[list[Any]], trees: list[Any],
          create_graph: bool, retain: bool) -> list[Any]:
    """Gradients of ``outs`` (with cotangents ``cots``) for every aliased leaf, in the args' trees."""
    wrt = [x for leaves in flat for x in leaves if isinstance(x, Tensor) and x.requires_grad]
    pairs = [(o, c) for o, c in zip(outs, cots) if o.requires_grad]
    grads: list[Any] = [None] * len(wrt)
    if wrt and pairs:
        grads = run_backward([o for o, _ in pairs], [c for _, c in pairs],
                             retain_graph=retain or create_graph, create_graph=create_graph, inputs=wrt)
    by_id = {id(x): g for x, g in zip(wrt, grads)}
    result = []
    for leaves, td in zip(flat, trees):
        gl = []
        for x in leaves:
            if isinstance(x, Tensor) and x.requires_grad:
                g = by_id[id(x)]
                gl.append(P.zeros_like(x) if g is None else g)
            else:
                gl.append(None)
        result.append(unflatten(td, gl))
    return result


def _argnums(argnums: int | Sequence[int]) -> tuple[tuple[int, ...], bool]:
    if isinstance(argnums, int):
        return (argnums,), True
    return tuple(argnums), False


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """``fn`` -> a function returning ``(fn(*args), gradient)``; ``((out, aux), grad)`` with ``has_aux``.

    ``fn`` must return a tensor with one element.  The gradient has the structure of
    ``args[argnums]`` (a tuple of them if ``argnums`` is a tuple); integer leaves get ``None``.
    """
    nums, single = _argnums(argnums)

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        out, aux, flat, trees, create_graph = _vjp_core(fn, args, nums, has_aux)
        if not isinstance(out, Tensor) or out.size != 1:
            shape = getattr(out, "shape", type(out).__name__)
            raise TypeError(f"grad: {getattr(fn, '__name__', 'fn')} must return a tensor with one element, "
                            f"got {shape}; use tj.vjp for other outputs")
        grads = _pull([out], [None], flat, trees, create_graph, retain=False)
        g = grads[0] if single else tuple(grads)
        value = _strip(out, create_graph)
        if has_aux:
            return (value, _strip(aux, create_graph)), g
        return value, g
    return wrapped


def grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False) -> Callable:
    """``fn`` -> its gradient function (``(grad, aux)`` with ``has_aux``), JAX style.

    Works eagerly, under ``jit`` (the backward pass is traced into the same graph) and nested
    (``grad(grad(f))``).
    """
    vg = value_and_grad(fn, argnums, has_aux)

    @functools.wraps(fn)
    def wrapped(*args: Any) -> Any:
        (value, g) = vg(*args)
        if has_aux:
            return g, value[1]
        return g
    return wrapped


def vjp(fn: Callable, *primals: Any, has_aux: bool = False) -> tuple:
    """``(fn(*primals), vjp_fn)``; ``vjp_fn(cotangent)`` returns one gradient per primal.

    ``vjp_fn`` may be called several times (the tape is kept).  With ``has_aux``:
    ``(out, vjp_fn, aux)``.
    """
    nums = tuple(range(len(primals)))
    out, aux, flat, trees, create_graph = _vjp_core(fn, primals, nums, has_aux)
    out_leaves, out_td = flatten(out, is_leaf=_is_tensor)

    def vjp_fn(cotangent: Any) -> tuple:
        cot_leaves, cot_td = flatten(cotangent, is_leaf=_is_tensor)
        if cot_td != out_td:
            raise ValueError(f"vjp: cotangent structure {cot_td} does not match the output's {out_td}")
        pairs = [(o, c if isinstance(c, Tensor) else P.constant(c, o.dtype))
                 for o, c in zip(out_leaves, cot_leaves) if isinstance(o, Tensor) and o.requires_grad]
        return tuple(_pull([o for o, _ in pairs], [c for _, c in pairs], flat, trees, create_graph,
                           retain=True))

    primal_out = _strip(out, create_graph)
    return (primal_out, vjp_fn, _strip(aux, create_graph)) if has_aux else (primal_out, vjp_fn)


__all__ = ["grad", "value_and_grad", "vjp"]
