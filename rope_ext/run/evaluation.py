"""Evaluation of a trained model (``conf/eval``): accuracy, the sweep over input sizes, the shift test of
the relative property (its speed: ``rope_ext.run.speed``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from rope_ext.encoding.relativity import shift_metrics
from rope_ext.loader import Batches, BatchTransform
from rope_ext.run import distributed
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
    evaluator: nn.Module | None = None,
) -> dict[str, Any]:
    """The test split once, at the end: ``test_acc`` (at the training size), ``test_acc_at`` (str(size)
    -> accuracy for every size of the sweep) and the whole model's relativity under a one-patch shift
    (``shift_error``, ``test_acc_shifted``: ``rope_ext.encoding.relativity``).

    ``test_at(size)`` gives the test batches at ``size`` (resized, or redrawn where the dataset can).
    ``evaluator`` (default ``model``) runs the training size, as it ran validation (the compiled model
    under ``hardware.compile``); the other sizes and the shift test run ``model``.
    """
    at_input_size = model if evaluator is None else evaluator

    def accuracy(size: int) -> float:
        return evaluate(at_input_size if size == input_size else model, test_at(size), device, amp_dtype)

    test_acc_at = {str(size): accuracy(size) for size in sizes}
    test = test_at(input_size)
    test_acc = test_acc_at.get(str(input_size))
    if test_acc is None:
        test_acc = accuracy(input_size)
    shift = shift_metrics(model, test, lambda: evaluate(model, test, device, amp_dtype))
    return {"test_acc": test_acc, "test_acc_at": test_acc_at, **shift}
