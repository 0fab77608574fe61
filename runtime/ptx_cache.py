"""In-memory and on-disk cache of PTX kernels, keyed by (kernel structure, GPU architecture).

Same directory, environment switches and entry discipline as :mod:`runtime.kernel_cache` (the
CPU cache, see :mod:`runtime.disk_cache`): entries are written to a temporary file and renamed
into place, carry the sha256 of their payload and an HMAC with the user's cache key, and an
entry that is damaged, unauthenticated or not a plain file of the user's is logged, ignored and
rebuilt.  The key also covers LLVM's
version and :data:`codegen.ptx.CODEGEN_VERSION`, so a new code generator never reads stale PTX.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from pathlib import Path

import llvmlite.binding as llvm

from codegen import ptx
from codegen.kir import Kernel
from runtime import disk_cache
from runtime.kernel_cache import codegen_digest

_MAGIC = b"TJPTX1\n"


# PtxKernel's fields besides the text, with the type each must have in a header.
_FIELDS = {"key": str, "entry": str, "arch": str, "ndim": int, "n_reduce": int, "n_operands": int,
           "vector_width": int}


def encode_entry(pk: ptx.PtxKernel, key: bytes | None = None) -> bytes:
    """An authenticated entry (``key`` default: the user's cache key)."""
    meta = {f.name: getattr(pk, f.name) for f in dataclasses.fields(pk) if f.name != "ptx"}
    return disk_cache.encode(_MAGIC, meta, pk.ptx.encode(), key)


def decode_entry(data: bytes, key: bytes | None = None) -> ptx.PtxKernel:
    """Parse, verify and authenticate an entry; raises ValueError on any damage."""
    header, payload = disk_cache.decode(_MAGIC, data, key)
    if set(header) != set(_FIELDS):
        raise disk_cache.EntryRefused(f"bad header fields {sorted(header)}")
    fields = {name: disk_cache.field(header, name, kind) for name, kind in _FIELDS.items()}
    return ptx.PtxKernel(ptx=payload.decode(), **fields)


class PtxCache:
    """PTX by (structural key, arch); ``stats`` counts where each request was served from."""

    def __init__(self, directory: str | os.PathLike | None = None, disk: bool | None = None):
        self.directory = Path(directory) if directory is not None else disk_cache.cache_dir()
        self.disk = (not disk_cache.disk_disabled()) if disk is None else disk
        self.stats = {"compiled": 0, "disk_hits": 0, "memory_hits": 0, "disk_errors": 0}
        self._memory: dict[tuple[str, str], ptx.PtxKernel] = {}
        self._lock = threading.Lock()

    def entry_name(self, kernel: Kernel, arch: str) -> str:
        ident = f"{kernel.key}|{arch}|{ptx.CODEGEN_VERSION}|{llvm.llvm_version_info}|{codegen_digest()}|2"
        return f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.ptx.tjk"

    def path_for(self, kernel: Kernel, arch: str) -> Path:
        return self.directory / self.entry_name(kernel, arch)

    def get(self, kernel: Kernel, arch: str = ptx.DEFAULT_ARCH) -> ptx.PtxKernel:
        arch = ptx.arch_of(arch)
        with self._lock:
            hit = self._memory.get((kernel.key, arch))
            if hit is not None:
                self.stats["memory_hits"] += 1
                return hit
            pk = self._read(kernel, arch) if self.disk else None
            if pk is None:
                pk = ptx.compile_kernel(kernel, arch)
                self.stats["compiled"] += 1
                if self.disk:
                    self._write(kernel, arch, pk)
            else:
                self.stats["disk_hits"] += 1
            self._memory[(kernel.key, arch)] = pk
            return pk

    def _read(self, kernel: Kernel, arch: str) -> ptx.PtxKernel | None:
        return disk_cache.read_entry(disk_cache.store_for(self.directory), self.entry_name(kernel, arch),
                                     "ptx cache", decode_entry,
                                     lambda pk: (pk.key, pk.arch) == (kernel.key, arch), self.stats)

    def _write(self, kernel: Kernel, arch: str, pk: ptx.PtxKernel) -> None:
        store = disk_cache.store_for(self.directory)
        if store.usable():
            disk_cache.write_entry(store, self.entry_name(kernel, arch), encode_entry(pk), "ptx cache")


_default: PtxCache | None = None
_default_lock = threading.Lock()


def default_ptx_cache() -> PtxCache:
    """The process-wide PTX cache (configured from the environment on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PtxCache()
        return _default
