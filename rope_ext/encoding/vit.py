"""timm Vision Transformers with rotary attention: ``create_vit``, ``fold_for_inference``.

timm's ``Block`` hands its attention no positions, so the model keeps one ``PatchGrid``, shared by
all its rotary attention layers and updated by a forward pre-hook on ``patch_embed`` from the size
of each input image. Any input size that is a multiple of the patch works (``dynamic_img_size``).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import socket
import warnings
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from timm.layers import Attention
from timm.models import clean_state_dict
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn

from rope_ext.encoding.rotary import (
    OPTION_KEYS,
    LieBlockRotary,
    Rotary,
    augment_positions,
    grid_positions,
    make_rope,
    validate_pe,
)

log = logging.getLogger(__name__)
POS_EMBEDS = ("learn", "none")
POOLS = ("cls", "avg")


class PatchGrid:
    """The patch grid of the current input and its token positions ([T, dims], float32).

    Token t of a ``gh × gw`` grid (timm flattens row-major) sits at x = t mod gw, y = t div gw, as
    in Heo et al. (``coords="patch"``), or at its centre mapped into [-1, 1] per axis
    (``"normalized"``, DINOv3); 1-D positions are the flattened index t. The positions are computed
    once per forward, in the pre-hook, and shared by every layer: in train mode with ``augment``
    on they get one random affine draw (``rotary.augment_positions``); ``offset`` (set by
    ``shifted_positions``) moves them all, pixels unchanged.
    """

    def __init__(self, dims: int, coords: str = "patch", augment: dict | None = None) -> None:
        self.dims, self.coords = dims, coords
        self.augment = {k: float(v) for k, v in (augment or {}).items() if v}
        self.offset: tuple[float, ...] | None = None
        self.size: tuple[int, int] | None = None
        self._augmented = False
        self._current: Tensor | None = None
        self._positions: dict[tuple, Tensor] = {}

    def __call__(self, patch_embed: nn.Module, args: tuple) -> None:
        """Forward pre-hook on ``patch_embed``: read the grid off the input image, fix the positions."""
        image = args[0]
        self.size = tuple(patch_embed.dynamic_feat_size(tuple(image.shape[-2:])))
        pos = self._base(image.device)
        if self.offset is not None:
            pos = pos + pos.new_tensor(self.offset[: self.dims])
        self._augmented = bool(self.augment) and patch_embed.training
        if self._augmented:
            pos = augment_positions(pos, **self.augment)
        self._current = pos

    def _base(self, device: torch.device) -> Tensor:
        key = (self.size, device)
        pos = self._positions.get(key)
        if pos is None:
            pos = grid_positions(*self.size, self.dims, self.coords, device)
            self._positions[key] = pos
        return pos

    def key(self, device: torch.device) -> Hashable | None:
        """What the rotation tables depend on; None (no table reuse) for augmented positions."""
        if self._augmented:
            return None
        return (self.size, self.dims, self.coords, self.offset, device)

    def positions(self, device: torch.device) -> Tensor:
        if self._current is None:
            raise RuntimeError("PatchGrid has no size: the model's patch_embed has not run on an input yet")
        return self._current.to(device)

    def __getstate__(self) -> dict:
        # Deep copies (fold_for_inference) and pickles carry the settings, not this forward's state.
        state = self.__dict__.copy()
        state.update(_current=None, _positions={}, _augmented=False)
        return state


class RopeAttention(Attention):
    """timm's ``Attention`` with a rotary encoding applied to q and k (class/register tokens unrotated).

    With the fast impl and a learned basis, Qᵀ is applied to the q/k rows of the qkv weight once per
    forward rather than to every token (valid because nothing non-linear sits between projection
    and rotation; with qk-norm the basis is applied to the normalised activations instead).
    """

    def __init__(self, *args: object, rope: Rotary, grid: PatchGrid, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.rope = rope
        self.grid = grid

    @classmethod
    def from_attention(cls, attn: Attention, rope: Rotary, grid: PatchGrid) -> RopeAttention:
        """Same weights as ``attn``, with ``rope`` added."""
        if type(attn) is not Attention:
            raise ValueError(
                f"rotary encodings need timm's plain Attention; this model uses {type(attn).__name__}"
            )
        if getattr(attn, "gate", None) is not None:
            raise ValueError("gated attention is not supported with rotary encodings")
        qk_norm = not isinstance(attn.q_norm, nn.Identity)
        new = cls(
            attn.qkv.in_features,
            num_heads=attn.num_heads,
            attn_head_dim=attn.head_dim,
            dim_out=attn.proj.out_features,
            qkv_bias=attn.qkv.bias is not None,
            qk_norm=qk_norm,
            scale_norm=not isinstance(attn.norm, nn.Identity),
            proj_bias=attn.proj.bias is not None,
            attn_drop=attn.attn_drop.p,
            proj_drop=attn.proj_drop.p,
            norm_layer=(lambda d, **kw: copy.deepcopy(attn.q_norm)) if qk_norm else None,
            rope=rope,
            grid=grid,
        )
        if not isinstance(attn.norm, nn.Identity):
            new.norm = copy.deepcopy(attn.norm)
        if qk_norm:
            new.k_norm = copy.deepcopy(attn.k_norm)
        new.load_state_dict(attn.state_dict(), strict=False)
        return new.to(attn.qkv.weight.device)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        b, n, _ = x.shape
        rope = self.rope
        in_basis = rope.fold_into_projection and isinstance(self.q_norm, nn.Identity)
        weight, bias = self.qkv.weight, self.qkv.bias
        if in_basis:
            weight, bias = rope.project_qkv(weight, bias)
        qkv = F.linear(x, weight, bias).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        pos = self.grid.positions(x.device)
        num_prefix = n - pos.shape[0]
        if num_prefix < 0:
            raise ValueError(f"{n} tokens for a {self.grid.size} patch grid")
        q, k = rope.rotate_qk(q, k, pos, num_prefix, in_basis=in_basis, grid_key=self.grid.key(x.device))
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop.p if self.training else 0.0,
            is_causal=is_causal,
        )
        x = x.transpose(1, 2).reshape(b, n, self.attn_dim)
        x = self.norm(x)
        x = self.proj(x)
        return self.proj_drop(x)


def rotary_attentions(model: nn.Module) -> Iterator[RopeAttention]:
    """Every rotary attention layer of a model, in order."""
    return (m for m in model.modules() if isinstance(m, RopeAttention))


def resolved_options(model: nn.Module, configured: Mapping[str, Any]) -> dict[str, Any]:
    """The ``pe`` settings as the model uses them, for a run's records (metrics.json ``pe``).

    ``configured``: the encoding as the run asked for it (``name`` and ``OPTION_KEYS``; the trainer
    passes its ``pe`` config node). Each option the model's rotary layers report
    (``Rotary.options()``: package defaults resolved) replaces the configured value; the rest
    (``name``, ``augment``, and every option of a model without rotary layers) are as configured.
    """
    out = {k: configured.get(k) for k in ("name", *OPTION_KEYS)}
    if isinstance(out["augment"], Mapping):  # a config node (DictConfig) is recorded as a plain dict
        out["augment"] = dict(out["augment"])
    layer = next(rotary_attentions(model), None)
    if layer is not None:  # every layer is built from the same options
        out.update({k: v for k, v in layer.rope.options().items() if v is not None})
    return out


def _check_hub_reachable(model_name: str) -> None:
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


def load_checkpoint(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Load a local ``.pth``/``.safetensors`` state dict into ``model``.

    Accepts timm-format weights (absolute position embedding resampled to the model's grid by timm's
    own filter; a classifier head of another size is left freshly initialised) and this project's
    checkpoints (``{"model": state_dict, ...}``). Missing rotary parameters keep their
    initialisation; unexpected keys are reported; any other missing key is an error. Files are read
    by ``read_state_dict``: never by running code (``CheckpointFileError`` otherwise).
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


def create_vit(
    model_name: str,
    *,
    pe: str = "none",
    num_classes: int,
    img_size: int,
    pe_options: dict | None = None,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    pool: str = "cls",
    **timm_kwargs: object,
) -> VisionTransformer:
    """A timm ViT (``timm.create_model``) whose attention applies the rotary encoding ``pe``.

    ``pe``: one of ``PE_NAMES``; ``pe_options``: see ``rope_ext.make_rope`` (``dims`` included).
    ``timm_kwargs`` go to timm (``patch_size``, ``depth``, ...); ``pos_embed="learn"|"none"`` keeps
    or removes the absolute position embedding (default: kept for ``pe="none"``, removed for rotary
    encodings as in Heo et al.'s RoPE-only models). Models are built with ``dynamic_img_size=True``.
    ``pool``: ``"cls"`` (timm's class token, unrotated as in Heo et al.) or ``"avg"`` (no class
    token, global average pooling: with a rotary encoding and no absolute embedding the whole model
    is then invariant to a shift of all positions, see ``shift_error``).
    """
    # Checked before timm builds anything; make_rope checks block against the real head_dim.
    options = validate_pe(pe, dict(pe_options or {}))
    options = {k: v for k, v in options.items() if v is not None}
    pos_embed = timm_kwargs.pop("pos_embed", None)
    if pos_embed is None:
        pos_embed = "learn" if pe == "none" else "none"
    if pos_embed not in POS_EMBEDS:
        raise ValueError(f"pos_embed={pos_embed!r} is not allowed; allowed values: {', '.join(POS_EMBEDS)}")
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r} is not allowed; allowed values: {', '.join(POOLS)}")
    if pool == "avg":
        for key, value in (("class_token", False), ("global_pool", "avg")):
            if timm_kwargs.get(key, value) != value:
                raise ValueError(
                    f"{key}={timm_kwargs[key]!r} contradicts pool='avg' (which sets {key}={value!r})"
                )
            timm_kwargs[key] = value
    if pretrained:
        _check_hub_reachable(model_name)
    timm_kwargs.setdefault("dynamic_img_size", True)
    try:
        model = timm.create_model(
            model_name, pretrained=pretrained, num_classes=num_classes, img_size=img_size, **timm_kwargs
        )
    except (RuntimeError, OSError) as err:  # the hub client's errors (offline, no cache) are OSErrors
        if not pretrained:
            raise
        raise RuntimeError(
            f"pretrained weights for {model_name!r} could not be loaded ({err}). Pass a local state dict "
            "instead: checkpoint='/path/to/weights.pth|.safetensors' (Hydra: model.checkpoint=...)"
        ) from err
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"model_name={model_name!r} is not a timm VisionTransformer")
    if pos_embed == "none":
        model.pos_embed = None
    if pe != "none":
        dims = options.pop("dims")
        grid = PatchGrid(dims, options["coords"], options.pop("augment"))
        # A callable object, not a lambda, so deepcopy/pickle carry the hook along with its grid.
        model.patch_embed.register_forward_pre_hook(grid)
        for blk in model.blocks:
            attn = blk.attn
            rope = make_rope(pe, head_dim=attn.head_dim, num_heads=attn.num_heads, dims=dims, **options)
            blk.attn = RopeAttention.from_attention(attn, rope, grid)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


def fold_for_inference(model: nn.Module) -> nn.Module:
    """A deep copy whose rotary attention is plain 2×2 rotation: each learned basis Q is folded
    into the q and k rows of the qkv weight and bias (qᵀR(p_i)ᵀR(p_j)k = (Qᵀq)ᵀD(p_j−p_i)(Qᵀk)),
    so an N×N model costs at inference what a 2×2 model costs. Same logits; input untouched.
    Models without a basis (none, axial2_*, block 2, lie_block) come back as an unchanged copy.
    """
    folded = copy.deepcopy(model)
    for attn in rotary_attentions(folded):
        if not isinstance(attn.q_norm, nn.Identity):
            raise ValueError(
                "fold_for_inference: a model with qk_norm cannot be folded (the norm sits "
                "between the projection and the rotation); use it unfolded"
            )
        rope = attn.rope
        if isinstance(rope, LieBlockRotary) or rope.basis_skew is None:
            continue
        with torch.no_grad():
            weight, bias = rope.project_qkv(attn.qkv.weight, attn.qkv.bias)
            attn.qkv.weight.copy_(weight)
            if bias is not None:
                attn.qkv.bias.copy_(bias)
        rope.fold()
    return folded


@torch.no_grad()
def relative_property_error(model: nn.Module, grid: int = 4, shift: tuple[float, ...] = (3.0, 5.0)) -> float:
    """Measured max |R(p_i+s)ᵀR(p_j+s) − R(p_i)ᵀR(p_j)| over all rotary layers and heads (float64).

    Positions: a ``grid × grid`` patch grid (1-D: its flattened index), shifted by ``shift``.
    0.0 for models without rotary attention; ~1e-15 for the commuting variants.
    """
    worst = 0.0
    for attn in rotary_attentions(model):
        rope = copy.deepcopy(attn.rope).double().cpu()
        t = torch.arange(grid * grid, dtype=torch.float64)
        pos = torch.stack((t % grid, t // grid), -1) if rope.dims == 2 else t[:, None]
        s = torch.tensor(shift[: rope.dims], dtype=torch.float64)
        r0, r1 = rope.rotation(pos), rope.rotation(pos + s)
        g0 = torch.einsum("hiab,hjac->hijbc", r0, r0)
        g1 = torch.einsum("hiab,hjac->hijbc", r1, r1)
        worst = max(worst, (g1 - g0).abs().max().item())
    return worst


def patch_grids(model: nn.Module) -> list[PatchGrid]:
    """The ``PatchGrid`` objects of a model's rotary attention layers (one per model from create_vit)."""
    grids: list[PatchGrid] = []
    for attn in rotary_attentions(model):
        if not any(g is attn.grid for g in grids):
            grids.append(attn.grid)
    return grids


@contextmanager
def shifted_positions(model: nn.Module, offset: float | tuple[float, ...]) -> Iterator[None]:
    """Inside the block every token position of ``model`` is moved by ``offset`` (a number for all
    axes, or one per axis; in the units of the coordinates in use), pixels unchanged."""
    grids = patch_grids(model)
    saved = [g.offset for g in grids]
    try:
        for g in grids:
            off = (float(offset),) * g.dims if isinstance(offset, int | float) else tuple(map(float, offset))
            if len(off) != g.dims:
                raise ValueError(f"offset={offset!r} must have one entry per position axis ({g.dims})")
            g.offset = off
        yield
    finally:
        for g, off in zip(grids, saved):
            g.offset = off


def grid_offset(
    model: nn.Module, image_size: tuple[int, int], patches: float | None = None
) -> tuple[float, ...]:
    """An offset of ``patches`` grid steps per axis (None: half the grid, rounded down) for inputs
    of ``image_size`` (H, W), in the model's coordinate units: patches for ``coords="patch"``,
    2·patches/g for ``"normalized"`` (where one step is 2/g). () for a model without rotary layers."""
    grids = patch_grids(model)
    if not grids:
        return ()
    grid = grids[0]
    gh, gw = model.patch_embed.dynamic_feat_size(tuple(image_size))
    extent = (gw, gh) if grid.dims == 2 else (gh * gw,)
    steps = [float(e // 2) if patches is None else float(patches) for e in extent]
    if grid.coords == "normalized":
        return tuple(2 * s / e for s, e in zip(steps, extent))
    return tuple(steps)


@torch.no_grad()
def shift_error(model: nn.Module, images: Tensor, offset: float | tuple[float, ...]) -> float:
    """Largest relative change of the logits, max|Δlogit| / max|logit|, when every token position is
    moved by ``offset`` (coordinate units, see ``shifted_positions``) with the pixels unchanged.

    Eval mode, float32 logits. ~1e-7 for a commuting rotary encoding with ``pool="avg"`` and no
    absolute embedding (the model is then relative end to end); large with a class token, which is
    unrotated and so reads absolute positions through qᵀR(p_j)k_j. A model without rotary layers
    (``pe="none"``, APE) has no position input to move: 0.0, trivially (its absolute embedding is a
    fixed table indexed by token slot; how it copes with new positions shows in ``test_acc_at``).
    """
    if not patch_grids(model):
        return 0.0
    was_training = model.training
    model.eval()
    try:
        base = model(images).float()
        with shifted_positions(model, offset):
            moved = model(images).float()
    finally:
        model.train(was_training)
    return ((moved - base).abs().max() / base.abs().max().clamp_min(1e-30)).item()
