"""Checks of what the library's public functions are given: a clear TypeError / ValueError naming
the argument, before any work. ``MAX_TOKENS`` bounds the patches per image (the harness's limit too).

Every check reads shapes and dtypes only: no host sync, nothing that grows with the input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Patches per image: attention's time and memory grow with the square of it. 128 × 128 patches
# (2048 px at patch 16) is far above any input the studies use and still fits one GPU.
MAX_TOKENS = 128 * 128


def check_module(model: object, *, name: str = "model") -> None:
    """``model`` must be a torch module (TypeError naming ``name`` otherwise)."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{name} must be a torch.nn.Module (e.g. from create_vit); got {type(model).__name__}"
        )


def check_images(model: nn.Module, images: object, *, name: str = "images") -> None:
    """``images`` must be a non-empty [B, C, H, W] floating tensor that ``model`` (a timm ViT) takes:
    its channel count, sizes that are multiples of its patch and give at most ``MAX_TOKENS``
    patches, and its parameters' dtype unless autocast is on. TypeError / ValueError otherwise."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a tensor [B, C, H, W]; got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape [B, C, H, W]; got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(images.shape)}); allowed: at least one image"
        )
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor; got dtype {images.dtype}")
    _check_dtype(model, images, name)
    patch_embed = model.patch_embed
    channels = patch_embed.proj.in_channels
    if images.shape[1] != channels:
        raise ValueError(f"{name} has {images.shape[1]} channels; the model takes {channels}")
    _check_size(patch_embed, tuple(images.shape[-2:]), name)


def _check_dtype(model: nn.Module, images: Tensor, name: str) -> None:
    weight = model.patch_embed.proj.weight
    if images.dtype != weight.dtype and not torch.is_autocast_enabled(images.device.type):
        raise TypeError(
            f"{name} has dtype {images.dtype} but the model's weights are {weight.dtype}; allowed: "
            f"{weight.dtype} (model.to(dtype) converts the model), or run under torch.autocast"
        )


def _check_size(patch_embed: nn.Module, size: tuple[int, int], name: str) -> None:
    ph, pw = patch_embed.patch_size
    if not getattr(patch_embed, "dynamic_img_pad", False) and (size[0] % ph or size[1] % pw):
        raise ValueError(
            f"{name} of {size[0]}x{size[1]} px are not allowed; allowed: sizes that are multiples of the patch ({ph}x{pw})"
        )
    tokens = math.ceil(size[0] / ph) * math.ceil(size[1] / pw)
    if tokens > MAX_TOKENS:
        side = math.isqrt(MAX_TOKENS)
        raise ValueError(
            f"{name} of {size[0]}x{size[1]} px give {tokens} patches of {ph}x{pw} px per image; allowed: at most "
            f"MAX_TOKENS = {MAX_TOKENS} (e.g. {side * ph}x{side * pw} px), attention's cost grows with its square"
        )


def images_pre_hook(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of every ``create_vit`` model (``with_kwargs=True``): ``check_images`` on
    the images, however they are passed."""
    check_images(model, args[0] if args else kwargs.get("x"))
