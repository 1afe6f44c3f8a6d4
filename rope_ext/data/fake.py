"""``dataset=fake``: random images for tests, a class-dependent pattern plus noise (learnable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rope_ext.data.registry import DatasetConfig, DatasetInfo, register
from rope_ext.fields import MAX_IMAGES, key

if TYPE_CHECKING:
    from torch.utils.data import Dataset, TensorDataset


@dataclass
class FakeConfig(DatasetConfig):
    train_size: int = key(256, ge=1, le=MAX_IMAGES)
    test_size: int = key(64, ge=1, le=MAX_IMAGES)
    num_classes: int = key(10, ge=2, le=100_000)
    noise: float = key(1.0, ge=0)


def build(dataset: Any) -> tuple[Dataset, Dataset, int]:
    """Random images: a per-class pattern plus Gaussian noise, fixed by a generator (not the run's seed)."""
    import torch
    from torch.utils.data import TensorDataset

    n_cls, size = int(dataset.num_classes), int(dataset.input_size)
    g = torch.Generator().manual_seed(1234)
    templates = torch.randn(n_cls, 3, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(templates, size=(size, size), mode="nearest")

    def split(n: int) -> TensorDataset:
        labels = torch.randint(0, n_cls, (n,), generator=g)
        images = templates[labels] + float(dataset.noise) * torch.randn(n, 3, size, size, generator=g)
        return TensorDataset(images, labels)

    return split(int(dataset.train_size)), split(int(dataset.test_size)), n_cls


register(DatasetInfo("fake", FakeConfig, build, summary="random class patterns plus noise (tests)"))
