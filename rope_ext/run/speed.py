"""A run's speed as a ratio to a plain ViT of the same shape, measured at the end of the run in the same
process, so that a sweep on a shared machine compares its arms by what load cannot move.

The plain twin is the same timm model with ``pe=none`` (the learned position table a ``pe=none`` run
trains) at the same input size, batch sizes, autocast dtype and threads; both run eager. Three
measurements (``KINDS``): ``train``, one step (forward, backward and an AdamW step on random images at
``train.batch_size``; on copies, the run's weights are untouched); ``infer``, a forward at
``eval.batch_size`` without gradients; ``latency``, a forward of one image. ``infer`` and ``latency`` time
``fold_for_inference`` of the model where ``eval.fold`` says so.

Each measurement runs ``REPEATS`` rounds, as ``rope_ext.bench`` interleaves its variants: a round times a
block of rotary calls and a block of plain calls, the first of the two alternating from round to round,
so drift in the machine's load hits both alike. A round's ratio is the rotary block's median call time
over the plain block's (> 1: the rotary model is slower). The record keeps the median of the round
ratios, their minimum and maximum and every round's ratio. The flag rule: a measurement whose
``(max - min) / median`` exceeds ``UNRELIABLE_SPREAD`` is too noisy to compare, and a run with such a
measurement records ``speed_unreliable: true``.

Budget: each measurement gets ``eval.bench_seconds`` of wall time, half for each model, after two warm-up
calls of each; a block calls its model until its share is spent, at least once, so a model slower than
the budget costs ``REPEATS`` calls of each.

Clock (``clock_for``): on a GPU the wall clock (``time.perf_counter`` after the device's queued work);
on a CPU the process's CPU time (``time.process_time``, all its threads), which leaves out the time other
jobs on a shared machine hold the cores. The absolute ``infer_img_per_s`` and ``infer_latency_ms`` are
the rotary model's calls of the same measurement on the wall clock.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import torch
from torch import nn

from rope_ext.config import resolve_pe
from rope_ext.report.tables import UNRELIABLE_MARK
from rope_ext.run.model import create_model
from rope_ext.schema import ModelConfig

__all__ = [
    "KINDS",
    "RATIO_KEYS",
    "RATIO_NOTE",
    "REPEATS",
    "UNRELIABLE_SPREAD",
    "RatioSummary",
    "SpeedRecord",
    "clock_for",
    "interleaved",
    "measure_speed",
    "plain_twin",
    "ratio_summary",
]

REPEATS = 5
UNRELIABLE_SPREAD = 0.2  # (max - min) / median of the round ratios above this: speed_unreliable
KINDS = ("train", "infer", "latency")
# metrics.json's flat keys of each measurement's median ratio (what W&B and the dashboard plot)
RATIO_KEYS = {"train": "train_time_vs_none", "infer": "infer_time_vs_none", "latency": "latency_vs_none"}
# what the tables and plots say under a ratio column, once
RATIO_NOTE = (
    "`×none` (time): the run's time over a plain ViT of the same shape (pe=none, same model, input size, "
    "batch, dtype, threads), timed interleaved in the same process at the end of the run: median of "
    f"{REPEATS} rounds [smallest, largest round]; > 1 is slower. {UNRELIABLE_MARK}: speed_unreliable, "
    f"the rounds spread more than {UNRELIABLE_SPREAD:g} × the median ((max − min) / median): too noisy "
    "to compare (a loaded machine); rerun it on a quieter one."
)
CLOCK_NAMES = {"wall": "time.perf_counter", "cpu": "time.process_time"}

# per model label, per round, the (wall, cpu) seconds of each call of its block
Blocks = dict[str, list[list[tuple[float, float]]]]


class RatioSummary(TypedDict):
    """One measurement: rotary call time over plain call time, over the rounds."""

    median: float
    low: float  # the smallest round ratio
    high: float  # the largest
    spread: float  # (high - low) / median
    ratios: list[float]  # every round's, in order
    unreliable: bool  # spread > UNRELIABLE_SPREAD
    calls: list[int]  # calls timed in all: [rotary, plain]
    batch: int


class SpeedRecord(TypedDict):
    """metrics.json's ``speed_vs_none``."""

    train: RatioSummary
    infer: RatioSummary
    latency: RatioSummary
    repeats: int
    clock: str  # "wall" (time.perf_counter) or "cpu" (time.process_time)
    clock_function: str
    threads: int
    load_avg_start: list[float] | None  # os.getloadavg(): 1, 5 and 15 minutes; None where unavailable
    load_avg_end: list[float] | None
    budget_s: float  # per measurement, both models together
    seconds: float  # wall time the three measurements took, warm-up included
    unreliable_above: float  # UNRELIABLE_SPREAD
    eager: bool


