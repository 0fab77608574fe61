"""The export file (``.tjx``): a header, named binary blobs and a SHA-256 trailer.

Layout::

    MAGIC (8 bytes) | format version (u32 LE) | header length (u64 LE) | header (JSON)
    | blobs (object code, PTX, arrays; offsets relative to the end of the header)
    | SHA-256 of everything before it (32 bytes)

The header holds the target the object code was built for (triple, CPU name and features,
code generator version) and everything :mod:`tracejit.export` stores as JSON.  :func:`read`
checks, in order, magic, version, digest, then the target (:func:`check_target`), and raises
:class:`ExportFormatError` naming the first thing wrong.  The digest detects damage, not
tampering: a file of native code is trusted like a shared library.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from .export_program import ExportError

MAGIC = b"TJEXPORT"
VERSION = 1
_PREFIX = struct.Struct("<8sIQ")
_DIGEST = hashlib.sha256().digest_size
MAX_HEADER_BYTES = 256 << 20


class ExportFormatError(ExportError):
    """An export file that is damaged, of another version, or built for another machine."""


@dataclass
class ExportFile:
    header: dict[str, Any]
    blobs: dict[str, bytes]


def host_target() -> dict[str, Any]:
    """What decides whether this machine can run a file's object code."""
    import llvmlite.binding as llvm

    from codegen import cpu

    cpu.target_machine()  # (initializes LLVM's native target)
    features = llvm.get_host_cpu_features()
    return {
        "triple": llvm.get_process_triple(),
        "cpu": llvm.get_host_cpu_name(),
        "features": sorted(f for f, on in features.items() if on),
        "codegen": cpu.CODEGEN_VERSION,
        "llvm": ".".join(map(str, llvm.llvm_version_info)),
    }


def check_target(target: Any, where: str) -> None:
    """Refuse a file whose object code was built for another target triple, for CPU features
    this machine lacks, or by another code generator (its calling conventions may differ)."""
    here = host_target()
    if not isinstance(target, dict) or not isinstance(target.get("features"), list):
        raise ExportFormatError(f"{where}: the header has no target description")
    if target.get("triple") != here["triple"]:
        raise ExportFormatError(
            f"{where}: built for target {target.get('triple')!r}, this machine is "
            f"{here['triple']!r}; export it again on this kind of machine"
        )
    missing = sorted(set(map(str, target["features"])) - set(here["features"]))
    if missing:
        raise ExportFormatError(
            f"{where}: its object code was built for CPU {target.get('cpu')!r} and uses features this "
            f"CPU ({here['cpu']}) lacks: {', '.join(missing[:12])}{' ...' if len(missing) > 12 else ''}; "
            "running it could crash, so it is refused. Export it again on this machine."
        )
    if target.get("codegen") != here["codegen"]:
        raise ExportFormatError(
            f"{where}: made by code generator {target.get('codegen')!r}, this tracejit "
            f"has {here['codegen']!r}; export it again with this version"
        )


def encode(header: dict[str, Any], blobs: dict[str, bytes]) -> bytes:
    """The file's bytes (digest trailer included)."""
    table, offset = [], 0
    for name, data in blobs.items():
        table.append({"name": name, "offset": offset, "size": len(data)})
        offset += len(data)
    text = json.dumps({**header, "blobs": table}, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, VERSION, len(text)) + text + b"".join(blobs.values())
    return body + hashlib.sha256(body).digest()


def decode(data: bytes, where: str) -> ExportFile:
    """Parse and verify a file (magic, version, digest, header fields); the target is checked
    separately (:func:`check_target`)."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise ExportFormatError(f"{where}: not a tracejit export file (bad magic)")
    if len(data) < _PREFIX.size + _DIGEST:
        raise ExportFormatError(f"{where}: truncated ({len(data)} bytes)")
    _, version, n_header = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise ExportFormatError(
            f"{where}: export format version {version}; this tracejit reads version "
            f"{VERSION}. Export it again with this version"
        )
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        raise ExportFormatError(f"{where}: digest mismatch: the file is truncated or corrupted")
    if n_header > min(MAX_HEADER_BYTES, len(body) - _PREFIX.size):
        raise ExportFormatError(f"{where}: header length {n_header} outside the file")
    try:
        header = json.loads(body[_PREFIX.size : _PREFIX.size + n_header])
    except (ValueError, RecursionError) as e:
        raise ExportFormatError(f"{where}: bad header ({type(e).__name__})") from None
    if not isinstance(header, dict) or not isinstance(header.get("blobs"), list):
        raise ExportFormatError(f"{where}: bad header (no blob table)")
    start, blobs = _PREFIX.size + n_header, {}
    for entry in header["blobs"]:
        ok = (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and all(type(entry.get(k)) is int and entry[k] >= 0 for k in ("offset", "size"))
        )
        if not ok or start + entry["offset"] + entry["size"] > len(body) or entry["name"] in blobs:
            raise ExportFormatError(f"{where}: bad blob table entry {str(entry):.80}")
        blobs[entry["name"]] = bytes(body[start + entry["offset"] : start + entry["offset"] + entry["size"]])
    return ExportFile(header, blobs)


def read(path: str | os.PathLike) -> ExportFile:
    where = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ExportFormatError(f"{where}: cannot read it ({e.strerror})") from None
    file = decode(data, where)
    check_target(file.header.get("target"), where)
    return file
