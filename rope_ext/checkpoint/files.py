"""The checkpoint's files and records: names, format, fingerprint, hashing, the record reader (the
layer that both ``store`` and ``recovery`` build on)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from rope_ext import safe_io
from rope_ext.schema import resumable_keys

log = logging.getLogger("rope_ext.checkpoint")


CKPT_NAME = "checkpoint.pt"
RECORD_NAME = "checkpoint.json"
FORMAT = "rope-ext-checkpoint/1"


# Config keys that may change between a checkpoint and its resumption: they do not change what the
# next step computes (tracking, launcher, hardware placement, evaluation, logging), or the trainer
# adapts to them on purpose (train.epochs extends the schedule, train.lr restarts it at a new peak).
# The schema's keys with trajectory=False (rope_ext.schema).
RESUMABLE_KEYS = resumable_keys()


HOW = (
    "Delete it (and checkpoint.json) to start over, set train.resume=false to train from scratch in this "
    "directory, or pick another run_id."
)


class CheckpointError(RuntimeError):
    """A checkpoint that must not be loaded (corrupt, unreadable, or from another experiment)."""


class CheckpointWriteError(safe_io.WriteError):
    """A checkpoint could not be written (disk full, read-only output); the previous one is intact."""


def fingerprint_of(config: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """The resolved config flattened to ``{"a.b": value}`` minus ``RESUMABLE_KEYS``, plus ``num_classes``.

    Everything else (seed, data selection and size, augmentation, schedule, optimizer, model and pe
    options, ...) changes the trajectory, so a checkpoint is only resumed when all of it is equal.
    """
    flat: dict[str, Any] = {"num_classes": num_classes}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = list(node) if isinstance(node, tuple) else node

    walk(config, "")
    return {k: v for k, v in flat.items() if not _resumable(k)}


def _resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUMABLE_KEYS)


class _HashingWriter:
    """A binary file wrapper that hashes what goes through it (torch.save writes sequentially)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def sha256_of(path: Path) -> str:
    """The checkpoint file's SHA-256; a link is refused (``safe_io.sha256_file``)."""
    return safe_io.sha256_file(path)


def _fsync_write(path: Path, write: Any) -> str | None:
    with safe_io.create_new(path) as f:
        out = write(f)
        f.flush()
        os.fsync(f.fileno())
    return out


def pair_paths(run_dir: Path) -> tuple[Path, Path, Path, Path]:
    """checkpoint.pt, checkpoint.json and their .tmp files, each refused when it is a link."""
    ckpt, rec = run_dir / CKPT_NAME, run_dir / RECORD_NAME
    paths = (ckpt, rec, safe_io.tmp_path(ckpt), safe_io.tmp_path(rec))
    for path in paths:
        safe_io.refuse_link(path)
    return paths


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path`` (read without following links, bounded: ``safe_io.read_json``), else
    None when it is missing or not a JSON object (a record cut short by a crash)."""
    try:
        data = safe_io.read_json(path)
    except safe_io.UnsafePathError:
        raise
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def fingerprint_mismatch(record: dict[str, Any], fingerprint: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (recorded, this run's)} for every fingerprint key that differs (CheckpointError when the
    record holds neither a fingerprint nor a config to rebuild one from)."""
    saved = record.get("fingerprint") or {}
    if not isinstance(saved, dict) or record.get("fingerprint_format") != 2:
        # written before the fingerprint covered the whole config: rebuild it from the config it recorded
        config = record.get("config")
        if not isinstance(config, dict):
            raise CheckpointError("its record holds no config to compare. " + HOW)
        log.warning("a checkpoint record predates full fingerprints: compared with the config it recorded")
        saved = fingerprint_of(config, fingerprint.get("num_classes", 0))
    fingerprint, _ = safe_io.strict_json(fingerprint)  # as save() recorded it: non-finite -> null
    keys = sorted(set(saved) | set(fingerprint))
    return {k: (saved.get(k), fingerprint.get(k)) for k in keys if saved.get(k) != fingerprint.get(k)}
