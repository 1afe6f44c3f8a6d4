"""``relpos``: a synthetic task where the relative position of two objects is the whole problem.

Each image is a dark, slightly noisy canvas with two small squares: an *anchor* (red) and a *target*
(green). The label is the target's arrangement relative to the anchor:

* direction (4): the dominant axis and sign of the displacement ``(dx, dy)`` between the two squares'
  top-left corners: right (dx > 0), left (dx < 0), below (dy > 0), above (dy < 0). ``|dx| != |dy|`` always,
  so the dominant axis is never ambiguous;
* distance (2): near when the dominant component ``max(|dx|, |dy|)`` is at most ``near_max`` pixels,
  far otherwise.

``label = 2 * direction + distance`` (8 balanced classes, chance 12.5 %). Given the displacement, the
pair is placed uniformly anywhere on the canvas where both squares fit.

Everything is defined in pixels and independent of the canvas size: the squares are ``object_size``
pixels, the dominant component of the displacement is drawn uniformly from ``[min_sep, max_sep]``.
Drawing the same task on a larger canvas (``input_size=64`` instead of 32) therefore keeps the objects and
the displacement distribution exactly as in training and only widens the range of absolute positions: a
relative encoding should keep its accuracy there, an absolute one (interpolated or not) need not. The
default ``min_sep`` exceeds ``object_size`` by one 4-pixel patch, so no 4×4 patch ever holds pixels of
both squares along the dominant axis: a ViT without position information (``pe=none
model.pos_embed=none``) sees the same bag of patches whatever the direction and stays near chance.

Sets are generated once, deterministically from ``seed`` (train, test and validation from independent
streams: seeds ``3·seed``, ``3·seed + 1``, ``3·seed + 2``), vectorised (5000 images in well under a second),
and kept in memory: ``RelPosDataset`` is a ``TensorDataset`` of uint8 CHW images and int64 labels, like the
harness's real image sets, whose loader converts and normalises them (``conf/dataset/relpos.yaml``:
mean = std = 0.5, no augmentation: a flip or crop would change or cut the label's geometry).
"""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from rope_ext.encoding.spec import is_int

__all__ = [
    "DIRECTIONS",
    "DISTANCES",
    "NUM_CLASSES",
    "RelPosDataset",
    "label_from_offset",
    "relpos_datasets",
    "relpos_validation",
]

DIRECTIONS = ("right", "left", "below", "above")
DISTANCES = ("near", "far")
NUM_CLASSES = len(DIRECTIONS) * len(DISTANCES)

#: default geometry, in pixels (not relative to the canvas: see the module docstring)
OBJECT_SIZE = 4
MIN_SEP = 8
MAX_SEP = 15  # dominant component in 8..15: four near (8..11) and four far (12..15) values
NEAR_MAX = 11

_ANCHOR_RGB = (230, 40, 40)
_TARGET_RGB = (40, 230, 40)


def label_from_offset(dx: int, dy: int, near_max: int = NEAR_MAX) -> int:
    """The class of a target displaced by ``(dx, dy)`` pixels from the anchor (x right, y down)."""
    if abs(dx) == abs(dy):
        raise ValueError(f"relpos: ambiguous offset (dx, dy)=({dx}, {dy}): |dx| must differ from |dy|")
    if abs(dx) > abs(dy):
        direction = 0 if dx > 0 else 1
    else:
        direction = 2 if dy > 0 else 3
    distance = 0 if max(abs(dx), abs(dy)) <= near_max else 1
    return 2 * direction + distance


def _labels(offsets: torch.Tensor, near_max: int) -> torch.Tensor:
    """``label_from_offset`` for a batch of offsets ``[n, 2]`` (no ties by construction) -> ``[n]``."""
    dx, dy = offsets[:, 0], offsets[:, 1]
    horizontal = dx.abs() > dy.abs()
    direction = torch.where(horizontal, (dx < 0).long(), 2 + (dy < 0).long())
    distance = (torch.maximum(dx.abs(), dy.abs()) > near_max).long()
    return 2 * direction + distance


def _check_int(key: str, value: object, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"relpos: {key}={value!r} is not allowed; expected an integer >= {minimum}")
    return value


