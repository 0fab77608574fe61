"""``Exported.save_library("model.so")``: the exported CPU program as a shared library and C header.

The library links the kernels' object code with a generated C driver that walks the program's
steps: each kernel launch is one call of ``tj_<key>(0, outer, shape, strides, ptrs)`` on the
calling thread, with every extent, stride, offset and buffer size computed from the symbolic
sizes by the fitted polynomials; matmul steps run a plain strided loop in C; size-derived
constants are computed per call; parameters and constants are embedded (``.incbin``).  The
header declares::

    int <prefix>_run(const int64_t *sizes, const void *const *inputs, void *const *outputs);
    int <prefix>_output_shape(const int64_t *sizes, int output, int64_t *shape);

``sizes``: one value per symbolic dimension, in the order of ``Exported.symbols``; inputs and
outputs are contiguous row-major buffers of the declared dtypes.  ``_run`` returns 0, -2 when memory
runs out, -3 for a size below 1; ``_output_shape`` 0, or -1 for a bad output index.  Kernels run
on the calling thread.  Needs a C compiler (``cc``, or ``$CC``) when saved.
Programs with host steps other than matmul (sort, gather, ...) are refused.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .export_program import ExportError
from .symbolic import CONST, POLY, RECIPROCAL

_C_TYPES = {
    "float32": "float",
    "float64": "double",
    "int64": "int64_t",
    "int32": "int32_t",
    "int16": "int16_t",
    "int8": "int8_t",
    "uint8": "uint8_t",
    "bool": "uint8_t",
    "float16": "uint16_t",
}


def _poly(value: Any, symbols: list[str]) -> str:
    """A C int64 expression for an int or a fitted polynomial of ``s[0..]``."""
    if isinstance(value, int):
        return str(value)
    terms = value[POLY]
    common = math.lcm(*(den for _, den, *_ in terms))
    parts = []
    for num, den, *exps in terms:
        factors = [f"(int64_t){num * (common // den)}"]
        factors += [f"s[{i}]" for i, e in enumerate(exps) for _ in range(e)]
        parts.append("*".join(factors))
    total = " + ".join(parts) or "0"
    return f"(({total}) / {common})" if common != 1 else f"({total})"


def _const_expr(tree: dict[str, Any], symbols: list[str]) -> str:
    dtype, value = tree[CONST]
    if dtype == "float16":
        raise ExportError("save_library: a float16 constant (C has no portable half type)")
    ctype = _C_TYPES[dtype]
    if isinstance(value, dict) and RECIPROCAL in value:
        return f"(({ctype})1 / ({ctype})({_poly(value[RECIPROCAL], symbols)}))"
    if isinstance(value, dict):
        return f"({ctype})({_poly(value, symbols)})"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExportError("save_library: a non-finite constant")
        return f"({ctype}){float.hex(value)}"
    return f"({ctype}){value}"


class _Driver:
    def __init__(self, header: dict[str, Any], prefix: str) -> None:
        self.h, self.prefix = header, prefix
        self.symbols = list(header["symbols"])
        self.p = header["cpu"]["program"]
        self.lines: list[str] = []

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def build(self) -> str:
        p, sym = self.p, self.symbols
        n_slots = len(p["slot_dtypes"])
        n_args = len(self.h["inputs"])
        n_params = len(self.h["params"])
        kernels = self.h["cpu"]["kernels"]
        for key in sorted(kernels):
            self.emit(f"void tj_{key}(int64_t, int64_t, const int64_t *, const int64_t *, void **);")
        for j in range(n_params):
            self.emit(f"extern const unsigned char tjx_param_{j}[];")
        arrays = {}
        for slot, c in p["constants"]:
            if "$a" in c:
                arrays[slot] = c["$a"]
        for i in sorted(set(arrays.values())):
            self.emit(f"extern const unsigned char tjx_array_{i}[];")
        self.emit(_HELPERS)
        # output shapes
        self.emit(f"int {self.prefix}_output_shape(const int64_t *s, int output, int64_t *shape) {{")
        self.emit("  (void)s;")
        self.emit("  switch (output) {")
        for i, (_, shape, _) in enumerate(p["outputs"]):
            body = " ".join(f"shape[{d}] = {_poly(n, sym)};" for d, n in enumerate(shape))
            self.emit(f"  case {i}: {body} return 0;")
        self.emit("  default: return -1;\n  }\n}")
        self.emit(
            f"int {self.prefix}_run(const int64_t *s, const void *const *inputs, void *const *outputs) {{"
        )
        self.emit(f"  char *slot[{max(n_slots, 1)}] = {{0}};")
        self.emit(f"  char *owned[{max(n_slots, 1)}] = {{0}};")
        self.emit("  int status = 0;")
        for i in range(len(sym)):
            self.emit(f"  if (s[{i}] < 1) return -3;  /* {sym[i]} */")
        for i in range(n_args):
            self.emit(f"  slot[{i}] = (char *)inputs[{i}];")
        for j in range(n_params):
            self.emit(f"  slot[{n_args + j}] = (char *)tjx_param_{j};")
        for slot, c in p["constants"]:
            if "$a" in c:
                self.emit(f"  slot[{slot}] = (char *)tjx_array_{c['$a']};")
            else:
                ctype = _C_TYPES[c[CONST][0]]
                self.emit(f"  owned[{slot}] = slot[{slot}] = malloc(64);")
                self.emit(f"  if (!slot[{slot}]) {{ status = -2; goto done; }}")
                self.emit(f"  *({ctype} *)slot[{slot}] = {_const_expr(c, sym)};")
        constant_slots = {slot for slot, _ in p["constants"]}
        for slot in range(n_args + n_params, n_slots):
            if slot in constant_slots:
                continue
            self.emit(
                f"  owned[{slot}] = slot[{slot}] = malloc((size_t){_poly(p['slot_nbytes'][slot], sym)} + 64);"
            )
            self.emit(f"  if (!slot[{slot}]) {{ status = -2; goto done; }}")
        for k, step in enumerate(p["steps"]):
            self._step(k, step)
        for i, (view, shape, dtype) in enumerate(p["outputs"]):
            slot, offset, strides = view
            size = np.dtype(dtype).itemsize
            nd = len(shape)
            self.emit("  {")
            self.emit(
                f"    int64_t shape[{max(nd, 1)}] = {{{', '.join(_poly(n, sym) for n in shape) or '0'}}};"
            )
            self.emit(
                f"    int64_t strides[{max(nd, 1)}] = {{{', '.join(_poly(x, sym) for x in strides) or '0'}}};"
            )
            self.emit(
                f"    tjx_copy(outputs[{i}], slot[{slot}] + ({_poly(offset, sym)}) * {size}, {nd}, shape, "
                f"strides, {size});"
            )
            self.emit("  }")
        self.emit("done:")
        self.emit(f"  for (int i = 0; i < {max(n_slots, 1)}; i++) free(owned[i]);")
        self.emit("  return status;\n}")
        return "\n".join(self.lines) + "\n"

    def _step(self, k: int, step: dict[str, Any]) -> None:
        sym = self.symbols
        dtypes = self.p["slot_dtypes"]
        views = step["inputs"] + step["outputs"]
        if "launch" in step:
            key = step["launch"]
            kernel = self.h["cpu"]["kernels"][key]
            ndim, n_reduce = kernel["ndim"], kernel["n_reduce"]
            shape = step["shape"]
            self.emit(f"  {{ /* step {k}: kernel {kernel['name']} */")
            self.emit(
                f"    int64_t shape[{max(ndim, 1)}] = {{{', '.join(_poly(n, sym) for n in shape) or '0'}}};"
            )
            flat = ", ".join(_poly(x, sym) for v in views for x in v[2]) or "0"
            n_strides = max(sum(len(v[2]) for v in views), 1)
            self.emit(f"    int64_t strides[{n_strides}] = {{{flat}}};")
            ptrs = [f"slot[{v[0]}] + ({_poly(v[1], sym)}) * {np.dtype(dtypes[v[0]]).itemsize}" for v in views]
            self.emit(f"    void *ptrs[{max(len(ptrs), 1)}] = {{{', '.join(ptrs) or '0'}}};")
            outer = " * ".join(f"shape[{d}]" for d in range(ndim - n_reduce)) or "1"
            self.emit(f"    int64_t outer = {outer};")
            self.emit(f"    if (outer > 0) tj_{key}(0, outer, shape, strides, ptrs);")
            self.emit("  }")
            return
        if step["extern"] != "matmul" or step["dtype"] not in ("float32", "float64"):
            raise ExportError(
                f"save_library: the program runs host step {step['extern']!r} "
                f"({step['dtype']}), which the C library does not implement"
            )
        shapes = step["shapes"]
        nd = len(shapes[0])
        if nd not in (2, 3) or any(len(x) != nd for x in shapes):
            raise ExportError(f"save_library: a matmul of {nd}-d operands")
        size = np.dtype(step["dtype"]).itemsize
        ctype = _C_TYPES[step["dtype"]]
        (a, b, out) = views
        batch = _poly(shapes[2][0], sym) if nd == 3 else "1"
        m, kk, n = (_poly(shapes[0][-2], sym), _poly(shapes[0][-1], sym), _poly(shapes[1][-1], sym))

        def st(v: list[Any], d: int) -> str:
            return _poly(v[2][d], sym) if d >= 0 else "0"

        o = 1 if nd == 3 else 0
        self.emit(f"  /* step {k}: matmul */")
        self.emit(f"  tjx_matmul_{ctype}({batch}, {m}, {n}, {kk},")
        for v in (a, b, out):
            self.emit(
                f"    ({ctype} *)(slot[{v[0]}] + ({_poly(v[1], sym)}) * {size}), "
                f"{st(v, 0) if nd == 3 else '0'}, {st(v, o)}, {st(v, o + 1)},"
            )
        self.lines[-1] = self.lines[-1].rstrip(",") + ");"


_HELPERS = r"""
#include <stdlib.h>
#include <string.h>

