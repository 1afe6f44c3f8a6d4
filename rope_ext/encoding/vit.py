"""timm Vision Transformers with rotary attention: ``create_vit``, ``fold_for_inference``.

``RopeVisionTransformer`` is timm's ``VisionTransformer`` whose ``forward_features`` computes the
token positions once per forward, from the input's size, and hands them to every block's
attention explicitly, as timm's Eva does with its rotary table. Any input size that is a multiple
of the patch works (``dynamic_img_size``). Weights: ``rope_ext.encoding.weights``; measurements
(shift error, relative property): ``rope_ext.encoding.relativity``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models._manipulate import checkpoint
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from rope_ext.encoding import registry
from rope_ext.encoding.functional import augment_positions, grid_positions
from rope_ext.encoding.inputs import check_images, check_module, images_pre_hook
from rope_ext.encoding.layer import RotaryLayer, TableCache
from rope_ext.encoding.projection import moved_qkv, shared_tables
from rope_ext.encoding.spec import OPTION_KEYS, RopeSpec, make_rope, validate_pe
from rope_ext.encoding.weights import check_hub_reachable, load_checkpoint

POS_EMBEDS = ("learn", "none")
POOLS = ("cls", "avg")


@dataclass(frozen=True)
class Positions:
    """One forward's token positions, shared by every rotary attention layer.

    ``coords`` [T, dims] float32 (patch tokens only); ``num_prefix`` class/register tokens before
    them, left unrotated; ``key``: what the rotation tables depend on, so a layer reuses its tables
    across steps while it is unchanged (None: positions drawn by augmentation, never reused).
    """

    coords: Tensor
    num_prefix: int
    key: Hashable | None
    # per attention layer (by ``layer_index``): its qkv (weight, bias) moved into the rotation basis
    # for this step by ``moved_qkv``, or None (nothing moves, or the layer moves its own)
    qkv: tuple = ()
    # per attention layer: its rotation tables built with the other layers' by ``shared_tables``, or None
    tables: tuple = ()


class RopeAttention(Attention):
    """timm's ``Attention`` with a rotary encoding applied to q and k (class/register tokens unrotated).

    With the fast impl and a learned basis, Qᵀ is applied to the q/k rows of the qkv weight once per
    forward rather than to every token (valid because nothing non-linear sits between projection
    and rotation; with qk-norm the basis is applied to the normalised activations instead).
    """

    def __init__(self, *args: object, rope: RotaryLayer, layer_index: int = 0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.rope = rope
        self.layer_index = layer_index  # its entry in ``Positions.qkv``

    @classmethod
    def from_attention(cls, attn: Attention, rope: RotaryLayer) -> RopeAttention:
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
        )
        if not isinstance(attn.norm, nn.Identity):
            new.norm = copy.deepcopy(attn.norm)
        if qk_norm:
            new.k_norm = copy.deepcopy(attn.k_norm)
        new.load_state_dict(attn.state_dict(), strict=False)
        return new.to(attn.qkv.weight.device)

    def forward(
        self, x: Tensor, positions: Positions, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        """x [B, num_prefix + T, C] -> [B, num_prefix + T, C]."""
        b, n, _ = x.shape
        if n != positions.num_prefix + positions.coords.shape[0]:
            raise ValueError(
                f"{n} tokens for {positions.num_prefix} prefix tokens and {positions.coords.shape[0]} positions"
            )
        rope = self.rope
        in_basis = rope.fold_into_projection and isinstance(self.q_norm, nn.Identity)
        weight, bias = self.qkv.weight, self.qkv.bias
        moved = positions.qkv[self.layer_index] if positions.qkv else None
        if moved is not None:
            weight, bias = moved
        elif in_basis:
            weight, bias = rope.project_qkv(weight, bias)
        qkv = F.linear(x, weight, bias).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        tables = positions.tables[self.layer_index] if positions.tables else None
        q, k = rope.rotate_qk(
            q,
            k,
            positions.coords,
            positions.num_prefix,
            in_basis=in_basis,
            grid_key=positions.key,
            tables=tables,
        )
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


class RopeBlock(Block):
    """timm's ``Block`` that passes the forward's positions to its (rotary) attention."""

    def forward(
        self, x: Tensor, positions: Positions, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), positions, attn_mask, is_causal)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class RopeVisionTransformer(VisionTransformer):
    """timm's ``VisionTransformer`` with rotary attention (``create_vit`` builds it).

    ``rope_spec``: the encoding (resolved ``RopeSpec``); ``position_offset``: None, or a shift of
    every position (coordinate units, one entry per axis; set by ``relativity.shifted_positions``).
    """

    rope_spec: RopeSpec
    position_offset: tuple[float, ...] | None

    @classmethod
    def from_vit(cls, model: VisionTransformer, spec: RopeSpec) -> RopeVisionTransformer:
        """``model`` (built by timm's factory, so its name, config and weights are timm's) turned in
        place into this class, every attention layer given a rotary layer of ``spec``."""
        plain = [type(b).__name__ for b in model.blocks if type(b) is not Block]
        if plain:
            raise ValueError(f"rotary encodings need timm's plain Block; this model uses {plain[0]}")
        if not isinstance(model.patch_drop, nn.Identity):
            raise ValueError(
                "patch dropout is not supported with rotary encodings (patch_drop_rate must be 0)"
            )
        for index, blk in enumerate(model.blocks):
            attn = blk.attn
            rope = make_rope(spec, head_dim=attn.head_dim, num_heads=attn.num_heads)
            blk.attn = RopeAttention.from_attention(attn, rope)
            blk.attn.layer_index = index
            # Same state, a forward that takes positions (timm's classes stay the factory's).
            blk.__class__ = RopeBlock
        model.__class__ = cls
        model.rope_spec, model.position_offset = spec, None
        model._qkv_cache, model._table_cache = TableCache(), TableCache()
        return model

    def positions(self, image_size: tuple[int, int], device: torch.device) -> Positions:
        """Token positions for inputs of ``image_size`` (H, W): the grid's coordinates, moved by
        ``position_offset``, and in training with ``augment`` on, one random affine draw for all."""
        gh, gw = self.patch_embed.dynamic_feat_size(image_size)
        spec, offset = self.rope_spec, self.position_offset
        pos = grid_positions(gh, gw, spec.dims, spec.coords, device)
        if offset is not None:
            pos = pos + pos.new_tensor(offset)
        if self.training and spec.augment.active:
            return Positions(augment_positions(pos, **asdict(spec.augment)), self.num_prefix_tokens, None)
        key = ((gh, gw), spec.dims, spec.coords, offset, self.num_prefix_tokens, device)
        return Positions(pos, self.num_prefix_tokens, key)

    def forward_features(self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """Images [B, 3, H, W] -> tokens [B, num_prefix + T, C]; positions, the qkv weights moved into
        the rotation bases (``moved_qkv``) and the rotation tables (``shared_tables``) computed once,
        here, for every block."""
        check_images(self, x, name="x")
        positions = self.positions(tuple(x.shape[-2:]), x.device)
        attns = [blk.attn for blk in self.blocks]
        moved = moved_qkv(attns, getattr(self, "_qkv_cache", None))
        ropes = [attn.rope for attn in attns]
        tables = shared_tables(
            ropes, positions.coords, positions.num_prefix, positions.key, getattr(self, "_table_cache", None)
        )
        positions = replace(positions, qkv=moved, tables=tables)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, positions, attn_mask, is_causal)
            else:
                x = blk(x, positions, attn_mask, is_causal)
        return self.norm(x)


def rotary_attentions(model: nn.Module) -> Iterator[RopeAttention]:
    """Every rotary attention layer of a model, in order."""
    return (m for m in model.modules() if isinstance(m, RopeAttention))


def rope_vits(model: nn.Module) -> list[RopeVisionTransformer]:
    """The rotary ViTs in ``model`` (itself, or inside a DDP / torch.compile wrapper)."""
    return [m for m in model.modules() if isinstance(m, RopeVisionTransformer)]


def resolved_options(model: nn.Module, configured: Mapping[str, Any]) -> dict[str, Any]:
    """The ``pe`` settings as the model uses them, for a run's records (metrics.json ``pe``).

    ``configured``: the encoding as the run asked for it (``name`` and ``OPTION_KEYS``; the trainer
    passes its ``pe`` config node). A rotary model reports its resolved ``RopeSpec`` (library
    defaults filled in); a model without rotary layers, the configured values.
    """
    models = rope_vits(model)
    if models:
        return {"name": models[0].rope_spec.name, **models[0].rope_spec.options()}
    out = {k: configured[k] if k in configured else None for k in ("name", *OPTION_KEYS)}
    if isinstance(out["augment"], Mapping):  # a config node (DictConfig) is recorded as a plain dict
        out["augment"] = dict(out["augment"])
    return out


def create_vit(
    model_name: str,
    *,
    pe: str | RopeSpec = "none",
    num_classes: int,
    img_size: int,
    pe_options: Mapping[str, Any] | None = None,
    pretrained: bool = False,
    checkpoint: str | os.PathLike | None = None,
    pool: str = "cls",
    **timm_kwargs: object,
) -> VisionTransformer:
    """A timm ViT (``timm.create_model``) whose attention applies the rotary encoding ``pe``.

    ``pe``: a ``RopeSpec`` (from ``validate_pe``), or a registered name (``registry.names()``) with ``pe_options`` (see
    ``rope_ext.make_rope``; ``dims`` and ``augment`` included). ``timm_kwargs`` go to timm
    (``patch_size``, ``depth``, ...); ``pos_embed="learn"|"none"`` keeps or removes the absolute
    position embedding (default: kept for ``pe="none"``, removed for rotary encodings as in Heo et
    al.'s RoPE-only models). Models are built with ``dynamic_img_size=True``. ``pool``: ``"cls"``
    (timm's class token, unrotated as in Heo et al.) or ``"avg"`` (no class token, global average
    pooling: with a rotary encoding and no absolute embedding the whole model is then invariant to
    a shift of all positions, see ``relativity.shift_error``). ``checkpoint``: a local state dict
    (``weights.load_checkpoint``). A rotary model is a ``RopeVisionTransformer``.
    """
    # Checked before timm builds anything; make_rope checks block against the real head_dim.
    if not isinstance(model_name, str):
        raise TypeError(f"model_name must be a timm model name (str); got {type(model_name).__name__}")
    spec = _resolve_spec(pe, pe_options)
    rotary = registry.get(spec.name).rotary
    pos_embed = _check_model_args(rotary, num_classes, img_size, pool, timm_kwargs)
    if pretrained:
        check_hub_reachable(model_name)
    model = _timm_vit(model_name, pretrained, num_classes=num_classes, img_size=img_size, **timm_kwargs)
    if pos_embed == "none":
        model.pos_embed = None
    if rotary:
        model = RopeVisionTransformer.from_vit(model, spec)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    model.register_forward_pre_hook(images_pre_hook, with_kwargs=True)
    return model


def _resolve_spec(pe: str | RopeSpec, pe_options: Mapping[str, Any] | None) -> RopeSpec:
    if pe_options is not None and not isinstance(pe_options, Mapping):
        raise TypeError(
            f"pe_options must be a mapping of option names to values; got {type(pe_options).__name__}"
        )
    if isinstance(pe, RopeSpec):
        if pe_options:
            raise ValueError("create_vit takes a RopeSpec or a pe name with pe_options, not both")
        return validate_pe(pe.name, pe)
    return validate_pe(pe, dict(pe_options or {}))


def _check_model_args(
    rotary: bool, num_classes: object, img_size: object, pool: object, timm_kwargs: dict[str, object]
) -> str:
    """Check ``create_vit``'s model arguments and set timm's for ``pool`` (in ``timm_kwargs``);
    returns ``pos_embed`` (popped from ``timm_kwargs``; default: kept only without a rotary pe)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(f"num_classes={num_classes!r} is not allowed; allowed values: an integer >= 0")
    if not isinstance(img_size, int) or isinstance(img_size, bool) or img_size < 1:
        raise ValueError(f"img_size={img_size!r} is not allowed; allowed values: an integer >= 1")
    pos_embed = timm_kwargs.pop("pos_embed", None)
    if pos_embed is None:
        pos_embed = "none" if rotary else "learn"
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
    timm_kwargs.setdefault("dynamic_img_size", True)
    return pos_embed


def _timm_vit(model_name: str, pretrained: bool, **kwargs: object) -> VisionTransformer:
    """``timm.create_model``; a failed download named with the way out (a local checkpoint)."""
    try:
        model = timm.create_model(model_name, pretrained=pretrained, **kwargs)
    except (RuntimeError, OSError) as err:  # the hub client's errors (offline, no cache) are OSErrors
        if not pretrained:
            raise
        raise RuntimeError(
            f"pretrained weights for {model_name!r} could not be loaded ({err}). Pass a local state dict "
            "instead: checkpoint='/path/to/weights.pth|.safetensors' (Hydra: model.checkpoint=...)"
        ) from err
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"model_name={model_name!r} is not a timm VisionTransformer")
    return model


def fold_for_inference(model: nn.Module) -> nn.Module:
    """A deep copy whose rotary attention is plain 2×2 rotation: each learned basis Q is folded
    into the q and k rows of the qkv weight and bias (qᵀR(p_i)ᵀR(p_j)k = (Qᵀq)ᵀD(p_j−p_i)(Qᵀk)),
    so an N×N model costs at inference what a 2×2 model costs. Same logits; input untouched.
    Models without a basis (none, axial2_*, block 2, lie_block) come back as an unchanged copy.
    """
    check_module(model)
    folded = copy.deepcopy(model)
    for attn in rotary_attentions(folded):
        if not isinstance(attn.q_norm, nn.Identity):
            raise ValueError(
                "fold_for_inference: a model with qk_norm cannot be folded (the norm sits "
                "between the projection and the rotation); use it unfolded"
            )
        rope = attn.rope
        if not rope.foldable:
            continue
        with torch.no_grad():
            weight, bias = rope.project_qkv(attn.qkv.weight, attn.qkv.bias)
            attn.qkv.weight.copy_(weight)
            if bias is not None:
                attn.qkv.bias.copy_(bias)
        rope.fold()
    return folded
