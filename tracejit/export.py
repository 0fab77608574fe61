"""``tj.export(fn, *specs)`` and ``tj.load(path)``: a compiled function as a file, run without its source.

    exp = tj.export(model_fn, tj.spec(("batch", 784), tj.float32))
    exp.save("model.tjx")
    f = tj.load("model.tjx")          # in any process: no source, no tracing, no compiling
    y = f(x)                          # any batch size
    exp.save_library("model.so")      # the same program for C (tracejit.export_library)

The file (:mod:`tracejit.export_format`) holds the optimized graph (as text), the compiled
program as data (:mod:`tracejit.export_program`) with every size that depends on a symbolic
dimension as a polynomial of it (:mod:`tracejit.symbolic`), the kernels' object code for the
CPU it was built on, the hand-written modules the program calls (GEMM, worker hand-off, step
runner), the same function lowered for NVIDIA GPUs (its program template and PTX, stored for
GPU runtimes; :func:`load` runs the CPU program), and the parameters the function captured
(model weights).  Kernels take their sizes as run-time arguments, so the program for a
new batch size is the stored one with its sizes evaluated; nothing is traced or compiled.

Loading a file links the native code in it into the process, like loading a shared library:
load files from trusted sources only.  Loading refuses a file that is damaged (digest), of
another format version, or built for another target triple, CPU feature set or code generator.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from codegen import cpu
from runtime import kernel_cache
from runtime import program as rp

from . import dtypes as dt
from . import export_format as fmt
from . import serialization
from .autograd import no_grad
from .compiler import _buffer_plan  # (the scheduler's own plan, for the program at each size)
from .errors import TracejitError
from .export_program import ExportError, check_bounds, decode_kernel, decode_program, encode_program
from .jit import Jitted, Spec, jit
from .pytree import unflatten
from .symbolic import MAX_NAMES, ExportShapeError, difference, evaluate, fit, sample_points
from .tensors import Device, Tensor

__all__ = ["export", "load", "Exported", "LoadedFunction", "ExportError", "ExportShapeError"]

# Programs kept per loaded function, one per distinct set of sizes (a server sees many batch sizes).
PROGRAMS_KEPT = 64


class Exported:
    """The result of :func:`export`: ``save(path)`` writes it; ``graph`` is the optimized graph
    (as traced at the first sample sizes)."""

    def __init__(self, header: dict[str, Any], blobs: dict[str, bytes]) -> None:
        self.header, self.blobs = header, blobs

    @property
    def graph(self) -> str:
        return self.header["graph"]

    @property
    def symbols(self) -> list[str]:
        return list(self.header["symbols"])

    def to_bytes(self) -> bytes:
        return fmt.encode(self.header, self.blobs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the file atomically (a temporary file renamed into place)."""
        serialization.write_atomic(path, self.to_bytes())

    def save_library(self, path: str | os.PathLike, prefix: str | None = None) -> Path:
        """Write the CPU program as a shared library callable from C, and its header (``.h``
        beside it, returned); see :mod:`tracejit.export_library`."""
        from .export_library import save_library

        return save_library(self.header, self.blobs, path, prefix)


# --------------------------------------------------------------------------- export


def _check_specs(specs: tuple[Any, ...]) -> list[str]:
    if not specs:
        raise ExportError("export: give one tj.spec(shape, dtype) per argument of the function")
    names: list[str] = []
    for i, s in enumerate(specs):
        if not isinstance(s, Spec):
            raise ExportError(f"export: argument {i} is a {type(s).__name__}; pass tj.spec(shape, dtype)")
        if s.device.type != "cpu":
            raise ExportError(
                f"export: argument {i} is on {s.device}; specs describe host inputs "
                "(the file holds code for the CPU and PTX for GPUs)"
            )
        names += [n for n in s.symbols if n not in names]
    if len(names) > MAX_NAMES:
        raise ExportError(f"export: {len(names)} symbolic dimensions {names}; at most {MAX_NAMES}")
    return names


def _concrete(specs: tuple[Spec, ...], point: dict[str, int], device: str) -> list[Spec]:
    return [
        Spec(tuple(point[d] if isinstance(d, str) else d for d in s.shape), s.dtype, Device.parse(device))
        for s in specs
    ]


