"""The training recipe (``conf/recipe``): ``basic`` (the default) or ``deit`` (DeiT's ViT recipe, timm's parts).

``recipe=deit`` sets the DeiT schedule (AdamW, lr 5e-4 x global batch / 512, weight decay 0.05, 5 warm-up
epochs, cosine, 300 epochs, label smoothing 0.1) and turns on, from timm:

* RandAugment ``rand-m9-mstd0.5-inc1`` and random erasing (p 0.25): per image, in the DataLoader workers
  of ``dataset=imagefolder`` (``rope_ext.imagefolder``); the in-memory datasets, whose batches are
  augmented on the device, refuse them (set ``recipe.auto_augment=null recipe.re_prob=0``);
* Mixup (alpha 0.8) / CutMix (alpha 1.0), one of them per batch, with label smoothing: on the device, in
  the loss (``timm.data.Mixup`` + ``timm.loss.SoftTargetCrossEntropy``), for every dataset.

Mixup draws from numpy's global generator, which every checkpoint saves, so a resumed run mixes exactly
as the uninterrupted one.
"""

from __future__ import annotations

from typing import Any

from rope_ext.data.registry import get as dataset_info
from rope_ext.data.registry import per_image_names
from rope_ext.errors import ConfigError
from rope_ext.util import select

# the built-in datasets augmented per image (the registry's DatasetInfo.per_image; plugins' included in check)
PER_IMAGE_DATASETS = per_image_names()


def check(cfg: Any) -> None:
    """The recipe's rules across keys (its ranges and choices are the schema's, ``rope_ext.schema``);
    called by ``config.validate`` on the composed config. ConfigError naming key, value and what is allowed.

    The functions below read a job's config by attribute: the typed ``schema.Config`` of
    ``config.resolve`` (or the composed DictConfig)."""
    recipe = select(cfg, "recipe")
    if recipe is None:
        return
    auto_augment = select(recipe, "auto_augment")
    if auto_augment is not None and not str(auto_augment).startswith(("rand", "augmix", "original", "v0")):
        raise ConfigError.bad_value(
            "recipe.auto_augment", auto_augment, "null or a timm policy such as rand-m9-mstd0.5-inc1"
        )
    per_image = [k for k in ("auto_augment", "re_prob") if select(recipe, k)]
    dataset = select(cfg, "dataset.name")
    if per_image and not dataset_info(dataset).per_image:
        raise ConfigError(
            f"recipe={select(recipe, 'name')}: {', '.join(f'recipe.{k}' for k in per_image)} augment each "
            f"image in the DataLoader workers, which dataset={dataset} (batches augmented on the "
            f"device) does not have; allowed with: dataset={'|'.join(per_image_names())}. For "
            f"dataset={dataset} add recipe.auto_augment=null recipe.re_prob=0 (Mixup/CutMix and the "
            "schedule still apply)."
        )
    if mixing(cfg) and int(select(cfg, "train.batch_size")) % 2:
        raise ConfigError.bad_value(
            "train.batch_size",
            select(cfg, "train.batch_size"),
            "an even number with recipe.mixup/cutmix (pairs are mixed)",
        )


def mixing(cfg: Any) -> bool:
    return bool(select(cfg, "recipe.mixup", 0.0) or select(cfg, "recipe.cutmix", 0.0))


def peak_lr(cfg: Any, world_size: int) -> float:
    """``train.lr``, scaled by global batch / ``recipe.lr_batch`` when that is set (DeiT's linear rule)."""
    lr, lr_batch = float(cfg.train.lr), select(cfg, "recipe.lr_batch")
    if lr_batch is None:
        return lr
    return lr * int(cfg.train.batch_size) * world_size / int(lr_batch)


def build_mixup(cfg: Any, num_classes: int) -> Any | None:
    """timm's Mixup/CutMix for the batch (B, 3, H, W) and labels (B,) -> soft targets (B, classes), or None."""
    if not mixing(cfg):
        return None
    from timm.data import Mixup

    recipe = cfg.recipe
    return Mixup(
        mixup_alpha=float(select(recipe, "mixup", 0.0)),
        cutmix_alpha=float(select(recipe, "cutmix", 0.0)),
        prob=float(select(recipe, "mixup_prob", 1.0)),
        switch_prob=float(select(recipe, "mixup_switch_prob", 0.5)),
        mode="batch",
        label_smoothing=float(cfg.train.label_smoothing),
        num_classes=num_classes,
    )
