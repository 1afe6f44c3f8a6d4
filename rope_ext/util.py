"""Hydra-free helpers that read config values: ``select`` (a dotted key of a DictConfig or a plain dict)
and the number checks ``is_int`` / ``is_number`` (the library's, one definition)."""

from __future__ import annotations

import dataclasses
from typing import Any

from rope_ext.encoding.spec import is_int, is_number

__all__ = ["is_int", "is_number", "select"]


def select(node: Any, key: str, default: Any = None) -> Any:
    """The value at dotted ``key`` of an OmegaConf node, a plain dict or a typed config (dataclasses),
    ``default`` when a part is missing."""
    if hasattr(node, "_get_node"):  # a DictConfig: OmegaConf.select resolves interpolations
        from omegaconf import OmegaConf

        return OmegaConf.select(node, key, default=default)
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif dataclasses.is_dataclass(node) and hasattr(node, part):
            node = getattr(node, part)
        else:
            return default
    return node
