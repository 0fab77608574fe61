"""Guards: the Python state a trace read besides its arguments, checked before a cached trace runs.

A trace is only valid while everything it read still holds.  Its arguments are the cache key;
everything else becomes a guard on the cache entry:

- globals and closure variables the traced code reads (found in its bytecode, and in the code
  of the user functions it calls): tensors, modules and other objects by identity, Python
  numbers, strings and tuples of them by value;
- modules (``nn.Module``) reached that way, or passed as arguments, or the jitted callable
  itself: their structure (which parameter, buffer and submodule objects they hold), their
  ``training`` flags and their plain Python attributes (``Dropout.p``), as a snapshot that is
  recomputed only when some module changed since it was last checked (a global counter that
  ``Module.__setattr__``/``train``/``eval`` bump);
- Python values read from containers that report their reads (an optimizer's param groups):
  by value;
- containers and plain objects read that way (a global list of tensors, a config dataclass, a
  dict of settings): their contents, a few levels deep, by identity and by value as above
  (``cfg.scale = 3.0`` or ``params[0] = new`` re-traces);
- every captured tensor's shape, dtype, device and ``requires_grad``.

Numbers that change every step (an optimizer's learning rate) are not guards but run-time
inputs (:class:`ScalarSource`): the program reads them at every call.

A failed guard makes the jit trace again and log, under ``TRACEJIT_LOG=recompiles``, which
guard failed, its old and new value, and the user's line that read it.
"""
from __future__ import annotations

import builtins
import dis
import os
import sys
import sysconfig
import types
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .errors import _OWN_DIRS
from .ops import AVal

_MISSING = object()

# ---------------------------------------------------------------------------- state versions

_state_version = 0


def note_state_change() -> None:
    """Called when an object whose snapshot guards read (a Module) changes: the next guard check
    recomputes snapshots instead of trusting them."""
    global _state_version
    _state_version += 1


def state_version() -> int:
    return _state_version


# ---------------------------------------------------------------------------- value keys

def is_plain(v: Any) -> bool:
    """Values guarded by value (equality and type) rather than by identity."""
    if v is None or type(v) in (bool, int, float, str, complex):
        return True
    return type(v) is tuple and len(v) <= 16 and all(is_plain(x) for x in v)


def describe(v: Any) -> str:
    if v is _MISSING:
        return "<unbound>"
    if is_plain(v):
        return repr(v)
    aval = getattr(v, "aval", None)
    if isinstance(aval, AVal):
        return f"tensor {aval} at 0x{id(v):x}"
    return f"{type(v).__name__} object at 0x{id(v):x}"


def same(expected: Any, value: Any) -> bool:
    if value is expected:
        return True
    return is_plain(expected) and type(value) is type(expected) and value == expected


# ---------------------------------------------------------------------------- guards

class Guard:
    """One condition a cached trace depends on."""

    __slots__ = ("what", "where")

    def __init__(self, what: str, where: str) -> None:
        self.what = what        # "global W", "model.drop.training", ...
        self.where = where      # the user's file:line that read it

    def holds(self) -> bool:
        raise NotImplementedError

    def change(self) -> str:
        """The failed guard, in words: what, old -> new, where."""
        raise NotImplementedError


class ValueGuard(Guard):
    """``read()`` still gives the value the trace saw (by identity, or by value for plain data)."""

    __slots__ = ("read", "expected")

    def __init__(self, what: str, where: str, read: Callable[[], Any], expected: Any) -> None:
        super().__init__(what, where)
        self.read = read
        self.expected = expected

    def holds(self) -> bool:
        v = self.read()
        return v is self.expected or same(self.expected, v)

    def change(self) -> str:
        return (f"{self.what} changed: {describe(self.expected)} -> {describe(self.read())} "
                f"(read at {self.where})")


def _dict_reader(d: dict, key: Any) -> Callable[[], Any]:
    return lambda: d.get(key, _MISSING)


def _cell_reader(cell: types.CellType) -> Callable[[], Any]:
    def read() -> Any:
        try:
            return cell.cell_contents
        except ValueError:
            return _MISSING
    return read


