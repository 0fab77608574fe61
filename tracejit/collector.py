"""The cyclic garbage collector, paused while a program is traced and compiled."""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (nested blocks are fine).

    Compiling allocates graphs of many small objects, and every full collection walks all live
    ones, the graphs of the entries already cached included: without the pause each new batch
    size of a depth-16 training step compiled slower than the one before (the third 1.5x the
    first).  What the block leaves as cyclic garbage is collected after it, as usual."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