class RelPosDataset(TensorDataset):
    """An in-memory ``relpos`` split: ``tensors = (images uint8 [n, 3, s, s], labels int64 [n])``.

    ``anchors[i]`` and ``targets[i]`` hold the two squares' top-left corners (x, y) in pixels.
    """

    def __init__(
        self,
        size: int,
        *,
        input_size: int,
        seed: int,
        object_size: int = OBJECT_SIZE,
        min_sep: int = MIN_SEP,
        max_sep: int = MAX_SEP,
        near_max: int = NEAR_MAX,
        noise: float = 8.0,
    ) -> None:
        self.size = _check_int("size", size, 1)
        self.input_size = _check_int("input_size", input_size, 1)
        self.object_size = _check_int("object_size", object_size, 1)
        self.min_sep = _check_int("min_sep", min_sep, object_size)
        self.max_sep = _check_int("max_sep", max_sep, min_sep + 1)
        self.near_max = near_max
        self.seed = seed
        if not min_sep <= near_max < max_sep:
            raise ValueError(
                f"relpos: near_max={near_max!r} is not allowed; expected min_sep ({min_sep}) <= near_max "
                f"< max_sep ({max_sep}) so both distance classes occur"
            )
        if input_size < max_sep + object_size:
            raise ValueError(
                f"relpos: input_size={input_size} is not allowed; the canvas must hold two {object_size}-px "
                f"objects up to max_sep={max_sep} px apart: input_size >= {max_sep + object_size}"
            )
        self.noise = float(noise)
        g = torch.Generator().manual_seed(int(seed))
        self.anchors, self.targets = self._draw_positions(g)
        labels = _labels(self.targets - self.anchors, near_max)
        super().__init__(self._render(g), labels)

    @property
    def images(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors[1]

    def _draw_positions(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.size
        # dominant component: magnitude in [min_sep, max_sep], random sign; minor: |minor| < dominant
        dom = torch.randint(self.min_sep, self.max_sep + 1, (n,), generator=g)
        dom = dom * (torch.randint(0, 2, (n,), generator=g) * 2 - 1)
        minor = (torch.rand(n, generator=g) * (2 * dom.abs() - 1)).floor().long() - (dom.abs() - 1)
        horizontal = torch.rand(n, generator=g) < 0.5
        dx = torch.where(horizontal, dom, minor)
        dy = torch.where(horizontal, minor, dom)
        span = self.input_size - self.object_size  # top-left coordinates lie in [0, span]
        lo_x, hi_x = (-dx).clamp(min=0), span - dx.clamp(min=0)
        lo_y, hi_y = (-dy).clamp(min=0), span - dy.clamp(min=0)
        ax = lo_x + (torch.rand(n, generator=g) * (hi_x - lo_x + 1)).floor().long()
        ay = lo_y + (torch.rand(n, generator=g) * (hi_y - lo_y + 1)).floor().long()
        anchors = torch.stack([ax, ay], dim=1)
        targets = anchors + torch.stack([dx, dy], dim=1)
        return anchors, targets

    def _render(self, g: torch.Generator) -> torch.Tensor:
        n, s, k = self.size, self.input_size, self.object_size
        images = (torch.rand(n, 3, s, s, generator=g) * self.noise).to(torch.uint8)
        anchor = torch.tensor(_ANCHOR_RGB, dtype=torch.uint8).view(1, 3, 1, 1)
        target = torch.tensor(_TARGET_RGB, dtype=torch.uint8).view(1, 3, 1, 1)
        # one broadcast mask per square ([n, 1, s, s]) instead of a loop over the images
        pix = torch.arange(s)

        def square(corner: torch.Tensor) -> torch.Tensor:
            x, y = corner[:, :1], corner[:, 1:]
            in_x = (pix >= x) & (pix < x + k)  # [n, s]
            in_y = (pix >= y) & (pix < y + k)
            return (in_y[:, :, None] & in_x[:, None, :])[:, None]

        images = torch.where(square(self.anchors), anchor, images)
        images = torch.where(square(self.targets), target, images)
        return images

    def at_input_size(self, input_size: int) -> RelPosDataset:
        """The same task (same seed, objects, displacement distribution) drawn on another canvas size."""
        return RelPosDataset(
            self.size,
            input_size=input_size,
            seed=self.seed,
            object_size=self.object_size,
            min_sep=self.min_sep,
            max_sep=self.max_sep,
            near_max=self.near_max,
            noise=self.noise,
        )

    def __repr__(self) -> str:
        return (
            f"RelPosDataset(size={self.size}, input_size={self.input_size}, seed={self.seed}, "
            f"object_size={self.object_size}, sep=[{self.min_sep}, {self.max_sep}], near_max={self.near_max})"
        )


def relpos_datasets(
    input_size: int,
    train_size: int,
    test_size: int,
    seed: int,
    *,
    object_size: int = OBJECT_SIZE,
    min_sep: int = MIN_SEP,
    max_sep: int = MAX_SEP,
    near_max: int = NEAR_MAX,
) -> tuple[RelPosDataset, RelPosDataset, int]:
    """Build the ``relpos`` train and test sets on an ``input_size``×``input_size`` canvas.

    Returns ``(train, test, num_classes)``. Train and test come from independent random streams derived
    from ``seed``; calling again with another ``input_size`` (and the same seed) draws the same task on a
    canvas of that size with unchanged object size and displacement distribution, which is how the
    harness's ``eval.input_sizes`` evaluation should obtain larger canvases (not by resizing images).
    """
    _check_int("seed", seed, 0)
    geometry = dict(object_size=object_size, min_sep=min_sep, max_sep=max_sep, near_max=near_max)
    # independent streams for train, test and validation (relpos_validation): no two data seeds share one
    train = RelPosDataset(train_size, input_size=input_size, seed=3 * seed, **geometry)
    test = RelPosDataset(test_size, input_size=input_size, seed=3 * seed + 1, **geometry)
    return train, test, NUM_CLASSES


def relpos_validation(train: RelPosDataset, size: int) -> RelPosDataset:
    """A validation set of ``size`` images for ``train`` (from ``relpos_datasets``): the same task and canvas,
    drawn from the third stream of the data seed (``train.seed + 2``), disjoint in randomness from both
    train and test."""
    return RelPosDataset(
        size,
        input_size=train.input_size,
        seed=train.seed + 2,
        object_size=train.object_size,
        min_sep=train.min_sep,
        max_sep=train.max_sep,
        near_max=train.near_max,
        noise=train.noise,
    )


def chance_accuracy() -> float:
    """Top-1 accuracy (%) of a classifier that ignores the image (uniform classes in expectation)."""
    return 100.0 / NUM_CLASSES
