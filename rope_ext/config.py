"""Config checks and helpers of the Hydra harness: everything a run checks before it does any work.

Importing this module registers the OmegaConf resolvers that ``conf/config.yaml`` uses
(``rope_ext.slug``), so ``train.py`` and tests that compose the config import it first.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

# The encodings' names, options and checks live in rope_ext.encoding.rotary alone; the model's choices in vit.
from rope_ext.encoding.rotary import validate_pe
from rope_ext.encoding.vit import POOLS, POS_EMBEDS

OPTIMIZERS = ("adamw", "adam", "sgd")
ACCELERATORS = ("auto", "cpu", "gpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
WANDB_MODES = ("offline", "online", "disabled")
# keys of the model group that are not timm keyword arguments
MODEL_KEYS = ("name", "arch", "input_size", "pretrained", "checkpoint", "pos_embed")


class ConfigError(ValueError):
    """A bad configuration, found before any work starts. The message names key, value and what is allowed."""

    @classmethod
    def bad_value(cls, key: str, value: Any, allowed: str, why: str = "") -> ConfigError:
        reason = f" ({why})" if why else ""
        return cls(f"{key}={value!r} is not allowed{reason}; allowed: {allowed}.")


def slug(text: Any) -> str:
    """A directory name from an override string: safe characters only, at most ~100 characters."""
    text = "" if text is None else str(text)
    safe = re.sub(r"[^A-Za-z0-9._=,+\-]+", "_", text).strip("_.") or "default"
    if len(safe) > 100:
        safe = safe[:88] + "-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return safe


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("rope_ext.slug"):
        OmegaConf.register_new_resolver("rope_ext.slug", slug)


register_resolvers()


def select(node: Any, key: str, default: Any = None) -> Any:
    """``OmegaConf.select`` that also works on plain dicts and tolerates missing keys."""
    if isinstance(node, DictConfig):
        return OmegaConf.select(node, key, default=default)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(
    cfg: DictConfig, key: str, *, minimum: float, strict: bool = False, integer: bool = False
) -> None:
    value = OmegaConf.select(cfg, key)
    ok = _is_int(value) if integer else (isinstance(value, int | float) and not isinstance(value, bool))
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise ConfigError.bad_value(key, value, f"{kind} {bound}")


def _choice(cfg: DictConfig, key: str, allowed: tuple, *, nullable: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and nullable:
        return
    if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
        shown = ", ".join(map(str, allowed)) + (", null" if nullable else "")
        raise ConfigError.bad_value(key, value, shown)


def head_dim(model: DictConfig) -> int | None:
    """The attention head dimension when the model group sets embed_dim and num_heads, else None."""
    embed, heads = select(model, "embed_dim"), select(model, "num_heads")
    if _is_int(embed) and _is_int(heads) and heads > 0:
        return embed // heads
    return None


def validate(cfg: DictConfig) -> None:
    """Static checks of a composed config (no files, no network); raises ConfigError."""
    _number(cfg, "train.epochs", minimum=1, integer=True)  # 0 would write a result of no training
    _number(cfg, "train.batch_size", minimum=1, integer=True)
    _number(cfg, "train.lr", minimum=0, strict=True)
    _number(cfg, "train.warmup_epochs", minimum=0)
    _number(cfg, "train.min_lr", minimum=0)
    _number(cfg, "train.label_smoothing", minimum=0)
    _number(cfg, "train.log_every", minimum=1, integer=True)
    _number(cfg, "train.speed_warmup_steps", minimum=0, integer=True)
    if cfg.train.label_smoothing >= 1:
        raise ConfigError.bad_value("train.label_smoothing", cfg.train.label_smoothing, "a number in [0, 1)")
    if cfg.train.grad_clip is not None:
        _number(cfg, "train.grad_clip", minimum=0, strict=True)
    _number(cfg, "eval.batch_size", minimum=1, integer=True)
    _number(cfg, "eval.bench_seconds", minimum=0)
    _number(cfg, "seed", minimum=0, integer=True)
    sizes = cfg.eval.input_sizes
    if sizes is not None and (
        not isinstance(sizes, ListConfig | list) or not all(_is_int(s) and s > 0 for s in sizes)
    ):
        raise ConfigError.bad_value("eval.input_sizes", sizes, "null or a list of positive integers")

    try:
        validate_pe(
            cfg.pe.name, pe_options(cfg.pe), head_dim=head_dim(cfg.model), prefix="pe.", name_key="pe.name"
        )
    except ValueError as err:
        raise ConfigError(f"{err}.") from None

    _choice(cfg, "model.pool", POOLS, nullable=True)
    _choice(cfg, "model.pos_embed", POS_EMBEDS, nullable=True)
    _choice(cfg, "model.pretrained", (False, True))
    _number(cfg, "dataset.input_size", minimum=1, integer=True)
    if select(cfg, "dataset.subset") is not None:
        _number(cfg, "dataset.subset", minimum=1, integer=True)
    _choice(cfg, "optimizer.name", OPTIMIZERS)
    _choice(cfg, "hardware.accelerator", ACCELERATORS)
    _choice(cfg, "hardware.precision", PRECISIONS)
    _number(cfg, "hardware.devices", minimum=1, integer=True)
    _number(cfg, "hardware.nodes", minimum=1, integer=True)
    _choice(cfg, "wandb.mode", WANDB_MODES)


def pe_options(pe: DictConfig) -> dict[str, Any]:
    """The non-null ``pe`` keys other than ``name``: what ``create_vit`` takes as ``pe_options``."""
    return {
        k: v for k, v in OmegaConf.to_container(pe, resolve=True).items() if k != "name" and v is not None
    }


def timm_kwargs(model: DictConfig) -> dict[str, Any]:
    """The model group's timm keyword arguments (every non-null key that is not one of MODEL_KEYS)."""
    kwargs = {k: v for k, v in OmegaConf.to_container(model, resolve=True).items() if k not in MODEL_KEYS}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if model.pos_embed is not None:
        kwargs["pos_embed"] = model.pos_embed
    return kwargs


def eval_sizes(input_size: int, patch: int, configured: Any = None) -> list[int]:
    """Resolution-extrapolation sizes: 1×, 1.25×, 1.5×, 2× the train size rounded to patch multiples."""
    if configured is not None:
        sizes = [int(s) for s in configured]
    else:
        sizes = [max(patch, round(input_size * f / patch) * patch) for f in (1.0, 1.25, 1.5, 2.0)]
    return sorted(set(sizes), key=sizes.index)
