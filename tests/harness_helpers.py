"""Helpers shared by the tests: tiny subprocess runs of train.py, reading W&B's offline log, a tiny ViT."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rope_ext import create_vit, make_rope

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "train.py")

# a model and data small enough for a job to take a few seconds on 2 shared CPU cores
TINY = [
    "dataset=fake",
    "dataset.train_size=64",
    "dataset.test_size=32",
    "model.depth=1",
    "model.embed_dim=24",
    "model.num_heads=2",
    "train.epochs=1",
    "train.batch_size=16",
    "train.speed_warmup_steps=1",
    "eval.batch_size=32",
    "eval.bench_seconds=0.02",
]


def env(**extra: str) -> dict[str, str]:
    """The environment of a test subprocess: offline, no W&B unless asked, one thread each."""
    out = dict(os.environ)
    out.update(
        WANDB_MODE="disabled",
        HF_HUB_OFFLINE="1",
        WANDB_SILENT="true",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        HYDRA_FULL_ERROR="0",
    )
    out.pop("ROPE_EXT_DATA", None)
    out.update(extra)
    return out


def last_wins(args: list[str]) -> list[str]:
    """``args`` with each ``key=value`` override kept only at its last occurrence: tests extend ``TINY``
    with the values they need, while ``train.py`` refuses a key given twice (Hydra would keep the last
    silently). Flags and the order of the kept overrides stay as they were."""
    last = {a.split("=", 1)[0]: i for i, a in enumerate(args) if "=" in a and not a.startswith("-")}
    return [
        a for i, a in enumerate(args) if "=" not in a or a.startswith("-") or last[a.split("=", 1)[0]] == i
    ]


def run_train(
    args: list[str], cwd: Path, *, timeout: float = 240, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, TRAIN, *last_wins(args)],
        cwd=cwd,
        env=env(**(extra_env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_train(args: list[str], cwd: Path) -> subprocess.Popen:
    """``python train.py`` in the background (stdout and stderr together in ``proc.stdout``), for
    tests that signal the run or race a second process against it."""
    return subprocess.Popen(
        [sys.executable, TRAIN, *last_wins(args)],
        cwd=cwd,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_epoch(run_dir: Path, proc: subprocess.Popen, epoch: int, timeout: float = 180) -> None:
    """Wait until the run's checkpoint record says ``epoch`` epochs are done (0: any checkpoint),
    failing with the run's output if the process ends first."""
    record = run_dir / "checkpoint.json"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if record.exists() and json.loads(record.read_text())["epoch"] >= epoch:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    raise AssertionError("no checkpoint in time")


@contextmanager
def run_lock_held(run_dir: Path, seconds: float) -> Iterator[subprocess.Popen]:
    """Another process holding ``RunLock(run_dir)`` for at most ``seconds``; killed on exit, so
    the OS releases the lock as it would after a crash."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from rope_ext.safety import RunLock; "
            f"RunLock({str(run_dir)!r}).acquire(); print('locked', flush=True); time.sleep({seconds})",
        ],
        env=env(PYTHONPATH=os.environ.get("PYTHONPATH", "")),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def failure(run_dir: Path) -> dict[str, Any]:
    """The failure record a failed or refused run writes beside its results."""
    return json.loads((run_dir / "failure.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a W&B ``.wandb`` file (LevelDB log format: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, pos, records, parts = 32768, 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        parts = payload if kind in (1, 2) else parts + payload
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
    return records


def wandb_history(path: Path) -> list[dict[str, Any]]:
    """The rows logged with ``run.log`` in a ``.wandb`` file."""
    rows = []
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


def wandb_config(path: Path) -> dict[str, Any]:
    """The run config W&B recorded in a ``.wandb`` file (``wandb.init(config=...)``), top-level keys."""
    config: dict[str, Any] = {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        items = (
            record.run.config.update if kind == "run" else record.config.update if kind == "config" else []
        )
        for item in items:
            config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return config


def compose_job(overrides: list[str], output_dir: Path | str = "/tmp/rope-ext-compose-test"):
    """(task config, full config) composed with Hydra's compose API as the app would, HydraConfig set."""
    import copy

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]
    return task, cfg


