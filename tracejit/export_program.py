"""A compiled :class:`runtime.program.Program` as a JSON tree and back, for export files.

Integers stay plain JSON numbers, so :mod:`tracejit.symbolic` can fit the ones that vary with a
symbolic size.  Kernels (:mod:`codegen.kir` dataclasses) go into a table by structural key;
decoding rebuilds each from a fixed set of classes and checks its key, so a file names no code
to import or call.  Constants of one element are inline (``{"$c": [dtype, value], "shape": [...]}``: a count
may vary with the sizes); larger ones are numbered arrays stored beside the tree, identified in
it by a hash so that programs with different data never fit one template.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from codegen import kir
from runtime import program as rp

from .dtypes import canonical
from .errors import TracejitError
from .symbolic import CONST

# Every node class of the kernel IR (its dataclasses), by name: the only classes a file can name.
_KIR_CLASSES = {
    name: cls for name, cls in vars(kir).items() if isinstance(cls, type) and dataclasses.is_dataclass(cls)
}


class ExportError(TracejitError):
    """A function, file or input that export or load cannot handle (the message says why)."""


# --------------------------------------------------------------------------- values


def _value(x: Any, arrays: list[np.ndarray], where: str) -> Any:
    """An extern parameter or constant as JSON (tuples tagged: the runtime passes them on)."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.generic):
        return {CONST: [x.dtype.name, x.item()]}
    if isinstance(x, np.dtype):
        return {"$dtype": canonical(x).name}
    if isinstance(x, tuple):
        return {"$t": [_value(v, arrays, where) for v in x]}
    if isinstance(x, list):
        return [_value(v, arrays, where) for v in x]
    if isinstance(x, np.ndarray):
        a = np.ascontiguousarray(x)
        if a.dtype.kind not in "biuf":
            raise ExportError(f"export: {where} holds a {a.dtype} array, which export does not store")
        if a.size == 1:  # (a count a mean divides by may vary with the sizes: fitted inline)
            return {CONST: [a.dtype.name, a.item()], "shape": list(a.shape)}
        arrays.append(a)
        digest = hashlib.sha256(a.tobytes()).hexdigest()[:16]
        return {"$a": len(arrays) - 1, "dtype": a.dtype.name, "shape": list(a.shape), "sha": digest}
    raise ExportError(f"export: {where} holds a {type(x).__name__}, which export does not store")


