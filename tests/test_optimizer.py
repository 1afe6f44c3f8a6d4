"""The optimizer the harness builds: rotary parameters are position parameters, not weight-decayed."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rope_ext import create_vit
from rope_ext.trainer import _build_optimizer


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
    opt_cfg = {"name": name, "betas": [0.9, 0.999], "eps": 1e-8, "momentum": 0.9, "nesterov": False}
    cfg = OmegaConf.create({"optimizer": {**opt_cfg, "weight_decay": 0.05}, "train": {"lr": 1e-3}})
    optimizer = _build_optimizer(model, cfg)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert decay_of[id(named["blocks.0.attn.rope.freqs"])] == 0.0
    assert decay_of[id(named["blocks.0.attn.rope.basis_skew"])] == 0.0
    assert decay_of[id(named["blocks.0.attn.qkv.weight"])] == 0.05
    assert len(decay_of) == sum(p.requires_grad for p in model.parameters())
