"""Datasets of the harness: one module per dataset registers it (``rope_ext.data.registry``): ``digits``
(embedded), ``cifar10``/``cifar100`` (torchvision), ``fake``, ``relpos``, ``imagefolder``; a user's own
module named by ``plugins=[...]`` adds more.

Every builder returns raw images at their native size (uint8 CHW for real images, float for synthetic
ones) and leaves resizing, augmentation and normalisation to ``rope_ext.loader``, which does them on the
training device batch by batch. ``dataset.subset=N`` keeps the first N train and the first N test images.

Validation: ``dataset.val_fraction`` (default 0.1) holds out that fraction of the training images
(``digits``, CIFAR, ``fake``; after ``subset``) as the validation split that model and learning-rate selection
use; the test split is only ever evaluated, never selected on. The held-out images are a fixed permutation
(generator seed 0), independent of the run's ``seed``: every arm and every seed trains and validates on the
same images, so the seed changes only the initialisation and the data order. ``relpos`` instead generates a
validation set of ``val_fraction × train_size`` images from its own stream of ``dataset.seed`` and keeps all
``train_size`` training images. ``val_fraction=0`` disables validation (no ``val_acc``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rope_ext.data import cifar, digits, digits_rotation, fake, imagefolder, relpos  # noqa: F401  (register the built-ins)
from rope_ext.data.registry import DatasetInfo, get, names
from rope_ext.errors import ConfigError
from rope_ext.util import select

if TYPE_CHECKING:  # torch is imported where the splits are built: the config check reads the registry alone
    from torch.utils.data import Dataset, Subset

log = logging.getLogger(__name__)

__all__ = ["DataSplits", "DatasetInfo", "build_datasets", "get", "names", "split_validation"]


@dataclass
class DataSplits:
    """Train, validation (None when ``val_fraction=0``) and test sets, the number of classes, and how to
    draw the test set at another size."""

    train: Dataset
    test: Dataset
    num_classes: int
    name: str
    val: Dataset | None = None

    def test_at(self, input_size: int) -> Dataset | None:
        """The test set drawn natively at ``input_size`` (synthetic sets that support it), else None:
        the loader then resizes the images."""
        from torch.utils.data import Subset

        base = self.test.dataset if isinstance(self.test, Subset) else self.test
        redraw = getattr(base, "at_input_size", None)
        if redraw is None:
            return None
        redrawn = redraw(input_size)
        return Subset(redrawn, self.test.indices) if isinstance(self.test, Subset) else redrawn


def build_datasets(dataset: Any, recipe: Any = None) -> DataSplits:
    """Build the ``dataset`` config node's train, validation and test sets with its registered builder
    (raises ConfigError on bad input); ``recipe`` (``conf/recipe``): per-image augmentation, where the
    dataset has it."""
    from torch.utils.data import Subset

    info = get(str(dataset.name))
    val_fraction = float(select(dataset, "val_fraction", 0.0))  # in [0, 1): rope_ext.schema
    train, test, num_classes = info.build(dataset)
    val: Dataset | None = None
    if info.validation is not None:
        n_val = round(val_fraction * len(train))
        val = info.validation(train, n_val, dataset) if n_val else None
    subset = select(dataset, "subset")
    if subset is not None:
        _warn_large_subset(int(subset), info.name, len(train), len(test))
        train = Subset(train, range(min(int(subset), len(train))))
        test = Subset(test, range(min(int(subset), len(test))))
    if info.validation is None and val_fraction > 0:
        train, val = split_validation(train, val_fraction)
    if info.finish is not None:
        train, val = info.finish(train, val, dataset, recipe)
    return DataSplits(train, test, num_classes, info.name, val)


def _warn_large_subset(subset: int, name: str, n_train: int, n_test: int) -> None:
    """Say which split ``dataset.subset`` does not cut (it applies before the validation split)."""
    short = [
        f"{split} split ({n} images)" for split, n in (("train", n_train), ("test", n_test)) if n < subset
    ]
    if short:
        log.warning(
            "dataset.subset=%d is larger than dataset=%s's %s: all of its images are used (train: %d of "
            "%d images, before the validation split; test: %d of %d)",
            subset,
            name,
            " and ".join(short),
            min(subset, n_train),
            n_train,
            min(subset, n_test),
            n_test,
        )


def split_validation(train: Dataset, fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """``(train minus validation, validation)``: ``round(fraction × len(train))`` images (at least one,
    at most all but one) drawn by a fixed permutation of ``seed``, independent of the run's seed."""
    import torch
    from torch.utils.data import Subset

    n = len(train)  # type: ignore[arg-type]
    n_val = min(max(round(fraction * n), 1), n - 1)
    if n < 2:
        raise ConfigError(
            f"dataset.val_fraction={fraction}: the train set has {n} image(s), too few to split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())