def _unvalue(x: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(x, list):
        return [_unvalue(v, arrays) for v in x]
    if not isinstance(x, dict):
        return x
    if "$t" in x:
        return tuple(_unvalue(v, arrays) for v in x["$t"])
    if "$dtype" in x:
        return canonical(x["$dtype"])
    if CONST in x:
        dtype, value = x[CONST]
        return np.asarray(value, dtype=canonical(dtype)).reshape(x.get("shape", ()))
    if "$a" in x:
        a = arrays[x["$a"]]
        if a.dtype != canonical(x["dtype"]) or list(a.shape) != x["shape"]:
            raise ExportError(
                f"export file: array {x['$a']} is {a.dtype}{list(a.shape)}, "
                f"the program expects {x['dtype']}{x['shape']}"
            )
        return a
    raise ExportError(f"export file: unknown value {sorted(x)}")


# --------------------------------------------------------------------------- kernels


def _kir(x: Any) -> Any:
    if dataclasses.is_dataclass(x):
        fields = {f.name: _kir(getattr(x, f.name)) for f in dataclasses.fields(x)}
        return {"$k": type(x).__name__, **fields}
    if isinstance(x, tuple):
        return {"$t": [_kir(v) for v in x]}
    if isinstance(x, (bool, int, float, str)):
        return x
    raise ExportError(f"export: a kernel holds a {type(x).__name__}")


def _unkir(x: Any) -> Any:
    if isinstance(x, dict):
        if "$t" in x:
            return tuple(_unkir(v) for v in x["$t"])
        cls = _KIR_CLASSES.get(x.get("$k"))
        if cls is None:
            raise ExportError(f"export file: unknown kernel node {x.get('$k')!r:.40}")
        return cls(**{k: _unkir(v) for k, v in x.items() if k != "$k"})
    if isinstance(x, (bool, int, float, str)):
        return x
    raise ExportError(f"export file: bad kernel field {type(x).__name__}")


def encode_kernel(k: kir.Kernel) -> Any:
    return {**_kir(k), "key": k.key}


def decode_kernel(tree: Any) -> kir.Kernel:
    """A kernel rebuilt from its tree; its structural key must be the one stored."""
    stored = tree.get("key") if isinstance(tree, dict) else None
    k = _unkir({f: v for f, v in tree.items() if f != "key"}) if isinstance(tree, dict) else None
    if not isinstance(k, kir.Kernel) or k.key != stored:
        raise ExportError("export file: a kernel does not match its structural key")
    return k


# --------------------------------------------------------------------------- programs


def _view(v: rp.View) -> list[Any]:
    return [v.slot, v.offset, list(v.strides)]


def _unview(x: list[Any]) -> rp.View:
    slot, offset, strides = x
    return rp.View(int(slot), int(offset), tuple(int(s) for s in strides))


def encode_program(p: rp.Program, kernels: dict[str, Any], arrays: list[np.ndarray]) -> dict[str, Any]:
    """``p`` as a tree; its kernels are added to ``kernels`` (key -> tree), large constants to
    ``arrays``."""
    steps = []
    for s in p.steps:
        if isinstance(s, rp.Launch):
            kernels.setdefault(s.kernel.key, encode_kernel(s.kernel))
            steps.append(
                {
                    "launch": s.kernel.key,
                    "shape": list(s.shape),
                    "inputs": [_view(v) for v in s.inputs],
                    "outputs": [_view(v) for v in s.outputs],
                }
            )
        else:
            steps.append(
                {
                    "extern": s.name,
                    "dtype": s.dtype,
                    "shapes": [list(x) for x in s.shapes],
                    "inputs": [_view(v) for v in s.inputs],
                    "outputs": [_view(v) for v in s.outputs],
                    "params": [[k, _value(v, arrays, f"parameter {k!r} of {s.name}")] for k, v in s.params],
                }
            )
    return {
        "n_inputs": p.n_inputs,
        "slot_nbytes": list(p.slot_nbytes),
        "slot_dtypes": list(p.slot_dtypes),
        "constants": [
            [slot, _value(np.asarray(c), arrays, "a constant")] for slot, c in sorted(p.constants.items())
        ],
        "steps": steps,
        "outputs": [[_view(v), list(shape), dtype] for v, shape, dtype in p.outputs],
        "writebacks": [list(w) for w in p.writebacks],
        "aliases": sorted([k, v] for k, v in p.aliases.items()),
        "inplace": sorted([k, v] for k, v in p.inplace.items()),
    }


def decode_program(
    tree: dict[str, Any], kernels: dict[str, kir.Kernel], arrays: list[np.ndarray]
) -> rp.Program:
    """The program of a concrete tree (every size evaluated)."""
    steps: list[rp.Step] = []
    for s in tree["steps"]:
        ins, outs = tuple(map(_unview, s["inputs"])), tuple(map(_unview, s["outputs"]))
        if "launch" in s:
            if s["launch"] not in kernels:
                raise ExportError(
                    f"export file: a step launches kernel {s['launch']!r:.40}, which it does not hold"
                )
            steps.append(rp.Launch(kernels[s["launch"]], tuple(int(n) for n in s["shape"]), ins, outs))
        else:
            steps.append(
                rp.Extern(
                    s["extern"],
                    ins,
                    outs,
                    tuple(tuple(int(n) for n in x) for x in s["shapes"]),
                    s["dtype"],
                    tuple((k, _unvalue(v, arrays)) for k, v in s["params"]),
                )
            )
    constants = {int(slot): np.ascontiguousarray(_unvalue(c, arrays)) for slot, c in tree["constants"]}
    outputs = [(_unview(v), tuple(int(n) for n in shape), dtype) for v, shape, dtype in tree["outputs"]]
    return rp.Program(
        int(tree["n_inputs"]),
        [int(n) for n in tree["slot_nbytes"]],
        list(tree["slot_dtypes"]),
        constants,
        steps,
        outputs,
        [tuple(w) for w in tree["writebacks"]],
        {int(k): int(v) for k, v in tree.get("aliases", ())},
        {int(k): int(v) for k, v in tree["inplace"]},
    )


def _load_boxes(k: kir.Kernel, shape: tuple[int, ...]) -> dict[int, set[tuple[tuple[int, int], ...]]]:
    """For each input of ``k``, the boxes of iteration points where it is loaded: the whole
    space, or the range of the :class:`~codegen.kir.Piecewise` piece a load sits in (a
    concatenation's operand is read shifted by its position, only inside its piece)."""
    boxes: dict[int, set[tuple[tuple[int, int], ...]]] = {}
    seen: set[tuple[int, tuple]] = set()

    def go(e: Any, box: tuple[tuple[int, int], ...]) -> None:
        if (id(e), box) in seen:
            return
        seen.add((id(e), box))
        if isinstance(e, kir.Load):
            boxes.setdefault(e.input, set()).add(box)
        elif isinstance(e, kir.Gather):
            # (its row is a run-time index, checked in range by the program's index_check step
            # before the kernel runs: only the index expression's loads are checked here)
            go(e.index, box)
        elif isinstance(e, kir.Piecewise):
            bounds = (0, *e.cuts, shape[e.dim])
            for j, piece in enumerate(e.pieces):
                lo, hi = box[e.dim]
                inner = list(box)
                inner[e.dim] = (max(lo, bounds[j]), min(hi, bounds[j + 1]))
                go(piece, tuple(inner))
        elif isinstance(e, kir.Op):
            for arg in e.args:
                go(arg, box)

    whole = tuple((0, n) for n in shape)
    for st in k.stages:
        go(st.expr, whole)
    return boxes


def check_bounds(p: rp.Program) -> None:
    """Every view a step or output reads or writes lies inside its slot: a kernel is never
    launched on memory it was not given (the sizes came from a file and from fitted formulas)."""
    n_slots = len(p.slot_nbytes)
    if not (len(p.slot_dtypes) == n_slots and 0 <= p.n_inputs <= n_slots):
        raise ExportError("export file: the program's slot table is inconsistent")
    itemsize = [np.dtype(canonical(d)).itemsize for d in p.slot_dtypes]

    def inside(v: rp.View, shape: tuple[int, ...], where: str, box: Any = None) -> None:
        if not 0 <= v.slot < n_slots or len(v.strides) != len(shape) or any(n < 0 for n in shape):
            raise ExportError(f"export file: {where} names a bad slot or shape")
        box = box or tuple((0, n) for n in shape)
        if any(b <= a for a, b in box):
            return  # (no point of it is addressed)
        lo = v.offset + sum(min(a * st, (b - 1) * st) for (a, b), st in zip(box, v.strides))
        hi = v.offset + sum(max(a * st, (b - 1) * st) for (a, b), st in zip(box, v.strides))
        if lo < 0 or (hi + 1) * itemsize[v.slot] > p.slot_nbytes[v.slot]:
            raise ExportError(f"export file: {where} reaches outside slot {v.slot}")

    for k, s in enumerate(p.steps):
        if isinstance(s, rp.Launch):
            ops = s.kernel.inputs + s.kernel.outputs
            if len(s.shape) != s.kernel.ndim or len(ops) != len(s.inputs) + len(s.outputs):
                raise ExportError(f"export file: step {k} does not match its kernel's operands")
            boxes = _load_boxes(s.kernel, s.shape)
            for j, v in enumerate(s.inputs):
                for box in boxes.get(j, ()):
                    inside(v, s.shape, f"step {k} operand {j}", box)
            for j, v in enumerate(s.outputs):
                # (an output broadcast along the reduce dims is still addressed once per point)
                inside(v, s.shape, f"step {k} output {j}")
        else:
            views = s.inputs + s.outputs
            if len(views) != len(s.shapes):
                raise ExportError(
                    f"export file: step {k} ({s.name}) has {len(views)} operands, {len(s.shapes)} shapes"
                )
            for j, (v, shp) in enumerate(zip(views, s.shapes)):
                inside(v, shp, f"step {k} ({s.name}) operand {j}")
    for i, (v, shape, _) in enumerate(p.outputs):
        inside(v, shape, f"output {i}")
