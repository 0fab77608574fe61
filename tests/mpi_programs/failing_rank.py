"""Run under mpirun: rank 1 fails (``raise``, ``hang`` or ``die``) while rank 0 keeps reducing."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

import tracejit as tj
import tracejit.distributed as dist


def main(mode: str) -> None:
    dist.init_process_group()
    x = tj.asarray(np.ones(4, np.float32))
    for step in range(1000):
        if dist.get_rank() == 1 and step == 3:
            if mode == "raise":
                raise ValueError("rank 1 gives up at step 3")
            if mode == "hang":
                time.sleep(600)
            if mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
        dist.all_reduce(x, op="mean")
    print("finished all steps", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
