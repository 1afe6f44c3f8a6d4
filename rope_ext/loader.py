"""Batches for the training loop: in-memory on the device, or a DataLoader with workers.

Images arrive at their native size (uint8 or float). ``BatchTransform`` turns a batch into the model's
input on the device: random translation and flips (training), resize to the input size, scaling of
uint8 to [0, 1] and normalisation with the dataset's mean and std (float images are used as they are).

``in_memory`` (the default for every built-in dataset): the whole split is copied to the device once and
batches are sliced there, so the loop pays nothing per batch for data. Otherwise a ``DataLoader`` with
workers, pinned memory and persistent workers feeds the device. Both shard with ``DistributedSampler``
(the order of epoch e is a function of (seed, e), so a resumed run sees the batches it would have seen).

Training steps take full batches only, as timm's and DeiT's train loaders do (``drop_last``): every
update averages the same number of images (a last batch of a few images would weigh as much as a full
one), Mixup/CutMix always has its pairs, a compiled model sees one shape, and recorded runs reproduce.
The images an epoch leaves out (fewer than a batch per process, a different set each epoch) are logged
at start-up, as a warning when they are 5 % of the split or more (a small image folder).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, TensorDataset

log = logging.getLogger(__name__)


class BatchTransform:
    """Augment (train only), resize and normalise a batch on its device."""

    def __init__(
        self,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        train: bool,
        crop_padding: int = 0,
        hflip: bool = False,
    ) -> None:
        self.size = int(input_size)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1)
        self.train, self.crop_padding, self.hflip = train, int(crop_padding), bool(hflip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        is_uint8 = x.dtype == torch.uint8
        x = x.float()
        if self.train and self.crop_padding > 0:
            x = _random_translate(x, self.crop_padding)
        if self.train and self.hflip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if x.shape[-2:] != (self.size, self.size):
            shrink = x.shape[-1] > self.size
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=shrink
            )
        if is_uint8:
            mean, std = self.mean.to(x.device), self.std.to(x.device)
            x = (x / 255.0 - mean) / std
        return x


def _random_translate(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-image random crop of the zero-padded image (torchvision's RandomCrop(padding=pad)), batched."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])[:, :, None]  # b, h, 1
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])[:, None, :]  # b, 1, w
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of a dataset, without copies for TensorDatasets (and Subsets of them)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return dataset.dataset.tensors[0][idx], dataset.dataset.tensors[1][idx]
    images, labels = [], []
    for x, y in DataLoader(dataset, batch_size=512, shuffle=False, num_workers=0):
        images.append(x)
        labels.append(torch.as_tensor(y))
    return torch.cat(images), torch.cat(labels).long()


class Batches:
    """Shuffled (train) or ordered (eval) batches of one split for one rank, on ``device``.

    Train: ``DistributedSampler`` order for (seed, epoch), full batches only when the shard holds one.
    Eval: ``indices[rank::world]``, nothing padded or dropped, so summed counts over ranks are exact.
    ``set_epoch(epoch, skip=k)`` starts the epoch at its k-th batch (resuming mid-epoch).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        device: torch.device,
        transform: BatchTransform,
        train: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        in_memory: bool = True,
        num_workers: int = 0,
    ) -> None:
        self.batch_size, self.device, self.transform, self.train = batch_size, device, transform, train
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0
        n = len(dataset)
        self.sampler = (
            DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
            if train
            else None
        )
        per_rank = self.sampler.num_samples if train else len(range(rank, n, world_size))
        self.drop_last = train and per_rank >= batch_size
        self.num_batches = per_rank // batch_size if self.drop_last else math.ceil(per_rank / batch_size)
        # images of the split no step of an epoch sees (a different set each epoch, the order reshuffled)
        self.left_out = max(0, n - self.num_batches * batch_size * world_size) if self.drop_last else 0
        if self.left_out and rank == 0:
            _say_left_out(n, self.left_out, batch_size, world_size)
        self.loader: DataLoader | None = None
        if in_memory:
            images, labels = as_tensors(dataset)
            self.images, self.labels = images.to(device), labels.to(device)
        else:
            self.loader = DataLoader(
                dataset,
                batch_size=batch_size,
                sampler=_IndexList(self),
                num_workers=num_workers,
                pin_memory=device.type == "cuda",
                persistent_workers=num_workers > 0,
                drop_last=self.drop_last,
            )

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip
        dataset = self.loader.dataset if self.loader is not None else None
        if self.sampler is not None and hasattr(dataset, "set_epoch"):  # per-image random transforms
            dataset.set_epoch(epoch, seed=self.sampler.seed)

    def indices(self) -> list[int]:
        if self.sampler is None:
            n = len(self.images) if self.loader is None else len(self.loader.dataset)
            idx = list(range(self.rank, n, self.world_size))
        else:
            self.sampler.set_epoch(self.epoch)
            idx = list(self.sampler)
        if self.drop_last:
            idx = idx[: self.num_batches * self.batch_size]
        return idx[self.skip * self.batch_size :]

    def __len__(self) -> int:
        return max(0, self.num_batches - self.skip)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader is not None:
            for x, y in self.loader:
                x = x.to(self.device, non_blocking=True)
                yield self.transform(x), torch.as_tensor(y).to(self.device, non_blocking=True)
            return
        idx = torch.tensor(self.indices(), dtype=torch.long, device=self.device)
        # nothing left (an epoch resumed after its last step): no batch, not one empty batch
        for batch in idx.split(self.batch_size) if idx.numel() else ():
            yield self.transform(self.images[batch]), self.labels[batch]


# a share of the training images left out of every epoch above which it is a warning, not a note
LEFT_OUT_WARNING = 0.05


def _say_left_out(n: int, left_out: int, batch_size: int, world_size: int) -> None:
    """Log how many training images each epoch leaves out (full batches only, as timm's and DeiT's train
    loaders): a warning when that is ``LEFT_OUT_WARNING`` of the split or more."""
    share = left_out / n
    level = logging.WARNING if share >= LEFT_OUT_WARNING else logging.INFO
    processes = f" x {world_size} processes" if world_size > 1 else ""
    log.log(
        level,
        "train: %d images in full batches of train.batch_size=%d%s: each epoch leaves out %d of them "
        "(%.1f %%; a different %d each epoch, the order is reshuffled). A train.batch_size that divides "
        "the images per process uses every image in every epoch.",
        n,
        batch_size,
        processes,
        left_out,
        100 * share,
        left_out,
    )


class _IndexList(torch.utils.data.Sampler):
    """The DataLoader's sampler: whatever the owning ``Batches`` says for its current epoch."""

    def __init__(self, owner: Batches) -> None:
        self.owner = owner

    def __iter__(self) -> Iterator[int]:
        return iter(self.owner.indices())

    def __len__(self) -> int:
        return len(self.owner.indices())
