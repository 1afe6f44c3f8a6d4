"""``dataset=relpos``: the synthetic relative-position task of ``rope_ext.relpos`` (8 classes), generated
in memory from ``dataset.seed``; its validation set is generated apart rather than held out of train."""

from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from rope_ext.data.registry import DatasetConfig, DatasetInfo, register
from rope_ext.errors import ConfigError
from rope_ext.fields import MAX_IMAGES, MAX_SEED, key
from rope_ext.relpos import NUM_CLASSES, relpos_datasets, relpos_validation


@dataclass
class RelposConfig(DatasetConfig):
    train_size: int = key(5000, ge=1, le=MAX_IMAGES)
    test_size: int = key(1000, ge=1, le=MAX_IMAGES)
    seed: int = key(0, ge=0, le=MAX_SEED, replicate=True, help="the data's seed")


def build(dataset: Any) -> tuple[Dataset, Dataset, int]:
    try:
        return relpos_datasets(
            input_size=int(dataset.input_size),
            train_size=int(dataset.train_size),
            test_size=int(dataset.test_size),
            seed=int(dataset.seed),
        )
    except ValueError as err:
        raise ConfigError(f"dataset=relpos rejected its settings: {err}") from None


def validation(train: Any, size: int, dataset: Any) -> Dataset:
    """``size`` images from the task's own validation stream of ``dataset.seed``."""
    return relpos_validation(train, size)


register(
    DatasetInfo(
        "relpos",
        RelposConfig,
        build,
        num_classes=NUM_CLASSES,
        validation=validation,
        summary="two squares; the label is their relative position",
    )
)