def _structure(traced: Any) -> Any:
    """The function's result structure as JSON: ``{"$o": k}`` for the k-th tensor result."""
    n_leaves = len(traced.out_is_tensor)
    tree = unflatten(traced.out_tree, list(range(n_leaves)))
    tensor_index = {}
    for i, is_tensor in enumerate(traced.out_is_tensor):
        if is_tensor:
            tensor_index[i] = len(tensor_index)

    def go(x: Any) -> Any:
        if type(x) is int and x in tensor_index:
            return {"$o": tensor_index.pop(x)}
        if type(x) is int:
            static = traced.out_static[x]
            if static is None or isinstance(static, (bool, int, float, str)):
                return {"$s": static}
            raise ExportError(
                f"export: the function returns a {type(static).__name__}; exported "
                "functions return tensors (in tuples, lists or dicts) and plain numbers"
            )
        if x is None:
            return None
        if type(x) in (tuple, list):
            return {"$t" if type(x) is tuple else "$l": [go(v) for v in x]}
        if type(x) is dict and all(isinstance(k, str) for k in x):
            return {"$d": [[k, go(v)] for k, v in x.items()]}
        raise ExportError(
            f"export: the function returns a {type(x).__name__}; exported functions "
            "return tensors in tuples, lists or dicts with string keys"
        )

    return go(tree)


def _trace_at(f: Jitted, specs: tuple[Spec, ...], point: dict[str, int], device: str) -> Any:
    with no_grad():
        entry = f.lower(*_concrete(specs, point, device)).entry
    tr = entry.traced
    if tr.writebacks or tr.arg_grads:
        raise ExportError(
            f"export: {f.__name__} updates tensors in place (an optimizer step, a random "
            "generator, a buffer); export a function without side effects (model.eval())"
        )
    return entry


def _fit_target(
    f: Jitted, specs: tuple[Spec, ...], names: list[str], device: str
) -> tuple[dict, list, dict, Any]:
    """(program template, arrays, kernel trees, first entry) of ``f`` compiled for ``device``."""
    avoid = {d for s in specs for d in s.shape if isinstance(d, int)}
    grid, checks = sample_points(names, avoid) if names else ([{}], [])
    trees, entries = [], []
    kernels: dict[str, Any] = {}
    arrays: list[np.ndarray] = []
    for k, point in enumerate(grid + checks):
        entry = _trace_at(f, specs, point, device)
        if entries and [id(c) for c in entry.traced.captures] != [id(c) for c in entries[0].traced.captures]:
            raise ExportShapeError(
                f"export: {f.__name__} reads different tensors at different sizes of "
                f"{names}; its parameters must not depend on the input sizes"
            )
        own: list[np.ndarray] = []
        tree = encode_program(entry.executable.program, kernels, own)
        # the buffer plan pairs buffers by size, so it changes with the sizes: made again at load
        del tree["aliases"]
        trees.append(tree)
        if k == 0:
            arrays = own
        entries.append(entry)
    tuples = [tuple(p[n] for n in names) for p in grid + checks]
    template = fit(trees[: len(grid)], tuples[: len(grid)]) if names else trees[0]
    for tree, point in zip(trees[len(grid) :], tuples[len(grid) :]):
        where = difference(evaluate(template, point), tree)
        if where is not None:
            raise ExportShapeError(
                f"export: the compiled program at sizes {dict(zip(names, point))} is not the one the "
                f"other sizes predict (predicted != traced at {where}); its structure or sizes depend "
                "on a symbolic dimension in a way export cannot express. Export with fixed sizes instead."
            )
    return template, arrays, kernels, entries[0]


