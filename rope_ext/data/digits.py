"""``dataset=digits``: scikit-learn's 1797 handwritten digit scans (8×8, 17 grey levels), embedded in
scikit-learn (no download), a fixed stratified 80/20 split; grey replicated to 3 channels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rope_ext.data.registry import DatasetConfig, DatasetInfo, register

if TYPE_CHECKING:
    from torch.utils.data import Dataset


def build(dataset: Any = None) -> tuple[Dataset, Dataset, int]:
    """scikit-learn's 1797 handwritten digit scans (8×8, 17 grey levels), a fixed stratified 80/20 split."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch.utils.data import TensorDataset

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().mul(255.0 / 16.0).round().to(torch.uint8)
    images = images[:, None].expand(-1, 3, -1, -1).contiguous()  # grey to RGB: the ViT takes 3 channels
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=digits.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[test_idx], labels[test_idx]),
        10,
    )


register(
    DatasetInfo("digits", DatasetConfig, build, num_classes=10, summary="scikit-learn's 8x8 digit scans")
)
