"""``dataset=imagefolder``: your own images in the ImageNet layout, through timm's data pipeline.

    <dataset.root>/train/<class>/*.{jpg,jpeg,png,...}   training images (validation is held out of them)
    <dataset.root>/val/<class>/*                        the test split (ImageNet's "val")

The class folders of ``val/`` must be those of ``train/``. Images are found by timm's folder reader
(``timm.data.readers.ReaderImageFolder``), read by ``ImageFiles`` and transformed one by one in DataLoader
workers by timm's transforms (``timm.data.create_transform``): random-resized crop and flip for training, plus the
recipe's RandAugment and random erasing (``conf/recipe``), resize and centre crop for evaluation. The
validation split is ``dataset.val_fraction`` of ``train/``, held out exactly as for the other datasets
(``rope_ext.data.split_validation``), and evaluated with the evaluation transform.

Files: the folders are walked once before any image is read (``check_root``), bounded: every directory
is visited once (a folder reached twice through links, e.g. a link loop, is refused, as timm's own walk
follows links and would not end), and every image name must be a regular file (a FIFO, socket or device
named ``x.png`` is refused by its type before it is opened, so it cannot block a worker). Each image is
opened again as a regular file only and refused when it declares more than ``PIL.Image.MAX_IMAGE_PIXELS``
pixels (a decompression bomb) or cannot be decoded: ``ImageFileError`` (exit 2) names the file, also
from a DataLoader worker. Images are never skipped silently.

Exact resume: every image's random augmentation is drawn from a generator seeded by (run seed, epoch,
image index) (``Transformed``), not from the worker processes' own streams, so a run resumed mid-epoch
draws the same crops, flips and RandAugment ops as the uninterrupted run, whatever the number of workers.
"""

from __future__ import annotations

import errno
import os
import random
import stat
import warnings
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


class ImageFileError(ConfigError):
    """An image file that is not read (not a regular file, too many pixels, not decodable); the message
    names it. Raised in a DataLoader worker, it comes back as one string holding the worker's
    traceback before the message: only the message is kept."""

    def __init__(self, message: str) -> None:
        super().__init__(message.rsplit(f"{type(self).__name__}: ", 1)[-1].strip())


def check_root(root: Path) -> list[str]:
    """The class names of an ImageNet-layout folder (sorted), or ConfigError naming what is wrong
    (a missing split, no classes, a class without images, a link loop, an image that is no regular
    file)."""
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
        counts = count_images(folder)
        empty = [n for n in names if not counts.get(n)]
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


def count_images(split: Path) -> dict[str, int]:
    """{class folder: number of images under it} of a split, walking links as timm's reader does
    (``os.walk(followlinks=True)``) but visiting each directory once: ConfigError for a directory
    reached twice (a link loop, or two links to one folder), for an image name that is not a regular
    file or cannot be read, or for a folder that cannot be listed. Stats each entry once."""
    counts: dict[str, int] = {}
    seen = {_identity(split)}
    stack = [(split, "")]
    while stack:
        folder, top = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            raise ConfigError(f"dataset=imagefolder: {folder} cannot be listed ({_why(err)})") from None
        for entry in entries:
            image = Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS
            try:
                st = os.stat(entry.path)  # follows links, like timm's walk
            except OSError as err:
                if image:
                    raise ConfigError(
                        f"dataset=imagefolder: {entry.path} cannot be read ({_why(err)}); remove it or fix "
                        "the link"
                    ) from None
                continue  # not an image to timm either (a dangling or looping link named e.g. notes)
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in seen:
                    raise ConfigError(
                        f"dataset=imagefolder: {entry.path} leads to a folder already reached under "
                        f"{split} (a link loop, or a second link to one folder): timm's reader follows "
                        "links and would read it again or never finish. Remove the link."
                    )
                seen.add((st.st_dev, st.st_ino))
                stack.append((Path(entry.path), top or entry.name))
            elif image:
                if not stat.S_ISREG(st.st_mode):
                    raise ConfigError(
                        f"dataset=imagefolder: {entry.path} is a {_kind(st.st_mode)}, not a regular file; "
                        "reading it could block or never end. Remove it."
                    )
                if top:
                    counts[top] = counts.get(top, 0) + 1
    return counts


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _why(err: OSError) -> str:
    return f"errno {err.errno} {errno.errorcode.get(err.errno or 0, '?')}: {err.strerror}"


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISFIFO: "FIFO (named pipe)",
        stat.S_ISSOCK: "socket",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
        stat.S_ISDIR: "directory",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def open_image(path: str) -> Any:
    """The RGB PIL image in ``path``, opened only as a regular file (never blocking on a FIFO) and
    refused above ``PIL.Image.MAX_IMAGE_PIXELS`` pixels before its pixels are decoded."""
    from PIL import Image

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ImageFileError(f"dataset=imagefolder: {path} cannot be opened ({_why(err)})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageFileError(f"dataset=imagefolder: {path} is a {_kind(mode)}, not a regular file")
        limit = Image.MAX_IMAGE_PIXELS
        bomb = (
            f"dataset=imagefolder: {path} declares more than {limit} pixels (PIL.Image.MAX_IMAGE_PIXELS): "
            "a decompression bomb, or an image far larger than a model input; resize or remove it"
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(f)
                if limit and image.width * image.height > limit:
                    raise ImageFileError(bomb + f" ({image.width} x {image.height})")
                return image.convert("RGB")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageFileError(bomb) from None
        except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for a damaged or foreign file
            raise ImageFileError(
                f"dataset=imagefolder: {path} cannot be decoded as an image ({err})"
            ) from None


class ImageFiles(Dataset):
    """``(RGB PIL image, label)`` of the (path, label) samples found by timm's folder reader, each read
    by ``open_image``: a bad file stops the run naming it (timm's dataset would skip it silently)."""

    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        return open_image(path), int(label)


def imagefolder_datasets(dataset: DictConfig) -> tuple[Dataset, Dataset, int]:
    """(train images as PIL, untransformed; test images transformed for evaluation; number of classes)."""
    from timm.data.readers.reader_image_folder import ReaderImageFolder

    root = Path(str(dataset.root)).expanduser()
    classes = check_root(root)
    readers = {split: ReaderImageFolder(str(root / split)) for split in SPLITS}
    if any(list(r.class_to_idx) != classes for r in readers.values()):
        raise ConfigError(f"dataset=imagefolder: timm read other class folders under {root} than {classes}")
    train, test = (ImageFiles(readers[split].samples) for split in SPLITS)
    return train, Transformed(test, eval_transform(dataset)), len(classes)


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
