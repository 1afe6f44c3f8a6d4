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

from rope_ext.checkpoint.files import (
    CKPT_NAME,
    FORMAT,
    HOW,
    RECORD_NAME,
    RESUMABLE_KEYS,
    CheckpointError,
    CheckpointWriteError,
    fingerprint_of,
    read_record,
)
from rope_ext.checkpoint.recovery import recover
from rope_ext.checkpoint.store import (
    check_finite,
    check_optimizer,
    check_progress,
    load,
    rng_state,
    save,
    set_rng_state,
)

__all__ = [
    "CKPT_NAME",
    "FORMAT",
    "HOW",
    "RECORD_NAME",
    "RESUMABLE_KEYS",
    "CheckpointError",
    "CheckpointWriteError",
    "check_finite",
    "check_optimizer",
    "check_progress",
    "fingerprint_of",
    "load",
    "read_record",
    "recover",
    "rng_state",
    "save",
    "set_rng_state",
]
