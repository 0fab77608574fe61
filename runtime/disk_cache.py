"""Authenticated, checksummed cache files, written atomically: the discipline both kernel caches share.

The CPU cache loads native code from these files into the process, so a file is trusted only
when all of this holds (anything else is a logged miss and a rebuild, never a crash or a hang):

* the directory is the user's own and not group/world-writable (created 0700); otherwise it
  is refused with one warning and the caches run in memory only;
* the entry is opened without following symlinks, non-blocking (a FIFO cannot hang the
  reader), must be a regular file of the user's, not group/world-writable, at most
  :data:`MAX_ENTRY_BYTES`;
* its layout is ``MAGIC`` + HMAC-SHA256 tag (hex) + ``\\n`` + one JSON header line (the
  caller's fields plus ``size`` and ``sha256`` of the payload) + ``\\n`` + payload; the
  checksum catches damage, the tag (keyed with a per-user secret, :func:`user_key`) catches
  entries this user's tracejit did not write.

Entries are written to a temporary file and renamed into place, so no reader ever sees half
an entry under its final name.  A read touches the entry's mtime and writes now and then prune
the least recently used entries beyond ``$TRACEJIT_CACHE_MAX_MB``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("tracejit.cache")

# An entry larger than this is refused unread (the largest real one, a GEMM, is ~100 KiB).
MAX_ENTRY_BYTES = 64 << 20
# A header line longer than this is damage (real ones are ~200 bytes).
MAX_HEADER_BYTES = 64 << 10
KEY_BYTES = 32
_TAG_CHARS = 2 * hashlib.sha256().digest_size
# Prune the directory on the first write of a process and then once per this many writes.
PRUNE_EVERY = 64
# Temporary files older than this are left over from a crashed writer.
STALE_TMP_SECONDS = 3600
ENTRY_SUFFIX = ".tjk"


class EntryRefused(ValueError):
    """An entry that cannot be trusted or parsed (the caller logs it and rebuilds)."""


def cache_dir() -> Path:
    """``$TRACEJIT_CACHE_DIR``, default ``~/.cache/tracejit``."""
    return Path(os.environ.get("TRACEJIT_CACHE_DIR") or Path.home() / ".cache" / "tracejit")


def key_path() -> Path:
    """``$TRACEJIT_CACHE_KEY``, default ``$XDG_CONFIG_HOME/tracejit/cache.key`` (``~/.config``).

    The key lives outside the cache directory: a cache directory copied, shared or restored
    from elsewhere carries no key with it."""
    if os.environ.get("TRACEJIT_CACHE_KEY"):
        return Path(os.environ["TRACEJIT_CACHE_KEY"])
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "tracejit" / "cache.key"


def disk_disabled() -> bool:
    """``TRACEJIT_DISABLE_CACHE=1`` keeps caches in memory only."""
    return os.environ.get("TRACEJIT_DISABLE_CACHE", "") not in ("", "0")


def max_bytes() -> int:
    """``$TRACEJIT_CACHE_MAX_MB`` (default 1024) in bytes: the disk cache's size cap."""
    try:
        return int(float(os.environ.get("TRACEJIT_CACHE_MAX_MB") or 1024) * (1 << 20))
    except ValueError:
        return 1024 << 20


_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(path: Path | str, message: str) -> None:
    """One warning per path and process: a refused directory or key is named once."""
    with _warned_lock:
        if str(path) in _warned:
            return
        _warned.add(str(path))
    log.warning(message)


def untrusted(st: os.stat_result, private: bool = False) -> str | None:
    """Why a file or directory with this status may not be trusted (None when it may): it must
    be the current user's and not group/world-writable (``private``: not readable either)."""
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not {os.getuid()}"
    mask = 0o077 if private else 0o022
    if st.st_mode & mask:
        return f"mode {stat.S_IMODE(st.st_mode):04o} lets other users {'in' if private else 'write'}"
    return None


# --------------------------------------------------------------------------- the per-user key

_keys: dict[str, bytes | None] = {}
_keys_lock = threading.Lock()


def user_key() -> bytes | None:
    """The per-user secret that authenticates entries, created on first use (None, after one
    warning, when it cannot be created or trusted: then nothing is read from or written to disk)."""
    path = key_path()
    with _keys_lock:
        if str(path) not in _keys:
            try:
                _keys[str(path)] = _load_or_create_key(path)
            except (OSError, EntryRefused) as e:
                _warn_once(path, f"kernel cache: cannot use key {path} ({e}); caching in memory only")
                _keys[str(path)] = None
        return _keys[str(path)]


