"""GPU-path smoke test: a few hundred training steps of two variants with AMP and torch.compile.

Needs only torch, timm and this repository (``rope_ext``; no Hydra, no W&B), so it runs on a bare GPU
machine: ``PYTHONPATH=. python experiments/gpu_smoke.py``. The data is random CIFAR-size images of the
``relpos`` task (two coloured squares, label = their relative arrangement), so the loss can only fall if
the position encoding works. Each variant: a fresh CIFAR ViT (patch 4, embed 192, depth 6, 3 heads),
AdamW, bf16 autocast on CUDA, ``torch.compile`` unless ``--no-compile``. Prints first/last loss, compile
time and steady-state img/s; exits 1 if a loss is not finite or did not fall.

On a CPU (``--device cpu --steps 2 --no-compile``) it runs as a quick check of the script itself.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F

from rope_ext import create_vit
from rope_ext.relpos import relpos_datasets


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
    return parser


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
    train, _, _ = relpos_datasets(32, args.samples, 1, seed=0)
    images = train.images.float().div_(127.5).sub_(1.0).to(device)
    labels = train.labels.to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
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
