"""Modules: PyTorch's ``nn.Module`` model of parameters, buffers and submodules.

Parameters and buffers are eager tensors owned by the module.  A jitted function that uses a
module captures them by reference, so in-place updates (optimizer steps, ``load_state_dict``)
are seen by the compiled code without re-tracing; ``load_state_dict`` therefore copies into
the existing tensors instead of replacing them.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np

from .. import dtypes as dt
from .. import prims as P
from ..api import asarray, reshape, tanh
from ..autograd import reset_grad
from ..device import write_back
from ..guards import is_plain as _is_plain
from ..guards import note_state_change
from ..ops import AVal
from ..tensors import CPU, Device, Tensor
from ..tracing import current_trace, settled
from . import functional as F
from . import init
from .functional import dropout


class Parameter(Tensor):
    """A tensor that is a module parameter: ``Parameter(t)`` shares ``t``'s memory and requires grad."""

    __slots__ = ()

    def __new__(cls, data: Any = None, requires_grad: bool = True) -> Parameter:
        if data is None:
            data = np.zeros((0,), dtype=dt.default_float)
        src = data if isinstance(data, Tensor) else asarray(data)
        if src.is_tracer and src._trace.is_lazy:
            settled(src)            # lazy mode: a parameter is made of computed values
        if src.is_tracer:
            raise TypeError("Parameter() needs a concrete tensor, not a traced value")
        value = src._value
        if src.device.type == "cpu" and not value.flags.writeable:   # updated in place by optimizers
            value = np.array(value)
        p = cls._from_array(value, src.device)
        p.requires_grad = requires_grad
        return p

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        pass

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce__(self) -> Any:
        return (Parameter, (self.numpy().copy(), self.requires_grad))


def _set_data(t: Tensor, value: Any, device: Device | None = None) -> None:
    """Replace a tensor's contents, dtype, shape and device included (``module.to(...)``)."""
    t._value = value
    t._aval = AVal(tuple(value.shape), np.dtype(value.dtype))
    if device is not None:
        t._device = device