def export(fn: Callable, *specs: Spec, targets: tuple[str, ...] = ("cpu", "cuda")) -> Exported:
    """Compile ``fn`` for arguments described by ``specs`` into an :class:`Exported` program.

    A spec's shape may name dimensions (``tj.spec(("batch", 784), tj.float32)``): the export
    then runs at every size of them (at most two names, each used with degree at most 2 in
    any size, e.g. ``seq * seq``).  Tensors the function captures (a model's parameters) are
    stored in the file with their current values.  ``targets``: ``"cpu"`` (object code for
    this CPU) and ``"cuda"`` (PTX).  Raises :class:`ExportError` for functions with side
    effects or results that are not tensors, and :class:`ExportShapeError` when the compiled
    program's structure changes with a symbolic size (it names where)."""
    names = _check_specs(specs)
    bad = set(targets) - {"cpu", "cuda"}
    if "cpu" not in targets or bad:
        raise ExportError(f"export: targets must include 'cpu' and be among 'cpu', 'cuda'; got {targets}")
    # (its own trace cache: the sample sizes of both targets must not evict the user's traces)
    f = jit(fn.fn if isinstance(fn, Jitted) else fn, max_traces=64)
    template, arrays, kernels, entry = _fit_target(f, specs, names, "cpu")
    tr = entry.traced
    blobs: dict[str, bytes] = {}
    objects = {}
    for key, tree in kernels.items():  # (compiled already: served from the kernel cache)
        art = kernel_cache.default_cache().get(decode_kernel(tree)).artifact
        objects[key], blobs[f"object:{key}"] = art.symbol, art.object_code
    from runtime.cpu import CpuProgram

    # one run on zeros links every module a run calls (GEMM, hand-off, step runner): all go in the file
    prog = entry.executable.program
    zeros = [np.zeros(a.shape, a.dtype) for a in tr.in_avals]
    CpuProgram(prog)(*zeros, *[c.numpy() for c in tr.captures])
    modules = {}
    for name, art in kernel_cache.modules().items():
        modules[name] = art.symbol
        blobs[f"module:{name}"] = art.object_code
    for i, a in enumerate(arrays):
        blobs[f"array:{i}"] = np.ascontiguousarray(a).tobytes()
    params = []
    for j, c in enumerate(tr.captures):
        value = np.ascontiguousarray(c.numpy() if isinstance(c, Tensor) else np.asarray(c))
        blobs[f"param:{j}"] = value.tobytes()
        params.append({"dtype": value.dtype.name, "shape": list(value.shape)})
    header: dict[str, Any] = {
        "tracejit": _version(),
        "target": fmt.host_target(),
        "name": f.__name__,
        "symbols": names,
        "inputs": [{"shape": list(s.shape), "dtype": np.dtype(s.dtype).name} for s in specs],
        "params": params,
        "results": _structure(tr),
        "graph": tr.graph.format(),
        "graph_sizes": dict(zip(names, [int(v) for v in _first_point(names, specs)])),
        "cpu": {
            "program": template,
            "kernels": kernels,
            "objects": objects,
            "modules": modules,
            "arrays": [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in arrays],
        },
    }
    if "cuda" in targets:
        header["cuda"] = _cuda_section(f, specs, names, blobs)
    return Exported(header, blobs)


def _first_point(names: list[str], specs: tuple[Spec, ...]) -> list[int]:
    if not names:
        return []
    grid, _ = sample_points(names, {d for s in specs for d in s.shape if isinstance(d, int)})
    return [grid[0][n] for n in names]


def _cuda_section(
    f: Jitted, specs: tuple[Spec, ...], names: list[str], blobs: dict[str, bytes]
) -> dict[str, Any]:
    """The function lowered for ``cuda`` (no GPU needed): program template and PTX by kernel key."""
    template, arrays, kernels, entry = _fit_target(f, specs, names, "cuda")
    ptx = {}
    for key, pk in entry.executable.ptx.items():
        ptx[key] = {
            "entry": pk.entry,
            "arch": pk.arch,
            "ndim": pk.ndim,
            "n_reduce": pk.n_reduce,
            "n_operands": pk.n_operands,
            "vector_width": pk.vector_width,
        }
        blobs[f"ptx:{key}"] = pk.ptx.encode()
    for i, a in enumerate(arrays):
        blobs[f"cuda-array:{i}"] = np.ascontiguousarray(a).tobytes()
    return {
        "program": template,
        "kernels": kernels,
        "ptx": ptx,
        "arrays": [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in arrays],
    }


def _version() -> str:
    from . import __version__

    return __version__


# --------------------------------------------------------------------------- load


def _array(blob: bytes, meta: Any, where: str) -> np.ndarray:
    try:
        dtype = dt.canonical(meta["dtype"])
        shape = tuple(int(n) for n in meta["shape"])
    except (KeyError, TypeError, ValueError):
        raise fmt.ExportFormatError(f"{where}: bad array description {str(meta):.80}") from None
    if len(blob) != np.dtype(dtype).itemsize * int(np.prod(shape, dtype=np.int64)):
        raise fmt.ExportFormatError(f"{where}: {len(blob)} bytes for {np.dtype(dtype).name}{list(shape)}")
    return np.frombuffer(blob, dtype=dtype).reshape(shape).copy()


def _blob(file: fmt.ExportFile, name: str, where: str) -> bytes:
    if name not in file.blobs:
        raise fmt.ExportFormatError(f"{where}: blob {name!r} is missing")
    return file.blobs[name]


