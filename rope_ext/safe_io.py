"""Writing files in a run directory safely: never through a symbolic link, always atomically.

A run directory may sit on a shared filesystem where others can plant files, so every file the harness
writes or locks there (``.lock``, ``metrics.json``, ``failure.json``, ``checkpoint.pt``,
``checkpoint.json`` and their ``.tmp`` files) goes through this module:

* ``refuse_link(path)``: a path that is a symbolic link raises ``UnsafePathError`` (an ``OSError`` with
  errno ELOOP: the trainer's I/O exit 4); the link and whatever it points to are left alone.
* ``write_atomic(path, write)``: ``write(file)`` fills ``<path>.tmp``, created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a stale regular ``.tmp`` of a crashed attempt is removed first),
  fsynced, then renamed over ``path``. Any failure, ``OSError`` or the ``RuntimeError`` torch's zip
  writer wraps a full disk in, removes the ``.tmp`` and raises ``WriteError`` naming path and errno; the
  previous ``path`` is untouched.
* ``open_nofollow(path, flags)``: ``os.open`` that refuses links (the lock file).
* ``strict_json(value)``: JSON without the NaN/Infinity tokens that strict parsers reject; non-finite
  numbers become null and their paths are returned, so a record can say which values were not finite.
"""

from __future__ import annotations

import errno
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class WriteError(OSError):
    """A file of the run could not be written; ``str()`` is the whole one-paragraph explanation."""

    def __init__(self, code: int | None, message: str, filename: str | None = None) -> None:
        super().__init__(code or errno.EIO, message, filename)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UnsafePathError(WriteError):
    """A path the harness writes, reads or locks in a run directory is a symbolic link."""

    def __init__(self, path: Path) -> None:
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        super().__init__(
            errno.ELOOP,
            f"{path} is a symbolic link (to {target}); the harness never reads, writes or locks a run's "
            "files through links, which could redirect them outside the run directory. Nothing was "
            "written through it: remove the link (and check who planted it), then rerun",
            str(path),
        )


def refuse_link(path: Path) -> None:
    """Raise UnsafePathError when ``path`` is a symbolic link (dangling or not)."""
    if os.path.islink(path):
        raise UnsafePathError(Path(path))


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags | O_NOFOLLOW)``; a link raises UnsafePathError instead of ELOOP."""
    refuse_link(path)
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:  # became a link between the check and the open
            raise UnsafePathError(Path(path)) from None
        raise


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def os_error_of(err: BaseException) -> OSError | None:
    """The OSError behind ``err``: itself, or one it was raised from or during (torch wraps them)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe(err: BaseException, path: Path) -> tuple[int, str]:
    """(errno, "<file> (errno N NAME: reason)") of a failed write of ``path``, however torch wrapped
    the OSError (a RuntimeError of its zip writer has none: errno EIO and torch's message)."""
    found = os_error_of(err)
    code = (found.errno if found is not None else None) or errno.EIO
    reason = (found.strerror if found is not None else None) or str(err) or type(err).__name__
    where = (found.filename if found is not None else None) or path
    return code, f"{where} (errno {code} {errno.errorcode.get(code, '?')}: {reason})"


def create_new(path: Path) -> IO[bytes]:
    """``path`` opened for writing as a new file (never through a link); a stale regular file there
    (a crashed attempt's temporary file) is removed first."""
    refuse_link(path)
    path.unlink(missing_ok=True)
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    return os.fdopen(fd, "wb")


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any], what: str = "") -> Any:
    """Fill ``path`` by ``write(file)`` through ``<path>.tmp`` and a rename; returns what ``write`` did.

    Raises WriteError (``UnsafePathError`` for a link) with ``path`` and its ``.tmp`` as they were
    before, except that the ``.tmp`` is gone.
    """
    path = Path(path)
    tmp = tmp_path(path)
    refuse_link(path)
    refuse_link(tmp)
    created = False
    try:
        with create_new(tmp) as f:
            created = True
            out = write(f)
            f.flush()
            os.fsync(f.fileno())
        refuse_link(path)
        os.replace(tmp, path)
    except UnsafePathError:
        if created:
            remove_quietly(tmp)
        raise
    except (OSError, RuntimeError) as err:  # torch's zip writer raises RuntimeError on a full disk
        if created:
            remove_quietly(tmp)
        code, why = describe(err, tmp)
        raise WriteError(
            code,
            f"could not write {what or path.name} to {why}; its temporary file was removed and the "
            f"previous {path.name} (if any) is unchanged",
            str(path),
        ) from None
    return out


def remove_quietly(path: Path) -> None:
    """Remove ``path`` (never what a link points to); a failure to remove is left to the next attempt."""
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def strict_json(value: Any) -> tuple[Any, list[str]]:
    """``value`` with every non-finite float replaced by None, and the dotted paths of those floats."""
    found: list[str] = []

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, float) and not math.isfinite(node):
            found.append(where or "(value)")
            return None
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(node)]
        return node

    return walk(value, ""), found


def dumps(value: Any) -> str:
    """Strict JSON text (``allow_nan=False``) of a value already passed through ``strict_json``."""
    return json.dumps(value, indent=1, default=str, allow_nan=False)
