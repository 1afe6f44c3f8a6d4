"""Refuse keys the project does not know, instead of carrying them along unread.

Hydra refuses ``train.epoch=2`` (no such key) but suggests ``+train.epoch=2``, which adds the key and
trains while nothing reads it; a preset with a typo does the same silently. ``check_keys`` compares
the composed config with the YAML files it was composed from, so a key added to a group's YAML file
is allowed everywhere at once, with no list to keep in step:

* ``train``, ``eval``, ``wandb``: the keys of ``conf/config.yaml``;
* ``pe``, ``dataset``, ``optimizer``, ``hardware``: the keys of the selected option's file
  (``conf/pe/axial_block.yaml`` for ``pe=axial_block``);
* ``model``: open to timm keyword arguments, so its keys are those of the selected option's file, the
  project's own model keys, and the parameters of timm's ``VisionTransformer`` and ``create_model``.

An unknown key raises ``ConfigError`` (exit 2 before any work) naming it and the closest known key.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rope_ext.config import MODEL_KEYS, ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
# groups whose keys come from conf/config.yaml itself
PRIMARY_GROUPS = ("train", "eval", "wandb")
# groups whose keys come from the selected option's YAML file
OPTION_GROUPS = ("pe", "dataset", "optimizer", "hardware")
# project keys of the model group that are not timm keyword arguments (``pool``: issue 9's head choice)
PROJECT_MODEL_KEYS = (*MODEL_KEYS, "pool")


def _flat(node: Any, prefix: str) -> set[str]:
    """Dotted paths of every key under ``node`` (a nested mapping), ``prefix`` included."""
    keys = set()
    if isinstance(node, Mapping | DictConfig):
        items = node.items_ex(resolve=False) if isinstance(node, DictConfig) else node.items()
        for key, value in items:
            path = f"{prefix}.{key}"
            keys.add(path)
            keys |= _flat(value, path)
    return keys


def _yaml_keys(path: Path, prefix: str, node: str | None = None) -> set[str]:
    if not path.is_file():
        return set()
    loaded = OmegaConf.load(path)
    loaded = loaded.get(node) if node else loaded
    return _flat(loaded, prefix)


@cache
def timm_model_keys() -> frozenset[str]:
    """Keyword arguments a timm ViT accepts: ``VisionTransformer.__init__`` and ``timm.create_model``."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    names = set(inspect.signature(VisionTransformer.__init__).parameters)
    names |= set(inspect.signature(timm.create_model).parameters)
    return frozenset(names - {"self", "args", "kwargs", "model_name"})


def allowed_keys(choices: Mapping[str, Any], conf_dir: Path = CONF) -> dict[str, set[str]]:
    """Per checked group, the dotted keys it may hold given the selected group options (``choices``)."""
    allowed = {g: _yaml_keys(conf_dir / "config.yaml", g, g) for g in PRIMARY_GROUPS}
    for group in (*OPTION_GROUPS, "model"):
        choice = choices.get(group)
        allowed[group] = _yaml_keys(conf_dir / group / f"{choice}.yaml", group) if choice else set()
    allowed["model"] |= {f"model.{k}" for k in (*PROJECT_MODEL_KEYS, *timm_model_keys())}
    # recipe options are global packages (they also set train.* and optimizer.*): their recipe: node
    if choices.get("recipe"):
        allowed["recipe"] = _yaml_keys(conf_dir / "recipe" / f"{choices['recipe']}.yaml", "recipe", "recipe")
    return allowed


def unknown_keys(cfg: DictConfig, allowed: Mapping[str, Iterable[str]]) -> list[tuple[str, str | None]]:
    """(unknown key, closest allowed key or None) for every key of a checked group not in ``allowed``."""
    found = []
    for group, keys in allowed.items():
        keys = set(keys)
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        for key in sorted(_flat(node, group)):
            parent = key.rsplit(".", 1)[0]
            # below a key whose YAML value is not a mapping (e.g. a timm kwarg given as a dict), anything goes
            if key in keys or (parent != group and parent in keys and not _has_children(parent, keys)):
                continue
            if parent != group and parent not in keys:
                continue  # the parent itself is reported
            close = difflib.get_close_matches(key, sorted(keys), n=1, cutoff=0.6)
            found.append((key, close[0] if close else None))
    return found


def _has_children(key: str, keys: set[str]) -> bool:
    return any(k.startswith(key + ".") for k in keys)


def check_keys(cfg: DictConfig, choices: Mapping[str, Any], conf_dir: Path = CONF) -> None:
    """Raise ``ConfigError`` naming every unknown key of the project's groups and its closest valid key.

    ``cfg``: the composed task config; ``choices``: Hydra's selected group options
    (``HydraConfig.get().runtime.choices``).
    """
    found = unknown_keys(cfg, allowed_keys(choices, conf_dir))
    if not found:
        return
    parts = []
    for key, close in found:
        hint = f"did you mean {close}?" if close else "no similar key"
        parts.append(f"{key}={OmegaConf.select(cfg, key, throw_on_missing=False)!r} ({hint})")
    groups = sorted({key.split(".")[0] for key, _ in found})
    where = ", ".join(
        "model: conf/model/<option>.yaml or a keyword argument of timm's VisionTransformer"
        if g == "model"
        else f"{g}: conf/config.yaml"
        if g in PRIMARY_GROUPS
        else f"{g}: conf/{g}/{choices.get(g)}.yaml"
        for g in groups
    )
    raise ConfigError(
        f"unknown key{'s' if len(found) > 1 else ''} {'; '.join(parts)}; allowed: the keys of {where}. "
        "Unknown keys are refused rather than silently ignored."
    )
