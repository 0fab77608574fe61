"""In-memory and on-disk cache of compiled CPU kernels.

A kernel is compiled once per process (memory) and once per machine (disk).  The disk key
covers everything that decides the object code: the kernel's structural key, the code
generator version, LLVM's version, the target triple and the host CPU with its features.

Entries live in ``$TRACEJIT_CACHE_DIR`` (default ``~/.cache/tracejit``); ``TRACEJIT_DISABLE_CACHE=1``
turns the disk off.  Each entry is written to a temporary file and renamed into place (never a
half-written entry under the final name), and starts with a header holding the sha256 of the
payload: an entry that does not verify is logged, ignored and rebuilt.
"""
from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codegen import cpu
from codegen.kir import Kernel
from runtime import disk_cache

_MAGIC = b"TJKERNEL1\n"


@dataclass(frozen=True)
class CompiledKernel:
    kernel: Kernel
    artifact: cpu.CpuArtifact
    fn: cpu.KernelFn


def encode_entry(artifact: cpu.CpuArtifact) -> bytes:
    header = {"symbol": artifact.symbol, "object_size": len(artifact.object_code)}
    return disk_cache.encode(_MAGIC, header, artifact.object_code + artifact.llvm_ir.encode())


def decode_entry(data: bytes) -> cpu.CpuArtifact:
    """Parse and verify an entry; raises ValueError on any damage."""
    header, payload = disk_cache.decode(_MAGIC, data)
    n = header["object_size"]
    return cpu.CpuArtifact(header["symbol"], payload[:n], payload[n:].decode())


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
    """Compiled kernels by structural key; ``stats`` counts where each request was served from."""

    def __init__(self, directory: str | os.PathLike | None = None, disk: bool | None = None):
        self.directory = Path(directory) if directory is not None else disk_cache.cache_dir()
        self.disk = (not disk_cache.disk_disabled()) if disk is None else disk
        self.stats = {"compiled": 0, "disk_hits": 0, "memory_hits": 0, "disk_errors": 0}
        self._memory: dict[str, CompiledKernel] = {}
        self._lock = threading.Lock()

    def path_for(self, kernel: Kernel) -> Path:
        digest = hashlib.sha256(f"{kernel.key}|{cpu.host_id()}|{codegen_digest()}".encode()).hexdigest()[:32]
        return self.directory / f"{digest}.tjk"

    def get(self, kernel: Kernel) -> CompiledKernel:
        """The compiled, loaded kernel (from memory, else disk, else a fresh compile)."""
        with self._lock:
            hit = self._memory.get(kernel.key)
            if hit is not None:
                self.stats["memory_hits"] += 1
                return hit
            artifact = self._read(kernel) if self.disk else None
            if artifact is None:
                artifact = cpu.compile_kernel(kernel)
                self.stats["compiled"] += 1
                if self.disk:
                    self._write(kernel, artifact)
            else:
                self.stats["disk_hits"] += 1
            entry = CompiledKernel(kernel, artifact, cpu.load(artifact))
            self._memory[kernel.key] = entry
            return entry

    def _read(self, kernel: Kernel) -> cpu.CpuArtifact | None:
        return disk_cache.read_entry(self.path_for(kernel), "kernel cache", decode_entry,
                                     lambda a: a.symbol == cpu.symbol_name(kernel), self.stats)

    def _write(self, kernel: Kernel, artifact: cpu.CpuArtifact) -> None:
        disk_cache.write_atomic(self.path_for(kernel), encode_entry(artifact), "kernel cache")


def cached_artifact(name: str, symbol: str, build: Callable[[], cpu.CpuArtifact],
                    stats: dict[str, int]) -> tuple[cpu.CpuArtifact, bool]:
    """A hand-written module's object code (GEMM, worker hand-off) by ``name``: from disk when a
    sound entry is there, else built and written.  Returns (artifact, from_disk)."""
    key = f"{name}|{cpu.host_id()}|{codegen_digest()}"
    path = disk_cache.cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.tjk"
    disk = not disk_cache.disk_disabled()
    artifact = disk_cache.read_entry(path, f"{name} cache", decode_entry,
                                     lambda a: a.symbol == symbol, stats) if disk else None
    if artifact is not None:
        return artifact, True
    artifact = build()
    if disk:
        disk_cache.write_atomic(path, encode_entry(artifact), f"{name} cache")
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
