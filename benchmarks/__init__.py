"""tracejit benchmark suite: ``python -m benchmarks [--quick] [--device cuda] [--only W1,W3]``.

Compares tracejit (eager and ``tj.jit``) with NumPy and, where installed, PyTorch eager,
``torch.compile`` and ``jax.jit`` on the same inputs in one process. See ``workloads.py`` for
the workloads and ``harness.py`` for how they are checked and timed.
"""
