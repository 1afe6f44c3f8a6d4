"""Per-run measurements of how relative a trained model is end to end (``shift_error``,
``test_acc_shifted`` in metrics.json), called from the trainer's final evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from rope_ext.vit import grid_offset, patch_grids, shift_error, shifted_positions

# The fixed batch and offsets every run is measured with.
SHIFT_IMAGES = 32  # first images of the test split (in order)
SHIFT_PATCHES = 1.0  # shift_error: one grid step per axis
# test_acc_shifted: half the grid per axis (grid_offset's default), an integer number of patches


@torch.no_grad()
def shift_metrics(
    model: nn.Module,
    test_batches: Iterable[tuple[Tensor, Any]],
    evaluate: Callable[[], float],
    test_acc: float,
) -> dict[str, float]:
    """``shift_error`` on the first ``SHIFT_IMAGES`` test images for a one-patch shift of all
    positions, and ``test_acc_shifted``: ``evaluate()`` (test accuracy over the whole split, summed
    over ranks) with every position moved by half the grid. Models without rotary layers have no
    positions to move: 0.0 and ``test_acc``, trivially. Every rank must call it (evaluate reduces)."""
    if not patch_grids(model):
        return {"shift_error": 0.0, "test_acc_shifted": test_acc}
    images = next(iter(test_batches))[0][:SHIFT_IMAGES]
    size = tuple(images.shape[-2:])
    error = shift_error(model, images, grid_offset(model, size, SHIFT_PATCHES))
    with shifted_positions(model, grid_offset(model, size)):
        shifted = evaluate()
    return {"shift_error": error, "test_acc_shifted": shifted}
