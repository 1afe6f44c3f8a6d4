"""What one transformer block launches, reads and writes: a dispatch-level op counter and its table.

``count_ops`` watches every aten op under a ``TorchDispatchMode`` (as the GPU would receive them, after
autograd and autocast, composite ops decomposed): a *kernel* is an op that is not a view and not a bare
allocation (about one GPU launch each; a custom op such as ``rope_ext::rotate_qk`` is one), its *bytes* are the sizes of its tensor inputs and outputs, and a *host sync* is an op whose result
the host has to wait for (``SYNC_OPS``: a scalar read back, a data-dependent shape, a checked linalg
result). Per-block figures are the difference between the same model at depth 2 and depth 1, so the
stem, the head and whatever is done once per forward drop out; bytes are measured at batch 1 and 2 and
extrapolated linearly to the batch asked for (a layer's work is affine in the batch).

``python -m rope_ext.bench --count`` prints the table (``format_counts``): inference (eval,
``inference_mode``) and training (forward + backward) of every variant next to plain attention, and timm's
Eva with and without its RoPE (``eva_builder``) as the outside reference. CPU figures, exact counts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import timm
import torch
import torch.nn.functional as F
from timm.models.eva import Eva
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from rope_ext.report.tables import cell, markdown_table

aten = torch.ops.aten
# Ops whose result the host reads (or whose output shape depends on data) before it can go on.
SYNC_OPS = frozenset(
    {
        aten._local_scalar_dense.default,
        aten.item.default,
        aten.is_nonzero.default,
        aten.equal.default,
        aten.nonzero.default,
        aten.masked_select.default,
        aten._linalg_check_errors.default,
    }
)
# Allocation or metadata only: no kernel runs on the device (``_unsafe_view`` is a view that its schema
# does not declare as one).
_NO_KERNEL = frozenset(
    {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default, aten._unsafe_view.default}
)


@dataclass
class OpCounts:
    """What ran: ``kernels`` (non-view ops), ``bytes`` (their tensor inputs + outputs), ``syncs``
    (``SYNC_OPS``), and ``ops`` (kernels by op name, for reading where they come from)."""

    kernels: int = 0
    bytes: int = 0
    syncs: int = 0
    ops: Counter = field(default_factory=Counter)

    def __sub__(self, other: OpCounts) -> OpCounts:
        ops = Counter(self.ops)
        ops.subtract(other.ops)
        return OpCounts(self.kernels - other.kernels, self.bytes - other.bytes, self.syncs - other.syncs, ops)


def _nbytes(tree: object) -> int:
    return sum(t.numel() * t.element_size() for t in tree_leaves(tree) if isinstance(t, torch.Tensor))


class _Counter(TorchDispatchMode):
    def __init__(self, counts: OpCounts) -> None:
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 (torch's protocol)
        kwargs = kwargs or {}
        # Composite ops (linear, layer_norm, dropout, ...) reach a mode whole under inference_mode:
        # decomposed here, their parts are what runs and what is counted.
        with self:
            out = func.decompose(*args, **kwargs)
        if out is not NotImplemented:
            return out
        out = func(*args, **kwargs)
        if func in SYNC_OPS:
            self.counts.syncs += 1
        if not func.is_view and func not in _NO_KERNEL:
            self.counts.kernels += 1
            self.counts.bytes += _nbytes((args, kwargs)) + _nbytes(out)
            self.counts.ops[func.name()] += 1
        return out


def count_ops(fn: Callable[[], object]) -> OpCounts:
    """Run ``fn`` once and count the aten ops it dispatches (see the module's docstring)."""
    counts = OpCounts()
    with _Counter(counts):
        fn()
    return counts


@dataclass(frozen=True)
class Arm:
    """One row of the table: how to build its model at a given depth, and its baseline's label."""

    label: str
    build: Callable[[int], nn.Module]
    baseline: str = "none"


def eva_builder(
    model_name: str, img_size: int, patch_size: int, overrides: dict, rope: bool
) -> Callable[[int], nn.Module]:
    """timm's Eva shaped as the plain ViT ``model_name`` (with timm ``overrides``), configured as timm's
    ``vit_*_patch16_rope_224`` (Heo et al.'s RoPE-Axial) with its rotary embedding or without it:
    the outside reference for what RoPE costs."""
    with torch.device("meta"):
        vit = timm.create_model(model_name, patch_size=patch_size, **overrides)
    block = vit.blocks[0]
    shape = dict(embed_dim=vit.embed_dim, num_heads=block.attn.num_heads)
    shape["mlp_ratio"] = block.mlp.fc1.out_features / vit.embed_dim

    def build(depth: int) -> nn.Module:
        torch.manual_seed(0)
        return Eva(
            img_size=img_size,
            patch_size=patch_size,
            depth=depth,
            num_classes=10,
            attn_type="rope",
            use_fc_norm=False,
            qkv_bias=True,
            init_values=1e-5,
            global_pool="token",
            use_abs_pos_emb=False,
            use_rot_pos_emb=rope,
            rope_grid_indexing="xy",
            rope_temperature=100.0,
            **shape,
        )

    return build


def _step(
    model: nn.Module, batch: int, img: int, train: bool, dtype: torch.dtype | None
) -> Callable[[], None]:
    x = torch.randn(batch, 3, img, img)
    y = torch.zeros(batch, dtype=torch.long)
    model.train(train)

    def step() -> None:
        model.zero_grad(set_to_none=True)  # as a training step: gradients are written, not accumulated
        amp = torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()
        with nullcontext() if train else torch.inference_mode(), amp:
            out = model(x)
            if train:
                F.cross_entropy(out.float(), y).backward()

    return step


def block_counts(
    build: Callable[[int], nn.Module], *, train: bool, batch: int, img: int = 224, dtype: torch.dtype | None
) -> OpCounts:
    """Per-block counts of one step (inference, or training forward + backward) at ``batch``:
    depth 2 minus depth 1; kernels and syncs at batch 1, bytes extrapolated from batches 1 and 2.
    One warm-up step first, so tables cached across steps are counted as a steady step sees them."""
    per_batch = []
    for b in (1, 2):
        at_depth = []
        for depth in (1, 2):
            step = _step(build(depth), b, img, train, dtype)
            step()
            at_depth.append(count_ops(step))
        per_batch.append(at_depth[1] - at_depth[0])
    one, two = per_batch
    one.bytes = one.bytes + (two.bytes - one.bytes) * (batch - 1)
    return one


# One launch in the ``call`` function of inductor's output code: a generated kernel (``cpp_fused_*``,
# ``triton_*``), an extern kernel (``extern_kernels.mm``) or an op called as it is (``torch.ops.*``,
# ``aten.*``: the rotation op, attention). Allocations, views and asserts are not launches.
_LAUNCH = re.compile(
    r"^\s+(?:\w+\s*=\s*)?(cpp_fused_\w+|triton_\w+\.run|extern_kernels\.\w+|torch\.ops\.\w+\.\w+(?:\.\w+)?|aten\.\w+(?:\.\w+)?)\(",
    re.M,
)


def compiled_launches(code: str) -> Counter:
    """Kernel launches by name in one graph's inductor output code (``run_and_get_code``'s strings)."""
    body = code.split("\ndef call(", 1)[-1].split("\ndef ", 1)[0]
    return Counter(m.group(1) for m in _LAUNCH.finditer(body))


def compiled_step_launches(
    model: nn.Module, *, train: bool, batch: int, img: int, dtype: torch.dtype | None
) -> Counter:
    """Launches of one ``torch.compile``d step (inference under ``inference_mode``, or training
    forward + backward), summed over the graphs inductor wrote; dynamo's caches are reset first."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    _, codes = run_and_get_code(_step(torch.compile(model), batch, img, train, dtype))
    total: Counter = Counter()
    for code in codes:
        total.update(compiled_launches(code))
    return total


def compiled_block_kernels(
    build: Callable[[int], nn.Module], *, train: bool, img: int = 224, dtype: torch.dtype | None
) -> tuple[int, Counter]:
    """Compiled kernel launches per transformer block (depth 2 minus depth 1, batch 2, CPU inductor):
    their number and, by name, the launches the second block added."""
    one = compiled_step_launches(build(1), train=train, batch=2, img=img, dtype=dtype)
    two = compiled_step_launches(build(2), train=train, batch=2, img=img, dtype=dtype)
    added = Counter(two)
    added.subtract(one)
    return sum(two.values()) - sum(one.values()), +added


# (title, mode, key) of the table's columns after the variant
_COLUMNS = (
    ("inference kernels", "infer", "kernels"),
    ("inference bytes × baseline", "infer", "bytes_ratio"),
    ("training fwd+bwd kernels", "train", "kernels"),
    ("training bytes × baseline", "train", "bytes_ratio"),
    ("host syncs per layer (inference, training)", None, "syncs"),
)
# with ``compiled``: launches in inductor's CPU output code per block (``compiled_block_kernels``)
_COMPILED_COLUMNS = (
    ("compiled inference launches", "infer", "compiled"),
    ("compiled training launches", "train", "compiled"),
)


def counts_rows(
    arms: list[Arm],
    *,
    infer_batch: int = 256,
    train_batch: int = 64,
    img: int = 224,
    dtype: torch.dtype | None = torch.bfloat16,
    compiled: bool = False,
) -> list[dict]:
    """One dict per arm: per-block counts for inference and training, bytes as a ratio to the arm's
    baseline; with ``compiled`` also the launches of the compiled block (``compiled_block_kernels``, batch
    2), a cost that eager dispatch counts cannot show: what inductor fuses."""
    measured = {
        arm.label: {
            "infer": block_counts(arm.build, train=False, batch=infer_batch, img=img, dtype=dtype),
            "train": block_counts(arm.build, train=True, batch=train_batch, img=img, dtype=dtype),
        }
        for arm in arms
    }
    rows = []
    for arm in arms:
        got, base = measured[arm.label], measured[arm.baseline]
        row: dict = {"variant": arm.label, "baseline": arm.baseline, "counts": got}
        for mode in ("infer", "train"):
            row[f"{mode}.kernels"] = got[mode].kernels
            row[f"{mode}.bytes_ratio"] = got[mode].bytes / base[mode].bytes
        row["syncs"] = f"{got['infer'].syncs}, {got['train'].syncs}"
        if compiled:
            for mode in ("infer", "train"):
                launches, _ = compiled_block_kernels(arm.build, train=mode == "train", img=img, dtype=dtype)
                row[f"{mode}.compiled"] = launches
        rows.append(row)
    return rows


def format_counts(rows: list[dict], header: str) -> str:
    """``header``, a blank line and the Markdown table of ``counts_rows`` (its compiled columns where
    the rows have them)."""
    columns = _COLUMNS + (_COMPILED_COLUMNS if rows and "infer.compiled" in rows[0] else ())
    body = []
    for r in rows:
        cells = [
            r["variant"]
            if r["baseline"] in ("none", r["variant"])
            else f"{r['variant']} (vs {r['baseline']})"
        ]
        for _, mode, key in columns:
            value = r[key] if mode is None else r[f"{mode}.{key}"]
            cells.append(value if isinstance(value, str) else cell(value, 2 if "ratio" in key else 0))
        body.append(cells)
    table = markdown_table(["variant", *(c[0] for c in columns)], body, right=[False] + [True] * len(columns))
    return f"{header}\n\n{table}"
