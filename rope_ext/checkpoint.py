"""Training checkpoints: atomic writes, integrity and compatibility checks, RNG state.

``<run dir>/checkpoint.pt`` is an ordinary ``torch.save`` file of tensors and plain values only (model,
optimizer, scheduler, scaler, RNG states of every rank, epoch, step, best accuracy, speed counters): it
loads with ``weights_only=True``, so reading it never runs code. ``<run dir>/checkpoint.json`` records its
sha256, what it resumes and the run's fingerprint (``fingerprint``: every config key that changes the
training trajectory). Both are written to temporary files first (fsynced), then renamed into place
(``os.replace``), the checkpoint first, then the directory is fsynced. ``recover`` (called by ``load``)
turns whatever a crash at any point of ``save`` left into a consistent pair: a complete new pair still in
``*.tmp`` is moved into place once verified (hash, weights-only load, fingerprint, shapes, progress),
anything incomplete is discarded, and a complete pair that fails verification is renamed aside
(``*.tmp.rejected-<time>``), never over the checkpoint in place. A failed
write (disk full, read-only) removes its ``*.tmp`` files and raises ``CheckpointWriteError`` naming path
and errno; the previous checkpoint is untouched. A checkpoint whose bytes do not match its record, that
torch cannot read, or whose fingerprint differs from the run's is refused with ``CheckpointError``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rope_ext import safe_io
from rope_ext.config import is_int, is_number
from rope_ext.schema import resumable_keys

log = logging.getLogger(__name__)

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
    sha = hashlib.sha256()
    fd = safe_io.open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha.update(chunk)
    return sha.hexdigest()


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


def save(run_dir: Path, state: dict[str, Any], record: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``run_dir/checkpoint.pt`` with its ``checkpoint.json`` record.

    Nothing is written through a link (``safe_io.UnsafePathError``); ``record`` is strict JSON."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt, rec, ckpt_tmp, rec_tmp = pair_paths(run_dir)

    def write_ckpt(f: Any) -> str:
        writer = _HashingWriter(f)
        torch.save({"format": FORMAT, **state}, writer)
        return writer.sha.hexdigest()

    try:
        sha = _fsync_write(ckpt_tmp, write_ckpt)
        full_record, _ = safe_io.strict_json({"format": FORMAT, "sha256": sha, "file": CKPT_NAME, **record})
        text = safe_io.dumps(full_record).encode()
        _fsync_write(rec_tmp, lambda f: f.write(text))
        safe_io.refuse_link(ckpt)
        os.replace(ckpt_tmp, ckpt)
        safe_io.refuse_link(rec)
        os.replace(rec_tmp, rec)
        safe_io.fsync_dir(run_dir)
    except safe_io.UnsafePathError:
        raise
    except (OSError, RuntimeError) as err:  # torch's zip writer wraps a full disk in a RuntimeError
        # Before the first rename the previous pair is untouched and the temporary files are clutter.
        # After it, checkpoint.json.tmp is the record of the new checkpoint.pt: kept, recover() uses it.
        if ckpt_tmp.exists() and not ckpt_tmp.is_symlink():
            for tmp in (ckpt_tmp, rec_tmp):
                safe_io.remove_quietly(tmp)
        code, why = safe_io.describe(err, ckpt_tmp)
        raise CheckpointWriteError(
            code,
            f"could not write the checkpoint to {why}; its temporary files were removed and the previous "
            f"checkpoint in {run_dir} still resumes",
        ) from None
    return ckpt


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


def recover(run_dir: Path, fingerprint: dict[str, Any] | None = None) -> None:
    """Complete, remove or set aside what an interrupted ``save`` left (``rope_ext.checkpoint_recovery``,
    imported here because it builds on this module)."""
    from rope_ext.checkpoint_recovery import recover as recover_pending

    recover_pending(Path(run_dir), fingerprint)


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


def load(run_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint of ``run_dir`` (None when there is none), verified; raises CheckpointError."""
    run_dir = Path(run_dir)
    ckpt, rec = run_dir / CKPT_NAME, run_dir / RECORD_NAME
    recover(run_dir, fingerprint)
    if not ckpt.exists():
        if rec.exists():
            raise CheckpointError(
                f"{rec} exists but {ckpt} does not: the checkpoint was removed or lost. Refusing to start "
                "over in a directory that claims progress; delete the run directory or pick another run_id."
            )
        return None
    sha = sha256_of(ckpt)
    how = HOW
    try:
        record = safe_io.read_json(rec)
    except safe_io.BadJSON as err:
        raise CheckpointError(f"checkpoint {ckpt}: its record cannot be read: {err}. {how}") from None
    except FileNotFoundError:
        record = None
    if not isinstance(record, dict):
        raise CheckpointError(f"checkpoint {ckpt} has no readable record {rec}; refusing to load it. {how}")
    if record.get("sha256") != sha:
        raise CheckpointError(
            f"checkpoint {ckpt} is corrupt: its sha256 {sha[:12]}… differs from the {str(record.get('sha256', '?'))[:12]}… "
            f"recorded when it was written. {how}"
        )
    try:
        mismatch = fingerprint_mismatch(record, fingerprint)
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {ckpt}: {err}") from None
    if mismatch:
        detail = "; ".join(f"{k}: checkpoint {old!r}, this run {new!r}" for k, (old, new) in mismatch.items())
        raise CheckpointError(
            f"checkpoint {ckpt} was trained with other settings that change the run ({detail}); "
            f"only {', '.join(RESUMABLE_KEYS)} may change on resume. {how}"
        )
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"checkpoint {ckpt} could not be read ({err}). {how}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {ckpt} is not a rope-ext training checkpoint. {how}")
    return state


