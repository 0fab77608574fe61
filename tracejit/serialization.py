"""Checkpoints: ``tj.save(state_dict, path)`` and ``tj.load_state(path)``, one self-checking file.

Layout (all integers little-endian)::

    magic    8 bytes   b"TJSTATE\\0"
    version  u32       1
    hlen     u64       length of the header
    header   hlen      UTF-8 JSON: {"tree": ..., "tensors": [{"dtype", "shape", "offset", "nbytes"}],
                       "data_size": n}
    data     n         raw little-endian tensor data, each tensor at a 64-byte-aligned offset
    digest   32 bytes  SHA-256 of everything before it

``tree`` is the saved object with each tensor replaced by ``{"__tensor__": i}``; dicts are
stored as key/value pairs (so integer keys, as in optimizer state, survive) and tuples are
marked, so nested state dicts round-trip exactly.  A short, altered or foreign file raises
:class:`CheckpointError` instead of loading garbage.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from collections import OrderedDict
from typing import Any

import numpy as np

from . import dtypes as dt
from .errors import CacheCorruptionError
from .tensors import Tensor

MAGIC = b"TJSTATE\0"
VERSION = 1
_ALIGN = 64
_PREFIX = struct.Struct("<8sIQ")
_DIGEST = 32


# What a loaded file may contain: the header is data, never code.  Dtypes are looked up by name in
# this table (never passed to ``np.dtype``, which builds structured and object dtypes), tree nodes
# are plain JSON values or one of the three marked forms, and nothing is ever unpickled.
_DTYPES_BY_NAME = {d.name: d for d in dt.ALL_DTYPES}
_MAX_DEPTH = 64          # nesting of dicts/lists/tuples in ``tree``
_MAX_NDIM = 64           # NumPy's own limit on dimensions
_MAX_BYTES = 2 ** 62     # no shape may describe more elements than an int64 index reaches
_KEY_TYPES = (str, int, float, bool, type(None))
_HEADER_KEYS = {"tree", "tensors", "data_size"}
_ENTRY_KEYS = {"dtype", "shape", "offset", "nbytes"}


class CheckpointError(CacheCorruptionError):
    """A checkpoint file is truncated, corrupted, of another format or of an unknown version."""


def _encode(obj: Any, arrays: list[np.ndarray], depth: int = 0) -> Any:
    """The JSON form of ``obj``, its arrays appended to ``arrays``."""
    if depth > _MAX_DEPTH:     # load refuses deeper trees, so never write one (or loop on a cycle)
        raise ValueError(f"save: the state is nested deeper than {_MAX_DEPTH} levels (or contains itself)")
    if isinstance(obj, (Tensor, np.ndarray)):
        arr = obj.numpy() if isinstance(obj, Tensor) else obj
        if arr.dtype not in dt.ALL_DTYPES:
            raise TypeError(f"save: unsupported dtype {arr.dtype}")
        arrays.append(arr)
        return {"__tensor__": len(arrays) - 1}
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"save: dict keys must be str, int, float or bool, got {type(k).__name__}")
        return {"__dict__": [[k, _encode(v, arrays, depth + 1)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays, depth + 1) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays, depth + 1) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        raise TypeError(f"save: pass {type(obj).__name__}.state_dict(), not the object itself")
    raise TypeError(f"save: cannot store a {type(obj).__name__}; state dicts hold tensors, numbers, "
                    "strings, lists, tuples and dicts")


def _is_int(v: Any) -> bool:
    """A JSON integer (``bool`` is an ``int`` subclass in Python but never a size or index)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _nonneg_int(v: Any, field: str, where: str) -> int:
    if not _is_int(v) or v < 0:
        raise CheckpointError(f"{where}: {field} must be a non-negative integer, got {v!r:.80}")
    return v


def _check_keys(obj: Any, expected: set[str], field: str, where: str) -> dict:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{where}: {field} must be a JSON object, got {type(obj).__name__}")
    if set(obj) != expected:
        raise CheckpointError(f"{where}: {field} has keys {sorted(map(str, obj))}, "
                              f"expected {sorted(expected)}")
    return obj


