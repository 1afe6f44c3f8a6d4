"""The schema's building blocks: ``key`` (a dataclass field with the harness's metadata), ``group``, and
the upper bounds of memory-bound sizes. At the bottom of the configuration's imports: the top-level
schema (``rope_ext.schema``) and every dataset's schema class (``rope_ext.data``) are built from them.

Metadata of ``key(...)``: ``help`` (shown by ``--help``); ``choices`` / ``ge`` / ``gt`` / ``le`` / ``lt``
(checked by ``rope_ext.config``; floats must also be finite); ``trajectory`` (changing it changes what
training computes); ``names_run`` (it names the run directory); ``replicate`` (seeds).
"""

from dataclasses import field
from typing import Any

from omegaconf import MISSING

# Upper bounds of memory-bound sizes: a value past them cannot fit a machine of this project's kind
# (an H200 has 141 GB), so it is refused before any work rather than failing after training.
MAX_SIZE_PX = 4096  # input sizes (train and evaluation)
MAX_TOKENS = 128 * 128  # patches per image: attention is quadratic in them
MAX_DEPTH = 256
MAX_WIDTH = 65536  # embed_dim
MAX_BATCH = 65536
MAX_IMAGES = 10_000_000  # generated datasets (fake, relpos) are built in memory
MAX_SEED = 2**32 - 1  # numpy's generators take 32 bits
MAX_EPOCHS = 1_000_000
MAX_BENCH_SECONDS = 3600.0


def key(
    default: Any = MISSING,
    *,
    help: str = "",
    choices: tuple | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    trajectory: bool = True,
    names_run: bool = True,
    replicate: bool = False,
    factory: Any = None,
) -> Any:
    """A dataclass field with the metadata described in the module docstring."""
    meta = dict(help=help, choices=choices, ge=ge, gt=gt, le=le, lt=lt)
    meta |= dict(trajectory=trajectory, names_run=names_run, replicate=replicate)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def group(factory: Any = MISSING, *, trajectory: bool = True, names_run: bool = True) -> Any:
    """A group's field in the top-level schema; its metadata applies to every key below it."""
    meta = dict(trajectory=trajectory, names_run=names_run, group=True)
    if factory is MISSING:
        return field(default=MISSING, metadata=meta)
    return field(default_factory=factory, metadata=meta)
