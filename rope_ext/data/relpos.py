"""``dataset=relpos``: the synthetic relative-position task of ``rope_ext.relpos`` (8 classes), generated
in memory from ``dataset.seed``; its validation set is generated apart rather than held out of train."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rope_ext.data.registry import DatasetConfig, DatasetInfo, register
from rope_ext.errors import ConfigError
from rope_ext.fields import MAX_IMAGES, MAX_SEED, key

if TYPE_CHECKING:
    from torch.utils.data import Dataset

# rope_ext.relpos.NUM_CLASSES (4 directions × near/far), written out: that module builds the images with
# torch, and registering the dataset must not import it (tests/harness/test_light_entry.py holds the two equal).
NUM_CLASSES = 8


@dataclass
class RelposConfig(DatasetConfig):
    train_size: int = key(5000, ge=1, le=MAX_IMAGES)
    test_size: int = key(1000, ge=1, le=MAX_IMAGES)
    seed: int = key(0, ge=0, le=MAX_SEED, replicate=True, help="the data's seed")


def build(dataset: Any) -> tuple[Dataset, Dataset, int]:
    from rope_ext.relpos import relpos_datasets

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
    from rope_ext.relpos import relpos_validation

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
