"""The GPU check's Python side, three modes; needs only torch, timm and this repository (``rope_ext``; no
Hydra, no W&B), so it runs on a bare GPU machine: ``PYTHONPATH=. python experiments/gpu_smoke.py``.

- default: a few hundred training steps of two variants with AMP and torch.compile on random CIFAR-size
  images of the ``relpos`` task (two coloured squares, label = their relative arrangement), so the loss
  can only fall if the position encoding works. Each variant: a fresh CIFAR ViT (patch 4, embed 192,
  depth 6, 3 heads), AdamW, bf16 autocast on CUDA, ``torch.compile`` unless ``--no-compile``. Prints
  first/last loss, compile time and steady-state img/s; exits 1 if a loss is not finite or did not fall.
- ``--kernel-check``: the fused rotation (``rope_ext::rotate_qk``, the Triton kernel on CUDA) against the
  eager reference in float64 on the device, values and gradients, fp32 and bf16, for each table layout;
  exits 1 past the tolerance.
- ``--speed``: training (forward, backward, AdamW) and inference steps of every variant (``SPEED_VARIANTS``,
  timm's Eva RoPE among them as the outside reference) for each ``--models`` entry, eager and compiled,
  steps interleaved round-robin; per round each variant's time as a ratio to ``none`` of that round,
  reported as the median and the interquartile range over rounds.

On a CPU (``--device cpu`` with tiny shapes) every mode runs as a quick check of the script itself.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import timm
import torch
import torch.nn.functional as F

from rope_ext import create_vit, fold_for_inference, make_rope
from rope_ext.encoding.fused_rotation import rotate_qk, rotate_qk_reference
from rope_ext.relpos import relpos_datasets
from rope_ext.report.tables import cell, markdown_table


def parse_variant(spec: str) -> tuple[str, dict]:
    """``none`` | ``axial2_complex`` | ``axial_block:4`` | ``axial_block:4:matrix`` | ``lie_block:3``."""
    name, *rest = spec.split(":")
    options: dict = {}
    if rest:
        options["block"] = int(rest[0])
    if len(rest) > 1:
        options["impl"] = rest[1]
    return name, options


def run_variant(
    spec: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch: int,
    device: torch.device,
    dtype: torch.dtype | None,
    compile_model: bool,
) -> dict:
    name, options = parse_variant(spec)
    torch.manual_seed(0)
    model = create_vit(
        "vit_tiny_patch16_224",
        pe=name,
        pe_options=options or None,
        num_classes=8,
        img_size=32,
        patch_size=4,
        embed_dim=192,
        depth=6,
        num_heads=3,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    step_fn = torch.compile(model) if compile_model else model
    n = images.shape[0]
    losses: list[float] = []
    t_first = t_steady = time.perf_counter()
    warm = min(5, max(steps - 1, 0))
    for step in range(steps):
        idx = torch.randint(0, n, (batch,), device=device)
        x, y = images[idx], labels[idx]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(step_fn(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))  # syncs: the timing below is of whole steps
        if step + 1 == warm:
            t_steady = time.perf_counter()
        if step == 0:
            first_step_s = time.perf_counter() - t_first
    if device.type == "cuda":
        torch.cuda.synchronize()
    steady = steps - warm
    elapsed = time.perf_counter() - t_steady
    head = sum(losses[: max(1, steps // 10)]) / max(1, steps // 10)
    tail = sum(losses[-max(1, steps // 10) :]) / max(1, steps // 10)
    return {
        "variant": spec,
        "first_loss": head,
        "last_loss": tail,
        "first_step_s": first_step_s,
        "img_per_s": steady * batch / elapsed if steady > 0 and elapsed > 0 else float("nan"),
        "finite": all(math.isfinite(v) for v in losses),
        "peak_mem_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0,
    }


# --------------------------------------------------------------------------------------------------
# --speed: every variant's step time as a ratio to plain attention, interleaved
# --------------------------------------------------------------------------------------------------

# ``eva``: timm's RoPE-Axial Eva twin of the model (the outside reference), ``eva:plain`` the same Eva
# without its RoPE; ``axial_block:N:folded`` is the fast model after ``fold_for_inference`` (inference only).
SPEED_VARIANTS = (
    "none",
    "eva",
    "eva:plain",
    "axial2_matrix",
    "axial2_complex",
    *(f"axial_block:{n}:fast" for n in (2, 3, 4, 5, 6, 16)),
    *(f"axial_block:{n}:folded" for n in (3, 4, 5, 6, 16)),
    *(f"axial_block:{n}:matrix" for n in (3, 4, 5, 6, 16)),
    "lie_block:3",
)
# A spread (interquartile range of the per-round ratios) wider than this is flagged: not comparable.
WIDE_SPREAD = 0.05


def build_speed_model(model_name: str, spec: str, img_size: int, shape: dict) -> torch.nn.Module:
    """One variant of ``model_name`` (timm's name of a plain ViT) from seed 0; ``shape``: timm overrides."""
    torch.manual_seed(0)
    if spec in ("eva", "eva:plain"):
        eva = model_name.replace("_patch16_224", "_patch16_rope_224")
        return timm.create_model(
            eva, num_classes=1000, img_size=img_size, use_rot_pos_emb=spec == "eva", **shape
        )
    name, options = parse_variant(spec.replace(":folded", ":fast"))
    return create_vit(
        model_name, pe=name, pe_options=options or None, num_classes=1000, img_size=img_size, **shape
    )


def _rounds(fns: dict, warmup: int, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """One step of each function per round, the order rotated every round; warm-up rounds dropped."""
    labels = list(fns)
    times: dict[str, list[float]] = {k: [] for k in labels}
    for step in range(warmup + repeats):
        shift = step % len(labels)
        for label in labels[shift:] + labels[:shift]:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fns[label]()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step >= warmup:
                times[label].append(time.perf_counter() - start)
    return times


def _summary(times: dict[str, list[float]], label: str) -> dict:
    """Median ms, and the median and quartiles over rounds of the ratio to none's time in the same round."""
    own = torch.tensor(times[label], dtype=torch.float64)
    ratio = own / torch.tensor(times["none"], dtype=torch.float64)
    q25, q50, q75 = ratio.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()
    return {
        "ms": own.median().item() * 1e3,
        "ratio": q50,
        "q25": q25,
        "q75": q75,
        "wide": q75 - q25 > WIDE_SPREAD,
    }


def speed_rows(
    args: argparse.Namespace, device: torch.device, dtype: torch.dtype | None, compiled: bool
) -> list[dict]:
    """Train and inference summaries of every variant of ``args.speed_variants`` for each model."""
    shape = {
        k: getattr(args, k) for k in ("patch_size", "depth", "embed_dim", "num_heads") if getattr(args, k)
    }
    gen = torch.Generator().manual_seed(0)
    x_train = torch.randn(args.train_batch, 3, args.img_size, args.img_size, generator=gen).to(device)
    y_train = torch.randint(0, 1000, (args.train_batch,), generator=gen).to(device)
    x_infer = torch.randn(args.infer_batch, 3, args.img_size, args.img_size, generator=gen).to(device)
    specs = [v for v in args.speed_variants.split(",") if v]
    rows = []
    for model_name in args.models.split(","):
        trainers, inferers = {}, {}
        for spec in specs:
            model = build_speed_model(model_name, spec, args.img_size, shape).to(device)
            infer_model = (fold_for_inference(model) if spec.endswith(":folded") else model).eval()
            infer_fwd = torch.compile(infer_model) if compiled else infer_model

            def infer_step(fwd=infer_fwd, model=infer_model) -> None:
                model.eval()
                with (
                    torch.inference_mode(),
                    torch.autocast(device.type, dtype=dtype, enabled=dtype is not None),
                ):
                    fwd(x_infer)

            inferers[spec] = infer_step
            if spec.endswith(":folded"):
                continue
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            fwd = torch.compile(model) if compiled else model

            def train_step(model=model, fwd=fwd, opt=opt) -> None:
                model.train()
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    loss = F.cross_entropy(fwd(x_train), y_train)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            trainers[spec] = train_step
        train = _rounds(trainers, args.warmup, args.repeats, device)
        infer = _rounds(inferers, args.warmup, args.repeats, device)
        for spec in specs:
            rows.append(
                {
                    "model": model_name,
                    "variant": spec,
                    "train": _summary(train, spec) if spec in train else None,
                    "infer": _summary(infer, spec),
                }
            )
    return rows


def format_speed(rows: list[dict], header: str) -> str:
    """``header`` and one Markdown table: ms, × none (median [quartiles]) per step kind; wide spreads flagged."""

    def ratio(s: dict | None) -> str:
        if s is None:
            return "—"
        return f"{s['ratio']:.3f} [{s['q25']:.3f}, {s['q75']:.3f}]{' wide' if s['wide'] else ''}"

    body = [
        [
            r["model"],
            r["variant"],
            cell(r["train"]["ms"], 1) if r["train"] else "—",
            ratio(r["train"]),
            cell(r["infer"]["ms"], 1),
            ratio(r["infer"]),
        ]
        for r in rows
    ]
    titles = ["model", "variant", "train ms", "train × none [IQR]", "infer ms", "infer × none [IQR]"]
    return f"{header}\n\n{markdown_table(titles, body, right=[False, False, True, True, True, True])}"


# --------------------------------------------------------------------------------------------------
# --kernel-check: the fused rotation on the device against the float64 reference
# --------------------------------------------------------------------------------------------------

# (label, encoding, options, fold): each table layout the fast path builds
KERNEL_LAYOUTS = (
    ("N=2", "axial2_complex", {}, False),
    ("N=3 fast", "axial_block", {"block": 3}, False),
    ("N=4 folded", "axial_block", {"block": 4}, True),
    ("N=3 learned freqs", "axial_block", {"block": 3, "mixed": True}, False),
)
# |Δ| <= atol + rtol·|reference|: float32 compute, one rounding to the input dtype (bf16: 1 unit in the last place)
KERNEL_TOLERANCE = {torch.float32: (1e-6, 1e-5), torch.bfloat16: (1e-6, 2.0**-7)}


def _kernel_case(layout: tuple, dtype: torch.dtype, device: torch.device, shape: tuple[int, ...]) -> dict:
    """Max error (as a fraction of the tolerance) of the op's values and q/k gradients on ``device``."""
    label, name, options, fold = layout
    batch, heads, grid, head_dim = shape
    torch.manual_seed(0)
    rope = make_rope(name, head_dim=head_dim, num_heads=heads, **options).to(device)
    if fold:
        rope.fold()
    pos = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="xy"), -1).view(-1, 2)
    with torch.no_grad():
        rope.freqs.add_(0.05 * torch.randn_like(rope.freqs))
        cos, sin = (t.to(dtype) for t in rope.tables(pos.float().to(device), 1)[:2])
    tokens = grid * grid + 1
    qkv = torch.randn(batch, tokens, 3, heads, head_dim, device=device).to(dtype).permute(2, 0, 3, 1, 4)
    qkv.requires_grad_()
    grads = torch.randn(2, batch, heads, tokens, head_dim, device=device).to(dtype)
    out = rotate_qk(qkv[0], qkv[1], cos, sin)
    torch.autograd.backward(out, list(grads))
    atol, rtol = KERNEL_TOLERANCE[dtype]
    worst, worst_abs = 0.0, 0.0
    for i in range(2):
        want = rotate_qk_reference(qkv[i].detach().double(), cos.double(), sin.double())
        want_grad = rotate_qk_reference(grads[i].double(), cos.double(), sin.double(), sign=-1.0)
        for got, ref in ((out[i], want), (qkv.grad[i], want_grad)):
            diff = (got.double() - ref).abs()
            worst = max(worst, (diff / (atol + rtol * ref.abs())).max().item())
            worst_abs = max(worst_abs, diff.max().item())
    return {
        "layout": label,
        "dtype": str(dtype).removeprefix("torch."),
        "max_abs": worst_abs,
        "of_tol": worst,
    }