class SnapshotGuard(Guard):
    """Objects with a ``_guard_snapshot()`` (modules) look as they did when traced.

    Snapshots are recomputed only when the global state version moved since the last check,
    so an unchanged model costs one integer comparison per call.
    """

    __slots__ = ("roots", "snapshot", "version")

    def __init__(self, roots: list[tuple[str, Any]], where: str) -> None:
        super().__init__(", ".join(name for name, _ in roots), where)
        self.roots = roots
        self.snapshot = self._take()
        self.version = _state_version

    def _take(self) -> tuple:
        return tuple(obj._guard_snapshot(name) for name, obj in self.roots)

    def holds(self) -> bool:
        if self.version == _state_version:
            return True
        if self._take() != self.snapshot:
            return False
        self.version = _state_version
        return True

    def change(self) -> str:
        old = dict(_flatten_snapshot(self.snapshot))
        new = dict(_flatten_snapshot(self._take()))
        keys = sorted(set(old) | set(new), key=str)
        diffs = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
                 for k in keys if old.get(k, _MISSING) != new.get(k, _MISSING)]
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        return f"module state changed: {shown} (module used at {self.where})"


def _flatten_snapshot(snap: tuple) -> Iterator[tuple[str, Any]]:
    for per_root in snap:
        yield from per_root


class CaptureGuard(Guard):
    """Captured tensors keep the shape, dtype, device and ``requires_grad`` they were traced with."""

    __slots__ = ("captures", "metas")

    def __init__(self, captures: list[Any]) -> None:
        super().__init__("captured tensors", "")
        self.captures = captures
        self.metas = [self._meta(c) for c in captures]

    @staticmethod
    def _meta(c: Any) -> tuple:
        return (c._aval, c._device, c.requires_grad)

    def holds(self) -> bool:
        for c, (aval, device, rg) in zip(self.captures, self.metas):
            if (c._aval is not aval and c._aval != aval) or c.requires_grad is not rg or c._device != device:
                return False
        return True

    def change(self) -> str:
        for c, m in zip(self.captures, self.metas):
            now = self._meta(c)
            if now != m:
                return (f"a captured tensor changed: {m[0]} on {m[1]} requires_grad={m[2]} -> "
                        f"{now[0]} on {now[1]} requires_grad={now[2]}")
        return "captured tensors changed"


def _opaque(v: Any) -> bool:
    """Objects whose contents a guard does not look into (compared by identity)."""
    return (isinstance(v, (types.ModuleType, type, types.FunctionType, types.MethodType,
                           types.BuiltinFunctionType, np.ndarray)) or hasattr(v, "aval")
            or _is_snapshotted(v) or getattr(type(v), "_guard_contents", True) is False)


def _user_class(c: Any) -> bool:
    return isinstance(c, type) and c.__module__ not in ("builtins", "abc", "typing") \
        and c.__module__.split(".")[0] not in _OWN_PACKAGES


def _class_contents(cls: type, depth: int) -> tuple:
    """The class attributes an object reads through its class (``cfg.scale`` where ``scale`` is
    set on the class): each user class of the MRO, plain values by value, the rest by identity."""
    return tuple((c.__qualname__, tuple((k, contents(x, depth)) for k, x in vars(c).items()
                                        if not k.startswith("__")))
                 for c in cls.__mro__ if _user_class(c))


def contents(v: Any, depth: int = 3) -> Any:
    """A comparable picture of ``v``: plain values by value, containers and plain objects by
    their contents and their class's attributes (``depth`` levels), everything else by identity."""
    if is_plain(v):
        return (type(v), v)
    if depth > 0 and _user_class(v) and not _is_snapshotted(v):
        return (type, id(v), _class_contents(v, depth - 1))
    if depth == 0 or _opaque(v):
        return id(v)
    if isinstance(v, (list, tuple)):
        return (type(v), id(v), tuple(contents(x, depth - 1) for x in v))
    if isinstance(v, dict):
        return (dict, id(v), tuple((k if is_plain(k) else id(k), contents(x, depth - 1))
                                   for k, x in v.items()))
    attrs = getattr(v, "__dict__", None)
    if isinstance(attrs, dict):
        return (type(v), id(v), contents(attrs, depth - 1), _class_contents(type(v), depth - 1))
    return id(v)


