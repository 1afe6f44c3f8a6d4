"""``hardware.compile=true``: the job trains and evaluates every encoding compiled, with no graph break.

The real job function on a composed config, in this process (so that dynamo's counters can be read):
a tiny ViT on the fake dataset, two epochs. Validation and the test at the training size go through
the compiled evaluator; the other input sizes and the shift test run the model eagerly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from harness_helpers import TINY, compose_job

from rope_ext.encoding import registry
from rope_ext.run import evaluation, loop
from rope_ext.run.job import run_job

COMPILED = [*TINY, "train.epochs=2", "eval.bench_seconds=0", "hardware=cpu", "hardware.compile=true"]


@pytest.mark.slow
@pytest.mark.parametrize("pe", registry.names())
def test_compile_trains_and_evaluates_every_encoding_without_graph_breaks(
    pe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluated: list[tuple[str, int]] = []  # (the module evaluated: compiled or eager, image size)
    real = evaluation.evaluate

    def spy(model, batches, device, amp_dtype):
        size = next(iter(batches))[0].shape[-1]
        evaluated.append((type(model).__name__, int(size)))
        return real(model, batches, device, amp_dtype)

    monkeypatch.setattr(loop, "evaluate", spy)
    monkeypatch.setattr(evaluation, "evaluate", spy)
    options = ["pe.block=3"] if pe == "axial_block" else []
    task, _ = compose_job([*COMPILED, f"pe={pe}", *options], tmp_path / "run")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        assert run_job(task) is not None
        breaks = dict(torch._dynamo.utils.counters["graph_break"])
    finally:
        torch._dynamo.reset()
    assert not breaks, breaks
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["epochs_done"] == 2
    size = int(task.dataset.input_size)
    at_size = [kind for kind, s in evaluated if s == size]
    others = [kind for kind, s in evaluated if s != size]
    # two validations and the test at the training size compiled; the shift test and every other size eager
    assert [kind == "OptimizedModule" for kind in at_size[:3]] == [True] * 3, evaluated
    assert "OptimizedModule" not in at_size[3:] and len(at_size) == 3 + (pe != "none"), evaluated
    assert others and "OptimizedModule" not in others, evaluated
