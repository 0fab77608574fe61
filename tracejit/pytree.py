"""Pytrees: nested tuples, lists, dicts, namedtuples and dataclasses of leaves."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple


class TreeDef(NamedTuple):
    """The structure of a pytree without its leaves (hashable: part of the trace cache key)."""
    kind: Any                 # None for a leaf, else the container type
    aux: Any                  # dict keys / dataclass field names, or the leaf marker
    children: tuple[TreeDef, ...]

    def __repr__(self) -> str:
        if self.kind is None:
            return "*"
        name = getattr(self.kind, "__name__", str(self.kind))
        return f"{name}({', '.join(map(repr, self.children))})"


LEAF = TreeDef(None, None, ())


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def flatten(tree: Any, is_leaf: Callable[[Any], bool] | None = None) -> tuple[list[Any], TreeDef]:
    leaves: list[Any] = []

    def go(x: Any) -> TreeDef:
        if is_leaf is not None and is_leaf(x):
            leaves.append(x)
            return LEAF
        if x is None:
            return TreeDef(type(None), None, ())
        if _is_namedtuple(x) or isinstance(x, (tuple, list)):
            return TreeDef(type(x), None, tuple(go(c) for c in x))
        if isinstance(x, dict):
            keys = tuple(sorted(x, key=repr))
            return TreeDef(type(x), keys, tuple(go(x[k]) for k in keys))
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            names = tuple(f.name for f in dataclasses.fields(x))
            return TreeDef(type(x), names, tuple(go(getattr(x, n)) for n in names))
        leaves.append(x)
        return LEAF

    return leaves, go(tree)


def unflatten(treedef: TreeDef, leaves: list[Any]) -> Any:
    it = iter(leaves)

    def go(td: TreeDef) -> Any:
        if td.kind is None:
            return next(it)
        if td.kind is type(None):
            return None
        kids = [go(c) for c in td.children]
        if td.kind in (tuple, list):
            return td.kind(kids)
        if issubclass(td.kind, tuple):  # namedtuple
            return td.kind(*kids)
        if issubclass(td.kind, dict):
            return td.kind(zip(td.aux, kids))
        return td.kind(**dict(zip(td.aux, kids)))

    return go(treedef)


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    leaves, td = flatten(tree)
    return unflatten(td, [fn(x) for x in leaves])
