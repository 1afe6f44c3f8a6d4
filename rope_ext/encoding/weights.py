"""Weights for ``create_vit``: timm's hub (with a fast reachability check) or a local state dict.

``read_state_dict`` reads ``.safetensors``/``.pth`` files without ever executing code;
``load_checkpoint`` fits timm-format or this project's weights into a model, rotary or not.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import warnings
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from timm.models import clean_state_dict
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor

log = logging.getLogger(__name__)


def check_hub_reachable(model_name: str) -> None:
    """Fail within seconds, not after the hub client's retries, when pretrained weights can't come."""
    hint = (
        f"pretrained weights for {model_name!r} cannot be downloaded here ({{why}}). Pass a local "
        "state dict instead: create_vit(..., checkpoint='/path/to/weights.pth|.safetensors') "
        "(Hydra: model.checkpoint=/path/to/file)"
    )
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("", "0", "false", "no", "off"):
        # Offline: only the local hub cache can answer.
        hub_id = getattr(timm.models.get_pretrained_cfg(model_name), "hf_hub_id", None)
        cached = hub_id and any(
            isinstance(try_to_load_from_cache(hub_id, name), str)
            for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
        )
        if not cached:
            raise RuntimeError(hint.format(why="HF_HUB_OFFLINE is set and the hub cache lacks them"))
        return
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError as err:
        raise RuntimeError(hint.format(why=f"hub unreachable: {err}")) from None


class CheckpointFileError(ValueError):
    """A weights file that is refused: unreadable, not a state dict, or loadable only by running code."""


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict in a ``.safetensors`` or ``.pth`` file, read without ever executing code.

    ``.pth`` files are unpickled with ``weights_only=True`` (tensors and plain containers only);
    ``{"state_dict"|"model": ...}`` wrappers and ``module.`` prefixes are removed as timm's loader does.
    A pickle that needs arbitrary classes or functions is refused: unpickling it could run any code.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            state: Any = safetensors.torch.load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - text, random bytes, truncated files, bad safetensors headers
        named = re.search(r"unsupported global:? *(?:GLOBAL )?([\w.]+)", str(err), flags=re.I)
        if named is None:
            raise CheckpointFileError(f"{path} is not a readable weights file ({_first_line(err)})") from None
        raise CheckpointFileError(
            f"{path} is refused: it is a pickle that can only be loaded by executing code it names "
            f"({named.group(1)}), and loading such a file can run anything on this machine. Use a "
            ".safetensors file, or a .pth that holds only tensors (a state dict). To convert a file you "
            "trust, in a separate Python session: obj = torch.load(path, weights_only=False), then "
            "safetensors.torch.save_file(obj['model'] (or obj['state_dict'], or model.state_dict() after "
            "loading it into a model), 'weights.safetensors')."
        ) from None
    if isinstance(state, dict):  # training checkpoints wrap the weights (timm's loader does the same)
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
        state = clean_state_dict(state)
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        kind = type(state).__name__ if not isinstance(state, dict) else "a dict that is not a state dict"
        raise CheckpointFileError(
            f"{path} holds {kind}, not a state dict (a mapping of parameter names to tensors)"
        )
    return state


def _first_line(err: BaseException) -> str:
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(err))
    if unpickler is not None:  # torch's first line advises weights_only=False: never the advice here
        return f"not a tensors-only pickle: {unpickler.group(1)}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def check_values(state: dict[str, Tensor], own: dict[str, Tensor], path: Path) -> None:
    """Refuse weights that cannot be the model's: a floating parameter given as an integer, bool or
    complex tensor, or holding NaN/inf. Other floating dtypes (float64, float16, bfloat16) are
    accepted and converted to the model's dtype on load, at the precision the file holds."""
    wrong = [
        f"{k} ({v.dtype})"
        for k, v in state.items()
        if k in own and own[k].is_floating_point() and not v.is_floating_point()
    ]
    if wrong:
        raise CheckpointFileError(
            f"{path} is refused: {len(wrong)} weights are not floating point: {', '.join(wrong[:5])}; "
            "allowed: floating tensors (float32, float64, float16, bfloat16)"
        )
    for key, value in state.items():
        if key in own and value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointFileError(
                f"{path} is refused: {key} holds {bad} non-finite values (NaN or inf) of {value.numel()}; "
                "allowed: finite weights"
            )


def load_checkpoint(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Load a local ``.pth``/``.safetensors`` state dict into ``model``.

    Accepts timm-format weights (absolute position embedding resampled to the model's grid by timm's
    own filter; a classifier head of another size is left freshly initialised) and this project's
    checkpoints (``{"model": state_dict, ...}``). Missing rotary parameters keep their
    initialisation; unexpected keys are reported; any other missing key is an error. Files are read
    by ``read_state_dict``: never by running code (``CheckpointFileError`` otherwise), and checked
    by ``check_values`` (floating, finite).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint={str(path)!r}: no such file")
    state = read_state_dict(path)
    ignored = []
    if model.pos_embed is None and "pos_embed" in state:  # timm's filter would resample it: drop it first
        state = {k: v for k, v in state.items() if k != "pos_embed"}
        ignored.append("pos_embed")
    state = checkpoint_filter_fn(state, model)
    own = model.state_dict()
    check_values(state, own, path)
    dropped = [k for k in ("head.weight", "head.bias") if k in state and state[k].shape != own[k].shape]
    for k in dropped:
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    unexpected = ignored + list(unexpected)
    rotary = [k for k in missing if ".rope." in k]
    other = [k for k in missing if ".rope." not in k and k not in dropped]
    if other:
        raise ValueError(f"checkpoint={str(path)!r} does not fit this model: missing keys {other[:8]}")
    if dropped:
        log.info("checkpoint %s: classifier head of another size left freshly initialised", path)
    if rotary:
        log.info("checkpoint %s: %d rotary parameters freshly initialised", path, len(rotary))
    if unexpected:
        warnings.warn(f"checkpoint {path}: unexpected keys ignored: {unexpected}", stacklevel=2)
