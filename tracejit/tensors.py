"""The :class:`Tensor`: an eager array (a NumPy array on the host) or a tracer.

One class serves both modes so user code never needs to know which it runs in.  A tracer
has ``_trace``/``_node`` and no value; converting it to a Python value raises
:class:`~tracejit.errors.ConcretizationError` naming the user's line.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import dtypes as dt
from .errors import ConcretizationError, user_frame
from .ops import AVal


class Device:
    """A device: ``Device("cpu")``, ``Device("cuda", 0)``; compares equal to its string."""

    __slots__ = ("type", "index")

    def __init__(self, type: str, index: int = 0) -> None:  # noqa: A002
        self.type = type
        self.index = index

    @staticmethod
    def parse(spec: Any) -> Device:
        if isinstance(spec, Device):
            return spec
        if spec is None:
            from .device import default_device
            return default_device()
        if not isinstance(spec, str):
            raise TypeError(f"a device is a string like 'cpu' or 'cuda:0', got {spec!r}")
        kind, sep, idx = spec.partition(":")
        # one host device only: 'cpu:7' is a typo, not a CPU; indices are plain ASCII digits
        bad_idx = sep and not (idx.isascii() and idx.isdigit()) or (kind == "cpu" and sep and idx != "0")
        if kind not in ("cpu", "cuda") or bad_idx:
            raise ValueError(f"unknown device {spec!r}; expected 'cpu', 'cpu:0', 'cuda' or 'cuda:N'")
        return Device(kind, int(idx) if idx else 0)

    def __str__(self) -> str:
        return "cpu" if self.type == "cpu" else f"cuda:{self.index}"

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = Device.parse(other)
            except ValueError:
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))


CPU = Device("cpu")


def is_host_number(value: Any) -> bool:
    """A host array that holds one number (a scalar, or a broadcast view of one): a GPU op reads
    it from the host, so next to GPU tensors it pins no device."""
    return isinstance(value, np.ndarray) and (value.size <= 1 or not any(value.strides))


def check_same_device(op: str, tensors: tuple[Tensor, ...]) -> Device:
    if not tensors:
        return CPU
    first = tensors[0].device
    for t in tensors[1:]:
        if t.device != first:
            raise ValueError(f"{op}: operands are on different devices ({first} and {t.device}); "
                             f"move one with .to(device)")
    return first


_grad_watch: Any = None     # while jit traces: records .grad reads and writes (tracejit.grad_state)


def set_grad_watch(watch: Any) -> Any:
    """Install ``watch`` (or None) as the recorder of ``.grad`` accesses; returns the previous one."""
    global _grad_watch
    previous, _grad_watch = _grad_watch, watch
    return previous


class Tensor:
    __slots__ = ("_value", "_trace", "_node", "_aval", "_device", "requires_grad", "_grad",
                 "_grad_fn", "_retains_grad", "_weak", "__weakref__")

    # ------------------------------------------------------------------ construction
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("create tensors with tracejit.asarray(...), zeros(...), ones(...), etc.")

    @classmethod
    def _new(cls, value: Any, trace: Any, node: int, aval: AVal, device: Device) -> Tensor:
        t = object.__new__(cls)
        t._value = value
        t._trace = trace
        t._node = node
        t._aval = aval
        t._device = device
        t.requires_grad = False
        t._grad = None
        t._grad_fn = None
        t._retains_grad = False
        t._weak = False        # a traced Python scalar: promotes like one
        return t

    @property
    def grad(self) -> Tensor | None:
        """The gradient ``backward`` accumulated into this tensor (``None`` until then)."""
        if _grad_watch is not None:
            _grad_watch.note(self, True)
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if _grad_watch is not None:
            _grad_watch.note(self, False)
        self._grad = value

    @classmethod
    def _from_array(cls, value: Any, device: Device = CPU) -> Tensor:
        """An eager tensor over ``value`` (a NumPy array, or a device array on a GPU)."""
        # device arrays name their dtype by string
        return cls._new(value, None, -1, AVal(tuple(value.shape), np.dtype(value.dtype)), device)

    @classmethod
    def _tracer(cls, trace: Any, node: int, aval: AVal, device: Device = CPU) -> Tensor:
        """A tensor standing for graph node ``node`` while ``trace`` records."""
        t = cls._new(None, trace, node, aval, device)
        if trace.is_lazy:
            trace.track(t)      # (a lazy graph computes the tracers still referenced when flushed)
        return t

    # ------------------------------------------------------------------ attributes
    @property
    def aval(self) -> AVal:
        return self._aval

    @property
    def shape(self) -> tuple[int, ...]:
        return self._aval.shape

    @property
    def dtype(self) -> np.dtype:
        return self._aval.dtype

    @property
    def device(self) -> Device:
        return self._device

    @property
    def ndim(self) -> int:
        return len(self._aval.shape)

    @property
    def size(self) -> int:
        # (api/torch_names.py replaces it by the same count as a callable int: x.size() is the shape)
        return int(np.prod(self._aval.shape, dtype=np.int64))

    @property
    def is_tracer(self) -> bool:
        return self._trace is not None

    @property
    def T(self) -> Tensor:  # noqa: N802
        if self.ndim != 2:
            raise ValueError(f".T needs a 2-D tensor, got {self.ndim}-D; use .mT or permute_dims")
        return _api().permute_dims(self, (1, 0))

    @property
    def mT(self) -> Tensor:  # noqa: N802
        return _api().matrix_transpose(self)

    # ------------------------------------------------------------------ conversion
    def _concrete(self, what: str) -> np.ndarray:
        if self._trace is not None and self._trace.is_lazy:
            self._trace.flush()          # lazy mode: observing a value computes it
        if self._trace is not None:
            raise ConcretizationError(
                f"{what} needs a concrete value, but this tensor {self.aval} is being traced by "
                f"tracejit.jit.\n  at {user_frame()}\n"
                "Python control flow on traced values cannot be compiled. Ways out: mark the argument "
                "static (jit(f, static_argnames=...)), use tracejit.where(cond, a, b) instead of if/else, "
                "or run the function eagerly (without jit).")
        from .tracing import note_data_read
        note_data_read(self, what)       # (while tracing, the value becomes part of the program)
        return self._host_value()

    def _host_value(self) -> np.ndarray:
        if self._device.type == "cpu":
            return self._value
        from .device import host_array
        return host_array(self._value, self._device)

    def numpy(self) -> np.ndarray:
        """The tensor's value as a NumPy array (a copy for GPU tensors, a view on the CPU)."""
        return self._concrete("numpy()")

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self._concrete("np.asarray(tensor)")
        if dtype is not None and a.dtype != dtype:
            return a.astype(dtype)
        return a.copy() if copy else a

    def item(self) -> Any:
        a = self._concrete(".item()")
        if a.size != 1:
            raise ValueError(f".item() needs a tensor with one element, got shape {self.shape}")
        return a.reshape(()).item()

    def tolist(self) -> Any:
        return self._concrete(".tolist()").tolist()

    def _scalar(self, kind: type, what: str) -> Any:
        a = self._concrete(what)
        if a.size != 1:
            raise TypeError(f"{what} needs a tensor with one element, got shape {self.shape}")
        return kind(a.reshape(()).item())

    def __bool__(self) -> bool:
        if self._trace is None and self.size != 1:
            raise ValueError(f"the truth value of a tensor with shape {self.shape} is ambiguous; "
                             "use tracejit.any() or tracejit.all()")
        return self._scalar(bool, "bool(tensor)")

    def __float__(self) -> float:
        return self._scalar(float, "float(tensor)")

    def __int__(self) -> int:
        return self._scalar(int, "int(tensor)")

    def __index__(self) -> int:
        if not dt.is_int(self.dtype):
            raise TypeError(f"only integer tensors can be used as an index, got {self.dtype.name}")
        return self._scalar(int, "using a tensor as an index")

    def __complex__(self) -> complex:
        return self._scalar(complex, "complex(tensor)")

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.shape[0]))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        if self._trace is not None and self._trace.is_lazy:
            self._trace.flush()
        if self._trace is not None:
            return f"Tracer({self.aval})"
        body = np.array2string(self._host_value(), separator=", ", prefix="tensor(", threshold=200)
        extra = f", dtype={self.dtype.name}" if self.dtype not in (dt.float32, dt.int64, dt.bool_) else ""
        dev = f", device='{self.device}'" if self.device.type != "cpu" else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({body}{extra}{dev}{grad})"

    __str__ = __repr__

    # ------------------------------------------------------------------ array API protocol
    def __array_namespace__(self, *, api_version: str | None = None) -> Any:
        if api_version not in (None, "2021.12", "2022.12", "2023.12"):
            raise ValueError(f"unsupported array API version {api_version!r}")
        import tracejit
        return tracejit

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Any = None) -> Any:
        a = self._concrete("__dlpack__")
        kwargs = {} if max_version is None else {"max_version": max_version}
        if copy is not None:
            kwargs["copy"] = copy
        try:
            return a.__dlpack__(stream=stream, **kwargs)
        except TypeError:
            return a.__dlpack__(stream=stream)

    def __dlpack_device__(self) -> tuple[int, int]:
        if self.device.type != "cpu":
            return (2, self.device.index)
        return (1, 0)

    def to_device(self, device: Any, /, *, stream: Any = None) -> Tensor:
        from .device import to_device
        return to_device(self, Device.parse(device))

    def to(self, device: Any = None, dtype: Any = None) -> Tensor:
        """PyTorch-style ``.to(device)`` / ``.to(dtype)`` / ``.to(device, dtype)``."""
        out = self
        if isinstance(device, str) or isinstance(device, Device):
            out = out.to_device(device)
        elif device is not None and dtype is None:
            dtype = device
        if dtype is not None:
            out = _api().astype(out, dtype)
        return out

    def astype(self, dtype: Any, /, *, copy: bool = True) -> Tensor:
        return _api().astype(self, dtype, copy=copy)

    # ------------------------------------------------------------------ operators
    def __getitem__(self, key: Any) -> Tensor:
        return _api().getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _api().setitem(self, key, value)

    def _assign(self, new: Tensor) -> None:
        """In-place update: the result of an op replaces this tensor's contents."""
        if new.dtype != self.dtype:
            raise TypeError(f"in-place op would change dtype {self.dtype.name} to {new.dtype.name}")
        if new.shape != self.shape:
            raise ValueError(f"in-place op would change shape {self.shape} to {new.shape}")
        trace = _current_trace() if self._trace is not None or new._trace is not None else _lazy_trace()
        if trace is None and (self._trace is not None or new._trace is not None):
            raise TypeError("in-place update of a traced value outside its trace")
        if self.requires_grad and self._grad_fn is None and _grad_on() and (trace is None or trace.is_lazy):
            raise RuntimeError("a leaf tensor that requires grad is used in an in-place operation; "
                               "wrap the update in tracejit.no_grad()")
        if trace is not None:           # traced, or lazy mode: the write is recorded
            trace.assign(self, new)
        else:
            from .device import write_back
            write_back(self, new._value, new.device)
        if new._grad_fn is not None:
            self._grad_fn, self.requires_grad = new._grad_fn, True
            new._grad_fn.set_output(self)   # the temporary ``new`` dies; its node now produces self

    def __neg__(self): return _api().negative(self)
    def __pos__(self): return _api().positive(self)
    def __abs__(self): return _api().abs(self)
    def __invert__(self): return _api().bitwise_invert(self)

    def __matmul__(self, o): return _api().matmul(self, o)
    def __rmatmul__(self, o): return _api().matmul(o, self)

    def __imatmul__(self, o):
        self._assign(_api().matmul(self, o))
        return self


