"""A job's model from its config (``conf/model`` + ``conf/pe``): ``build_model``, shared by the trainer, ``experiments/`` and the tests."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

import rope_ext
from rope_ext.config import ConfigError, pe_options, timm_kwargs
from rope_ext.encoding.weights import CheckpointFileError


def build_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    """``rope_ext.create_vit`` for ``cfg.model``/``cfg.pe`` at ``dataset.input_size``; its errors become
    ConfigErrors naming the Hydra keys. The model maps images (B, 3, H, W) to logits (B, num_classes)."""
    kwargs = timm_kwargs(cfg.model)
    checkpoint_path = cfg.model.checkpoint  # an existing file: config.validate
    try:
        return rope_ext.create_vit(
            cfg.model.arch,
            pe=rope_ext.validate_pe(cfg.pe.name, pe_options(cfg.pe), prefix="pe.", name_key="pe.name"),
            num_classes=num_classes,
            img_size=int(cfg.dataset.input_size),
            pretrained=bool(cfg.model.pretrained),
            checkpoint=checkpoint_path,
            **kwargs,
        )
    except CheckpointFileError as err:
        raise ConfigError(f"model.checkpoint={str(checkpoint_path)!r} is refused: {err}") from None
    except RuntimeError as err:
        if cfg.model.pretrained:
            raise ConfigError(
                f"model.pretrained=true for model={cfg.model.name} ({cfg.model.arch}) but the weights cannot be "
                f"fetched: {err}. Allowed offline: model.pretrained=true with model.checkpoint=/path/to/weights "
                "(a local .pth/.safetensors), or model.pretrained=false."
            ) from None
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(
            f"model={cfg.model.name} with pe={cfg.pe.name} rejected these settings: {err} "
            f"(pe.* keys: {pe_options(cfg.pe)}; model keys: {kwargs})."
        ) from None