def _device_or_dtype(arg: Any) -> tuple[Device | None, Any]:
    """``module.to``'s positional argument as (device, None) or (None, dtype)."""
    if isinstance(arg, Device) or (isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda")):
        return Device.parse(arg), None
    return None, arg


_INTERNAL_ATTRS = frozenset({"_parameters", "_buffers", "_non_persistent", "_modules"})


class _IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base class of models: assign Parameters, Modules and buffers as attributes in ``__init__``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())

    # -------------------------------------------------------------- attribute registration
    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError("call super().__init__() before assigning attributes to a Module")
        note_state_change()         # jitted functions that use this module re-check their guards
        target = (self._parameters if isinstance(value, Parameter) else
                  self._modules if isinstance(value, Module) else
                  self._buffers if name in self._buffers and isinstance(value, Tensor) else None)
        for d in (self._parameters, self._buffers, self._modules):
            if name in d and d is not target:     # re-assigning into the same store keeps its position
                del d[name]
        if isinstance(value, Parameter):
            self.__dict__.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self.__dict__.pop(name, None)
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        note_state_change()
        for d in (self._parameters, self._buffers, self._modules):
            if name in d:
                del d[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter, got {type(param).__name__}")
        note_state_change()
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A tensor that is state but not a parameter (saved in ``state_dict`` unless not persistent)."""
        note_state_change()
        self.__dict__.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        note_state_change()
        self._modules[name] = module

    register_module = add_module

    # -------------------------------------------------------------- traversal
    def named_modules(self, memo: set[int] | None = None, prefix: str = "") -> Iterator[tuple[str, Module]]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def _named(self, store: str, prefix: str, recurse: bool) -> Iterator[tuple[str, Tensor]]:
        seen: set[int] = set()
        mods = self.named_modules(prefix=prefix) if recurse else iter([(prefix, self)])
        for mprefix, m in mods:
            for name, t in getattr(m, store).items():
                if t is None or id(t) in seen:
                    continue
                seen.add(id(t))
                yield (f"{mprefix}.{name}" if mprefix else name), t

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        return self._named("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def _guard_snapshot(self, name: str) -> tuple:
        """What a trace that used this module depends on: for every submodule, its ``training``
        flag, plain Python attributes (numbers, strings, tuples of them) and the identity of its
        parameters, buffers and submodules, as (path, value) pairs (see ``tracejit.guards``)."""
        out = []
        for path, m in self.named_modules(prefix=name):
            for k, v in m.__dict__.items():
                if k in _INTERNAL_ATTRS:
                    continue
                out.append((f"{path}.{k}", v if _is_plain(v) else ("object", type(v).__name__, id(v))))
            for store in ("_parameters", "_buffers", "_modules"):
                for k, v in getattr(m, store).items():
                    out.append((f"{path}.{k}", None if v is None else (type(v).__name__, id(v))))
        return tuple(out)

    # -------------------------------------------------------------- modes and grads
    def train(self, mode: bool = True) -> Module:
        note_state_change()
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            reset_grad(p, set_to_none)

    def to(self, *args: Any, device: Any = None, dtype: Any = None) -> Module:
        """Move parameters and buffers to a device and/or convert the floating-point ones to a
        dtype, in place (the tensors an optimizer holds follow): ``model.to("cuda")``,
        ``model.to(tj.float64)``, ``model.to(device=..., dtype=...)``."""
        for arg in args:
            d, t = _device_or_dtype(arg)
            device, dtype = d or device, dtype if t is None else t
        dev = None if device is None else Device.parse(device)
        want = None if dtype is None else dt.canonical(dtype)
        for t in list(self.parameters()) + list(self.buffers()):
            new = t.detach()
            if want is not None and dt.is_float(t.dtype) and t.dtype != want:
                new = P.cast(new, want)
            if dev is not None and new.device != dev:
                new = new.to_device(dev)
            if new.dtype != t.dtype or new.device != t.device:
                _set_data(t, new._value, new.device)
                t.grad = None
        return self

    def cuda(self, index: int = 0) -> Module:
        return self.to(f"cuda:{index}")

    def cpu(self) -> Module:
        return self.to("cpu")

    def float(self) -> Module:
        return self.to(dt.float32)

    def double(self) -> Module:
        return self.to(dt.float64)

    # -------------------------------------------------------------- state
    def state_dict(self, prefix: str = "") -> OrderedDict[str, Tensor]:
        """Parameters and persistent buffers by dotted name (the module's own tensors, not copies)."""
        out: OrderedDict[str, Tensor] = OrderedDict()
        for mprefix, m in self.named_modules(prefix=prefix):
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mprefix}.{name}" if mprefix else name] = p
            for name, b in m._buffers.items():
                if b is not None and name not in m._non_persistent:
                    out[f"{mprefix}.{name}" if mprefix else name] = b
        return out

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> _IncompatibleKeys:
        """Copy values into this module's tensors in place (dtype converted, shape checked)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        mismatched = []
        for k, t in own.items():
            if k in state_dict:
                v = np.asarray(state_dict[k].numpy() if isinstance(state_dict[k], Tensor) else state_dict[k])
                if v.shape != t.shape:
                    mismatched.append(f"size mismatch for {k}: copying a param with shape {v.shape} from "
                                      f"the checkpoint, the shape in the current model is {t.shape}")
        problems = list(mismatched)
        if strict:
            if missing:
                problems.append("missing key(s) in state_dict: " + ", ".join(repr(k) for k in missing))
            if unexpected:
                problems.append("unexpected key(s) in state_dict: " + ", ".join(repr(k) for k in unexpected))
        if problems:
            raise RuntimeError(f"error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(problems))
        for k, t in own.items():
            if k in state_dict:
                v = state_dict[k]
                host = np.asarray(v.numpy() if isinstance(v, Tensor) else v).astype(t.dtype, copy=False)
                write_back(t, host, CPU)         # in place, onto the parameter's device
        return _IncompatibleKeys(missing, unexpected)

    # -------------------------------------------------------------- calling and printing
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        trace = current_trace()
        if trace is not None:       # the trace now depends on this module's state: guard it
            trace.use_module(self)
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


def _param(shape: tuple[int, ...], dtype: Any) -> Parameter:
    """A zero parameter on the default device (the layer's init then fills it)."""
    return Parameter(np.zeros(shape, dtype=dt.canonical(dtype or dt.default_float)))


# ------------------------------------------------------------------ layers

class Linear(Module):
    """``y = x @ weight.T + bias``; PyTorch's default init (kaiming-uniform weight, uniform bias)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _param((out_features, in_features), dtype)
        if bias:
            self.bias = _param((out_features,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class LayerNorm(Module):
    """Normalize over the trailing ``normalized_shape`` dims, then scale and shift (ones/zeros init)."""

    def __init__(self, normalized_shape: int | Iterable[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, dtype: Any = None) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps = shape, eps
        self.elementwise_affine = elementwise_affine
        self.weight = init.ones_(_param(shape, dtype)) if elementwise_affine else None
        self.bias = _param(shape, dtype) if elementwise_affine and bias else None
        if self.weight is None:
            self.register_parameter("weight", None)
        if self.bias is None:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Embedding(Module):
    """A lookup table (normal(0, 1) init).

    The lookup is a ``take`` (a gather of rows) and its gradient a ``scatter_add`` of the rows'
    gradients, eagerly and under ``jit``: no tokens x vocabulary temporary.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        if padding_idx is not None and padding_idx < 0:
            padding_idx += num_embeddings
        self.padding_idx = padding_idx
        self.weight = init.normal_(_param((num_embeddings, embedding_dim), dtype))
        if padding_idx is not None:
            self.weight[padding_idx] = 0.0       # (on the host or the GPU, in place)

    def forward(self, idx: Tensor) -> Tensor:
        return F.embedding(idx, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Zero each element with probability ``p`` in training (scaling the rest by 1/(1-p)).

    The mask comes from the global counter-based generator; under ``jit`` its counter is a
    graph mutation, so each call of a cached step draws a fresh mask.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class GELU(Module):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return tanh(x)


class Identity(Module):
    def forward(self, x: Any) -> Any:
        return x


class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` into one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Tensor) -> Tensor:
        s, e = self.start_dim % x.ndim, self.end_dim % x.ndim
        return reshape(x, x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


class Softmax(Module):
    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, axis=self.dim)


# ------------------------------------------------------------------ containers

class Sequential(Module):
    """Modules applied in order: ``Sequential(Linear(4, 8), ReLU(), Linear(8, 2))`` or an OrderedDict."""

    def __init__(self, *mods: Module | OrderedDict) -> None:
        super().__init__()
        if len(mods) == 1 and isinstance(mods[0], OrderedDict):
            for name, m in mods[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(mods):
                self.add_module(str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i: int | slice) -> Module:
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(OrderedDict(list(self._modules.items())[i]))
        return mods[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, m: Module) -> Sequential:
        self.add_module(str(len(self)), m)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered."""

    def __init__(self, mods: Iterable[Module] = ()) -> None:
        super().__init__()
        for m in mods:
            self.append(m)

    def append(self, m: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), m)
        return self

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


__all__ = ["Parameter", "Module", "Linear", "LayerNorm", "Embedding", "Dropout", "dropout", "ReLU", "GELU",
           "Sigmoid", "Tanh", "Identity", "Flatten", "Softmax", "Sequential",
           "ModuleList"]