def has_contents(v: Any) -> bool:
    if _user_class(v) and not _is_snapshotted(v):
        return True
    return not is_plain(v) and not _opaque(v) and (
        isinstance(v, (list, tuple, dict)) or isinstance(getattr(v, "__dict__", None), dict))


class ContentsGuard(Guard):
    """A container or plain object read by the trace still holds what it held (see :func:`contents`)."""

    __slots__ = ("read", "expected")

    def __init__(self, what: str, where: str, read: Callable[[], Any]) -> None:
        super().__init__(what, where)
        self.read = read
        self.expected = contents(read())

    def holds(self) -> bool:
        return contents(self.read()) == self.expected

    def change(self) -> str:
        return f"the contents of {self.what} changed (read at {self.where})"


class DataGuard(Guard):
    """A host value the trace read as data (a captured tensor's ``.item()``, a NumPy array used as
    a constant) still holds the same elements: the compiled program has them baked in."""

    __slots__ = ("read", "saved")

    MAX_BYTES = 1 << 20       # larger values are refused at trace time (a compare per call)

    def __init__(self, what: str, where: str, read: Callable[[], np.ndarray]) -> None:
        super().__init__(what, where)
        self.read = read
        self.saved = np.array(read(), copy=True)

    def holds(self) -> bool:
        a, s = self.read(), self.saved
        return a.shape == s.shape and a.dtype == s.dtype and bool(
            np.array_equal(a, s, equal_nan=a.dtype.kind == "f"))

    def change(self) -> str:
        return f"the values of {self.what} changed (read at {self.where})"


def first_failing(guards: list[Guard]) -> Guard | None:
    for g in guards:
        if not g.holds():
            return g
    return None


# ---------------------------------------------------------------------------- run-time scalars

class CaptureSource:
    """A trace's capture that is not a tensor but stands for a value read at each call, with the
    aval and device it had when traced (what the capture guard compares)."""

    __slots__ = ("_aval", "_device")
    requires_grad = False

    def __init__(self, aval: AVal, device: Any) -> None:
        self._aval = aval
        self._device = device

    @property
    def aval(self) -> AVal:
        return self._aval

    @property
    def device(self) -> Any:
        return self._device


