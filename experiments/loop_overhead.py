"""Is the harness what limits training throughput? Harness loop vs a bare timm loop, one process.

Both train the same ``rope_ext.create_vit`` model (same config, batch and device) on data already in
memory: the harness through ``rope_ext.run.training.train`` (its own ``train_img_per_s``: steady state,
warm-up steps excluded), the bare loop as the few lines every timm user writes, with the same recipe
(timm's optimizer factory, label-smoothed cross-entropy, gradient clipping, per-step LR schedule). They alternate ``--repeats`` times; the medians and their ratio are printed.

    python experiments/loop_overhead.py                      # vit_cifar + axial_block, batch 128, auto device
    python experiments/loop_overhead.py --steps 50 hardware=gpu pe=none train.batch_size=256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from rope_ext.run import distributed
from rope_ext.run.hardware import amp_dtype, pick_device
from rope_ext.run.job import settings_of
from rope_ext.run.model import build_model
from rope_ext.run.optim import build_optimizer, build_scheduler
from rope_ext.run.training import train
from rope_ext.tracking.wandb_run import Tracker

CONF = Path(__file__).resolve().parents[1] / "conf"


def harness(cfg, run_dir: Path) -> float:
    metrics = train(settings_of(cfg, distributed.DistEnv()), run_dir, distributed.DistEnv(), Tracker())
    return metrics["train_img_per_s"]


def bare(cfg, steps: int, warmup: int) -> float:
    device = pick_device(cfg.hardware, distributed.DistEnv())
    amp = amp_dtype(cfg.hardware.precision, device)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=10).to(device)
    bs, size = cfg.train.batch_size, cfg.dataset.input_size
    x = torch.randn(bs * (steps + warmup), 3, size, size, device=device)
    y = torch.randint(0, 10, (len(x),), device=device)
    # the same recipe as the harness (timm's optimizer factory, label smoothing, clipping, per-step LR
    # schedule), none of its machinery (device-side batching, checks, logging, checkpoints)
    opt = build_optimizer(model, cfg.optimizer, cfg.train.lr)
    sched = build_scheduler(opt, cfg.train, steps + warmup)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    model.train()
    for i in range(steps + warmup):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        xb, yb = x[i * bs : (i + 1) * bs], y[i * bs : (i + 1) * bs]
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = criterion(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return bs * steps / (time.perf_counter() - t0)


def _job_config(overrides: list[str]):
    """The task config, with HydraConfig set as in the app (``train`` reads the run mode and choices)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    full = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(full)
    cfg = full.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20, help="measured steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the harness config")
    args = parser.parse_args()
    base = [
        "run_id=loop_overhead",
        "dataset=fake",
        "train.epochs=1",
        "wandb.mode=disabled",
        "eval.bench_seconds=0",
        "eval.input_sizes=[32]",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        probe = compose("config", overrides=base + args.overrides)
        bs = probe.train.batch_size
        overrides = base + [
            f"dataset.train_size={bs * (args.steps + args.warmup)}",
            f"dataset.test_size={bs}",
            f"train.speed_warmup_steps={args.warmup}",
            *args.overrides,
        ]
        cfg = _job_config(overrides)
    print(f"config: {' '.join(overrides)}", flush=True)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            ours.append(harness(cfg, Path(tmp) / f"run{r}"))
            theirs.append(bare(cfg, args.steps, args.warmup))
            print(
                f"repeat {r + 1}: harness {ours[-1]:.1f} img/s, bare timm loop {theirs[-1]:.1f} img/s",
                flush=True,
            )
    h, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"median over {args.repeats} repeats: harness {h:.1f} img/s, bare {b:.1f} img/s, "
        f"harness/bare = {h / b:.3f} ({100 * (h / b - 1):+.1f} %)  [{torch.device('cuda' if torch.cuda.is_available() else 'cpu')}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads]"
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