static void tjx_copy(void *dst, const char *src, int nd, const int64_t *shape, const int64_t *strides,
                     int64_t size) {
  int64_t n = 1;
  for (int d = 0; d < nd; d++) n *= shape[d];
  char *out = (char *)dst;
  for (int64_t i = 0; i < n; i++) {
    int64_t rest = i, at = 0;
    for (int d = nd - 1; d >= 0; d--) {
      at += (rest % shape[d]) * strides[d];
      rest /= shape[d];
    }
    memcpy(out + i * size, src + at * size, (size_t)size);
  }
}

#define TJX_MATMUL(T, ACC)                                                                         \
  static void tjx_matmul_##T(int64_t nb, int64_t m, int64_t n, int64_t k,                          \
                             const T *a, int64_t ab, int64_t am, int64_t ak,                       \
                             const T *b, int64_t bb, int64_t bk, int64_t bn,                       \
                             T *c, int64_t cb, int64_t cm, int64_t cn) {                           \
    for (int64_t p = 0; p < nb; p++)                                                               \
      for (int64_t i = 0; i < m; i++)                                                              \
        for (int64_t j = 0; j < n; j++) {                                                          \
          ACC acc = 0;                                                                             \
          for (int64_t q = 0; q < k; q++)                                                          \
            acc += (ACC)a[p * ab + i * am + q * ak] * b[p * bb + q * bk + j * bn];                 \
          c[p * cb + i * cm + j * cn] = (T)acc;                                                    \
        }                                                                                          \
  }
