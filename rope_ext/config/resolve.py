"""Resolve once, then typed objects: ``resolve(cfg)`` validates a job's composed config and returns it as
``rope_ext.schema.Config`` (``OmegaConf.to_object``: dataclass instances, the dataset's own option
class), with the ``pe`` group holding the resolved encoding options (``pe.block: 3``, not null, for the
default ``axial_block``) so every record of the run states what ran."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from rope_ext import plugins, schema
from rope_ext.config.rules import validate
from rope_ext.util import select

# keys of the model group that are not timm keyword arguments
MODEL_KEYS = ("name", "arch", "input_size", "pretrained", "checkpoint", "pos_embed")


def resolve(cfg: DictConfig, *, multirun: bool = False) -> schema.Config:
    """The job's config checked (``validate``; ConfigError) and resolved into typed objects. ``cfg``
    may carry Hydra's node (it is left out of the result). Loads the config's ``plugins`` first."""
    plugins.load_all(list(select(cfg, "plugins") or []))
    spec = validate(cfg, multirun=multirun)
    task = cfg.copy()
    with open_dict(task):
        task.pop("hydra", None)  # Hydra's own node; ${hydra:...} reads HydraConfig, set by validate
    OmegaConf.resolve(task)
    task.pe.merge_with(spec.options())  # every option as the layer will use it (nested augment too)
    typed = OmegaConf.to_object(task)
    if not isinstance(typed, schema.Config):  # a config composed without the schema (not conf/config.yaml)
        raise TypeError(f"resolve needs a config built on rope_ext.schema.Config, got {type(typed).__name__}")
    return typed


def timm_kwargs(model: Any) -> dict[str, Any]:
    """The model group's timm keyword arguments (every non-null key that is not one of MODEL_KEYS)."""
    if dataclasses.is_dataclass(model):
        plain = dataclasses.asdict(model)
    else:
        plain = OmegaConf.to_container(model, resolve=True) if OmegaConf.is_config(model) else dict(model)
    kwargs = {k: v for k, v in plain.items() if k not in MODEL_KEYS and v is not None}
    if plain.get("pos_embed") is not None:
        kwargs["pos_embed"] = plain["pos_embed"]
    return kwargs