# head_dim 24 (48 / 2 heads) takes every block size the model tests sweep; 2 layers keep a forward
# at milliseconds on a shared CPU core.
TINY_VIT = dict(patch_size=4, embed_dim=48, depth=2, num_heads=2)

TinyVit = Callable[..., torch.nn.Module]


def build_tiny_vit(
    pe: str = "none",
    seed: int = 0,
    *,
    num_classes: int = 10,
    img_size: int = 32,
    pool: str = "cls",
    vit_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> torch.nn.Module:
    """``create_vit`` of a tiny timm ViT, seeded so that two builds with one seed are equal.

    ``options`` are the encoding's ``pe_options``; ``vit_kwargs``: more ``create_vit`` keyword
    arguments, overriding ``TINY_VIT`` (``depth``, ``qk_norm``, ``checkpoint``, ``pos_embed``, ...).
    """
    torch.manual_seed(seed)
    return create_vit(
        "vit_tiny_patch16_224",
        pe=pe,
        num_classes=num_classes,
        img_size=img_size,
        pe_options=options,
        pool=pool,
        **{**TINY_VIT, **(vit_kwargs or {})},
    )


# -- rotary encodings on their own (tests/encoding/test_rotary.py, tests/encoding/test_blocks.py) ---------------------


def perturbed(name: str, seed: int = 0, scale: float = 0.5, **kw: Any) -> torch.nn.Module:
    """A float64 rope (``make_rope(name, **kw)``) whose every parameter, frozen or not, got noise."""
    torch.manual_seed(seed)
    rope = make_rope(name, **kw).double()
    with torch.no_grad():
        for p in rope.parameters():
            p.add_(scale * torch.randn_like(p))
    return rope


def relative_deviation(rope: torch.nn.Module, pos: torch.Tensor, shift: torch.Tensor) -> float:
    """max over heads, i, j of |R(p_i+s)ᵀR(p_j+s) − R(p_i)ᵀR(p_j)|."""
    r0, r1 = rope.rotation(pos), rope.rotation(pos + shift)
    g0 = torch.einsum("hiab,hjac->hijbc", r0, r0)
    g1 = torch.einsum("hiab,hjac->hijbc", r1, r1)
    return (g1 - g0).abs().max().item()


def assert_exact_rotation(rope: torch.nn.Module, *, seed: int, tokens: int, tol: float) -> None:
    """The properties of an exact (commuting) rotary encoding at ``tokens`` random positions in
    [-10, 10) and a random shift in [-20, 20) per axis, drawn from ``seed``: relative to ``tol``,
    every R(p) orthogonal, R(0) = I."""
    dims, eye = rope.dims, torch.eye(rope.head_dim, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand(tokens, dims, generator=gen, dtype=torch.float64) * 20 - 10
    shift = torch.rand(dims, generator=gen, dtype=torch.float64) * 40 - 20
    assert relative_deviation(rope, pos, shift) < tol
    r = rope.rotation(pos)
    torch.testing.assert_close(r.transpose(-1, -2) @ r, eye.expand_as(r), rtol=0, atol=1e-10)
    r_zero = rope.rotation(torch.zeros(1, dims, dtype=torch.float64))
    torch.testing.assert_close(r_zero, eye.expand_as(r_zero), rtol=0, atol=1e-12)


# The fine-tune presets (study/digits_finetune*) load the weights their source run writes first
# (study/digits_finetune_source); the config check reads only a weights file's first bytes.
FINETUNE_SOURCE = Path("outputs/digits_finetune_source/checkpoint.pt")


def stand_in_finetune_source(folder: Path) -> None:
    """A torch checkpoint at ``folder``/FINETUNE_SOURCE, so the fine-tune presets compose and validate
    with ``folder`` as the working folder, as they do after their source run."""
    import torch

    path = folder / FINETUNE_SOURCE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({}, path)
