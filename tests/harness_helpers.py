"""Helpers shared by the harness tests (tiny subprocess runs of train.py, reading W&B's offline log)."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def run_train(
    args: list[str], cwd: Path, *, timeout: float = 240, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, TRAIN, *args],
        cwd=cwd,
        env=env(**(extra_env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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
