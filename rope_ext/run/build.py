"""The run's parts, built from their own typed configs: the data as device-side batches, the model, and
the engine (optimiser, schedule, loss, loss scaling, Mixup) that an update changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rope_ext import recipe
from rope_ext.config import eval_sizes
from rope_ext.data import DataSplits, build_datasets
from rope_ext.encoding.spec import RopeSpec
from rope_ext.errors import ConfigError
from rope_ext.loader import Batches, BatchTransform
from rope_ext.run import distributed, hardware
from rope_ext.run.evaluation import eval_transform
from rope_ext.run.model import create_model
from rope_ext.run.optim import WarmupCosine, build_optimizer, build_scheduler
from rope_ext.schema import Config, DatasetConfig, TrainConfig


@dataclass
class Data:
    """The splits as device-side batches of images (B, 3, H, W) and labels (B,)."""

    splits: DataSplits
    dataset: DatasetConfig
    batch_args: dict[str, Any]  # device, rank, world size, in_memory, num_workers: the same for all
    eval_batch_size: int
    input_size: int
    sizes: list[int]  # of the final evaluation
    train: Batches
    test: Batches = field(init=False)
    # validation: what model and learning-rate selection read (every epoch); the test split is evaluated
    # once, at the end, and selects nothing
    val: Batches | None = field(init=False)

    def __post_init__(self) -> None:
        self.test = self.eval_batches(self.splits.test, self.input_size)
        self.val = (
            self.eval_batches(self.splits.val, self.input_size) if self.splits.val is not None else None
        )

    def eval_batches(self, split: Any, size: int) -> Batches:
        transform = eval_transform(self.dataset, size)
        return Batches(
            split, batch_size=self.eval_batch_size, transform=transform, train=False, **self.batch_args
        )

    def test_at(self, size: int) -> Batches:
        """The test split at ``size``: redrawn at that size where the dataset can, else resized."""
        redrawn = self.splits.test_at(size) if size != self.input_size else None
        if redrawn is not None:
            return self.eval_batches(redrawn, size)
        self.test.transform = eval_transform(self.dataset, size)
        return self.test


@dataclass
class Engine:
    """What an update changes, and what a checkpoint saves."""

    model: nn.Module  # the model itself: saved, evaluated, measured
    optimizer: torch.optim.Optimizer
    scheduler: WarmupCosine
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    net: nn.Module  # what trains: the model, under DDP and torch.compile when they are on
    evaluator: nn.Module  # what validates and tests at the training size: the model, compiled when asked
    mixup: Any = None  # timm.data.Mixup (recipe.mixup/cutmix): (x, y) -> (mixed x, soft targets)


def build_data_and_model(
    config: Config, rope: RopeSpec, env: distributed.DistEnv, device: torch.device
) -> tuple[Data, nn.Module]:
    """The datasets as batches and the model on ``device``, the same initial weights on every rank."""
    dataset = config.dataset
    splits = build_datasets(dataset, config.recipe)
    hardware.seed(config.seed)  # the same initial weights on every rank
    input_size = int(dataset.input_size)
    model = create_model(config.model, rope, num_classes=splits.num_classes, img_size=input_size)
    patch = int(model.patch_embed.patch_size[0])
    sizes = eval_sizes(input_size, patch, config.eval.input_sizes)  # patch multiples: config.validate
    distributed.init(env, device)
    hardware.seed(config.seed + 1 + env.rank)  # augmentation differs across ranks
    model.to(device)

    train_tf = BatchTransform(
        input_size,
        dataset.mean,
        dataset.std,
        train=dataset.name not in recipe.PER_IMAGE_DATASETS,  # those are augmented per image
        crop_padding=dataset.augment.crop_padding,
        hflip=dataset.augment.hflip,
    )
    workers = hardware.num_workers(dataset.num_workers, device, env)
    batch_args = dict(device=device, rank=env.rank, world_size=env.world_size, in_memory=dataset.in_memory)
    batch_args["num_workers"] = workers
    train = Batches(
        splits.train,
        batch_size=config.train.batch_size,
        transform=train_tf,
        train=True,
        seed=config.seed,
        **batch_args,
    )
    data = Data(splits, dataset, batch_args, config.eval.batch_size, input_size, sizes, train)
    if train.num_batches == 0:
        raise ConfigError(f"the train set of dataset={dataset.name} is empty on rank {env.rank}")
    return data, model


def build_engine(
    config: Config,
    model: nn.Module,
    steps_per_epoch: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    num_classes: int,
) -> Engine:
    train: TrainConfig = config.train
    optimizer = build_optimizer(model, config.optimizer, train.lr)
    scheduler = build_scheduler(optimizer, train, steps_per_epoch)
    # loss scaling only for fp16: bf16 has fp32's exponent range
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    mixup = recipe.build_mixup(config, num_classes)
    if mixup is not None:  # soft targets (label smoothing included) from timm's Mixup/CutMix
        from timm.loss import SoftTargetCrossEntropy

        criterion = SoftTargetCrossEntropy()
    return Engine(model, optimizer, scheduler, scaler, criterion, net=model, evaluator=model, mixup=mixup)


def parallel(model: nn.Module, env: distributed.DistEnv, device: torch.device, compile: bool) -> nn.Module:
    """DDP when there are several processes, torch.compile when asked (``hardware.compile``)."""
    net = model
    if env.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    if compile:
        net = torch.compile(net)
    return net


def compiled_for_evaluation(model: nn.Module, compile: bool) -> nn.Module:
    """What evaluates at the training size (validation, test): ``model``, under torch.compile when
    asked (``hardware.compile``). Its own wrapper, not the training one: no DDP (evaluation reduces
    its counts itself); the eval-mode graph is compiled once, beside the training graph. The other
    input sizes and the shift test run ``model`` eagerly: each new size or moved grid would compile
    another graph."""
    return torch.compile(model) if compile else model