def kernel_check(device: torch.device, shape: tuple[int, ...]) -> tuple[str, bool]:
    """The table of ``_kernel_case`` over layouts and dtypes, and whether all are within tolerance."""
    rows = [
        _kernel_case(layout, dtype, device, shape) for layout in KERNEL_LAYOUTS for dtype in KERNEL_TOLERANCE
    ]
    body = [[r["layout"], r["dtype"], f"{r['max_abs']:.2e}", f"{r['of_tol']:.3f}"] for r in rows]
    table = markdown_table(
        ["layout", "dtype", "max |op − reference|", "× tolerance"], body, right=[False, False, True, True]
    )
    return table, all(r["of_tol"] <= 1.0 for r in rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (auto: cuda when available)")
    parser.add_argument(
        "--variants", default="none,axial_block:4", help="comma-separated, e.g. none,axial_block:4"
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8192, help="size of the in-memory relpos set")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--require-decrease", action="store_true", help="fail unless every loss fell")
    parser.add_argument("--kernel-check", action="store_true", help="only check the fused rotation's error")
    parser.add_argument("--kernel-shape", default="8,12,14,64", help="batch,heads,grid side,head_dim")
    parser.add_argument("--speed", action="store_true", help="only print the speed table (see --models)")
    parser.add_argument(
        "--models", default="vit_base_patch16_224,vit_small_patch16_224", help="timm ViT names"
    )
    parser.add_argument("--speed-variants", default=",".join(SPEED_VARIANTS), help="as SPEED_VARIANTS")
    parser.add_argument("--modes", default="eager,compiled", help="eager and/or compiled")
    parser.add_argument("--img-size", type=int, default=224)
    for key in ("patch-size", "depth", "embed-dim", "num-heads"):
        parser.add_argument(f"--{key}", type=int, default=0, help="a timm override (0: the model's own)")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--infer-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (compilation among them)")
    return parser


def _check_speed_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse what the speed table cannot run, before any model is built."""
    modes = args.modes.split(",")
    if not modes or set(modes) - {"eager", "compiled"}:
        parser.error(
            f"--modes={args.modes!r} is not allowed; allowed values: eager, compiled or both, comma-separated"
        )
    for spec in args.speed_variants.split(","):
        if spec not in SPEED_VARIANTS and not spec.startswith(("axial_block:", "lie_block:")):
            parser.error(
                f"--speed-variants: {spec!r} is not allowed; allowed values: {', '.join(SPEED_VARIANTS)}"
            )
    if "none" not in args.speed_variants.split(","):
        parser.error("--speed-variants must include 'none' (the ratios' baseline)")
    if min(args.repeats, args.train_batch, args.infer_batch, args.img_size) < 1 or args.warmup < 0:
        parser.error("--repeats, --train-batch, --infer-batch and --img-size must be >= 1, --warmup >= 0")


def _speed(args: argparse.Namespace, device: torch.device, dtype: torch.dtype | None, name: str) -> int:
    for mode in args.modes.split(","):
        rows = speed_rows(args, device, dtype, compiled=mode == "compiled")
        header = (
            f"{mode}, {args.dtype}, {args.img_size} px; {name}; torch {torch.__version__}, timm {timm.__version__}; "
            f"train batch {args.train_batch} (forward, backward, AdamW), inference batch {args.infer_batch}; "
            f"{args.repeats} interleaved rounds after {args.warmup} warm-up rounds"
        )
        print(format_speed(rows, header), end="\n\n", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        parser.error(f"--steps={args.steps} and --batch={args.batch} must be >= 1")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else args.device)
    if args.device == "auto" and device.type != "cuda":
        device = torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_smoke: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.dtype]
    if device.type == "cpu" and dtype is torch.float16:
        dtype = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if args.kernel_check:
        shape = tuple(int(v) for v in args.kernel_shape.split(","))
        table, ok = kernel_check(device, shape)
        print(
            f"fused rotation vs float64 reference on {name} (batch, heads, grid, head_dim = {shape}):\n\n{table}"
        )
        print(f"kernel check: {'PASSED' if ok else 'FAILED'}", flush=True)
        return 0 if ok else 1
    if args.speed:
        _check_speed_args(parser, args)
        return _speed(args, device, dtype, name)
    train, _, _ = relpos_datasets(32, args.samples, 1, seed=0)
    images = train.images.float().div_(127.5).sub_(1.0).to(device)
    labels = train.labels.to(device)
    print(
        f"gpu_smoke: device={name} torch={torch.__version__} dtype={args.dtype} compile={args.compile} "
        f"steps={args.steps} batch={args.batch}",
        flush=True,
    )
    failed = False
    header = (
        f"{'variant':<24}{'loss first':>11}{'loss last':>11}{'1st step s':>11}{'img/s':>10}{'peak MB':>9}"
    )
    print(header)
    for spec in args.variants.split(","):
        r = run_variant(
            spec.strip(),
            images,
            labels,
            steps=args.steps,
            batch=args.batch,
            device=device,
            dtype=dtype,
            compile_model=args.compile,
        )
        ok = r["finite"] and (r["last_loss"] < r["first_loss"] or not args.require_decrease)
        failed |= not ok
        print(
            f"{r['variant']:<24}{r['first_loss']:>11.3f}{r['last_loss']:>11.3f}{r['first_step_s']:>11.1f}"
            f"{r['img_per_s']:>10.0f}{r['peak_mem_mb']:>9.0f}{'' if ok else '  FAIL'}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
