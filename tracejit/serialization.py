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

import hashlib
import json
import os
import struct
from collections import OrderedDict
from typing import Any

import numpy as np

from . import dtypes as dt
from .errors import CacheCorruptionError
from .tensor import Tensor

MAGIC = b"TJSTATE\0"
VERSION = 1
_ALIGN = 64
_PREFIX = struct.Struct("<8sIQ")
_DIGEST = 32


class CheckpointError(CacheCorruptionError):
    """A checkpoint file is truncated, corrupted, of another format or of an unknown version."""


def _encode(obj: Any, arrays: list[np.ndarray]) -> Any:
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
        return {"__dict__": [[k, _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "state_dict") and callable(obj.state_dict):
        raise TypeError(f"save: pass {type(obj).__name__}.state_dict(), not the object itself")
    raise TypeError(f"save: cannot store a {type(obj).__name__}; state dicts hold tensors, numbers, "
                    "strings, lists, tuples and dicts")


def _decode(obj: Any, tensors: list[Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return OrderedDict((k, _decode(v, tensors)) for k, v in obj["__dict__"])
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write a state dict (nested dicts/lists of tensors and numbers) to ``path``, atomically."""
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
    body = _PREFIX.pack(MAGIC, VERSION, len(header)) + header + bytes(data)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(body)
        f.write(hashlib.sha256(body).digest())
    os.replace(tmp, path)   # readers never see a half-written checkpoint


def load_state(path: str | os.PathLike) -> Any:
    """Read a file written by :func:`save`; tensors come back with their exact dtypes and shapes."""
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
    try:
        header = json.loads(body[_PREFIX.size:_PREFIX.size + hlen])
        size = header["data_size"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{where}: unreadable header ({e})") from None
    start = _PREFIX.size + hlen
    if len(body) != start + size:
        raise CheckpointError(f"{where}: truncated or padded: {len(body) - start} data bytes, "
                              f"expected {size}")
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"{where}: checksum mismatch, the file is corrupted")
    tensors = []
    for e in header["tensors"]:
        dtype = np.dtype(e["dtype"]).newbyteorder("<")
        n = int(np.prod(e["shape"], dtype=np.int64)) * dtype.itemsize
        if n != e["nbytes"] or e["offset"] + n > size:
            raise CheckpointError(f"{where}: tensor entry {e} does not match its data")
        arr = np.frombuffer(body, dtype=dtype, count=n // dtype.itemsize if n else 0,
                            offset=start + e["offset"]).reshape(e["shape"])
        tensors.append(Tensor._from_array(arr.astype(dtype.newbyteorder("="), copy=True)))
    return _decode(header["tree"], tensors)


__all__ = ["save", "load_state", "CheckpointError"]
