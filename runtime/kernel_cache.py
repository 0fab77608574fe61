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
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from codegen import cpu
from codegen.kir import Kernel

log = logging.getLogger("tracejit.cache")

_MAGIC = b"TJKERNEL1\n"


@dataclass(frozen=True)
class CompiledKernel:
    kernel: Kernel
    artifact: cpu.CpuArtifact
    fn: cpu.KernelFn


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRACEJIT_CACHE_DIR") or Path.home() / ".cache" / "tracejit")


def _disk_disabled() -> bool:
    return os.environ.get("TRACEJIT_DISABLE_CACHE", "") not in ("", "0")


def encode_entry(artifact: cpu.CpuArtifact) -> bytes:
    payload = artifact.object_code + artifact.llvm_ir.encode()
    header = {"symbol": artifact.symbol, "object_size": len(artifact.object_code),
              "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    return _MAGIC + json.dumps(header).encode() + b"\n" + payload


def decode_entry(data: bytes) -> cpu.CpuArtifact:
    """Parse and verify an entry; raises ValueError on any damage."""
    if not data.startswith(_MAGIC):
        raise ValueError("bad magic")
    head, sep, payload = data[len(_MAGIC):].partition(b"\n")
    if not sep:
        raise ValueError("truncated header")
    try:
        header = json.loads(head)
    except json.JSONDecodeError as e:
        raise ValueError(f"bad header: {e}") from None
    if len(payload) != header["size"] or hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise ValueError("checksum mismatch (truncated or corrupted)")
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
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.disk = (not _disk_disabled()) if disk is None else disk
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
        path = self.path_for(kernel)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning("kernel cache: cannot read %s (%s); recompiling", path, e)
            return None
        try:
            artifact = decode_entry(data)
            if artifact.symbol != cpu.symbol_name(kernel):
                raise ValueError("entry is for another kernel")
            return artifact
        except (ValueError, KeyError, UnicodeDecodeError) as e:
            self.stats["disk_errors"] += 1
            log.warning("kernel cache: ignoring damaged entry %s (%s); recompiling", path, e)
            return None

    def _write(self, kernel: Kernel, artifact: cpu.CpuArtifact) -> None:
        path = self.path_for(kernel)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".tjk")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(encode_entry(artifact))
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            log.warning("kernel cache: cannot write %s (%s)", path, e)


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
