"""The relpos diagnostic dataset: labels correct by construction, objects anywhere, canvas-size invariance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rope_ext.relpos import (
    NUM_CLASSES,
    RelPosDataset,
    label_from_offset,
    relpos_datasets,
)

ANCHOR = torch.tensor([230, 40, 40], dtype=torch.uint8)
TARGET = torch.tensor([40, 230, 40], dtype=torch.uint8)


def _find(image: torch.Tensor, color: torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the pixels of exactly ``color`` in a uint8 CHW image."""
    mask = (image == color.view(3, 1, 1)).all(dim=0)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    assert len(xs) > 0, "object not drawn"
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _label_from_pixels(image: torch.Tensor) -> tuple[int, int]:
    """Recompute the class from the rendered pixels alone (independently of the generator's bookkeeping)."""
    ax0, ay0, ax1, ay1 = _find(image, ANCHOR)
    tx0, ty0, tx1, ty1 = _find(image, TARGET)
    size = ax1 - ax0 + 1
    dx, dy = tx0 - ax0, ty0 - ay0
    if abs(dx) > abs(dy):
        direction = 0 if dx > 0 else 1  # right, left
    else:
        direction = 2 if dy > 0 else 3  # below (y grows downwards), above
    far = max(abs(dx), abs(dy)) > 11
    return 2 * direction + int(far), size


def test_labels_correct_by_construction() -> None:
    train, test, num_classes = relpos_datasets(input_size=32, train_size=400, test_size=100, seed=3)
    assert num_classes == NUM_CLASSES == 8
    for ds in (train, test):
        for i in range(len(ds)):
            label, size = _label_from_pixels(ds.images[i])
            assert size == 4
            assert label == int(ds.labels[i]) == int(ds[i][1])
    counts = torch.bincount(train.labels, minlength=8)
    assert (counts > 400 / 8 * 0.5).all(), f"classes unbalanced: {counts.tolist()}"


def test_hand_computed_labels() -> None:
    assert label_from_offset(10, 3) == 0  # right, near
    assert label_from_offset(-15, 14) == 3  # left, far
    assert label_from_offset(2, 9) == 4  # below, near
    assert label_from_offset(0, -12) == 7  # above, far
    with pytest.raises(ValueError, match="ambiguous"):
        label_from_offset(9, -9)


def test_objects_anywhere_on_the_canvas() -> None:
    ds = RelPosDataset(2000, input_size=32, seed=0)
    corners = torch.cat([ds.anchors, ds.targets])
    assert corners.min() == 0 and corners.max() == 32 - 4  # both edges reached, never outside
    # every 4x4 cell of the canvas is touched by some object (no fixed layout)
    hit = torch.zeros(8, 8, dtype=torch.bool)
    hit[corners[:, 1] // 4, corners[:, 0] // 4] = True
    assert hit.all()
    # the anchor itself visits the whole canvas for every direction
    for direction in range(4):
        sel = ds.labels // 2 == direction
        assert ds.anchors[sel].float().std(dim=0).min() > 4.0


def test_larger_canvas_keeps_objects_and_offsets() -> None:
    small = RelPosDataset(1500, input_size=32, seed=1)
    large = small.at_input_size(64)
    assert large.images.shape[-2:] == (64, 64) and large.object_size == small.object_size
    # same object size in pixels, not a resized image
    assert _label_from_pixels(large.images[0])[1] == 4
    for ds in (small, large):
        off = (ds.targets - ds.anchors).abs().max(dim=1).values
        assert off.min() == 8 and off.max() == 15
    # the larger canvas uses positions the small one cannot reach
    assert large.targets.max() > 32 and large.anchors.max() > 32
    same = relpos_datasets(64, 10, 1500, seed=0)[1]
    assert torch.equal(same.images, RelPosDataset(1500, input_size=64, seed=1).images)


def test_deterministic_and_splits_independent() -> None:
    a_train, a_test, _ = relpos_datasets(32, 50, 50, seed=0)
    b_train, _, _ = relpos_datasets(32, 50, 50, seed=0)
    c_train, _, _ = relpos_datasets(32, 50, 50, seed=1)
    assert torch.equal(a_train.images, b_train.images)
    assert not torch.equal(a_train.images, a_test.images)
    assert not torch.equal(a_train.images, c_train.images)
    image, label = a_train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and label.dtype == torch.int64
    assert isinstance(a_train, torch.utils.data.TensorDataset) and len(a_train) == 50


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"input_size": 18}, "input_size=18"),
        ({"train_size": 0}, "size=0"),
        ({"seed": -1}, "seed=-1"),
        ({"near_max": 30}, "near_max=30"),
    ],
)
def test_bad_input_names_key_and_allowed(kwargs: dict, key: str) -> None:
    args = {"input_size": 32, "train_size": 10, "test_size": 10, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=key):
        relpos_datasets(**args)


def test_harness_redraws_relpos_on_a_larger_canvas_for_extrapolation() -> None:
    """The harness's eval.input_sizes path: ``DataSplits.test_at`` redraws relpos natively, no resizing."""
    from omegaconf import OmegaConf

    from rope_ext.data import build_datasets

    node = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "dataset" / "relpos.yaml")
    node.input_size, node.train_size, node.test_size, node.subset = 24, 16, 200, 100
    splits = build_datasets(node)
    assert splits.num_classes == 8 and len(splits.test) == 100
    big = splits.test_at(48)
    assert big is not None and len(big) == 100  # the subset is kept
    image, label = big[0]
    assert image.shape == (3, 48, 48)
    recomputed, size = _label_from_pixels(image)
    assert size == 4 and recomputed == int(label)  # same object size, label still true on the new canvas
    base = big.dataset
    assert (base.targets - base.anchors).abs().max() <= 15 and base.targets.max() > 24


def test_large_test_sets_are_fast_and_labels_match_the_scalar_rule() -> None:
    import time

    start = time.perf_counter()
    ds = RelPosDataset(5000, input_size=48, seed=11)
    assert time.perf_counter() - start < 5.0  # vectorised: 5000 48-px images, no per-image Python loop
    offsets = (ds.targets - ds.anchors).tolist()
    assert ds.labels.tolist() == [label_from_offset(dx, dy) for dx, dy in offsets]
    for i in range(0, 5000, 499):  # the pixels say the same as the bookkeeping
        label, size = _label_from_pixels(ds.images[i])
        assert size == 4 and int(ds.labels[i]) == label
    # binomial standard error of an accuracy on 5000 images is below 0.75 points at worst (p = 0.5)
    assert 100 * (0.25 / 5000) ** 0.5 < 0.75