def check_progress(state: dict[str, Any], steps_per_epoch: int) -> None:
    """Refuse (CheckpointError) progress values no run saves: wrong types, an epoch without its history,
    a step beyond the epoch, non-finite numbers. A hand-edited file must not become a bogus record
    (``epochs_done: 1000000000, status: ok``)."""

    def bad(key: str, value: Any, allowed: str) -> CheckpointError:
        shown = repr(value) if len(repr(value)) < 80 else repr(value)[:77] + "..."
        return CheckpointError(f"checkpoint value {key}={shown} is not {allowed}. {HOW}")

    epoch, step, total = state.get("epoch"), state.get("step_in_epoch"), state.get("global_step")
    history = state.get("history")
    if not is_int(epoch) or epoch < 0:
        raise bad("epoch", epoch, "an integer >= 0")
    if not isinstance(history, list) or len(history) != epoch:
        n = len(history) if isinstance(history, list) else history
        raise bad("epoch", epoch, f"the number of epochs in its history ({n})")
    for i, entry in enumerate(history):
        if not isinstance(entry, dict) or entry.get("epoch") != i + 1:
            raise bad(f"history[{i}]", entry, f"the record of epoch {i + 1}")
        for key in ("train_loss", "lr", "val_acc"):
            if not (is_number(entry.get(key)) or (key == "val_acc" and entry.get(key) is None)):
                raise bad(f"history[{i}].{key}", entry.get(key), "a finite number")
    if not is_int(step) or not 0 <= step <= steps_per_epoch:
        raise bad("step_in_epoch", step, f"an integer in [0, {steps_per_epoch}] (steps per epoch)")
    if not is_int(total) or total < epoch + step:
        raise bad("global_step", total, f"an integer >= epoch + step_in_epoch = {epoch + step}")
    best, best_epoch = state.get("best_val_acc"), state.get("best_epoch")
    if best is not None and not (is_number(best) and 0 <= best <= 100):
        raise bad("best_val_acc", best, "null or a percentage")
    if best_epoch is not None and not (is_int(best_epoch) and 1 <= best_epoch <= epoch):
        raise bad("best_epoch", best_epoch, f"null or an integer in [1, {epoch}]")
    speed, partial = state.get("speed"), state.get("partial_loss")
    if not isinstance(speed, dict) or not all(is_number(speed.get(k)) for k in ("images", "seconds")):
        raise bad("speed", speed, "{'images': number, 'seconds': number}")
    if not isinstance(partial, list) or len(partial) != 2 or not all(is_number(v) for v in partial):
        raise bad("partial_loss", partial, "[sum, count] of finite numbers")
    rngs = state.get("rng")
    if not isinstance(rngs, list) or not rngs or not all(isinstance(r, dict) for r in rngs):
        raise bad("rng", type(rngs).__name__, "a list of RNG states, one per process")


def check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse a checkpoint whose weights are NaN or infinite (written before the trainer checked)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"checkpoint {path} holds non-finite weights ({name}): the run it continues had diverged. "
                f"{HOW}"
            )


def check_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Refuse optimizer state whose tensors do not match their parameters' shapes (a loaded state is
    otherwise only used, and fails, at the next step)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise CheckpointError(
                        f"checkpoint optimizer state {key} has shape {tuple(value.shape)} for a parameter "
                        f"of shape {tuple(param.shape)}. {HOW}"
                    )


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
