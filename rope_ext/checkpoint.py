"""Training checkpoints: atomic writes, integrity and compatibility checks, RNG state.

``<run dir>/checkpoint.pt`` is an ordinary ``torch.save`` file (model, optimizer, scheduler, scaler, RNG
states of every rank, epoch, step, best accuracy, speed counters). ``<run dir>/checkpoint.json`` records
its sha256, what it resumes and the fingerprint of the model it holds. Both are written to temporary
files first and renamed into place (``os.replace``), the checkpoint first: a crash leaves either the
previous pair or a new checkpoint with its record still in ``checkpoint.json.tmp``, which ``load``
completes. A checkpoint whose bytes do not match its record, that torch cannot read, or whose
fingerprint differs from the run's (another model, pe, dataset) is refused with ``CheckpointError``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

CKPT_NAME = "checkpoint.pt"
RECORD_NAME = "checkpoint.json"
FORMAT = "rope-ext-checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint that must not be loaded (corrupt, unreadable, or from another experiment)."""


class _HashingWriter:
    """A binary file wrapper that hashes what goes through it (torch.save writes sequentially)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _fsync_write(path: Path, write: Any) -> str | None:
    with open(path, "wb") as f:
        out = write(f)
        f.flush()
        os.fsync(f.fileno())
    return out


def save(run_dir: Path, state: dict[str, Any], record: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``run_dir/checkpoint.pt`` with its ``checkpoint.json`` record."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, rec = run_dir / CKPT_NAME, run_dir / RECORD_NAME
    ckpt_tmp, rec_tmp = ckpt.with_name(ckpt.name + ".tmp"), rec.with_name(rec.name + ".tmp")

    def write_ckpt(f: Any) -> str:
        writer = _HashingWriter(f)
        torch.save({"format": FORMAT, **state}, writer)
        return writer.sha.hexdigest()

    sha = _fsync_write(ckpt_tmp, write_ckpt)
    full_record = {"format": FORMAT, "sha256": sha, "file": CKPT_NAME, **record}
    _fsync_write(rec_tmp, lambda f: f.write(json.dumps(full_record, indent=1, default=str).encode()))
    os.replace(ckpt_tmp, ckpt)
    os.replace(rec_tmp, rec)
    return ckpt


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load(run_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint of ``run_dir`` (None when there is none), verified; raises CheckpointError."""
    run_dir = Path(run_dir)
    ckpt, rec = run_dir / CKPT_NAME, run_dir / RECORD_NAME
    rec_tmp = rec.with_name(rec.name + ".tmp")
    stale = ckpt.with_name(ckpt.name + ".tmp")
    if stale.exists():
        log.warning("removing %s, left by a save that was interrupted", stale)
        stale.unlink()
    if not ckpt.exists():
        if rec.exists() or rec_tmp.exists():
            raise CheckpointError(
                f"{rec} exists but {ckpt} does not: the checkpoint was removed or lost. Refusing to start "
                "over in a directory that claims progress; delete the run directory or pick another run_id."
            )
        return None
    sha = _sha256(ckpt)
    record = _read_record(rec)
    if (record is None or record.get("sha256") != sha) and rec_tmp.exists():
        pending = _read_record(rec_tmp)
        if pending is not None and pending.get("sha256") == sha:  # crash between the two renames
            os.replace(rec_tmp, rec)
            record = pending
    how = (
        "Delete it (and checkpoint.json) to start over, set train.resume=false to train from scratch in "
        "this directory, or pick another run_id."
    )
    if record is None:
        raise CheckpointError(f"checkpoint {ckpt} has no readable record {rec}; refusing to load it. {how}")
    if record.get("sha256") != sha:
        raise CheckpointError(
            f"checkpoint {ckpt} is corrupt: its sha256 {sha[:12]}… differs from the {record.get('sha256', '?')[:12]}… "
            f"recorded when it was written. {how}"
        )
    mismatch = {
        k: (record.get("fingerprint", {}).get(k), v)
        for k, v in fingerprint.items()
        if record.get("fingerprint", {}).get(k) != v
    }
    if mismatch:
        detail = "; ".join(f"{k}: checkpoint {old!r}, this run {new!r}" for k, (old, new) in mismatch.items())
        raise CheckpointError(f"checkpoint {ckpt} belongs to another experiment ({detail}). {how}")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {ckpt} could not be read ({err}). {how}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {ckpt} is not a rope-ext training checkpoint. {how}")
    return state


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU and CUDA) as torch-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _tuples(value: Any) -> Any:
    """Python's RNG state wants tuples back where serialisation may have produced lists."""
    if isinstance(value, list | tuple):
        return tuple(_tuples(v) for v in value)
    return value
