"""A job's model: ``create_model`` from the typed ``model`` config and the resolved encoding (the
trainer), and ``build_model`` for a whole composed config (``experiments/``, the tests)."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import OmegaConf
from torch import nn

import rope_ext
from rope_ext.config import resolve_pe, timm_kwargs
from rope_ext.encoding.spec import RopeSpec
from rope_ext.encoding.weights import CheckpointFileError
from rope_ext.errors import ConfigError
from rope_ext.schema import ModelConfig, PEConfig


def create_model(model: ModelConfig, rope: RopeSpec, *, num_classes: int, img_size: int) -> nn.Module:
    """``rope_ext.create_vit`` for ``model`` with the encoding ``rope`` at ``img_size``; its errors become
    ConfigErrors naming the Hydra keys. The model maps images (B, 3, H, W) to logits (B, num_classes)."""
    kwargs = timm_kwargs(_fields(model))
    try:
        return rope_ext.create_vit(
            model.arch,
            pe=rope,
            num_classes=num_classes,
            img_size=int(img_size),
            pretrained=bool(model.pretrained),
            checkpoint=model.checkpoint,  # an existing file: config.validate
            **kwargs,
        )
    except CheckpointFileError as err:
        raise ConfigError(f"model.checkpoint={str(model.checkpoint)!r} is refused: {err}") from None
    except RuntimeError as err:
        if model.pretrained:
            raise ConfigError(
                f"model.pretrained=true for model={model.name} ({model.arch}) but the weights cannot be "
                f"fetched: {err}. Allowed offline: model.pretrained=true with model.checkpoint=/path/to/weights "
                "(a local .pth/.safetensors), or model.pretrained=false."
            ) from None
        raise
    except (ValueError, TypeError) as err:
        pe_keys = {k: v for k, v in rope.options().items() if v is not None}
        raise ConfigError(
            f"model={model.name} with pe={rope.name} rejected these settings: {err} "
            f"(pe.* keys: {pe_keys}; model keys: {kwargs})."
        ) from None


def build_model(cfg: Any, num_classes: int) -> nn.Module:
    """The model of a whole config (``schema.Config``, or a ``DictConfig`` as composed or loaded from a
    run's ``.hydra/config.yaml``) at its ``dataset.input_size``: its encoding resolved, then
    ``create_model``."""
    model, pe = _typed(cfg.model, ModelConfig), _typed(cfg.pe, PEConfig)
    return create_model(
        model,
        resolve_pe(dataclasses.asdict(pe), None),
        num_classes=num_classes,
        img_size=cfg.dataset.input_size,
    )


def _typed(node: Any, schema: type) -> Any:
    """``node`` as an instance of the dataclass ``schema`` (checked against it when it is a DictConfig)."""
    if isinstance(node, schema):
        return node
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))


def _fields(model: ModelConfig) -> dict[str, Any]:
    return {name: getattr(model, name) for name in model.__dataclass_fields__}
