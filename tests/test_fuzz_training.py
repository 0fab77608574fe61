"""The training-loop fuzzer on fixed seeds: eager, jit and lazy training agree step by step."""
from __future__ import annotations

import pytest

from tests import fuzz_training


@pytest.mark.parametrize("seed", range(16))
def test_training_loop_agrees_in_every_mode(seed):
    cfg = fuzz_training.draw(seed)
    assert fuzz_training.check(cfg) is None, cfg


def test_the_draws_cover_every_way_of_jitting_a_step():
    drawn = {fuzz_training.draw(s).granularity for s in range(16)}
    assert drawn == set(fuzz_training.GRANULARITIES)
