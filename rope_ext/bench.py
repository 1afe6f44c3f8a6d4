"""Speed of every positional encoding in the same ViT: ``python -m rope_ext.bench``.

One process, every variant built from the same seed, steps interleaved round-robin across variants
(so drift in machine load hits them all alike), median over steps. Prints a table with each time
as a ratio to ``none``. Training: forward + backward + AdamW step on random data; inference: eval
forward under ``torch.inference_mode``; ``folded`` rows are ``fold_for_inference`` of the fast model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from rope_ext.encoding import registry
from rope_ext.encoding.spec import make_rope
from rope_ext.encoding.vit import create_vit, fold_for_inference
from rope_ext.opcount import Arm, counts_rows, eva_builder, format_counts
from rope_ext.report.tables import cell, markdown_table

DEFAULT_MODEL = "vit_tiny_patch16_224"
# The default model is shaped as the harness's CIFAR ViT (conf/model/vit_cifar.yaml).
CIFAR_SHAPE = {"embed_dim": 192, "depth": 6, "num_heads": 3}


@dataclass
class Variant:
    label: str
    pe: str
    options: dict
    fold: bool = False  # inference only: fold_for_inference of the same model


def variants(blocks: list[int], with_controls: bool) -> list[Variant]:
    """Every registered encoding's ``bench_variants``, in registry order; an encoding of any block
    size once per N in ``blocks`` (its labels' ``{block}``), a non-commuting control
    (``exact_relative=False``) only ``with_controls`` and at the largest N."""
    out = []
    for info in registry.infos():
        control = info.rotary and not info.exact_relative
        if control and not with_controls:
            continue
        if not info.rotary or info.accepts.block is not None:
            out += [Variant(v.label, info.name, dict(v.options), v.fold) for v in info.bench_variants]
            continue
        for n in blocks[-1:] if control else blocks:
            out += [
                Variant(v.label.format(block=n), info.name, {"block": n, **v.options}, v.fold)
                for v in info.bench_variants
            ]
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# wall: elapsed time; cpu: CPU time of this process (all its threads), which on a machine shared
# with other jobs leaves out the time they hold the cores (CPU runs only).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(fn: Callable[[], None], device: torch.device, clock: str = "wall") -> float:
    now = CLOCKS[clock]
    _sync(device)
    start = now()
    fn()
    _sync(device)
    return now() - start


def _round_robin(
    fns: dict[str, Callable[[], None]], warmup: int, steps: int, device: torch.device, clock: str = "wall"
) -> dict[str, list[float]]:
    """One step of each variant per round, the order rotated every round so no variant always runs
    right after the same neighbour; warm-up rounds are not recorded."""
    labels = list(fns)
    times: dict[str, list[float]] = {k: [] for k in labels}
    for step in range(warmup + steps):
        shift = step % len(labels)
        for label in labels[shift:] + labels[:shift]:
            t = _timed(fns[label], device, clock)
            if step >= warmup:
                times[label].append(t)
    return times


def build(args: argparse.Namespace, v: Variant, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    model = create_vit(
        args.model,
        pe=v.pe,
        num_classes=args.num_classes,
        img_size=args.img_size,
        pe_options=v.options,
        patch_size=args.patch_size,
        **({"embed_dim": args.embed_dim} if args.embed_dim else {}),
        **({"depth": args.depth} if args.depth else {}),
        **({"num_heads": args.num_heads} if args.num_heads else {}),
    ).to(device)
    return model


def _selected(args: argparse.Namespace) -> list[Variant]:
    return [
        v for v in variants(args.blocks, args.lie) if not args.only or any(s in v.label for s in args.only)
    ]


def count_table(args: argparse.Namespace) -> str:
    """Per transformer block: kernels, bytes and host syncs (``rope_ext.opcount``) of every variant,
    inference and training, beside timm's Eva with and without its RoPE (the outside reference)."""

    def builder(v: Variant) -> Callable[[int], nn.Module]:
        def build_at(depth: int) -> nn.Module:
            model = build(argparse.Namespace(**{**vars(args), "depth": depth}), v, torch.device("cpu"))
            return fold_for_inference(model) if v.fold else model

        return build_at

    overrides = {k: getattr(args, k) for k in ("embed_dim", "num_heads") if getattr(args, k)}
    eva = "Eva without RoPE"
    arms = [Arm(v.label, builder(v)) for v in _selected(args)] + [
        Arm(eva, eva_builder(args.model, args.img_size, args.patch_size, overrides, rope=False), eva),
        Arm(
            "timm Eva RoPE",
            eva_builder(args.model, args.img_size, args.patch_size, overrides, rope=True),
            eva,
        ),
    ]
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    rows = counts_rows(
        arms,
        infer_batch=args.infer_batch,
        train_batch=args.train_batch,
        img=args.img_size,
        dtype=dtype,
        compiled=args.compile,
    )
    header = (
        f"Per transformer block of {args.model} at {args.img_size}px, patch {args.patch_size}, {args.dtype}"
        f"{' autocast' if args.dtype != 'fp32' else ''}; CPU dispatch counts (torch {torch.__version__}): kernels = aten ops that are not views, "
        f"bytes extrapolated to inference batch {args.infer_batch} / training batch {args.train_batch} as a "
        "ratio to the baseline (none; Eva rows: Eva without RoPE)"
    )
    if args.compile:
        header += "; compiled: launches in inductor's CPU output code, depth 2 minus 1, batch 2"
    return format_counts(rows, header)


def run(args: argparse.Namespace) -> list[dict]:
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    todo = _selected(args)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x_train = torch.randn(args.train_batch, 3, args.img_size, args.img_size, generator=gen).to(device)
    y_train = torch.randint(0, args.num_classes, (args.train_batch,), generator=gen).to(device)
    x_infer = torch.randn(args.infer_batch, 3, args.img_size, args.img_size, generator=gen).to(device)

    trainers: dict[str, Callable[[], None]] = {}
    inferers: dict[str, Callable[[], None]] = {}
    for v in todo:
        model = build(args, v, device)
        if not v.fold:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            fwd = torch.compile(model) if args.compile else model

            def train_step(model=model, fwd=fwd, opt=opt) -> None:
                model.train()
                with autocast():
                    loss = nn.functional.cross_entropy(fwd(x_train), y_train)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            trainers[v.label] = train_step
        infer_model = (fold_for_inference(model) if v.fold else model).eval()
        infer_fwd = torch.compile(infer_model) if args.compile else infer_model

        def infer_step(fwd=infer_fwd, model=infer_model) -> None:
            model.eval()
            with torch.inference_mode(), autocast():
                fwd(x_infer)

        inferers[v.label] = infer_step

    train_times = _round_robin(trainers, args.warmup, args.steps, device, args.clock)
    infer_times = _round_robin(inferers, args.warmup, args.steps, device, args.clock)

    rows = []
    base_train = statistics.median(train_times["none"]) if train_times.get("none") else None
    base_infer = statistics.median(infer_times["none"]) if infer_times.get("none") else None
    for v in todo:
        tr = statistics.median(train_times[v.label]) if v.label in train_times else None
        inf = statistics.median(infer_times[v.label])
        rows.append(
            {
                "variant": v.label,
                "train_ms": tr * 1e3 if tr else None,
                "train_ratio": tr / base_train if tr and base_train else None,
                "train_img_s": args.train_batch / tr if tr else None,
                "infer_ms": inf * 1e3,
                "infer_ratio": inf / base_infer if base_infer else None,
                "infer_img_s": args.infer_batch / inf,
            }
        )
    return rows


def basis_cost(args: argparse.Namespace, repeats: int = 30) -> str:
    """What the fast path adds per layer and training step for each encoding whose basis folds
    into the projection: the Cayley basis of every block plus moving the q/k rows of one qkv weight
    into it (``project_qkv``), forward + backward, median ms."""
    probe = build(args, Variant("none", "none", {}), torch.device("cpu"))
    attn = probe.blocks[0].attn
    heads, head_dim, dim = attn.num_heads, attn.head_dim, attn.qkv.in_features
    weight = torch.randn(3 * heads * head_dim, dim, requires_grad=True)
    lines = [
        f"{args.model}: {heads} heads, head_dim {head_dim}, qkv weight {tuple(weight.shape)}; CPU, "
        f"{torch.get_num_threads()} threads; median of {repeats} after 5 warm-up calls",
        "",
        "| encoding | N | blocks per head | basis + q/k weight move, fwd+bwd ms |",
        "|---|---:|---:|---:|",
    ]
    for info in registry.infos():
        if not info.folds:
            continue
        for n in args.blocks:
            rope = make_rope(info.name, head_dim=head_dim, num_heads=heads, block=n)
            if not rope.fold_into_projection:
                continue  # no basis at this N (2x2 planes): nothing to move
            times = []
            for i in range(5 + repeats):
                start = time.perf_counter()
                moved, _ = rope.project_qkv(weight, None)
                moved.sum().backward()
                if i >= 5:
                    times.append(time.perf_counter() - start)
            lines.append(f"| {info.name} | {n} | {head_dim // n} | {statistics.median(times) * 1e3:.2f} |")
    return "\n".join(lines)


# (title, row key, decimals) of the table's columns after the variant
_TABLE = (
    ("train step ms", "train_ms", 1),
    ("train × none", "train_ratio", 3),
    ("train img/s", "train_img_s", 0),
    ("infer ms", "infer_ms", 1),
    ("infer × none", "infer_ratio", 3),
    ("infer img/s", "infer_img_s", 0),
)


def format_table(rows: list[dict], header: str) -> str:
    """``header``, a blank line and a Markdown table of the rows of ``run`` (— where a figure is missing)."""
    body = [
        [r["variant"], *(cell(r[key], digits, missing="—", sci_below=0) for _, key, digits in _TABLE)]
        for r in rows
    ]
    table = markdown_table(
        ["variant", *(title for title, _, _ in _TABLE)], body, right=[False] + [True] * len(_TABLE)
    )
    return f"{header}\n\n{table}"


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed values: an integer >= {low}")
        return value

    parse.__name__ = f"int >= {low}"
    return parse


def _blocks(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not allowed; allowed values: block sizes separated by commas, e.g. 2,3,4"
        ) from None


def _model_shape(args: argparse.Namespace) -> tuple[int, int]:
    """(head_dim, patch_size) of the benchmarked model, built on the meta device (no memory, no time)."""
    shape = {k: getattr(args, k) for k in CIFAR_SHAPE if getattr(args, k)}
    with torch.device("meta"):
        model = timm.create_model(args.model, patch_size=args.patch_size, **shape)
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"{args.model!r} is not a timm VisionTransformer")
    return model.blocks[0].attn.head_dim, args.patch_size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked before any model is built: argparse's one-line error (exit 2)
    names the argument, its value and what is allowed."""
    at_least = _int_at_least
    p = argparse.ArgumentParser(prog="python -m rope_ext.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="timm model name (a VisionTransformer)")
    p.add_argument("--img-size", type=at_least(1), default=32, help="a multiple of --patch-size")
    p.add_argument("--patch-size", type=at_least(1), default=4)
    shape = "default: the CIFAR ViT's {} with the default --model, else (and with 0) the model's own"
    p.add_argument("--embed-dim", type=at_least(0), default=None, help=shape.format(192))
    p.add_argument("--depth", type=at_least(0), default=None, help=shape.format(6))
    p.add_argument("--num-heads", type=at_least(0), default=None, help=shape.format(3))
    p.add_argument("--num-classes", type=at_least(1), default=10)
    p.add_argument("--train-batch", type=at_least(1), default=64)
    p.add_argument("--infer-batch", type=at_least(1), default=256)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast dtype")
    p.add_argument("--compile", action="store_true", help="torch.compile every model")
    p.add_argument("--blocks", type=_blocks, default=[2, 3, 4, 5, 6], help="block sizes N, 2..head_dim")
    p.add_argument("--only", nargs="*", help="keep variants whose label contains one of these")
    p.add_argument(
        "--lie",
        action="store_true",
        help="add the non-commuting controls (encodings registered with exact_relative=False, such as "
        "lie_block), at the largest block",
    )
    p.add_argument(
        "--modules",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="encoding modules of your own to load first (a dotted module name or a .py path; also read "
        f"from ${registry.ENV_VAR}, separated by {os.pathsep!r})",
    )
    p.add_argument("--steps", type=at_least(1), default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=at_least(0), default=2)
    p.add_argument("--threads", type=at_least(0), default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--clock",
        default="wall",
        choices=list(CLOCKS),
        help="wall: elapsed time; cpu: CPU time of this process, for CPU runs on a shared machine",
    )
    p.add_argument(
        "--basis-cost", action="store_true", help="only time the fast path's per-layer basis work for each N"
    )
    p.add_argument(
        "--count",
        action="store_true",
        help="print per-block kernel, byte and host-sync counts (CPU dispatch, depth 2 minus 1) beside timm's Eva "
        "RoPE; with --compile also the compiled block's launches (CPU inductor)",
    )
    return _checked(p, p.parse_args(argv))


def _checked(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """``parse_args``'s checks that need the registry or the model: ``p.error`` (exit 2) on any."""
    try:
        registry.names()  # the built-ins and $ROPE_EXT_MODULES
    except ValueError as err:
        p.error(str(err))
    for spec in args.modules:
        try:
            registry.load_module(spec, origin="argument --modules")
        except ValueError as err:
            p.error(str(err))
    for key, cifar in CIFAR_SHAPE.items():
        if getattr(args, key) is None:
            setattr(args, key, cifar if args.model == DEFAULT_MODEL else 0)
    if args.clock == "cpu" and args.device == "cuda":
        p.error(
            "argument --clock: 'cpu' is not allowed with --device cuda (GPU work is not CPU time); allowed: wall"
        )
    try:
        head_dim, patch = _model_shape(args)
    except (RuntimeError, ValueError, TypeError) as err:  # timm: unknown model, or a shape it refuses
        p.error(f"argument --model: {args.model!r} with this shape is not allowed ({err})")
    if args.img_size % patch:
        p.error(f"argument --img-size: {args.img_size} is not allowed; allowed values: a multiple of {patch}")
    bad = [b for b in args.blocks if not 2 <= b <= head_dim]
    if bad:
        p.error(
            f"argument --blocks: {bad} not allowed; allowed values: 2..{head_dim} (head_dim of the model)"
        )
    labels = [v.label for v in variants(args.blocks, args.lie)]
    if args.only and not any(s in label for s in args.only for label in labels):
        p.error(f"argument --only: {args.only} matches no variant; allowed values: parts of {labels}")
    return args


def _refuse(message: str) -> None:
    """argparse's way out: usage error on stderr, exit status 2, nothing run."""
    print(f"python -m rope_ext.bench: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Checked here rather than in parse_args, which also reads command lines meant for GPU machines.
    if args.device == "cuda" and not torch.cuda.is_available():
        _refuse("argument --device: 'cuda' is not allowed here (no CUDA device); allowed values: auto, cpu")
    if args.clock == "cpu" and args.device == "auto" and torch.cuda.is_available():
        _refuse("argument --clock: 'cpu' is not allowed on a CUDA device; allowed: wall, or --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.basis_cost:
        print(basis_cost(args))
        return
    if args.count:
        print(count_table(args))
        return
    rows = run(args)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    header = (
        f"{args.model} at {args.img_size}px, patch {args.patch_size}, {args.dtype}"
        f"{', compiled' if args.compile else ''}; {where}; train batch {args.train_batch}, "
        f"infer batch {args.infer_batch}; median {args.clock} time of {args.steps} interleaved steps (torch {torch.__version__})"
    )
    print(format_table(rows, header))


if __name__ == "__main__":
    main()
