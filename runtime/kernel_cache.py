"""In-memory and on-disk cache of compiled CPU kernels.

A kernel is compiled once per process (memory) and once per machine (disk).  The disk key
covers everything that decides the object code: the kernel's structural key, the code
generator version, LLVM's version, the target triple and the host CPU with its features.

Entries live in ``$TRACEJIT_CACHE_DIR`` (default ``~/.cache/tracejit``); ``TRACEJIT_DISABLE_CACHE=1``
turns the disk off.  :mod:`runtime.disk_cache` decides whether a file is trusted (the user's own
directory, a regular file, a valid checksum and HMAC); on top of that the object code is
validated before LLVM's loader sees it (:func:`codegen.cpu.validate_object`).  Whatever fails is
logged, ignored and rebuilt.

In memory the cache is an LRU of ``$TRACEJIT_KERNEL_CACHE_SIZE`` kernels (default 2048).
Evicting one only drops the cache's reference: the machine code stays linked into the process
(compiled programs hold its address and ctypes function), so eviction never invalidates a
program; a later request for it is served from disk or recompiled, and linked once.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codegen import cpu
from codegen.kir import Kernel
from runtime import disk_cache

_MAGIC = b"TJKERNEL2\n"
# Part of every entry's name: a new entry format never even opens old files.
_FORMAT = "2"
DEFAULT_MEMORY_ENTRIES = 2048

log = logging.getLogger("tracejit.cache")


def memory_entries() -> int:
    """``$TRACEJIT_KERNEL_CACHE_SIZE``: kernels kept in memory (default 2048, at least 1)."""
    try:
        return max(1, int(os.environ.get("TRACEJIT_KERNEL_CACHE_SIZE") or DEFAULT_MEMORY_ENTRIES))
    except ValueError:
        return DEFAULT_MEMORY_ENTRIES


@dataclass(frozen=True)
class CompiledKernel:
    kernel: Kernel
    artifact: cpu.CpuArtifact
    fn: cpu.KernelFn


def encode_entry(artifact: cpu.CpuArtifact, key: bytes | None = None) -> bytes:
    """An authenticated entry (``key`` default: the user's cache key)."""
    header = {"symbol": artifact.symbol, "object_size": len(artifact.object_code)}
    return disk_cache.encode(_MAGIC, header, artifact.object_code + artifact.llvm_ir.encode(), key)


def decode_entry(data: bytes, key: bytes | None = None) -> cpu.CpuArtifact:
    """Parse, verify and authenticate an entry; raises ValueError on any damage."""
    header, payload = disk_cache.decode(_MAGIC, data, key)
    symbol = disk_cache.field(header, "symbol", str)
    n = disk_cache.field(header, "object_size", int)
    if not 0 <= n <= len(payload):
        raise disk_cache.EntryRefused(f"bad header: object_size {n} outside the payload")
    return cpu.CpuArtifact(symbol, payload[:n], payload[n:].decode())


# Object code a loaded export file brought (kernel key or module name -> artifact): served before
# the disk cache and the compiler, so a loaded program compiles nothing.
_provided: dict[str, cpu.CpuArtifact] = {}
# Every hand-written module this process obtained (name -> artifact): what an export includes.
_modules: dict[str, cpu.CpuArtifact] = {}


def provide(name: str, artifact: cpu.CpuArtifact) -> None:
    """Serve ``artifact`` for a kernel's structural key or a hand-written module's name from now
    on (its object code is still validated when it is linked)."""
    with _provided_lock:
        _provided[name] = artifact


def modules() -> dict[str, cpu.CpuArtifact]:
    """The hand-written modules (GEMM, hand-off, step runner) this process has loaded, by name."""
    with _provided_lock:
        return dict(_modules)


_provided_lock = threading.Lock()


def _verified(artifact: cpu.CpuArtifact, symbol: str) -> bool:
    """Whether a decoded entry exports ``symbol`` and its object code is safe to hand to LLVM's
    loader (raises ValueError or LinkError with the reason when it is not)."""
    if artifact.symbol != symbol:
        return False
    try:
        cpu.validate_object(artifact.object_code, symbol)
    except cpu.LinkError as e:
        raise disk_cache.EntryRefused(str(e)) from None
    return True


@functools.lru_cache(maxsize=1)
def codegen_digest() -> str:
    """A hash of the code generator's own source: a changed generator never loads old kernels,
    even where its version constant was not bumped."""
    h = hashlib.sha256()
    for path in sorted(Path(cpu.__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


class KernelCache:
    """Compiled kernels by structural key, an LRU of ``capacity`` entries; ``stats`` counts where
    each request was served from, ``evictions`` how many entries the bound dropped."""

    def __init__(self, directory: str | os.PathLike | None = None, disk: bool | None = None,
                 capacity: int | None = None):
        self.directory = Path(directory) if directory is not None else disk_cache.cache_dir()
        self.disk = (not disk_cache.disk_disabled()) if disk is None else disk
        self.capacity = capacity if capacity is not None else memory_entries()
        self.stats = {"compiled": 0, "disk_hits": 0, "memory_hits": 0, "disk_errors": 0}
        self.evictions = 0
        self._memory: OrderedDict[str, CompiledKernel] = OrderedDict()
        self._lock = threading.Lock()

    def memory_size(self) -> int:
        """Kernels held in memory now.  (No ``__len__``: callers test ``cache or default``.)"""
        return len(self._memory)

    def entry_name(self, kernel: Kernel) -> str:
        ident = f"{kernel.key}|{cpu.host_id()}|{codegen_digest()}|{_FORMAT}"
        return f"{hashlib.sha256(ident.encode()).hexdigest()[:32]}.tjk"

    def path_for(self, kernel: Kernel) -> Path:
        return self.directory / self.entry_name(kernel)

    def get(self, kernel: Kernel) -> CompiledKernel:
        """The compiled, loaded kernel (from memory, else disk, else a fresh compile)."""
        with self._lock:
            hit = self._memory.get(kernel.key)
            if hit is not None:
                self._memory.move_to_end(kernel.key)
                self.stats["memory_hits"] += 1
                return hit
            entry = self._load(kernel)
            self._memory[kernel.key] = entry
            while len(self._memory) > self.capacity:
                # Only the cache's reference goes: the code stays linked (see the module doc).
                self._memory.popitem(last=False)
                self.evictions += 1
            return entry

    def _load(self, kernel: Kernel) -> CompiledKernel:
        provided = _provided.get(kernel.key)
        if provided is not None:
            return CompiledKernel(kernel, provided, cpu.load(provided))
        artifact = self._read(kernel) if self.disk else None
        if artifact is not None:
            try:
                fn = cpu.load(artifact)
                self.stats["disk_hits"] += 1
                return CompiledKernel(kernel, artifact, fn)
            except (ValueError, cpu.LinkError) as e:
                self.stats["disk_errors"] += 1
                log.warning("kernel cache: cannot load entry %s (%s); recompiling", self.path_for(kernel), e)
        artifact = cpu.compile_kernel(kernel)
        self.stats["compiled"] += 1
        if self.disk:
            self._write(kernel, artifact)
        return CompiledKernel(kernel, artifact, cpu.load(artifact))

    def _store(self) -> disk_cache.DiskStore:
        return disk_cache.store_for(self.directory)

    def _read(self, kernel: Kernel) -> cpu.CpuArtifact | None:
        symbol = cpu.symbol_name(kernel)
        return disk_cache.read_entry(self._store(), self.entry_name(kernel), "kernel cache", decode_entry,
                                     lambda a: _verified(a, symbol), self.stats)

    def _write(self, kernel: Kernel, artifact: cpu.CpuArtifact) -> None:
        if self._store().usable():
            disk_cache.write_entry(self._store(), self.entry_name(kernel), encode_entry(artifact),
                                   "kernel cache")


def cached_artifact(name: str, symbol: str, build: Callable[[], cpu.CpuArtifact],
                    stats: dict[str, int]) -> tuple[cpu.CpuArtifact, bool]:
    """A hand-written module's object code (GEMM, worker hand-off, step runner) by ``name``:
    from disk when an authenticated entry with valid object code exporting ``symbol`` is there,
    else built and written.  Returns (artifact, from_disk)."""
    artifact = _provided.get(name)
    if artifact is None:
        artifact, from_disk = _cached_artifact(name, symbol, build, stats)
    else:
        from_disk = True
    with _provided_lock:
        _modules[name] = artifact
    return artifact, from_disk


def _cached_artifact(name: str, symbol: str, build: Callable[[], cpu.CpuArtifact],
                     stats: dict[str, int]) -> tuple[cpu.CpuArtifact, bool]:
    key = f"{name}|{cpu.host_id()}|{codegen_digest()}|{_FORMAT}"
    entry_name = f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.tjk"
    store = disk_cache.store_for(disk_cache.cache_dir())
    disk = not disk_cache.disk_disabled()
    artifact = disk_cache.read_entry(store, entry_name, f"{name} cache", decode_entry,
                                     lambda a: _verified(a, symbol), stats) if disk else None
    if artifact is not None:
        return artifact, True
    artifact = build()
    if disk and store.usable():
        disk_cache.write_entry(store, entry_name, encode_entry(artifact), f"{name} cache")
    return artifact, False


_default: KernelCache | None = None
_default_lock = threading.Lock()


def default_cache() -> KernelCache:
    """The process-wide cache (configured from the environment on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = KernelCache()
        return _default


def get_kernel(kernel: Kernel) -> CompiledKernel:
    return default_cache().get(kernel)
