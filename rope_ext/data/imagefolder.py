"""``dataset=imagefolder``: the user's images in the ImageNet layout through timm's per-image pipeline
(``rope_ext.imagefolder``), decoded and augmented in DataLoader workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rope_ext.data.registry import DataAugmentConfig, DatasetConfig, DatasetInfo, register
from rope_ext.errors import ConfigError
from rope_ext.fields import key

if TYPE_CHECKING:  # torch is imported by the builder: registering the dataset must not import it
    from torch.utils.data import Dataset


@dataclass
class ImagefolderAugmentConfig(DataAugmentConfig):
    scale: list[float] = key(factory=lambda: [0.08, 1.0], help="random-resized crop's area range")


@dataclass
class ImagefolderConfig(DatasetConfig):
    """``dataset=imagefolder``: ``root`` in the ImageNet layout, read through timm's data pipeline."""

    root: str | None = key(None, trajectory=False, help="the folder holding train/<class>/ and val/<class>/")
    crop_pct: float = key(0.875, gt=0, le=1, help="evaluation: resize to input_size / crop_pct, centre crop")
    interpolation: str = key("bicubic", choices=("bicubic", "bilinear", "nearest", "random"))
    augment: ImagefolderAugmentConfig = key(factory=ImagefolderAugmentConfig)


def build(dataset: Any) -> tuple[Dataset, Dataset, int]:
    from rope_ext.imagefolder import imagefolder_datasets

    return imagefolder_datasets(dataset)


def finish(train: Any, val: Any, dataset: Any, recipe: Any) -> tuple[Any, Any]:
    """Per-image transforms after the validation split: train's for train, evaluation's for val."""
    from rope_ext.imagefolder import with_transforms

    return with_transforms(train, val, dataset, recipe)


def rules(cfg: Any) -> None:
    """The folder must be named and is read per image; its layout (``rope_ext.imagefolder.check_root``)
    is checked before anything is written wherever the folder is reachable (a cluster job's folder may
    exist only on the nodes, where the job's own check and its reader see it)."""
    dataset = cfg["dataset"]
    if dataset["root"] in (None, ""):
        raise ConfigError.bad_value(
            "dataset.root", dataset["root"], "the folder that holds train/<class>/ and val/<class>/"
        )
    if dataset["in_memory"]:
        raise ConfigError.bad_value(
            "dataset.in_memory", True, "false for dataset=imagefolder (images go through DataLoader workers)"
        )
    root = Path(str(dataset["root"])).expanduser()
    if root.exists():
        from rope_ext.imagefolder import check_root

        check_root(root)


register(
    DatasetInfo(
        "imagefolder",
        ImagefolderConfig,
        build,
        per_image=True,
        rules=rules,
        finish=finish,
        summary="your images in the ImageNet layout (timm pipeline)",
    )
)