def clock_for(device: torch.device) -> str:
    """``wall`` on a GPU (its work is not this process's CPU time), ``cpu`` on a CPU."""
    return "wall" if device.type == "cuda" else "cpu"


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, None where the OS does not say."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def ratio_summary(
    rotary: Sequence[Sequence[float]], plain: Sequence[Sequence[float]], batch: int
) -> RatioSummary:
    """The summary of rounds of call times (seconds, one list per round and model): each round's ratio
    of medians, their median, min, max, spread and the flag rule (module docstring)."""
    if not rotary or len(rotary) != len(plain) or not all(rotary) or not all(plain):
        raise ValueError("ratio_summary needs as many non-empty rounds of rotary as of plain call times")
    ratios = [statistics.median(r) / statistics.median(p) for r, p in zip(rotary, plain)]
    mid = statistics.median(ratios)
    spread = (max(ratios) - min(ratios)) / mid
    return {
        "median": mid,
        "low": min(ratios),
        "high": max(ratios),
        "spread": spread,
        "ratios": ratios,
        "unreliable": spread > UNRELIABLE_SPREAD,
        "calls": [sum(map(len, rotary)), sum(map(len, plain))],
        "batch": batch,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall, cpu) seconds of one call, the device's queued work included."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleaved(
    calls: dict[str, Callable[[], None]], seconds: float, repeats: int, device: torch.device
) -> Blocks:
    """``repeats`` rounds of one block of calls per label, the labels' order reversed every other round,
    after two untimed warm-up calls of each. A block calls its function until it has run for its share of
    ``seconds`` (split evenly over labels and rounds) on the wall clock, at least once: the budget holds
    on a loaded machine too, overshot by at most one call per block."""
    for fn in calls.values():
        for _ in range(2):  # the first calls pay for allocation and kernel selection: not counted
            fn()
    share = seconds / len(calls) / repeats
    labels = list(calls)
    blocks: Blocks = {label: [] for label in labels}
    for round_ in range(repeats):
        for label in labels if round_ % 2 == 0 else labels[::-1]:
            block = [_timed(calls[label], device)]
            while sum(wall for wall, _ in block) < share:
                block.append(_timed(calls[label], device))
            blocks[label].append(block)
    return blocks


def plain_twin(model: ModelConfig, num_classes: int, img_size: int, device: torch.device) -> nn.Module:
    """The plain ViT of ``model``'s shape (``pe=none``, fresh weights: no download, no checkpoint), built
    without touching the global random state."""
    plain = dataclasses.replace(model, pretrained=False, checkpoint=None)
    with torch.random.fork_rng(devices=[]):
        return create_model(
            plain, resolve_pe({"name": "none"}, None), num_classes=num_classes, img_size=img_size
        )


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def _train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp: Callable[[], Any]
) -> Callable[[], None]:
    """One training step of ``model`` (a copy: its weights move) on images ``x`` (B, 3, H, W), labels ``y``."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)

    def step() -> None:
        with amp():
            loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _forward(model: nn.Module, x: torch.Tensor, amp: Callable[[], Any]) -> Callable[[], None]:
    model.eval()

    def forward() -> None:
        with torch.no_grad(), amp():
            model(x)

    return forward


@dataclasses.dataclass
class Shape:
    """What both models are measured at."""

    input_size: int
    train_batch: int
    infer_batch: int
    num_classes: int


def measure_speed(
    trained: nn.Module,
    inference: nn.Module,
    plain: nn.Module,
    shape: Shape,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    seconds: float,
) -> tuple[dict[str, float], SpeedRecord]:
    """The absolute inference speeds of ``inference`` (``infer_img_per_s``, ``infer_latency_ms``) and the
    ratios of ``trained`` (training) and ``inference`` to ``plain`` (module docstring); ``seconds`` per
    measurement."""
    clock = clock_for(device)
    index = 0 if clock == "wall" else 1
    began, load_start = time.perf_counter(), load_average()
    amp = lambda: _autocast(device, amp_dtype)  # noqa: E731 - a fresh context per call
    size = shape.input_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape.train_batch, 3, size, size, generator=gen).to(device)
    y = torch.randint(0, shape.num_classes, (shape.train_batch,), generator=gen).to(device)
    big = torch.randn(shape.infer_batch, 3, size, size, generator=gen).to(device)
    one = torch.randn(1, 3, size, size, generator=gen).to(device)
    # training moves weights: copies of both models train, the plain one stays as built for inference
    train_calls = {
        "rotary": _train_step(copy.deepcopy(trained), x, y, amp),
        "plain": _train_step(copy.deepcopy(plain), x, y, amp),
    }
    runs = {
        "train": (train_calls, shape.train_batch),
        "infer": (
            {"rotary": _forward(inference, big, amp), "plain": _forward(plain, big, amp)},
            shape.infer_batch,
        ),
        "latency": ({"rotary": _forward(inference, one, amp), "plain": _forward(plain, one, amp)}, 1),
    }
    summaries, absolute = {}, {}
    for kind, (calls, batch) in runs.items():
        blocks = interleaved(calls, seconds, REPEATS, device)
        picked = {k: [[t[index] for t in block] for block in v] for k, v in blocks.items()}
        summaries[kind] = ratio_summary(picked["rotary"], picked["plain"], batch)
        wall = [t[0] for block in blocks["rotary"] for t in block]
        if kind == "infer":
            absolute["infer_img_per_s"] = batch * len(wall) / sum(wall)
        elif kind == "latency":
            absolute["infer_latency_ms"] = 1000.0 * statistics.median(wall)
    record: SpeedRecord = {
        **summaries,  # type: ignore[typeddict-item]
        "repeats": REPEATS,
        "clock": clock,
        "clock_function": CLOCK_NAMES[clock],
        "threads": int(torch.get_num_threads()),
        "load_avg_start": load_start,
        "load_avg_end": load_average(),
        "budget_s": float(seconds),
        "seconds": time.perf_counter() - began,
        "unreliable_above": UNRELIABLE_SPREAD,
        "eager": True,
    }
    return absolute, record


def flat_ratios(record: SpeedRecord | None) -> dict[str, Any]:
    """metrics.json's top-level speed keys from ``record`` (None without a measurement: another rank):
    each measurement's median ratio (``RATIO_KEYS``) and ``speed_unreliable``."""
    if record is None:
        return {**{key: None for key in RATIO_KEYS.values()}, "speed_unreliable": None}
    out: dict[str, Any] = {RATIO_KEYS[k]: record[k]["median"] for k in KINDS}  # type: ignore[literal-required]
    out["speed_unreliable"] = any(record[k]["unreliable"] for k in KINDS)  # type: ignore[literal-required]
    return out
