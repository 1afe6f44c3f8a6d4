"""``dataset=digits_rotation``: a pretext task on the scans of ``dataset=digits`` (Gidaris et al. 2018's
rotation prediction): each scan turned by 0, 90, 180 and 270 degrees, label = the turn (4 classes, chance
25 %). The digit labels are never used, so a model pretrained here and fine-tuned on ``digits`` has
learned from images, not from the target's labels. Same stratified split as ``digits``: train holds the
turns of digits' 1437 training scans, test the turns of its 360 test scans (evaluated, never trained on)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rope_ext.data import digits
from rope_ext.data.registry import DatasetConfig, DatasetInfo, register

if TYPE_CHECKING:
    from torch.utils.data import Dataset

TURNS = 4


def build(dataset: Any = None) -> tuple[Dataset, Dataset, int]:
    """digits' train and test scans, each in its 4 turns (turn-major order), labelled by the turn."""
    train, test, _ = digits.build(dataset)
    return _turned(train), _turned(test), TURNS


def _turned(split: Any) -> Any:
    import torch
    from torch.utils.data import TensorDataset

    images = split.tensors[0]  # [N, 3, 8, 8] uint8
    turned = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(TURNS)])
    labels = torch.arange(TURNS).repeat_interleave(len(images))
    return TensorDataset(turned, labels)


register(
    DatasetInfo(
        "digits_rotation",
        DatasetConfig,
        build,
        num_classes=TURNS,
        summary="digits' scans turned by 0/90/180/270 degrees, label = the turn (a pretext task)",
    )
)
