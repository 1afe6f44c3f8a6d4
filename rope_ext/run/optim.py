"""The optimiser and learning-rate schedule of a job (``conf/optimizer``, ``train.lr/min_lr/warmup_epochs``).

The schedule is stepped once per update: linear warm-up from ``lr / warmup`` to ``lr`` over the first
``warmup`` updates, then cosine decay to ``min_lr`` at the last update. It is a function of the update
count, which is all its state holds.

Why not ``timm.scheduler.CosineLRScheduler``: timm's warm-up ramps from ``warmup_lr_init`` and reaches the
peak at update ``warmup_t``, where this one reaches it at update ``warmup - 1`` and starts the cosine at
the peak again at update ``warmup``; no choice of timm's arguments gives this sequence, and even without
warm-up its cosine rounds differently (1e-19 apart). Runs made with this schedule must stay reproducible.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn

from rope_ext.schema import OptimizerConfig, TrainConfig

log = logging.getLogger(__name__)


def build_optimizer(model: nn.Module, opt: OptimizerConfig, lr: float) -> torch.optim.Optimizer:
    """timm's optimizer factory. No weight decay on biases, norms, the model's no_weight_decay()
    and the rotary parameters: frequencies and bases are position parameters like timm's pos_embed
    (Heo et al. exclude their freqs too), and decay would pull every basis towards Q = I. ``lr``: the
    peak (``train.lr``)."""
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    kwargs: dict[str, Any] = {}
    name = opt.name
    if name in ("adam", "adamw"):
        kwargs.update(betas=tuple(opt.betas), eps=opt.eps)
    elif name == "sgd":
        kwargs["momentum"] = opt.momentum
        name = "sgd" if opt.nesterov else "momentum"
    no_decay = {*model.no_weight_decay(), "*.rope.*"}
    groups = param_groups_weight_decay(model, opt.weight_decay, no_weight_decay_list=no_decay)
    return create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=opt.weight_decay, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int
) -> WarmupCosine:
    """Warm-up over ``train.warmup_epochs`` (rounded to updates), cosine to ``train.min_lr`` after
    ``train.epochs``; the peak is the optimizer's lr (``train.lr``)."""
    total = max(1, train.epochs * steps_per_epoch)
    warmup = min(total, int(round(train.warmup_epochs * steps_per_epoch)))
    floor = min(1.0, train.min_lr / train.lr)
    return WarmupCosine(optimizer, warmup=warmup, total=total, floor=floor)


class WarmupCosine:
    """Sets each param group's lr to ``peak * factor(updates)`` before every update.

    ``state_dict`` has the keys of the ``torch.optim.lr_scheduler.LambdaLR`` earlier versions saved
    (``last_epoch`` is the update count, ``base_lrs`` the peaks), so checkpoints load in both directions.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup: int, total: int, floor: float) -> None:
        self.optimizer = optimizer
        self.warmup, self.total, self.floor = warmup, total, floor
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # torch schedulers' record of the peak
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.updates = 0
        self._apply()

    def factor(self, step: int) -> float:
        """The multiple of the peak used by update ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def step(self) -> None:
        """Called after each optimizer step: the next update's lr."""
        self.updates += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The lr of each param group, i.e. of the next update."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        n = len(self.base_lrs)
        return {
            "base_lrs": list(self.base_lrs),
            "last_epoch": self.updates,
            "_step_count": self.updates + 1,
            "_is_initial": False,
            "_get_lr_called_within_step": False,
            "_last_lr": self.get_last_lr(),
            "lr_lambdas": [None] * n,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume counting at the checkpoint's update; call it after ``optimizer.load_state_dict``.

        The optimizer's restored lr is kept (also when ``train.epochs`` changed: the new schedule takes
        over at the next update, as before). When the peak (``train.lr``) changed, the schedule goes on
        at the new peak from this update on.
        """
        self.updates = int(state["last_epoch"])
        saved = [float(lr) for lr in state["base_lrs"]]
        if saved != self.base_lrs:
            log.warning(
                "train.lr is %g, the checkpoint's %g: the schedule goes on with the new peak",
                self.base_lrs[0],
                saved[0],
            )
            for group, peak in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
                group["initial_lr"] = peak
                group["lr"] = peak * self.factor(self.updates)

    def _apply(self) -> None:
        for group, peak in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = peak * self.factor(self.updates)
