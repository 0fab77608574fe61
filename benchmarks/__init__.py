"""tracejit benchmark suite.

    python -m benchmarks                      # every workload, full sizes, 20 samples per row
    python -m benchmarks --quick              # same workloads, smaller sizes, 5 samples (~1 min)
    python -m benchmarks --device cuda        # GPU sizes against torch/torch.compile on CUDA
    python -m benchmarks --only W1,W3,C1      # a subset (W5 = W5a,W5b); T1 training, C1 compiles
    python -m benchmarks --only C2            # opt-in: compile time of training steps by size (minutes)
    python -m benchmarks --only T2            # opt-in: a transformer block's training step (~30 s)
    python -m benchmarks --impls "numpy,tracejit jit"
    python -m benchmarks --json out.json --plot out.png   # the plot needs the `bench` extra

Compares tracejit (eager and ``tj.jit``) with NumPy and, where installed, PyTorch eager,
``torch.compile`` and ``jax.jit`` on the same inputs in one process. ``workloads.py`` defines
the workloads, ``harness.py`` checks and times them, ``training.py`` is the training step (T1),
``transformer.py`` a transformer block's training step (T2, C2's ``gpt`` model),
``compile_latency.py`` the fresh-process compile timings (C1) and ``compile_scaling.py`` compile
time against program size (C2, also ``python -m benchmarks.compile_scaling``). Results:
``RESULTS.md``.
"""
