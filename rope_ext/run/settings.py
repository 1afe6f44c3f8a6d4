"""What a job runs with: the validated, typed config (``schema.Config``) and the few facts of its launch.

The trainer reads only these typed objects: no key strings. ``typed_config`` is the one place the
composed ``DictConfig`` is checked and turned into dataclass instances, with the encoding resolved
(``pe.block: 3``, not null, for the default ``axial_block``) so that every record of the run says what
the model used.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from rope_ext import recipe
from rope_ext.config import resolve, spec_of
from rope_ext.encoding.spec import RopeSpec
from rope_ext.schema import Config


@dataclass(frozen=True)
class Settings:
    """A job's typed config and launch; what ``rope_ext.run.training.train`` takes."""

    config: Config  # validated; pe resolved; train.lr scaled by recipe.lr_batch where set
    rope: RopeSpec  # the resolved encoding the model is built with
    # the config as composed (interpolations resolved, pe as the command gave it): what a checkpoint's
    # fingerprint compares, so that checkpoints written before the encoding was resolved still resume
    configured: dict[str, Any]
    overrides: list[str]  # the command line's (run.json)
    sweep: str | None = None  # the multirun's sweep directory name; None for a single run

    @property
    def multirun(self) -> bool:
        return self.sweep is not None


def typed_config(
    cfg: DictConfig, *, multirun: bool, world_size: int, warn: bool = True
) -> tuple[Config, RopeSpec]:
    """``cfg`` checked and typed (``config.resolve``: ConfigError naming key, value and what is allowed),
    with the encoding resolved and the peak lr scaled by the global batch where ``recipe.lr_batch`` is set
    (``warn``: log what the schedule cannot do as the recipe says; rank 0 alone, one warning per job)."""
    config = resolve(cfg, multirun=multirun)  # train.py ran its checks before Hydra too
    config.train.lr = recipe.peak_lr(config, world_size, warn=warn)  # scales with the global batch
    return config, spec_of(config.pe)


def as_config(cfg: DictConfig) -> Config:
    """The composed config as ``schema.Config`` instances (``OmegaConf.to_object``), unvalidated: what a
    failure record reads of a config that was refused."""
    task = cfg
    if "hydra" in cfg:  # composed with its hydra node (the compose API): not part of the schema
        task = copy.deepcopy(cfg)
        with open_dict(task):
            del task["hydra"]
    return OmegaConf.to_object(task)


def record_of(config: Config) -> dict[str, Any]:
    """``config`` as plain data, the form every record (run.json, W&B, checkpoint.json) holds."""
    return dataclasses.asdict(config)