class ScalarSource(CaptureSource):
    """A Python number read from a container while tracing, fed to the program at every call.

    It sits in a trace's captures like a tensor: the program reads ``container[key]`` each time
    it runs, so a learning-rate schedule changes the step without re-tracing.
    """

    __slots__ = ("container", "key", "_type")

    def __init__(self, container: Any, key: Any, value: Any, aval: AVal, device: Any) -> None:
        super().__init__(aval, device)
        self.container = container
        self.key = key
        self._type = type(value)

    @property
    def _value(self) -> np.ndarray:
        v = self.container[self.key]
        if type(v) is not self._type and not isinstance(v, (int, float)):
            raise TypeError(f"jit: {self.key!r} was a {self._type.__name__} when the function was traced "
                            f"and is now a {type(v).__name__}; clear the cache (f.clear_cache()) to re-trace")
        return np.asarray(v, dtype=self._aval.dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self._value
        return a if dtype is None else a.astype(dtype)


# ---------------------------------------------------------------------------- reading user code

_LIBRARY_DIRS = tuple({os.path.realpath(p) + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib")
                       if (p := sysconfig.get_paths().get(k))})
_OWN_PACKAGES = ("tracejit", "codegen", "runtime", "numpy")


def _is_user_function(f: Any) -> bool:
    if not isinstance(f, types.FunctionType):
        return False
    mod = (f.__module__ or "").split(".")[0]
    if mod in _OWN_PACKAGES:
        return False
    return not os.path.realpath(f.__code__.co_filename).startswith(_LIBRARY_DIRS)


def _is_snapshotted(v: Any) -> bool:
    return hasattr(type(v), "_guard_snapshot")


def _global_loads(code: types.CodeType) -> Iterator[tuple[str, int]]:
    """(name, line) of every global read in ``code`` and in the code nested in it."""
    line = code.co_firstlineno
    for ins in dis.get_instructions(code):
        if ins.starts_line:
            line = ins.starts_line if isinstance(ins.starts_line, int) else line
        if getattr(ins, "line_number", None):
            line = ins.line_number
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            yield ins.argval, line
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _global_loads(c)


class CodeGuards:
    """Guards on the globals and closure variables that a function and its callees read."""

    MAX_DEPTH = 4

    def __init__(self) -> None:
        self.guards: list[Guard] = []
        self.snapshot_roots: list[tuple[str, Any]] = []
        self._seen_funcs: set[int] = set()
        self._seen_keys: set[tuple[int, Any]] = set()
        self._seen_roots: set[int] = set()

    def add_root(self, name: str, obj: Any) -> None:
        if _is_snapshotted(obj) and id(obj) not in self._seen_roots:
            self._seen_roots.add(id(obj))
            self.snapshot_roots.append((name, obj))

    def visit_callable(self, fn: Any, depth: int = 0) -> None:
        """Read ``fn`` (function, bound method, module or callable object) for the state it reads."""
        if isinstance(fn, types.MethodType):
            self.add_root("self", fn.__self__)
            fn = fn.__func__
        elif not isinstance(fn, types.FunctionType):
            if _is_snapshotted(fn):
                self.add_root(type(fn).__name__, fn)
            for attr in ("forward", "__call__"):
                f = getattr(type(fn), attr, None)
                if _is_user_function(f):
                    self.visit_function(f, depth)
            inner = getattr(fn, "func", None)       # functools.partial
            if inner is not None:
                self.visit_callable(inner, depth)
            return
        self.visit_function(fn, depth)

    def visit_function(self, f: types.FunctionType, depth: int) -> None:
        if id(f) in self._seen_funcs or depth > self.MAX_DEPTH:
            return
        self._seen_funcs.add(id(f))
        code = f.__code__
        where = f"{code.co_filename}:{code.co_firstlineno}"
        for name, line in _global_loads(code):
            if name in f.__globals__:
                self._value(f"global {name}", f"{code.co_filename}:{line}",
                            _dict_reader(f.__globals__, name), f.__globals__[name],
                            (id(f.__globals__), name), depth)
            elif not hasattr(builtins, name):
                self._add(f"global {name}", f"{code.co_filename}:{line}",
                          _dict_reader(f.__globals__, name), _MISSING, (id(f.__globals__), name))
        for name, cell in zip(code.co_freevars, f.__closure__ or ()):
            try:
                v = cell.cell_contents
            except ValueError:
                continue
            self._value(f"closure variable {name}", where, _cell_reader(cell), v, (id(cell), None), depth)

    def _value(self, what: str, where: str, read: Callable[[], Any], v: Any, key: tuple, depth: int) -> None:
        if isinstance(v, type) and _user_class(v):      # its attributes (Config.scale = 3.0)
            self.guards.append(ContentsGuard(f"{what} (class {v.__name__})", where, read))
            return
        if isinstance(v, (types.ModuleType, type)) or v is _MISSING:
            return          # modules and library classes: rebinding them is not worth a check per call
        self._add(what, where, read, v, key)
        if has_contents(v):
            self.guards.append(ContentsGuard(f"{what} ({type(v).__name__})", where, read))
        if _is_user_function(v):
            self.visit_function(v, depth + 1)
        elif _is_snapshotted(v):
            self.add_root(what.split()[-1], v)
        elif isinstance(v, (list, tuple, dict)) and not is_plain(v):
            items = v.values() if isinstance(v, dict) else v
            for i, item in enumerate(list(items)[:64]):
                if _is_snapshotted(item):
                    self.add_root(f"{what.split()[-1]}[{i}]", item)

    def _add(self, what: str, where: str, read: Callable[[], Any], v: Any, key: tuple) -> None:
        if key in self._seen_keys:
            return
        self._seen_keys.add(key)
        self.guards.append(ValueGuard(what, where, read, v))


def function_location(fn: Any) -> str:
    f = getattr(fn, "__func__", fn)
    code = getattr(f, "__code__", None) or getattr(getattr(type(f), "forward", None), "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code else repr(fn)


def user_line() -> str:
    """The innermost user frame's ``file:line`` (without the source text): cheap enough for guards."""
    f = sys._getframe(1)
    while f is not None:
        if not os.path.abspath(f.f_code.co_filename).startswith(_OWN_DIRS):
            return f"{f.f_code.co_filename}:{f.f_lineno}"
        f = f.f_back
    return "<unknown location>"
