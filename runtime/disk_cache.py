"""Checksummed cache files, written atomically: the discipline both kernel caches share.

An entry is ``MAGIC`` + one JSON header line (caller's fields plus ``size`` and ``sha256`` of the
payload) + the payload.  It is written to a temporary file and renamed into place, so no reader
ever sees half an entry under its final name; a reader that finds damage (bad magic, bad header,
wrong size or checksum) gets ``None`` after a logged warning and rebuilds the entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("tracejit.cache")


def cache_dir() -> Path:
    """``$TRACEJIT_CACHE_DIR``, default ``~/.cache/tracejit``."""
    return Path(os.environ.get("TRACEJIT_CACHE_DIR") or Path.home() / ".cache" / "tracejit")


def disk_disabled() -> bool:
    """``TRACEJIT_DISABLE_CACHE=1`` keeps caches in memory only."""
    return os.environ.get("TRACEJIT_DISABLE_CACHE", "") not in ("", "0")


def encode(magic: bytes, header: dict[str, Any], payload: bytes) -> bytes:
    full = {**header, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    return magic + json.dumps(full).encode() + b"\n" + payload


def decode(magic: bytes, data: bytes) -> tuple[dict[str, Any], bytes]:
    """The caller's header fields and the verified payload; raises ValueError on any damage."""
    if not data.startswith(magic):
        raise ValueError("bad magic")
    head, sep, payload = data[len(magic):].partition(b"\n")
    if not sep:
        raise ValueError("truncated header")
    try:
        header = json.loads(head)
    except json.JSONDecodeError as e:
        raise ValueError(f"bad header: {e}") from None
    size, digest = header.pop("size", None), header.pop("sha256", None)
    if len(payload) != size or hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError("checksum mismatch (truncated or corrupted)")
    return header, payload


def read(path: Path, what: str) -> bytes | None:
    """The file's bytes, or None when it is absent or unreadable (logged)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("%s: cannot read %s (%s); recompiling", what, path, e)
        return None


def read_entry(path: Path, what: str, decode: Callable[[bytes], T], matches: Callable[[T], bool],
               stats: dict[str, int]) -> T | None:
    """A verified entry, or None when it is absent, unreadable or damaged (counted and logged)."""
    data = read(path, what)
    if data is None:
        return None
    try:
        entry = decode(data)
        if not matches(entry):
            raise ValueError("entry is for another kernel")
        return entry
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        stats["disk_errors"] += 1
        log.warning("%s: ignoring damaged entry %s (%s); recompiling", what, path, e)
        return None


def write_atomic(path: Path, data: bytes, what: str) -> None:
    """Write via a temporary file and a rename; failures are logged, never raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        log.warning("%s: cannot write %s (%s)", what, path, e)
