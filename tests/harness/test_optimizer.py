"""The optimizer the harness builds: rotary parameters are position parameters, not weight-decayed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rope_ext import create_vit
from rope_ext.run.optim import WarmupCosine, build_optimizer, build_scheduler
from rope_ext.schema import AdamConfig, SGDConfig, TrainConfig


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_rotary_parameters_get_no_weight_decay(name):
    model = create_vit(
        "vit_tiny_patch16_224",
        pe="axial_block",
        num_classes=10,
        img_size=32,
        patch_size=4,
        depth=1,
        pe_options={"block": 3, "learnable": True},
    )
    opt_cfg = AdamConfig(name, 1e-3, 0.05) if name != "sgd" else SGDConfig(name, 1e-3, 0.05, nesterov=False)
    optimizer = build_optimizer(model, opt_cfg, lr=1e-3)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert decay_of[id(named["blocks.0.attn.rope.freqs"])] == 0.0
    assert decay_of[id(named["blocks.0.attn.rope.basis_skew"])] == 0.0
    assert decay_of[id(named["blocks.0.attn.qkv.weight"])] == 0.05
    assert len(decay_of) == sum(p.requires_grad for p in model.parameters())


# --- the learning-rate schedule ----------------------------------------------------------------------
# The reference is the earlier form of the schedule (a LambdaLR with this factor, and this
# override of a changed train.lr on resume): runs made with it must stay reproducible, to the last bit.


def _reference_scheduler(optimizer, train, steps_per_epoch):
    total = max(1, train.epochs * steps_per_epoch)
    warmup = min(total, int(round(train.warmup_epochs * steps_per_epoch)))
    floor = min(1.0, train.min_lr / train.lr)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _reference_resume(optimizer, scheduler, ckpt, lr):
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scheduler.base_lrs[0] != lr:
        scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
        for group in optimizer.param_groups:
            group["initial_lr"] = lr
            group["lr"] = lr * scheduler.lr_lambdas[0](scheduler.last_epoch)


def _setup(epochs=3, warmup_epochs=1.0, lr=1e-3, min_lr=1e-5, steps_per_epoch=7, new=True):
    train = TrainConfig(lr=lr, min_lr=min_lr, epochs=epochs, warmup_epochs=warmup_epochs)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    model.no_weight_decay = lambda: set()
    optimizer = build_optimizer(model, AdamConfig("adamw", lr, 0.05), lr=lr)
    make = build_scheduler if new else _reference_scheduler
    return model, optimizer, make(optimizer, train, steps_per_epoch)


def _lrs(model, optimizer, scheduler, steps):
    """The lr of each of ``steps`` updates as the optimizer uses it."""
    used = []
    for _ in range(steps):
        model(torch.ones(1, 3)).sum().backward()
        lr = optimizer.param_groups[0]["lr"]
        assert len({g["lr"] for g in optimizer.param_groups}) == 1
        if isinstance(scheduler, WarmupCosine):
            # what the trainer logs as train/lr is the lr used (the old LambdaLR's get_last_lr was stale
            # for the first update after a resume with a new train.lr: it logged the checkpoint's)
            assert scheduler.get_last_lr() == [lr, lr]
        optimizer.step()
        scheduler.step()
        used.append(lr)
    return used


SETTINGS = [
    {},  # warm-up 1 epoch of 7 updates, then cosine to min_lr
    {"warmup_epochs": 0.0},
    {"warmup_epochs": 0.5, "min_lr": 0.0, "epochs": 4, "steps_per_epoch": 5},
    {"warmup_epochs": 2.0, "lr": 3e-4, "min_lr": 1e-6, "epochs": 2},  # warm-up over every update
    {"warmup_epochs": 0.3, "lr": 1e-3, "min_lr": 5e-3},  # min_lr above lr: a constant lr after warm-up
    {"epochs": 1, "steps_per_epoch": 1},
]


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
@pytest.mark.parametrize("setting", SETTINGS)
def test_schedule_is_the_reference_schedule_bit_for_bit(setting):
    steps = setting.get("epochs", 3) * setting.get("steps_per_epoch", 7) + 3  # and past the end
    new = _lrs(*_setup(**setting), steps)
    old = _lrs(*_setup(**setting, new=False), steps)
    assert new == old  # exact: no approx


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
@pytest.mark.parametrize(("resume_lr", "epochs"), [(1e-3, 3), (2e-3, 3), (1e-3, 5)])
@pytest.mark.parametrize("writer", ["reference", "new"])
def test_resume_continues_the_schedule_from_checkpoints_of_either_version(
    tmp_path, writer, resume_lr, epochs
):
    """A checkpoint after 10 updates (written by the old LambdaLR or the new scheduler, through torch.save
    and a weights_only load) resumes with the same lrs as the old code, also when train.lr or
    train.epochs changed (the two keys allowed to change on resume)."""
    model, optimizer, scheduler = _setup(new=writer == "new")
    _lrs(model, optimizer, scheduler, 10)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)

    model, optimizer, scheduler = _setup(lr=resume_lr, epochs=epochs)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    ref_model, ref_optimizer, ref_scheduler = _setup(lr=resume_lr, epochs=epochs, new=False)
    _reference_resume(ref_optimizer, ref_scheduler, ckpt, resume_lr)
    assert _lrs(model, optimizer, scheduler, 15) == _lrs(ref_model, ref_optimizer, ref_scheduler, 15)
    assert scheduler.state_dict() == ref_scheduler.state_dict()  # the same on disk, either can load it