def _parse_header(text: bytes, where: str) -> dict:
    """Decode the JSON header, turning every way it can fail into a CheckpointError."""
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise CheckpointError(f"{where}: header: nested too deeply") from None
    except (ValueError, TypeError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{where}: header: unreadable JSON ({e})") from None
    return _check_keys(header, _HEADER_KEYS, "header", where)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    # A repeated key would let two readers of the same file disagree on its meaning.
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _check_entry(i: int, e: Any, data_size: int, where: str) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """Validate ``tensors[i]``: a known dtype, a sane shape, a byte count and range inside the data."""
    field = f"tensors[{i}]"
    e = _check_keys(e, _ENTRY_KEYS, field, where)
    name = e["dtype"]
    if not isinstance(name, str) or name not in _DTYPES_BY_NAME:
        raise CheckpointError(f"{where}: {field}.dtype {name!r:.80} is not one of "
                              f"{', '.join(_DTYPES_BY_NAME)}")
    dtype = _DTYPES_BY_NAME[name]
    shape = e["shape"]
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM:
        raise CheckpointError(f"{where}: {field}.shape must be a list of at most {_MAX_NDIM} sizes")
    count = 1
    for j, n in enumerate(shape):
        _nonneg_int(n, f"{field}.shape[{j}]", where)
        if n > _MAX_BYTES:
            raise CheckpointError(f"{where}: {field}.shape[{j}] = {n} is too large")
        count *= n if n else 1     # a zero size makes the tensor empty, the others must still be sane
    if count * dtype.itemsize > _MAX_BYTES:
        raise CheckpointError(f"{where}: {field}.shape {shape} describes too many elements")
    nbytes = _nonneg_int(e["nbytes"], f"{field}.nbytes", where)
    expected = (count if 0 not in shape else 0) * dtype.itemsize
    if nbytes != expected:
        raise CheckpointError(f"{where}: {field}.nbytes is {nbytes}, but shape {shape} of {name} "
                              f"needs {expected}")
    offset = _nonneg_int(e["offset"], f"{field}.offset", where)
    if offset + nbytes > data_size:
        raise CheckpointError(f"{where}: {field}.offset {offset} + nbytes {nbytes} runs past the "
                              f"{data_size} data bytes")
    return dtype, tuple(shape), offset, nbytes


def _decode(obj: Any, tensors: list[Tensor], used: set[int], where: str, path: str = "tree",
            depth: int = 0) -> Any:
    """Rebuild the saved object from its JSON form, checking every node on the way."""
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"{where}: {path}: nested deeper than {_MAX_DEPTH} levels")
    if isinstance(obj, list):
        return [_decode(v, tensors, used, where, f"{path}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        if not isinstance(obj, _KEY_TYPES):    # JSON gives nothing else, but say so if it ever does
            raise CheckpointError(f"{where}: {path}: unexpected {type(obj).__name__}")
        return obj
    if len(obj) != 1 or next(iter(obj)) not in ("__tensor__", "__tuple__", "__dict__"):
        raise CheckpointError(f"{where}: {path}: a node must be one of __tensor__, __tuple__, __dict__, "
                              f"got keys {sorted(obj)[:5]}")
    kind, val = next(iter(obj.items()))
    if kind == "__tensor__":
        if not _is_int(val) or not 0 <= val < len(tensors):
            raise CheckpointError(f"{where}: {path}.__tensor__ = {val!r:.80} is not a tensor index "
                                  f"(file has {len(tensors)})")
        if val in used:
            raise CheckpointError(f"{where}: {path}.__tensor__ = {val} is referenced twice")
        used.add(val)
        return tensors[val]
    if not isinstance(val, list):
        raise CheckpointError(f"{where}: {path}.{kind} must be a list, got {type(val).__name__}")
    if kind == "__tuple__":
        return tuple(_decode(v, tensors, used, where, f"{path}[{i}]", depth + 1) for i, v in enumerate(val))
    out: OrderedDict = OrderedDict()
    for i, pair in enumerate(val):
        if not isinstance(pair, list) or len(pair) != 2:
            raise CheckpointError(f"{where}: {path}.__dict__[{i}] must be a [key, value] pair")
        k, v = pair
        if not isinstance(k, _KEY_TYPES):
            raise CheckpointError(f"{where}: {path}.__dict__[{i}] key must be str, int, float, bool "
                                  f"or null, got {type(k).__name__}")
        if k in out:
            raise CheckpointError(f"{where}: {path}.__dict__[{i}] key {k!r:.80} is repeated")
        out[k] = _decode(v, tensors, used, where, f"{path}[{k!r:.40}]", depth + 1)
    return out


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write a state dict (nested dicts/lists of tensors and numbers) to ``path``, atomically.

    The bytes go to a fresh temporary file created exclusively (unpredictable name, ``O_EXCL``)
    in the same directory, are flushed to disk and then renamed over ``path``: readers never
    see a half-written checkpoint, and a file or symlink planted next to ``path`` is never
    written through."""
    body = _serialize(obj)
    write_atomic(path, body + hashlib.sha256(body).digest())


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fresh, exclusively created temporary file in the same
    directory (flushed, fsynced, renamed over ``path``, the directory fsynced); on failure the
    temporary is removed and ``path`` is as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):   # not on Windows, where mkstemp's mode is not restrictive
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def _serialize(obj: Any) -> bytes:
    """Everything of the file but its digest trailer."""
    arrays: list[np.ndarray] = []
    tree = _encode(obj, arrays)
    entries, offset = [], 0
    for a in arrays:
        offset = -(-offset // _ALIGN) * _ALIGN
        entries.append({"dtype": a.dtype.name, "shape": list(a.shape), "offset": offset, "nbytes": a.nbytes})
        offset += a.nbytes
    header = json.dumps({"tree": tree, "tensors": entries, "data_size": offset}).encode()
    data = bytearray(offset)
    for a, e in zip(arrays, entries):
        le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        data[e["offset"]:e["offset"] + e["nbytes"]] = le.tobytes()
    return _PREFIX.pack(MAGIC, VERSION, len(header)) + header + bytes(data)


def _umask() -> int:
    """The process umask: mkstemp's 0600 would otherwise make a checkpoint unreadable to the
    group and others, unlike a file made with open()."""
    try:    # Linux reports it without changing it (setting it races with other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: str) -> None:
    """Make the rename durable; not every platform or file system can open a directory."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def load_state(path: str | os.PathLike) -> Any:
    """Read a file written by :func:`save`; tensors come back with their exact dtypes and shapes.

    The file is untrusted data: any damage or inconsistency raises :class:`CheckpointError`
    naming the bad field, and loading never runs code or builds objects other than tensors,
    numbers, strings, lists, tuples and dicts."""
    with open(path, "rb") as f:
        raw = f.read()
    where = os.fspath(path)
    if len(raw) < _PREFIX.size + _DIGEST:
        raise CheckpointError(f"{where}: file too short ({len(raw)} bytes) to be a tracejit checkpoint")
    magic, version, hlen = _PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise CheckpointError(f"{where}: not a tracejit checkpoint (bad magic {magic!r})")
    if version != VERSION:
        raise CheckpointError(f"{where}: checkpoint format version {version}; this tracejit reads {VERSION}")
    body, digest = raw[:-_DIGEST], raw[-_DIGEST:]
    if _PREFIX.size + hlen > len(body):
        raise CheckpointError(f"{where}: truncated (header of {hlen} bytes does not fit)")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{where}: checksum mismatch, the file is corrupted")
    start = _PREFIX.size + hlen
    header = _parse_header(body[_PREFIX.size:start], where)
    size = _nonneg_int(header["data_size"], "data_size", where)
    if len(body) != start + size:
        raise CheckpointError(f"{where}: data_size is {size}, but the file holds {len(body) - start} "
                              "data bytes")
    entries = header["tensors"]
    if not isinstance(entries, list):
        raise CheckpointError(f"{where}: tensors must be a list, got {type(entries).__name__}")
    tensors = [_read_tensor(body, start, *_check_entry(i, e, size, where)) for i, e in enumerate(entries)]
    used: set[int] = set()
    tree = _decode(header["tree"], tensors, used, where)
    if len(used) != len(tensors):
        unused = sorted(set(range(len(tensors))) - used)
        raise CheckpointError(f"{where}: tensors{unused[:5]} are not referenced by the tree")
    return tree


def _read_tensor(body: bytes, start: int, dtype: np.dtype, shape: tuple[int, ...], offset: int,
                 nbytes: int) -> Tensor:
    """A native-byte-order copy of one validated tensor entry."""
    le = dtype.newbyteorder("<")
    arr = np.frombuffer(body, dtype=le, count=nbytes // dtype.itemsize, offset=start + offset)
    return Tensor._from_array(arr.reshape(shape).astype(dtype, copy=True))


__all__ = ["save", "load_state", "CheckpointError"]
