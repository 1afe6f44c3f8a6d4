"""``dataset=imagefolder``: your own images in the ImageNet layout, through timm's data pipeline.

    <dataset.root>/train/<class>/*.{jpg,jpeg,png,...}   training images (validation is held out of them)
    <dataset.root>/val/<class>/*                        the test split (ImageNet's "val")

The class folders of ``val/`` must be those of ``train/``. Images are read by timm
(``timm.data.create_dataset``, a folder reader) and transformed one by one in DataLoader workers by timm's
transforms (``timm.data.create_transform``): random-resized crop and flip for training, plus the
recipe's RandAugment and random erasing (``conf/recipe``), resize and centre crop for evaluation. The
validation split is ``dataset.val_fraction`` of ``train/``, held out exactly as for the other datasets
(``rope_ext.data.split_validation``), and evaluated with the evaluation transform.

Exact resume: every image's random augmentation is drawn from a generator seeded by (run seed, epoch,
image index) (``Transformed``), not from the worker processes' own streams, so a run resumed mid-epoch
draws the same crops, flips and RandAugment ops as the uninterrupted run, whatever the number of workers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from rope_ext.errors import ConfigError
from rope_ext.util import select

SPLITS = ("train", "val")
# what timm's folder reader accepts (timm.data.readers.img_extensions)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def check_root(root: Path) -> list[str]:
    """The class names of an ImageNet-layout folder (sorted), or ConfigError naming what is wrong."""
    fix = f"dataset.root must hold train/<class>/<images> and val/<class>/<images> (got {root})"
    if not root.is_dir():
        raise ConfigError(f"dataset=imagefolder: dataset.root={root} is not a folder; {fix}.")
    classes: dict[str, list[str]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise ConfigError(f"dataset=imagefolder: {folder} is missing; {fix}.")
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not names:
            raise ConfigError(f"dataset=imagefolder: {folder} has no class folders; {fix}.")
        empty = [n for n in names if not any(_is_image(f) for f in (folder / n).rglob("*"))]
        if empty:
            raise ConfigError(
                f"dataset=imagefolder: class folder(s) {empty[:5]} of {folder} hold no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); {fix}."
            )
        classes[split] = names
    if classes["val"] != classes["train"]:
        only_train = sorted(set(classes["train"]) - set(classes["val"]))
        only_val = sorted(set(classes["val"]) - set(classes["train"]))
        raise ConfigError(
            f"dataset=imagefolder: the class folders of {root / 'val'} differ from those of "
            f"{root / 'train'} (only in train: {only_train[:5]}, only in val: {only_val[:5]}); the labels "
            "are the class folders' positions in sorted order, so both splits need the same ones."
        )
    if len(classes["train"]) < 2:
        raise ConfigError(
            f"dataset=imagefolder: {root / 'train'} has one class folder; a classifier needs two."
        )
    return classes["train"]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def imagefolder_datasets(dataset: DictConfig) -> tuple[Dataset, Dataset, int]:
    """(train images as PIL, untransformed; test images transformed for evaluation; number of classes)."""
    from timm.data import create_dataset

    root = Path(str(dataset.root)).expanduser()
    classes = check_root(root)
    train = create_dataset("", root=str(root), split="train", is_training=True)
    test = create_dataset("", root=str(root), split="val", is_training=False)
    if list(train.reader.class_to_idx) != classes or list(test.reader.class_to_idx) != classes:
        raise ConfigError(f"dataset=imagefolder: timm read other class folders under {root} than {classes}")
    test = Transformed(test, eval_transform(dataset))
    return train, test, len(classes)


def train_transform(dataset: DictConfig, recipe: DictConfig | None) -> Callable[[Any], torch.Tensor]:
    """timm's training transform at ``dataset.input_size``: random-resized crop, flip, the recipe's
    RandAugment (``recipe.auto_augment``) and random erasing (``recipe.re_prob``), normalisation."""
    from timm.data import create_transform

    return create_transform(
        int(dataset.input_size),
        is_training=True,
        hflip=0.5 if select(dataset, "augment.hflip", True) else 0.0,
        scale=tuple(select(dataset, "augment.scale", (0.08, 1.0))),
        auto_augment=select(recipe, "auto_augment") if recipe is not None else None,
        re_prob=float(select(recipe, "re_prob", 0.0)) if recipe is not None else 0.0,
        re_mode=str(select(recipe, "re_mode", "pixel")) if recipe is not None else "pixel",
        interpolation=str(select(dataset, "interpolation", "bicubic")),
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
    )


def eval_transform(dataset: DictConfig) -> Callable[[Any], torch.Tensor]:
    """timm's evaluation transform: resize to input_size / crop_pct, centre crop, normalisation."""
    from timm.data import create_transform

    return create_transform(
        int(dataset.input_size),
        is_training=False,
        crop_pct=float(select(dataset, "crop_pct", 0.875)),
        interpolation=str(select(dataset, "interpolation", "bicubic")),
        mean=tuple(dataset.mean),
        std=tuple(dataset.std),
    )


class Transformed(Dataset):
    """``source[i]`` = (image, label) through ``transform``; random ops seeded by (seed, epoch, i).

    The epoch lives in shared memory, so that ``set_epoch`` reaches DataLoader workers that are
    already running (persistent workers); it is set before each epoch's batches are requested.
    """

    def __init__(self, source: Dataset, transform: Callable[[Any], torch.Tensor]) -> None:
        self.source, self.transform = source, transform
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()  # (seed, epoch)

    def set_epoch(self, epoch: int, seed: int = 0) -> None:
        self._state[0], self._state[1] = int(seed), int(epoch)

    def __len__(self) -> int:
        return len(self.source)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.source[index]
        seed, epoch = (int(v) for v in self._state.tolist())
        # one stream per (seed, epoch, image): the same draws in any worker, before and after a resume
        key = (seed * 1_000_003 + epoch) * 1_000_000_007 + int(index)
        # the process's own streams are put back (with num_workers=0 this is the training process)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            random.seed(key)
            np.random.seed(key % 2**32)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(key)
                return self.transform(image), int(label)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def with_transforms(
    train: Dataset, val: Dataset | None, dataset: DictConfig, recipe: DictConfig | None
) -> tuple[Dataset, Dataset | None]:
    """The train split (after subset and validation hold-out) with the training transform, the
    validation split with the evaluation transform."""
    train_t = Transformed(train, train_transform(dataset, recipe))
    return train_t, Transformed(val, eval_transform(dataset)) if val is not None else None
