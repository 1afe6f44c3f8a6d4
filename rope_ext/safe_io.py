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
* ``sha256_file(path)``: a file's SHA-256, read without following a link unless asked (the checkpoint's
  own file never; a starting-weights file a user named may be one).
* ``strict_json(value)``: JSON without the NaN/Infinity tokens that strict parsers reject; non-finite
  numbers become null and their paths are returned, so a record can say which values were not finite.
* ``read_json(path)``: a JSON file read without following a link, bounded in size (``MAX_JSON_BYTES``)
  and nesting depth (``MAX_JSON_DEPTH``) before it is parsed; anything else raises ``BadJSON`` (a
  ``ValueError`` naming the file and the bound), never a ``RecursionError`` or a memory blow-up.
* ``write_text_nofollow(path, text, root)``: an atomic write of a file below ``root`` (e.g. a generated
  preset under ``conf/``) that follows no link in the directories between ``root`` and the file or at
  the file itself: each directory is opened relative to its parent with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
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
            f"{path} is a symbolic link (to {target}); the harness never reads, writes or locks its "
            "files through links, which could redirect them outside the directory it writes. Nothing was "
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


def sha256_file(path: Path | str, *, follow_links: bool = False) -> str:
    """The SHA-256 (hex) of the file at ``path``, read in 4 MiB chunks; a link raises UnsafePathError
    unless ``follow_links``."""
    fd = os.open(path, os.O_RDONLY | _CLOEXEC) if follow_links else open_nofollow(Path(path), os.O_RDONLY)
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


# A run's JSON records are a few KiB (checkpoint.json with its config: tens of KiB) and a few levels deep.
MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 64
# a JSON string (with its escapes) or one bracket: brackets inside strings are not nesting
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class BadJSON(ValueError):
    """A JSON file that is not read: too large, nested too deeply, or not JSON; ``str()`` names it."""


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text ``data`` (brackets in strings ignored)."""
    depth = deepest = 0
    for match in _JSON_TOKEN.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The value in JSON file ``path``, read without following a link; ``BadJSON`` when it is larger
    than ``max_bytes``, nested deeper than ``max_depth`` or not JSON (checked before parsing).
    ``OSError`` (missing, unreadable) and ``UnsafePathError`` (a link) pass through."""
    fd = open_nofollow(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BadJSON(f"{path} is larger than {max_bytes} bytes, far beyond any record the harness writes")
    depth = json_depth(data)
    if depth > max_depth:
        raise BadJSON(f"{path} nests {depth} levels deep; the harness reads at most {max_depth}")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise BadJSON(f"{path} is not JSON ({err})") from None


def write_text_nofollow(path: Path, text: str, root: Path) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file in its directory, fsynced, renamed),
    following no link below ``root``: the directories from ``root`` to ``path`` are opened one by one
    with ``O_NOFOLLOW`` (missing ones are created, ``root`` too), and a link at ``path`` is refused.

    ``path`` must lie under ``root`` (``ValueError``); a link raises ``UnsafePathError`` naming it,
    any other failure ``WriteError`` naming the file and errno. Returns ``path``."""
    path, root = Path(path), Path(root)
    parts = path.relative_to(root).parts  # ValueError when path is not under root
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{path} does not name a file under {root}")
    try:
        root.mkdir(parents=True, exist_ok=True)  # the caller's own folder (e.g. conf/): links allowed
        dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError as err:
        code, why = describe(err, root)
        raise WriteError(code, f"could not open the folder {why} to write {path}", str(path)) from None
    try:
        where = root
        for name in parts[:-1]:
            where = where / name
            child_fd = _enter_dir(dir_fd, name, where)
            os.close(dir_fd)
            dir_fd = child_fd
        _write_at(dir_fd, parts[-1], text.encode(), path)
    finally:
        os.close(dir_fd)
    return path


def _enter_dir(parent_fd: int, name: str, where: Path) -> int:
    """The directory ``name`` of ``parent_fd`` opened without following a link (created when missing)."""
    try:
        os.mkdir(name, 0o777, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as err:
        code, why = describe(OSError(err.errno, err.strerror), where)  # err names the last component only
        raise WriteError(code, f"could not create the folder {why}", str(where)) from None
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=parent_fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link_at(parent_fd, name):
            raise UnsafePathError(where) from None
        code, why = describe(OSError(err.errno, err.strerror), where)
        raise WriteError(code, f"could not open the folder {why}", str(where)) from None


def _is_link_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def _write_at(dir_fd: int, name: str, data: bytes, path: Path) -> None:
    """``data`` into ``name`` of ``dir_fd`` through a temporary file and a rename; a link at ``name``
    is refused before anything is written (a folder there fails the rename: ``WriteError``)."""
    if _is_link_at(dir_fd, name):
        raise UnsafePathError(path)
    tmp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o644, dir_fd=dir_fd)
        created = True
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if _is_link_at(dir_fd, name):  # planted while the file was written
            raise UnsafePathError(path)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        created = False
    except UnsafePathError:
        raise
    except OSError as err:
        code, why = describe(OSError(err.errno, err.strerror), path)  # err names the temporary file
        raise WriteError(
            code, f"could not write {why}; the previous file (if any) is unchanged", str(path)
        ) from None
    finally:
        if created:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
