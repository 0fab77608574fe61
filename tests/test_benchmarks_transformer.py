"""Smoke test of T2 (the transformer block's training step) at batch 2: checks, not timings."""

from __future__ import annotations

import numpy as np

from benchmarks import compile_scaling, harness, transformer
from benchmarks.__main__ import selected
from benchmarks.harness import TJ_EAGER, TJ_JIT, TJ_LAZY, TORCH, Config, Prepared

TINY = Config(preset="tiny", repeats=2, warmup=1, warmup_s=0.0, min_sample_s=0.0,
              impls=(TJ_EAGER, TJ_LAZY, TJ_JIT, TORCH))


def test_tracejit_and_torch_steps_agree_with_the_reference_and_render() -> None:
    results = transformer.run(TINY, batch=2)
    by_impl = {r.impl: r for r in results}
    assert [r.impl for r in results] == list(TINY.impls)
    for impl in (TJ_EAGER, TJ_LAZY, TJ_JIT):
        assert by_impl[impl].status == "ok", by_impl[impl]
        assert len(by_impl[impl].samples_s) == TINY.repeats and by_impl[impl].first_call_s
    assert by_impl[TORCH].ok or by_impl[TORCH].status.startswith("skipped")
    table = harness.render_group(results, None)
    assert table.startswith("T2 ") and "GFLOP per call" in table and "tracejit jit" in table


def test_a_step_that_does_not_train_is_a_mismatch() -> None:
    params, (x, y) = compile_scaling.problem("gpt", 2)
    eager = transformer.prepare(TJ_EAGER, params, x, y)
    losses, first_s = transformer.first_losses(eager)
    assert first_s > 0 and losses[0] > losses[-1]  # the optimizer steps
    frozen = float(losses[0])
    stuck = Prepared(lambda: np.float32(frozen), np.asarray, lambda _: None)
    got, _ = transformer.first_losses(stuck)
    problem = transformer.compare_losses(got, losses, transformer.LOSS_RTOL, TJ_EAGER)
    assert problem.startswith("loss at step 2 ")
    assert transformer.compare_losses(losses, losses, transformer.AGREE_RTOL, TJ_EAGER) == ""


def test_t2_is_opt_in() -> None:
    assert selected("t2") == ["T2"] and "T2" not in selected(None)
    assert transformer.flops_per_step(4) * 2 == transformer.flops_per_step(8)