def _binary(fn_name: str):
    fn = None       # the API function, looked up on first use (the API imports this module)

    def api_fn():
        nonlocal fn
        fn = getattr(_api(), fn_name)
        return fn

    def op(self, other):
        return (fn or api_fn())(self, other)

    def rop(self, other):
        return (fn or api_fn())(other, self)

    def iop(self, other):
        self._assign((fn or api_fn())(self, other))
        return self
    return op, rop, iop


for _dunder, _fn in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "divide"),
                     ("floordiv", "floor_divide"), ("mod", "remainder"), ("pow", "pow"),
                     ("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor"),
                     ("lshift", "bitwise_left_shift"), ("rshift", "bitwise_right_shift")]:
    _op, _rop, _iop = _binary(_fn)
    setattr(Tensor, f"__{_dunder}__", _op)
    setattr(Tensor, f"__r{_dunder}__", _rop)
    setattr(Tensor, f"__i{_dunder}__", _iop)

for _dunder, _fn in [("eq", "equal"), ("ne", "not_equal"), ("lt", "less"), ("le", "less_equal"),
                     ("gt", "greater"), ("ge", "greater_equal")]:
    setattr(Tensor, f"__{_dunder}__", _binary(_fn)[0])


def _method(name: str):
    fn = None

    def method(self, *args, **kwargs):
        nonlocal fn
        if fn is None:
            fn = getattr(_api(), name)
        return fn(self, *args, **kwargs)
    method.__name__ = name
    method.__doc__ = f"Same as ``tracejit.{name}(self, ...)``."
    return method


