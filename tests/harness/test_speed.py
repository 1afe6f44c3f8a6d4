"""A run's speed against its plain twin (``rope_ext.run.speed``): the ratio summary and its flag rule on
injected timings, the interleaving order and budget, and the record of a real measurement of tiny models
(its structure, never its figures)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from rope_ext.encoding.vit import create_vit
from rope_ext.run import speed


def test_each_round_is_a_ratio_of_medians_and_the_record_is_their_median_min_and_max() -> None:
    rotary = [[2.0, 2.2, 9.0], [3.0, 3.3, 3.0], [1.1, 1.1, 1.1]]  # a hiccup (9.0) leaves the median alone
    plain = [[2.0, 2.0, 2.0], [3.0, 3.0, 3.0], [1.0, 1.0, 1.0]]
    summary = speed.ratio_summary(rotary, plain, batch=8)
    assert summary["ratios"] == pytest.approx([1.1, 1.0, 1.1])
    assert (summary["median"], summary["low"], summary["high"]) == pytest.approx((1.1, 1.0, 1.1))
    assert summary["spread"] == pytest.approx(0.1 / 1.1) and summary["unreliable"] is False
    assert summary["calls"] == [9, 9] and summary["batch"] == 8
    json.dumps(summary, allow_nan=False)  # metrics.json holds it as it is


@pytest.mark.parametrize(
    ("ratios", "flagged"),
    [
        ([1.0, 1.0, 1.2], False),  # (1.2 - 1.0) / 1.0 = 0.2: at the limit, kept
        ([1.0, 1.0, 1.21], True),  # just beyond it
        ([0.5, 1.0, 1.0], True),  # a round far below counts as much as one above
        ([1.0, 1.05, 1.1], False),
    ],
)
def test_the_flag_rule_is_the_spread_of_the_rounds_over_their_median(
    ratios: list[float], flagged: bool
) -> None:
    plain = [[1.0]] * len(ratios)
    summary = speed.ratio_summary([[r] for r in ratios], plain, batch=1)
    assert summary["unreliable"] is flagged
    assert summary["unreliable"] == (summary["spread"] > speed.UNRELIABLE_SPREAD)


def test_rounds_without_times_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty rounds"):
        speed.ratio_summary([[1.0], []], [[1.0], [1.0]], batch=1)
    with pytest.raises(ValueError, match="as many"):
        speed.ratio_summary([[1.0]], [[1.0], [1.0]], batch=1)


def test_rounds_alternate_which_model_goes_first_and_a_block_holds_at_least_one_call() -> None:
    calls: list[str] = []
    fns = {"rotary": lambda: calls.append("r"), "plain": lambda: calls.append("p")}
    blocks = speed.interleaved(fns, seconds=0.0, repeats=4, device=torch.device("cpu"))
    assert calls[:4] == ["r", "r", "p", "p"]  # two untimed warm-up calls of each, then the rounds
    assert "".join(calls[4:]) == "rp" + "pr" + "rp" + "pr"
    assert [len(b) for b in blocks["rotary"]] == [1, 1, 1, 1] and len(blocks["plain"]) == 4
    assert all(len(t) == 2 and min(t) >= 0 for b in blocks["rotary"] for t in b)  # (wall, cpu) per call


def test_a_block_runs_for_its_share_of_the_budget_on_the_wall_clock() -> None:
    """0.08 s over 2 models and 2 rounds: each block calls a 5 ms function until 0.02 s have passed."""
    fns = {"rotary": lambda: time.sleep(0.005), "plain": lambda: time.sleep(0.005)}
    blocks = speed.interleaved(fns, seconds=0.08, repeats=2, device=torch.device("cpu"))
    for block in blocks["rotary"] + blocks["plain"]:
        walls = [wall for wall, _ in block]
        assert sum(walls[:-1]) < 0.02 <= sum(walls)  # stops at the first call past its share


def test_the_clock_is_wall_on_a_gpu_and_cpu_time_on_a_cpu() -> None:
    assert speed.clock_for(torch.device("cpu")) == "cpu"
    assert speed.clock_for(torch.device("cuda", 0)) == "wall"
    load = speed.load_average()
    assert load is None or (len(load) == 3 and all(v >= 0 for v in load))


@pytest.mark.slow
def test_a_measurement_of_tiny_models_records_every_field_and_leaves_the_weights_alone() -> None:
    shape = {"patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    rotary = create_vit("vit_tiny_patch16_224", pe="axial_block", num_classes=3, img_size=16, **shape)
    plain = create_vit("vit_tiny_patch16_224", pe="none", num_classes=3, img_size=16, **shape)
    before = {k: v.clone() for k, v in rotary.state_dict().items()}
    dims = speed.Shape(input_size=16, train_batch=4, infer_batch=4, num_classes=3)
    absolute, record = speed.measure_speed(rotary, rotary, plain, dims, torch.device("cpu"), None, 0.0)
    assert absolute["infer_img_per_s"] > 0 and absolute["infer_latency_ms"] > 0
    for kind, batch in (("train", 4), ("infer", 4), ("latency", 1)):
        summary = record[kind]
        assert len(summary["ratios"]) == speed.REPEATS and summary["batch"] == batch
        assert summary["low"] <= summary["median"] <= summary["high"] and summary["calls"] == [5, 5]
    assert record["clock"] == "cpu" and record["clock_function"] == "time.process_time"
    assert record["threads"] == torch.get_num_threads() and record["eager"] is True
    assert record["unreliable_above"] == speed.UNRELIABLE_SPREAD and record["budget_s"] == 0.0
    assert set(record) == set(speed.SpeedRecord.__annotations__)
    assert all(torch.equal(before[k], v) for k, v in rotary.state_dict().items())  # training ran on copies
    flat = speed.flat_ratios(record)
    assert flat["train_time_vs_none"] == record["train"]["median"]
    assert flat["speed_unreliable"] == any(record[k]["unreliable"] for k in speed.KINDS)
    assert speed.flat_ratios(None) == dict.fromkeys([*speed.RATIO_KEYS.values(), "speed_unreliable"])
    json.dumps(record, allow_nan=False)