def _load_or_create_key(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Whoever can write the key's directory could swap in a key they know.
    reason = untrusted(os.stat(path.parent))
    if reason:
        raise EntryRefused(f"its directory is {reason}")
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    # Written in full under a private name, then linked into place: link() fails if another
    # process won the race (O_EXCL semantics), and no reader ever sees a partial key.
    tmp = path.parent / f".key-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise EntryRefused("not a regular file")
        reason = untrusted(st, private=True)
        if reason:
            raise EntryRefused(reason)
        text = os.read(fd, 2 * KEY_BYTES + 1)
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except ValueError:
        raise EntryRefused("not a key") from None
    if len(key) != KEY_BYTES:
        raise EntryRefused("not a key")
    return key


# --------------------------------------------------------------------------- entry format

def _tag(key: bytes, magic: bytes, body: bytes) -> bytes:
    return hmac.new(key, magic + body, hashlib.sha256).hexdigest().encode()


def _key_or_raise(key: bytes | None) -> bytes:
    key = key if key is not None else user_key()
    if key is None:
        raise EntryRefused("no cache key to authenticate with")
    return key


def encode(magic: bytes, header: dict[str, Any], payload: bytes, key: bytes | None = None) -> bytes:
    """An entry: magic, HMAC tag, header line (with the payload's size and sha256), payload."""
    full = {**header, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    body = json.dumps(full).encode() + b"\n" + payload
    return magic + _tag(_key_or_raise(key), magic, body) + b"\n" + body


def decode(magic: bytes, data: bytes, key: bytes | None = None) -> tuple[dict[str, Any], bytes]:
    """The caller's header fields and the verified, authenticated payload; raises ValueError
    on any damage (checksum first, so damage and forgery are told apart in the log)."""
    if not data.startswith(magic):
        raise EntryRefused("bad magic")
    tag, body = data[len(magic):len(magic) + _TAG_CHARS], data[len(magic) + _TAG_CHARS + 1:]
    if len(tag) != _TAG_CHARS or data[len(magic) + _TAG_CHARS:len(magic) + _TAG_CHARS + 1] != b"\n":
        raise EntryRefused("truncated header")
    end = body.find(b"\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        raise EntryRefused("truncated header")
    header = _parse_header(body[:end])
    payload = body[end + 1:]
    size, digest = header.pop("size", None), header.pop("sha256", None)
    if type(size) is not int or not isinstance(digest, str):
        raise EntryRefused("bad header: size and sha256 missing or of the wrong type")
    if len(payload) != size or not hmac.compare_digest(hashlib.sha256(payload).hexdigest(), digest):
        raise EntryRefused("checksum mismatch (truncated or corrupted)")
    if not hmac.compare_digest(tag, _tag(_key_or_raise(key), magic, body)):
        raise EntryRefused("not authenticated: its HMAC does not match this user's cache key")
    return header, payload


def _parse_header(line: bytes) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except (ValueError, RecursionError) as e:       # (UnicodeDecodeError is a ValueError)
        raise EntryRefused(f"bad header: {type(e).__name__}") from None
    if not isinstance(header, dict):
        raise EntryRefused(f"bad header: a JSON {type(header).__name__}, not an object")
    return header


def field(header: dict[str, Any], name: str, kind: type) -> Any:
    """``header[name]``, checked to be a ``kind`` (bool is no int here); raises EntryRefused."""
    value = header.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise EntryRefused(f"bad header: {name!r} missing or not a {kind.__name__}")
    return value


# --------------------------------------------------------------------------- the directory

class DiskStore:
    """One cache directory: refuses it when it is not the user's own, reads entries
    defensively, writes them atomically, prunes the least recently used beyond the cap."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._refused = False
        self._writes = 0
        self._lock = threading.Lock()

    def _open_dir(self) -> int | None:
        """A descriptor of the checked directory (created 0700), or None when refused."""
        if self._refused:
            return None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            return self._refuse(f"cannot open it ({e})")
        # Checked on the descriptor every access goes through, so a swapped path cannot slip in.
        reason = untrusted(os.fstat(fd))
        if reason is None and user_key() is None:
            reason = "no usable cache key"
        if reason:
            os.close(fd)
            return self._refuse(reason)
        return fd

    def _refuse(self, reason: str) -> None:
        self._refused = True
        _warn_once(self.directory, f"kernel cache: refusing directory {self.directory} ({reason}); "
                                   f"caching in memory only")
        return None

    def usable(self) -> bool:
        """Whether the directory is accepted (checks it, and warns once when it is not)."""
        fd = self._open_dir()
        if fd is None:
            return False
        os.close(fd)
        return True

    def read(self, name: str) -> bytes | None:
        """The entry's bytes; None when absent or the directory is refused; EntryRefused when
        it is something other than a small regular file of the user's."""
        dfd = self._open_dir()
        if dfd is None:
            return None
        try:
            try:
                # Not even opened unless it is a regular file (opening a device can act on it);
                # checked again on the descriptor, since the name may change in between.
                if not stat.S_ISREG(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    raise EntryRefused("not a regular file")
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as e:        # ELOOP: a symlink; ENXIO, EACCES, ...
                raise EntryRefused(f"cannot open it without following links ({e.strerror})") from None
            try:
                return _read_regular(fd)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def write(self, name: str, data: bytes) -> str | None:
        """Write via a private temporary file and a rename; the reason when it failed."""
        if len(data) > MAX_ENTRY_BYTES:
            return "entry too large"
        dfd = self._open_dir()
        if dfd is None:
            return None
        try:
            tmp = f".tmp-{secrets.token_hex(8)}{ENTRY_SUFFIX}.part"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                os.unlink(tmp, dir_fd=dfd)
                raise
            with self._lock:
                self._writes += 1
                due = self._writes % PRUNE_EVERY == 1 or PRUNE_EVERY == 1
            if due:
                self.prune(dfd)
            return None
        except OSError as e:
            return str(e)
        finally:
            os.close(dfd)

    def prune(self, dfd: int | None = None, limit: int | None = None) -> int:
        """Delete least recently used entries (by mtime, which reads touch) until the directory
        holds at most 90% of ``limit`` (default :func:`max_bytes`) when it holds more; and
        temporary files a crashed writer left.  Returns the number of entries deleted."""
        own = dfd is None
        dfd = self._open_dir() if own else dfd
        if dfd is None:
            return 0
        limit = max_bytes() if limit is None else limit
        try:
            entries, total, now = [], 0, time.time()
            with os.scandir(dfd) as it:
                for e in it:
                    if not e.is_file(follow_symlinks=False):
                        continue
                    st = e.stat(follow_symlinks=False)
                    if e.name.startswith(".tmp-") and now - st.st_mtime > STALE_TMP_SECONDS:
                        _unlink(e.name, dfd)
                    elif e.name.endswith(ENTRY_SUFFIX) and not e.name.startswith("."):
                        entries.append((st.st_mtime, st.st_size, e.name))
                        total += st.st_size
            removed = 0
            if total > limit:
                # Down to 90%, so the next writes do not each trigger another pass.
                for _, size, name in sorted(entries):
                    if total <= 0.9 * limit:
                        break
                    if _unlink(name, dfd):
                        total -= size
                        removed += 1
                log.info("kernel cache: pruned %d least recently used entries from %s", removed,
                         self.directory)
            return removed
        except OSError as e:
            log.warning("kernel cache: cannot prune %s (%s)", self.directory, e)
            return 0
        finally:
            if own:
                os.close(dfd)


def _read_regular(fd: int) -> bytes:
    """All of an open entry, which must be a small regular file of the user's (its mtime is
    touched: the LRU pruning's clock)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise EntryRefused("not a regular file")
    reason = untrusted(st)
    if reason:
        raise EntryRefused(reason)
    if st.st_size > MAX_ENTRY_BYTES:
        raise EntryRefused(f"{st.st_size} bytes, over the {MAX_ENTRY_BYTES}-byte cap")
    chunks, n = [], 0
    while n <= MAX_ENTRY_BYTES:             # the file may grow after fstat
        chunk = os.read(fd, min(1 << 20, MAX_ENTRY_BYTES + 1 - n))
        if not chunk:
            break
        chunks.append(chunk)
        n += len(chunk)
    if n > MAX_ENTRY_BYTES:
        raise EntryRefused(f"over the {MAX_ENTRY_BYTES}-byte cap")
    try:
        os.utime(fd)
    except OSError:
        pass
    return b"".join(chunks)


def _unlink(name: str, dfd: int) -> bool:
    try:
        os.unlink(name, dir_fd=dfd)
        return True
    except OSError:
        return False


_stores: dict[str, DiskStore] = {}
_stores_lock = threading.Lock()


def store_for(directory: str | os.PathLike) -> DiskStore:
    """The process's one store for ``directory`` (shared by the CPU, PTX and module caches, so
    a refusal is warned once and the write count that paces pruning is shared)."""
    path = Path(directory)
    with _stores_lock:
        return _stores.setdefault(str(path.absolute()), DiskStore(path))


def read_entry(store: DiskStore, name: str, what: str, decode: Callable[[bytes], T],
               matches: Callable[[T], bool], stats: dict[str, int]) -> T | None:
    """A verified entry, or None when it is absent, refused or damaged (counted and logged)."""
    try:
        data = store.read(name)
        if data is None:
            return None
        entry = decode(data)
        if not matches(entry):
            raise EntryRefused("entry is for another kernel")
        return entry
    except (ValueError, KeyError, TypeError) as e:
        stats["disk_errors"] += 1
        log.warning("%s: ignoring damaged entry %s (%s); recompiling", what, store.directory / name, e)
        return None


def write_entry(store: DiskStore, name: str, data: bytes, what: str) -> None:
    """Write an entry; failures are logged, never raised."""
    reason = store.write(name, data)
    if reason:
        log.warning("%s: cannot write %s (%s)", what, store.directory / name, reason)