# PyTorch/NumPy-style methods for the common functions
for _name in ("sum", "prod", "mean", "var", "std", "max", "min", "argmax", "argmin", "all", "any",
              "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "clip", "flip", "squeeze",
              "expand_dims", "broadcast_to", "matmul", "take", "cumulative_sum"):
    setattr(Tensor, _name, _method(_name))


def _reshape(self, *shape):
    """``x.reshape(2, 3)`` or ``x.reshape((2, 3))``."""
    return _api().reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)


def _permute(self, *axes):
    return _api().permute_dims(self, axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else axes)


Tensor.reshape = _reshape
Tensor.view = _reshape
Tensor.permute = _permute


def _api():
    from . import api
    return api


_thread_state: Any = None      # tracing._local, looked up on first use (tracing imports this module)


def _current_trace() -> Any:
    global _thread_state
    if _thread_state is None:
        from .tracing import _local
        _thread_state = _local
    stack = _thread_state.traces
    return stack[-1] if stack else None


def _lazy_trace() -> Any:
    """The active lazy-mode trace, if any (an in-place op on eager tensors records into it)."""
    trace = _current_trace()
    return trace if trace is not None and trace.is_lazy else None


def _grad_on() -> bool:
    from .tracing import grad_enabled
    return grad_enabled()
