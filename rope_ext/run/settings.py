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
from rope_ext.config import ConfigError, validate
from rope_ext.encoding.spec import Augment, RopeSpec, validate_pe
from rope_ext.schema import Config, PEAugmentConfig, PEConfig


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


def typed_config(cfg: DictConfig, *, multirun: bool, world_size: int) -> tuple[Config, RopeSpec]:
    """``cfg`` checked (``config.validate``: ConfigError naming key, value and what is allowed) and typed,
    with the encoding resolved and the peak lr scaled by the global batch where ``recipe.lr_batch`` is set."""
    validate(cfg, multirun=multirun)  # train.py ran it before Hydra too
    config = as_config(cfg)
    rope = resolve_pe(config.pe)
    config.pe = pe_config(rope)
    config.train.lr = recipe.peak_lr(cfg, world_size)  # the peak lr scales with the global batch
    return config, rope


def as_config(cfg: DictConfig) -> Config:
    """The composed config as ``schema.Config`` instances (``OmegaConf.to_object``), unvalidated."""
    task = cfg
    if "hydra" in cfg:  # composed with its hydra node (the compose API): not part of the schema
        task = copy.deepcopy(cfg)
        with open_dict(task):
            del task["hydra"]
    return OmegaConf.to_object(task)


def resolve_pe(pe: PEConfig) -> RopeSpec:
    """The encoding's options with their defaults filled in (``validate_pe``)."""
    options = {k: v for k, v in dataclasses.asdict(pe).items() if k != "name" and v is not None}
    try:
        return validate_pe(pe.name, options, prefix="pe.", name_key="pe.name")
    except ValueError as err:
        raise ConfigError(f"{err}.") from None


def pe_config(rope: RopeSpec) -> PEConfig:
    """``rope`` as the config's ``pe`` node, so that recorded configs hold the resolved options."""
    values = {f.name: getattr(rope, f.name) for f in dataclasses.fields(RopeSpec)}
    augment = values["augment"]
    values["augment"] = (
        PEAugmentConfig(**dataclasses.asdict(augment)) if isinstance(augment, Augment) else None
    )
    return PEConfig(**values)


def rope_spec(pe: PEConfig) -> RopeSpec:
    """The library's spec of a (resolved) ``pe`` node."""
    values = dataclasses.asdict(pe)
    values["augment"] = Augment(**values["augment"]) if values["augment"] is not None else None
    return RopeSpec(**values)


def record_of(config: Config) -> dict[str, Any]:
    """``config`` as plain data, the form every record (run.json, W&B, checkpoint.json) holds."""
    return dataclasses.asdict(config)