TJX_MATMUL(float, float)
TJX_MATMUL(double, double)
"""


def _result_paths(tree: Any, path: str = "") -> dict[int, str]:
    """Output index -> where the function returns it (``["probs"]``, ``[0]``)."""
    if not isinstance(tree, dict):
        return {}
    if "$o" in tree:
        return {tree["$o"]: path}
    out: dict[int, str] = {}
    for tag in ("$t", "$l"):
        for i, v in enumerate(tree.get(tag, ())):
            out.update(_result_paths(v, f"{path}[{i}]"))
    for k, v in tree.get("$d", ()):
        out.update(_result_paths(v, f"{path}[{k!r}]"))
    return out


def header_text(header: dict[str, Any], prefix: str) -> str:
    """The C header: the two functions, the symbolic sizes, each input's and output's dtype."""
    p = header["cpu"]["program"]
    lines = [
        f"/* {prefix}: exported by tracejit from {header['name']} */",
        f"#ifndef {prefix.upper()}_H",
        f"#define {prefix.upper()}_H",
        "#include <stdint.h>",
        "",
        f"/* sizes[]: {', '.join(header['symbols']) or '(none)'} */",
        f"#define {prefix.upper()}_N_SIZES {len(header['symbols'])}",
        f"#define {prefix.upper()}_N_INPUTS {len(header['inputs'])}",
        f"#define {prefix.upper()}_N_OUTPUTS {len(p['outputs'])}",
    ]
    for i, s in enumerate(header["inputs"]):
        lines.append(f"/* input {i}: {s['dtype']}[{', '.join(map(str, s['shape']))}] */")
    paths = _result_paths(header["results"])
    for i, (_, shape, dtype) in enumerate(p["outputs"]):
        lines.append(f"/* output {i}: {dtype}, result{paths.get(i, '')} */")
        lines.append(f"#define {prefix.upper()}_OUTPUT_{i}_NDIM {len(shape)}")
    lines += [
        "",
        "/* Run the function: contiguous row-major inputs and caller-allocated outputs.",
        "   Returns 0, -2 when memory runs out, -3 for a size below 1. */",
        f"int {prefix}_run(const int64_t *sizes, const void *const *inputs, void *const *outputs);",
        "/* The shape of output `output` for these sizes; -1 for a bad index. */",
        f"int {prefix}_output_shape(const int64_t *sizes, int output, int64_t *shape);",
        "",
        "#endif",
        "",
    ]
    return "\n".join(lines)


def save_library(
    header: dict[str, Any], blobs: dict[str, bytes], path: str | os.PathLike, prefix: str | None = None
) -> Path:
    """Write ``path`` (a shared library) and its header beside it (``.h``); returns the header."""
    path = Path(path)
    prefix = prefix or "".join(c if c.isalnum() else "_" for c in path.stem)
    if not prefix.isidentifier():
        raise ExportError(f"save_library: {prefix!r} is not a C identifier; pass prefix=")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise ExportError("save_library needs a C compiler (cc or $CC)")
    source = _Driver(header, prefix).build()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "driver.c").write_text("#include <stdint.h>\n" + source)
        objects = []
        for key in header["cpu"]["kernels"]:
            (t / f"{key}.o").write_bytes(blobs[f"object:{key}"])
            objects.append(str(t / f"{key}.o"))
        data = [".section .rodata"]
        for name in blobs:
            if name.startswith(("param:", "array:")):
                kind, index = name.split(":")
                (t / f"{kind}{index}.bin").write_bytes(blobs[name])
                data += [
                    ".balign 64",
                    f".globl tjx_{kind}_{index}",
                    f".hidden tjx_{kind}_{index}",
                    f"tjx_{kind}_{index}:",
                    f'.incbin "{t / f"{kind}{index}.bin"}"',
                ]
        data.append('.section .note.GNU-stack,"",@progbits')
        (t / "data.s").write_text("\n".join(data) + "\n")
        out = t / "lib.so"
        r = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(t / "driver.c"), str(t / "data.s"), *objects],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise ExportError(f"save_library: {cc} failed:\n{r.stderr[-2000:]}")
        from .serialization import write_atomic

        write_atomic(path, out.read_bytes())
    h = path.with_suffix(".h")
    write_atomic(h, header_text(header, prefix).encode())
    return h


__all__ = ["save_library", "header_text"]
