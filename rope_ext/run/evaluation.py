"""Evaluation of a trained model (``conf/eval``): accuracy, the sweep over input sizes, the shift test of
the relative property, inference speed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rope_ext.encoding.relativity import shift_metrics
from rope_ext.loader import Batches, BatchTransform
from rope_ext.run import distributed, hardware
from rope_ext.schema import DatasetConfig


def eval_transform(dataset: DatasetConfig, size: int) -> BatchTransform:
    """``dataset``'s normalisation at ``size`` x ``size``, no augmentation."""
    return BatchTransform(size, dataset.mean, dataset.std, train=False)


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Batches, device: torch.device, amp_dtype: torch.dtype | None
) -> float:
    """Top-1 accuracy (%) over the whole split, summed over ranks. ``batches`` yields (x, y):
    images (B, 3, H, W) and labels (B,)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    for x, y in batches:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        correct += (logits.argmax(-1) == y).sum()
        total += y.shape[0]
    model.train(was_training)
    correct_all, total_all = distributed.all_reduce_sum([float(correct.item()), float(total)], device)
    return 100.0 * correct_all / max(total_all, 1.0)


def final_evaluation(
    model: nn.Module,
    test_at: Callable[[int], Batches],
    input_size: int,
    sizes: list[int],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> dict[str, Any]:
    """The test split once, at the end: ``test_acc`` (at the training size), ``test_acc_at`` (str(size)
    -> accuracy for every size of the sweep) and the whole model's relativity under a one-patch shift
    (``shift_error``, ``test_acc_shifted``: ``rope_ext.encoding.relativity``).

    ``test_at(size)`` gives the test batches at ``size`` (resized, or redrawn where the dataset can).
    """
    test_acc_at = {str(size): evaluate(model, test_at(size), device, amp_dtype) for size in sizes}
    test = test_at(input_size)
    test_acc = test_acc_at.get(str(input_size))
    if test_acc is None:
        test_acc = evaluate(model, test, device, amp_dtype)
    shift = shift_metrics(model, test, lambda: evaluate(model, test, device, amp_dtype))
    return {"test_acc": test_acc, "test_acc_at": test_acc_at, **shift}


@torch.no_grad()
def benchmark_inference(
    model: nn.Module,
    input_size: int,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    seconds: float,
) -> dict[str, float]:
    """Throughput at ``batch_size`` and median batch-1 latency, each measured for about ``seconds`` on
    random images (B, 3, input_size, input_size).

    Single calls are timed (``hardware.now`` waits for the GPU), not blocks of calls as
    ``torch.utils.benchmark.Timer.blocked_autorange`` does: the latency is the median of single calls,
    which a busy machine's hiccups move less than a median of few block means, and which earlier runs
    reported (their numbers stay comparable).
    """
    model.eval()

    def timed(x: torch.Tensor, min_iters: int) -> list[float]:
        def forward() -> None:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(x)

        for _ in range(2):  # warm-up: the first calls pay for allocations and kernel selection
            forward()
        times: list[float] = []
        begin = hardware.now(device)
        while len(times) < min_iters or sum(times) < seconds:
            t0 = hardware.now(device)
            forward()
            times.append(hardware.now(device) - t0)
            if hardware.now(device) - begin > 10 * max(seconds, 0.1) and len(times) >= min_iters:
                break  # a slow model: stop at 10x the budget (the timing's own cost included)
        return times

    big = timed(torch.randn(batch_size, 3, input_size, input_size, device=device), min_iters=3)
    one = sorted(timed(torch.randn(1, 3, input_size, input_size, device=device), min_iters=5))
    return {
        "infer_img_per_s": batch_size * len(big) / sum(big),
        "infer_latency_ms": 1000.0 * one[len(one) // 2],
    }