class LoadedFunction:
    """An exported function loaded from a file: call it with tensors or NumPy arrays.

    ``inputs``: each argument's ``(shape, dtype)`` (names for symbolic dims).  Calls check every
    argument's dtype and shape and bind the symbolic sizes; the program for each new set of sizes
    is made from the stored template (no tracing, no compiling) and kept (LRU)."""

    def __init__(self, file: fmt.ExportFile, where: str) -> None:
        h = file.header
        self.where = where
        self.name = str(h.get("name", "exported"))
        try:
            self.symbols = [str(n) for n in h["symbols"]]
            self.inputs = [
                (tuple(d if isinstance(d, str) else int(d) for d in s["shape"]), dt.canonical(s["dtype"]))
                for s in h["inputs"]
            ]
            self._results = h["results"]
            section = h["cpu"]
            self._template = section["program"]
            kernels = {k: decode_kernel(tree) for k, tree in section["kernels"].items()}
            self._arrays = [
                _array(_blob(file, f"array:{i}", where), m, where) for i, m in enumerate(section["arrays"])
            ]
            self._params = [
                _array(_blob(file, f"param:{j}", where), m, where) for j, m in enumerate(h["params"])
            ]
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise fmt.ExportFormatError(f"{where}: bad header ({type(e).__name__}: {e})") from None
        self._kernels = kernels
        self.graph = str(h.get("graph", ""))
        self._provide_cpu(file, section, where)
        self._programs: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._concrete_program(tuple(2 for _ in self.symbols))  # a damaged template fails here

    def _provide_cpu(self, file: fmt.ExportFile, section: dict[str, Any], where: str) -> None:
        for key, symbol in section["objects"].items():
            if key not in self._kernels or symbol != cpu.symbol_name(self._kernels[key]):
                raise fmt.ExportFormatError(f"{where}: object code {key!r:.40} matches no kernel")
            artifact = cpu.CpuArtifact(symbol, _blob(file, f"object:{key}", where))
            # validated even where this process linked the same kernel already: a bad file fails here
            cpu.validate_object(artifact.object_code, symbol)
            cpu.load_address(artifact)
            kernel_cache.provide(key, artifact)
        missing = set(self._kernels) - set(section["objects"])
        if missing:
            raise fmt.ExportFormatError(f"{where}: no object code for {len(missing)} kernels")
        for name, symbol in section["modules"].items():
            artifact = cpu.CpuArtifact(str(symbol), _blob(file, f"module:{name}", where))
            cpu.validate_object(artifact.object_code, artifact.symbol)
            cpu.load_address(artifact)
            kernel_cache.provide(name, artifact)

    # ----------------------------------------------------------------------- calls

    def sizes(self, arrays: list[np.ndarray]) -> tuple[int, ...]:
        """The symbolic sizes ``arrays`` bind; raises ExportError naming a wrong argument."""
        if len(arrays) != len(self.inputs):
            raise ExportError(f"{self.name}: takes {len(self.inputs)} arguments, got {len(arrays)}")
        bound: dict[str, int] = {}
        for i, (a, (shape, dtype)) in enumerate(zip(arrays, self.inputs)):
            want = "(" + ", ".join(map(str, shape)) + ")"
            if a.dtype != dtype:
                raise ExportError(f"{self.name}: argument {i} is {a.dtype}, expected {np.dtype(dtype).name}")
            if a.ndim != len(shape):
                raise ExportError(f"{self.name}: argument {i} has shape {a.shape}, expected {want}")
            for d, (n, s) in enumerate(zip(a.shape, shape)):
                if isinstance(s, str):
                    if n < 1:
                        raise ExportError(
                            f"{self.name}: argument {i} dim {d} ({s!r}) is {n}; symbolic sizes are at least 1"
                        )
                    if bound.setdefault(s, n) != n:
                        raise ExportError(
                            f"{self.name}: argument {i} dim {d} ({s!r}) is {n}, but an earlier "
                            f"argument set {s!r} = {bound[s]}"
                        )
                elif n != s:
                    raise ExportError(f"{self.name}: argument {i} has shape {a.shape}, expected {want}")
        return tuple(bound[n] for n in self.symbols)

    def program(self, sizes: tuple[int, ...]) -> Any:
        """The runnable program for ``sizes`` (made on first use, then kept)."""
        with self._lock:
            prog = self._programs.get(sizes)
            if prog is not None:
                self._programs.move_to_end(sizes)
                return prog
        prog = self._runner(self._concrete_program(sizes))
        with self._lock:
            self._programs[sizes] = prog
            while len(self._programs) > PROGRAMS_KEPT:
                self._programs.popitem(last=False)
        return prog

    def _concrete_program(self, sizes: tuple[int, ...]) -> rp.Program:
        """The stored template at ``sizes``, checked: its inputs are the declared arguments and
        parameters, and every view lies inside its buffer."""
        try:
            p = decode_program(evaluate(self._template, sizes), self._kernels, self._arrays)
            check_bounds(p)
            p.aliases = _buffer_plan(p)
        except fmt.ExportFormatError:
            raise
        except ExportError as e:
            raise fmt.ExportFormatError(f"{self.where}: {e}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise fmt.ExportFormatError(f"{self.where}: bad program ({type(e).__name__}: {e})") from None
        declared = [np.dtype(d).name for _, d in self.inputs] + [a.dtype.name for a in self._params]
        nbytes = [a.nbytes for a in self._params]
        if p.slot_dtypes[: p.n_inputs] != declared or p.slot_nbytes[len(self.inputs) : p.n_inputs] != nbytes:
            raise fmt.ExportFormatError(
                f"{self.where}: the program's inputs are not the declared arguments and parameters"
            )
        return p

    def _runner(self, p: rp.Program) -> Callable[[list[Any]], list[Any]]:
        from runtime.cpu import CpuProgram

        run = CpuProgram(p)
        return lambda arrays: run(*arrays)

    def run_arrays(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """The flat list of tensor results as NumPy arrays (on the CPU), for NumPy arguments."""
        arrays = [np.ascontiguousarray(a) for a in arrays]
        prog = self.program(self.sizes(arrays))
        return prog(arrays + self._params)

    def __call__(self, *args: Any) -> Any:
        arrays = [np.asarray(a) if isinstance(a, Tensor) else np.asarray(a) for a in args]
        arrays = [np.ascontiguousarray(a) for a in arrays]
        prog = self.program(self.sizes(arrays))
        outs = prog(arrays + self._params)
        tensors = [Tensor._from_array(o) for o in outs]
        return _rebuild(self._results, tensors)

    @property
    def result_shapes(self) -> list[tuple[int | str | None, ...]]:
        """Each tensor result's shape: an int, a symbol's name where the size is exactly that
        symbol, None where it is another expression of the symbols."""
        out = []
        for _, shape, _ in self._template["outputs"]:
            out.append(tuple(_dim_name(d, self.symbols) for d in shape))
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{np.dtype(d).name}[{', '.join(map(str, s))}]" for s, d in self.inputs)
        return f"<tracejit exported function {self.name}({args}) from {self.where}>"


def _starts_with(path: str | os.PathLike, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False        # (reading it again says why)


def _dim_name(d: Any, symbols: list[str]) -> int | str | None:
    if isinstance(d, int):
        return d
    terms = d.get("$poly") if isinstance(d, dict) else None
    if terms and len(terms) == 1:
        num, den, *exps = terms[0]
        if num == den == 1 and sorted(exps) == [0] * (len(exps) - 1) + [1]:
            return symbols[exps.index(1)]
    return None


def _rebuild(tree: Any, tensors: list[Tensor]) -> Any:
    if tree is None:
        return None
    if not isinstance(tree, dict):
        raise fmt.ExportFormatError("export file: bad result structure")
    if "$o" in tree:
        return tensors[tree["$o"]]
    if "$s" in tree:
        return tree["$s"]
    if "$t" in tree:
        return tuple(_rebuild(v, tensors) for v in tree["$t"])
    if "$l" in tree:
        return [_rebuild(v, tensors) for v in tree["$l"]]
    if "$d" in tree:
        return {k: _rebuild(v, tensors) for k, v in tree["$d"]}
    raise fmt.ExportFormatError("export file: bad result structure")


def load(path: str | os.PathLike) -> Any:
    """Load what ``tj.save`` or ``Exported.save`` wrote.

    A checkpoint (``tj.save``) gives back its state, as :func:`tracejit.load_state` does.  An
    exported function is loaded to run on the CPU: this links native code from the file into
    the process, so load trusted files only.  Raises :class:`ExportFormatError` for a damaged
    file, another format version, or one built for another target triple, CPU feature set or
    code generator."""
    if _starts_with(path, serialization.MAGIC):
        return serialization.load_state(path)
    file = fmt.read(path)
    try:
        return LoadedFunction(file, os.fspath(path))
    except TracejitError:
        raise
    except (cpu.ObjectCodeError, cpu.LinkError) as e:
        raise fmt.ExportFormatError(f"{os.fspath(path)}: refused its object code ({e})") from None
