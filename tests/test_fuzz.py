"""A short seeded run of the differential fuzzer (``python -m tests.fuzz`` runs long ones)."""
from __future__ import annotations

import warnings

from tests import fuzz


def test_fuzz_seeded_programs_agree() -> None:
    """A few hundred random programs: eager, jit, interpreter and disk-cached kernels agree."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # a fixed number of programs (the time bound only stops a hang), so a busy machine
        # checks as much as an idle one
        summary = fuzz.fuzz(seconds=600.0, seed=12345, max_programs=150, shrink_budget=0.0, verbose=False)
    assert summary["programs"] == 150
    assert not summary["findings"], "\n\n".join(summary["reproducers"][:5])


def test_programs_shrink_to_valid_programs() -> None:
    """Every sub-list of a program's ops is a program (what shrinking relies on)."""
    import random
    rng = random.Random(7)
    for _ in range(20):
        prog = fuzz.generate(rng)
        for i in range(len(prog.ops)):
            sub = fuzz.Program(prog.inputs, prog.ops[i:], prog.outputs)
            fuzz.run_mode(sub, "eager")          # may raise inside (recorded), never here


def test_fuzz_lazy_mode_agrees_with_eager() -> None:
    """Random programs run inside ``tj.lazy()``: the same outputs and argument updates as eagerly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = fuzz.fuzz(seconds=10.0, seed=777, max_programs=80, shrink_budget=0.0, verbose=False,
                            modes=("lazy",))
    assert summary["programs"] >= 20
    assert not summary["findings"], "\n\n".join(summary["reproducers"][:5])
