"""The on-disk kernel cache loads native code into the process, so it trusts a file only when it
is the user's own, in the user's own directory, a small regular file, authenticated with the
user's key, and its object code is well-formed.  Everything else must be a logged miss and a
rebuild: each damaged-entry probe below loads a kernel from a damaged cache in a fresh process
(with a timeout, so a crash or a hang fails the probe, not the test run) and checks the result.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from codegen import cpu, cpu_runner, kir
from runtime import disk_cache, kernel_cache
from runtime.cpu import run_kernel
from runtime.kernel_cache import KernelCache, cached_artifact, decode_entry, encode_entry
from runtime.ptx_cache import PtxCache

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
PINNED_DIGEST = "pinned-for-tests"
ELF_MAGIC = b"\x7fELF\x02\x01\x01"


def scale_kernel(factor: float = 3.0, name: str = "scale") -> kir.Kernel:
    """out = x * factor over float64 (the factor is part of the kernel's key)."""
    c = kir.Operand("float64", ("c",))
    return kir.Kernel(name, 1, 0, (c,), (c,),
                      (kir.Store(0, kir.Op("mul", (kir.Load(0), kir.Const(factor, "float64")), "float64")),))


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    """A private cache directory and key for this test (also used by its child processes)."""
    env = {"TRACEJIT_CACHE_DIR": str(tmp_path / "cache"), "TRACEJIT_CACHE_KEY": str(tmp_path / "key" / "k")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TRACEJIT_DISABLE_CACHE", raising=False)
    # Entry names hash the code generator's source; pinned, so an edit to it while the tests
    # run cannot make a child process look for another entry.
    monkeypatch.setattr(kernel_cache, "codegen_digest", lambda: PINNED_DIGEST)
    monkeypatch.setattr(kernel_cache, "_provided", {})   # (a loaded export provides its modules)
    return tmp_path / "cache", env


def populate(directory: Path) -> Path:
    """A sound entry for :func:`scale_kernel` in ``directory``; its path."""
    cache = KernelCache(directory, disk=True)
    cache.get(scale_kernel())
    assert cache.stats["compiled"] == 1
    return cache.path_for(scale_kernel())


CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_disk_cache_security import scale_kernel, PINNED_DIGEST
    from runtime import kernel_cache
    from runtime.kernel_cache import KernelCache
    from runtime.cpu import run_kernel
    kernel_cache.codegen_digest = lambda: PINNED_DIGEST
    cache = KernelCache(sys.argv[1], disk=True)
    x = np.arange(7.0); out = np.empty(7)
    run_kernel(scale_kernel(), (7,), [x], [out], cache=cache)
    print(json.dumps(dict(cache.stats, ok=bool((out == 3 * x).all()))))
""")


def load_in_child(directory: Path, env: dict[str, str]) -> tuple[dict, str]:
    """Load and run :func:`scale_kernel` from ``directory`` in a fresh process: (stats, stderr)."""
    full = dict(os.environ, **env, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", CHILD, str(directory), str(Path(__file__).parent)],
                         capture_output=True, text=True, env=full, cwd=ROOT, timeout=120)
    assert res.returncode == 0, f"child died with {res.returncode}: {res.stderr[-2000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1]), res.stderr


def forge(header: bytes, payload: bytes, key: bytes | None, magic: bytes = kernel_cache._MAGIC) -> bytes:
    """An entry with this exact header line, tagged with ``key`` (valid when it is the user's)."""
    body = header + b"\n" + payload
    return magic + disk_cache._tag(key or b"\0" * 32, magic, body) + b"\n" + body


def header_for(payload: bytes, **fields) -> bytes:
    digest = hashlib.sha256(payload).hexdigest()
    return json.dumps({**fields, "size": len(payload), "sha256": digest}).encode()


def with_object(artifact: cpu.CpuArtifact, obj: bytes, key: bytes) -> bytes:
    """A checksummed entry signed with the real key whose object code is ``obj``."""
    return encode_entry(cpu.CpuArtifact(artifact.symbol, obj, artifact.llvm_ir), key)


# --------------------------------------------------------------------------- damaged-entry probes

def _flip(data: bytes) -> bytes:
    b = bytearray(data)
    b[-20] ^= 0x40
    return bytes(b)


def _replace(path: Path) -> None:
    path.unlink()


def _bad_header(make):
    """A probe writing an entry whose header line is ``make(payload)``, tagged with the real key."""
    def probe(path: Path, data: bytes, key: bytes, art: cpu.CpuArtifact) -> None:
        payload = art.object_code + art.llvm_ir.encode()
        path.write_bytes(forge(make(payload, art), payload, key))
    return probe


def _write(make):
    def probe(path: Path, data: bytes, key: bytes, art: cpu.CpuArtifact) -> None:
        path.write_bytes(make(data, key, art))
    return probe


def _fifo(path, data, key, art):
    _replace(path)
    os.mkfifo(path)


def _symlink_to(target):
    def probe(path, data, key, art):
        _replace(path)
        path.symlink_to(target(path, data))
    return probe


def _other_file(path: Path, data: bytes) -> Path:
    other = path.parent.parent / "elsewhere.tjk"      # a sound entry, but reached through a link
    other.write_bytes(data)
    return other


def _directory(path, data, key, art):
    _replace(path)
    path.mkdir()


def _huge(path, data, key, art):
    with open(path, "r+b") as f:
        f.truncate(disk_cache.MAX_ENTRY_BYTES + 4096)     # sparse: costs no disk


def _not_owned(path, data, key, art):
    os.chown(path, NOBODY, NOBODY)


def _group_writable(path, data, key, art):
    path.chmod(0o664)


def _bad_section_table(obj: bytes) -> bytes:
    b = bytearray(obj)
    struct.pack_into("<Q", b, 0x28, 1 << 40)             # e_shoff far past the end
    return bytes(b)


def _bad_relocation(obj: bytes) -> bytes:
    """The first relocation's offset moved far past its section."""
    sections = cpu._sections(obj)
    rela = next(s for s in sections if s[1] == 4)
    b = bytearray(obj)
    struct.pack_into("<Q", b, rela[4], 1 << 30)
    return bytes(b)


PROBES = {
    "bad magic": _write(lambda d, k, a: b"XXXXXXXX" + d[8:]),
    "truncated": _write(lambda d, k, a: d[: len(d) // 2]),
    "flipped byte": _write(lambda d, k, a: _flip(d)),
    "zero bytes": _write(lambda d, k, a: b""),
    "magic only": _write(lambda d, k, a: kernel_cache._MAGIC),
    "json list header": _bad_header(lambda p, a: b"[1, 2, 3]"),
    "null header": _bad_header(lambda p, a: b"null"),
    "deeply nested header": _bad_header(lambda p, a: b"[" * 100_000),
    "string size": _bad_header(lambda p, a: json.dumps({"symbol": a.symbol, "object_size": len(a.object_code),
                                                        "size": str(len(p)),
                                                        "sha256": hashlib.sha256(p).hexdigest()}).encode()),
    "missing fields": _bad_header(lambda p, a: header_for(p, symbol=a.symbol)),
    "wrong field types": _bad_header(lambda p, a: header_for(p, symbol=5, object_size="1")),
    "object size past payload": _bad_header(lambda p, a: header_for(p, symbol=a.symbol, object_size=1 << 40)),
    "invalid utf-8 header": _bad_header(lambda p, a: b'{"symbol": "\xff\xfe"}'),
    "wrong HMAC": _write(lambda d, k, a: encode_entry(a, b"\x01" * 32)),
    "another kernel's entry": _write(lambda d, k, a: encode_entry(cpu.compile_kernel(scale_kernel(5.0)), k)),
    "garbage object code (real key)": _write(lambda d, k, a: with_object(a, os.urandom(2000), k)),
    "garbage ELF (real key)": _write(lambda d, k, a: with_object(a, ELF_MAGIC + os.urandom(2000), k)),
    "truncated object code (real key)": _write(lambda d, k, a: with_object(a, a.object_code[:700], k)),
    "bad section table (real key)": _write(lambda d, k, a: with_object(a, _bad_section_table(a.object_code),
                                                                       k)),
    "bad relocation (real key)": _write(lambda d, k, a: with_object(a, _bad_relocation(a.object_code), k)),
    "FIFO": _fifo,
    "symlink to /dev/zero": _symlink_to(lambda p, d: Path("/dev/zero")),
    "symlink to another file": _symlink_to(_other_file),
    "directory in its place": _directory,
    "huge file": _huge,
    "not owned by the user": _not_owned,
    "group-writable entry": _group_writable,
}


@pytest.mark.parametrize("probe", list(PROBES))
def test_damaged_entry_is_a_logged_miss_and_rebuilt(cache_env, probe):
    directory, env = cache_env
    path = populate(directory)
    data, key = path.read_bytes(), disk_cache.user_key()
    artifact = decode_entry(data)
    PROBES[probe](path, data, key, artifact)
    stats, stderr = load_in_child(directory, env)
    assert stats["ok"]
    assert stats["disk_hits"] == 0 and stats["compiled"] == 1, stats
    if probe != "directory in its place":
        assert stats["disk_errors"] == 1 and "recompiling" in stderr, stderr
    if probe not in ("directory in its place", "FIFO"):        # rebuilt: the next process loads it
        assert load_in_child(directory, env)[0]["disk_hits"] == 1


def test_sound_entry_is_a_hit_in_a_fresh_process(cache_env):
    directory, env = cache_env
    populate(directory)
    stats, _ = load_in_child(directory, env)
    assert stats == {"compiled": 0, "disk_hits": 1, "memory_hits": 0, "disk_errors": 0, "ok": True}


def test_entry_with_valid_checksum_but_no_valid_hmac_is_rejected(cache_env, caplog):
    directory, _ = cache_env
    path = populate(directory)
    path.write_bytes(encode_entry(decode_entry(path.read_bytes()), b"\x02" * 32))   # sha256 fine
    fresh = KernelCache(directory, disk=True)
    with caplog.at_level("WARNING", logger="tracejit.cache"):
        fresh.get(scale_kernel())
    assert fresh.stats["disk_errors"] == 1 and fresh.stats["compiled"] == 1
    assert "not authenticated" in caplog.text
    with pytest.raises(ValueError, match="checksum"):           # damage is told apart from forgery
        decode_entry(_flip(path.read_bytes()))


# --------------------------------------------------------------------------- directory and key

def test_cache_directory_created_0700_and_key_0600(cache_env):
    directory, env = cache_env
    populate(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    key = Path(env["TRACEJIT_CACHE_KEY"])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(bytes.fromhex(key.read_text())) == 32
    assert stat.S_IMODE(next(directory.glob("*.tjk")).stat().st_mode) == 0o600


def _refused(directory: Path, caplog) -> KernelCache:
    cache = KernelCache(directory, disk=True)
    with caplog.at_level("WARNING", logger="tracejit.cache"):
        x, out = np.arange(4.0), np.empty(4)
        for _ in range(2):
            run_kernel(scale_kernel(), (4,), [x], [out], cache=cache)
            cache._memory.clear()                               # force a second disk look-up
        assert (out == 3 * x).all()
    return cache


@pytest.mark.parametrize("change", ["world-writable", "group-writable", "not owned"])
def test_untrusted_directory_is_refused_with_one_warning(cache_env, caplog, change):
    directory, _ = cache_env
    planted = populate(directory)
    if change == "not owned":
        os.chown(directory, NOBODY, NOBODY)
    else:
        directory.chmod(0o777 if change == "world-writable" else 0o770)
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    cache = _refused(directory, caplog)
    warnings = [r for r in caplog.records if str(directory) in r.getMessage()]
    assert len(warnings) == 1 and "memory only" in warnings[0].getMessage()
    assert cache.stats["disk_hits"] == 0 and cache.stats["compiled"] == 2
    # No reads (the sound entry's mtime is untouched) and no writes.
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before and planted.exists()


def test_ownership_checked_against_the_current_user(cache_env, caplog, monkeypatch):
    directory, _ = cache_env
    populate(directory)
    monkeypatch.setattr(os, "getuid", lambda: 4242)
    cache = _refused(directory, caplog)
    assert cache.stats["disk_hits"] == 0 and "owned by uid" in caplog.text


@pytest.mark.parametrize("change", ["readable key", "key dir writable", "key is a symlink"])
def test_untrusted_key_disables_the_disk_cache(cache_env, caplog, change):
    directory, env = cache_env
    key = Path(env["TRACEJIT_CACHE_KEY"])
    key.parent.mkdir(mode=0o700)
    if change == "readable key":
        key.write_text("ab" * 32)
        key.chmod(0o644)
    elif change == "key dir writable":
        key.parent.chmod(0o777)
    else:
        (key.parent / "real").write_text("ab" * 32)
        (key.parent / "real").chmod(0o600)
        key.symlink_to(key.parent / "real")
    cache = _refused(directory, caplog)
    assert cache.stats["disk_hits"] == 0 and str(key) in caplog.text
    assert not list(directory.glob("*.tjk"))


def test_key_created_once_under_concurrency(cache_env):
    """Processes racing to create the key all end up with the same one."""
    _, env = cache_env
    full = dict(os.environ, **env, PYTHONPATH=str(ROOT))
    code = "from runtime import disk_cache; print(disk_cache.user_key().hex())"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=full)
             for _ in range(4)]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(keys) == 1 and Path(env["TRACEJIT_CACHE_KEY"]).read_text() == keys.pop()


# --------------------------------------------------------------------------- hand-written modules, PTX

def test_hand_written_modules_go_through_the_authenticated_path(cache_env):
    stats = {"disk_errors": 0}
    _, from_disk = cached_artifact("runner", cpu_runner.SYMBOL, cpu_runner.compile_runner, stats)
    art, from_disk = cached_artifact("runner", cpu_runner.SYMBOL, cpu_runner.compile_runner, stats)
    assert from_disk
    (path,) = [p for p in cache_env[0].glob("*.tjk")]
    key = disk_cache.user_key()
    for bad in (encode_entry(art, b"\x03" * 32), with_object(art, art.object_code[:500], key),
                with_object(art, _bad_section_table(art.object_code), key)):
        path.write_bytes(bad)
        before = stats["disk_errors"]
        rebuilt, from_disk = cached_artifact("runner", cpu_runner.SYMBOL, cpu_runner.compile_runner, stats)
        assert not from_disk and stats["disk_errors"] == before + 1
        assert rebuilt.object_code == art.object_code


def test_ptx_entries_are_authenticated(cache_env, caplog):
    directory, _ = cache_env
    k = scale_kernel()
    pk = PtxCache(directory, disk=True).get(k)
    path = PtxCache(directory).path_for(k, pk.arch)
    from runtime import ptx_cache
    path.write_bytes(ptx_cache.encode_entry(pk, b"\x04" * 32))
    c = PtxCache(directory, disk=True)
    with caplog.at_level("WARNING", logger="tracejit.cache"):
        assert c.get(k) == pk
    assert c.stats["disk_errors"] == 1 and "not authenticated" in caplog.text
    payload = pk.ptx.encode()
    wrong_type = header_for(payload, key=k.key, arch=pk.arch, entry=7)       # and fields missing
    path.write_bytes(forge(wrong_type, payload, disk_cache.user_key(), ptx_cache._MAGIC))
    c = PtxCache(directory, disk=True)
    assert c.get(k) == pk and c.stats["disk_errors"] == 1


# --------------------------------------------------------------------------- object code validation

def test_object_code_checked_for_undefined_symbols_and_its_symbol_at_load():
    art = cpu.compile_kernel(scale_kernel(7.0))
    cpu.validate_object(art.object_code, art.symbol)
    with pytest.raises(cpu.ObjectCodeError, match="does not define"):
        cpu.validate_object(art.object_code, "tj_something_else")
    with pytest.raises(cpu.ObjectCodeError, match="does not define"):
        cpu.load(cpu.CpuArtifact("tj_something_else", art.object_code))
    # An object that calls out: its undefined symbol is caught at load, not only at compile time.
    text = ('declare double @mystery(double)\n'
            'define void @tj_calls_out(double* %p) {\n  %v = load double, double* %p\n'
            '  %r = call double @mystery(double %v)\n  store double %r, double* %p\n  ret void\n}\n')
    with cpu._lock:
        obj = cpu.target_machine().emit_object(cpu.optimize(text))
    with pytest.raises(cpu.LinkError, match="mystery"):
        cpu.load(cpu.CpuArtifact("tj_calls_out", obj))


FUZZ = textwrap.dedent("""
    import random, struct, sys
    import llvmlite.binding as llvm
    sys.path.insert(0, sys.argv[1])
    from test_disk_cache_security import scale_kernel
    from codegen import cpu
    art = cpu.compile_kernel(scale_kernel(9.0))
    obj = art.object_code
    code = [s for s in cpu._sections(obj) if s[2] & 0x4 and s[5]]
    in_code = lambda i: any(s[4] <= i < s[4] + s[5] for s in code)
    rng = random.Random(int(sys.argv[2]))
    accepted = rejected = 0
    engines = []
    for trial in range(int(sys.argv[3])):
        b = bytearray(obj)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            while in_code(i):                 # machine code bytes are not the loader's concern
                i = rng.randrange(len(b))
            b[i] = rng.randrange(256) if rng.random() < 0.5 else b[i] ^ (1 << rng.randrange(8))
        try:
            cpu.validate_object(bytes(b), art.symbol)
        except (cpu.ObjectCodeError, cpu.LinkError):
            rejected += 1
            continue
        accepted += 1
        # Engines are kept: one owns the shared TargetMachine, which must outlive it.
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), cpu.target_machine())
        engines.append(engine)
        engine.add_object_file(llvm.ObjectFileRef.from_data(bytes(b)))
        engine.finalize_object()
        engine.get_function_address(art.symbol)
    print(accepted, rejected)
""")


def test_mutated_object_code_is_rejected_or_loads_without_crashing():
    """Random mutations of an object's headers, tables and names: each is either rejected by the
    validator or loads cleanly (in a child, so a crash fails the test)."""
    res = subprocess.run([sys.executable, "-c", FUZZ, str(Path(__file__).parent), "1", "400"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, f"loader crashed ({res.returncode}): {res.stderr[-2000:]}"
    accepted, rejected = map(int, res.stdout.split())
    assert accepted + rejected == 400 and rejected > 0


# --------------------------------------------------------------------------- memory and disk bounds

def test_memory_cache_is_a_bounded_lru(monkeypatch):
    """1,000 distinct kernels leave at most the bound in memory (compiling stubbed: only the
    cache's bookkeeping is under test here)."""
    fake = cpu.CpuArtifact("tj_fake", b"")
    monkeypatch.setattr(cpu, "compile_kernel", lambda k: fake)
    monkeypatch.setattr(cpu, "load", lambda a: (lambda *args: None))
    monkeypatch.setenv("TRACEJIT_KERNEL_CACHE_SIZE", "64")
    cache = KernelCache(disk=False)
    assert cache.capacity == 64
    kernels = [scale_kernel(float(i)) for i in range(1000)]
    for k in kernels:
        cache.get(k)
    assert cache.memory_size() == 64 and cache.evictions == 936 and cache.stats["compiled"] == 1000
    cache.get(kernels[-1])                             # most recent: still there
    assert cache.stats["memory_hits"] == 1
    cache.get(kernels[-64])                            # touched: now the most recent
    cache.get(scale_kernel(-1.0))                      # evicts the least recently used
    assert kernels[-64].key in cache._memory and kernels[-63].key not in cache._memory


def test_evicted_kernel_stays_callable():
    """A program keeps the function it was given: eviction drops only the cache's reference."""
    cache = KernelCache(disk=False, capacity=1)
    held = cache.get(scale_kernel(11.0)).fn
    cache.get(scale_kernel(12.0))                      # evicts the first
    assert cache.evictions == 1 and cache.memory_size() == 1
    x, out = np.arange(5.0), np.empty(5)
    shape, strides = np.array([5], np.int64), np.array([1, 1], np.int64)
    ptrs = np.array([x.ctypes.data, out.ctypes.data], np.uint64)
    held(0, 5, shape.ctypes.data, strides.ctypes.data, ptrs.ctypes.data)
    assert (out == 11.0 * x).all()
    again = cache.get(scale_kernel(11.0))             # recompiled, linked once: the same code
    assert cpu.load_address(again.artifact) == ctypes_address(held)


def ctypes_address(fn) -> int:
    import ctypes
    return ctypes.cast(fn, ctypes.c_void_p).value


def test_disk_cap_prunes_least_recently_used(cache_env, monkeypatch):
    directory, _ = cache_env
    store = disk_cache.store_for(directory)
    monkeypatch.setattr(disk_cache, "PRUNE_EVERY", 1 << 30)
    for i in range(10):
        assert store.write(f"{i:02d}.tjk", b"x" * 1000) is None
    now = time.time()
    for i in range(10):
        os.utime(directory / f"{i:02d}.tjk", (now - 1000 + i, now - 1000 + i))
    store.read("00.tjk")                               # a read makes the oldest the newest
    (directory / ".tmp-stale.tjk.part").write_bytes(b"x")
    os.utime(directory / ".tmp-stale.tjk.part", (now - 7200, now - 7200))
    assert store.prune(limit=5000) == 6                # down to 90% of the cap
    assert sorted(p.name for p in directory.iterdir()) == ["00.tjk", "07.tjk", "08.tjk", "09.tjk"]
    assert store.prune(limit=5000) == 0


def test_disk_cap_enforced_on_write(cache_env, monkeypatch):
    directory, _ = cache_env
    monkeypatch.setattr(disk_cache, "PRUNE_EVERY", 1)
    monkeypatch.setenv("TRACEJIT_CACHE_MAX_MB", str(12_000 / (1 << 20)))
    cache = KernelCache(directory, disk=True)
    for i in range(8):
        cache.get(scale_kernel(100.0 + i))
    sizes = [p.stat().st_size for p in directory.glob("*.tjk")]
    assert 0 < len(sizes) < 8 and sum(sizes) <= 12_000 + max(sizes)
