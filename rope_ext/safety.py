"""Guards of the run directory: where it may be, who may write it, and the values checked before it is.

* ``check_component``: a ``run_id`` (and every directory name a sweep derives) is one path component of
  letters, digits and ``._=,+-``, never ``.``/``..``/empty, so a run stays inside ``outputs/``
  (``multirun/``); ``config.validate`` applies it to ``run_id``, ``config.check_path`` to sweep paths.
* ``RunLock``: an exclusive ``fcntl.flock`` on ``<run dir>/.lock`` (released by the OS when the process
  dies; opened without following links, ``rope_ext.safe_io``); a second process on the same directory
  is refused naming the PID that holds it.

Values are checked by ``rope_ext.config.validate`` (the schema and the rules across keys), which calls
``check_component`` for ``run_id`` and every component of ``hydra.sweep.subdir``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from rope_ext import safe_io
from rope_ext.errors import ConfigError

log = logging.getLogger(__name__)

COMPONENT = re.compile(r"[A-Za-z0-9._=,+\-]+")
MAX_COMPONENT = 255  # NAME_MAX of Linux filesystems: a longer name cannot be created
COMPONENT_ALLOWED = (
    f"one path component of at most {MAX_COMPONENT} letters, digits and ._=,+- (not '.', '..' or empty)"
)
LOCK_NAME = ".lock"


class RunDirBusy(ConfigError):
    """Another live process holds the run directory's lock (no failure record is written for it)."""


def check_component(key: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is a safe single directory name."""
    text = "" if value is None else str(value)
    if not COMPONENT.fullmatch(text) or text in (".", "..") or len(text) > MAX_COMPONENT:
        raise ConfigError.bad_value(key, value, COMPONENT_ALLOWED, "it names the run directory")


def check_run_dir(run_dir: Path, *, multirun: bool) -> None:
    """A multirun job directory's own name is a single safe component (``run_id``, which names a single
    run's, is checked by ``config.validate``): with the run directory templates of ``conf/config.yaml``
    (``outputs/${run_id}``, ``multirun/<sweep>/<job>``) that keeps every run inside ``outputs/`` or
    ``multirun/``."""
    if multirun:
        check_component("hydra.sweep.subdir", Path(run_dir).name)


class RunLock:
    """An exclusive lock on a run directory, held until ``release`` or the process's death."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise RunDirBusy naming the process that holds it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = safe_io.open_nofollow(self.path, os.O_RDWR | os.O_CREAT)  # a planted link: UnsafePathError
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirBusy(
                f"the run directory {self.path.parent} is in use by process {holder} (it holds "
                f"{self.path}); wait for it to finish or stop it, or pick another run_id. Nothing was "
                "changed."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the flock


class RunDirUnwritable(ConfigError):
    """The run directory cannot be written (disk full, read-only, no permission): exit 4, the trainer's
    I/O status, rather than 2."""

    exit_code = 4


HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")


def check_before_hydra(run_dir: Path, files: list[str]) -> None:
    """What Hydra will write is checked before it does: every existing component of ``run_dir`` is a
    directory and no link (ConfigError naming it), ``files`` (relative to ``run_dir``: ``.hydra/`` and
    its YAML files, the log), where they exist, are no links and no folder where a file goes, and a probe
    file written and removed in the nearest existing directory proves the disk writable
    (``RunDirUnwritable``)."""
    run_dir = Path(run_dir)
    current, existing = Path(), Path()
    for part in run_dir.parts:
        current = current / part
        if not _no_link(current, want_dir=True):
            break
        existing = current
    else:
        for name in files:
            _no_link(run_dir / name, want_dir=name.endswith("/"))
    _probe(existing, run_dir)


def _no_link(path: Path, *, want_dir: bool) -> bool:
    """False when ``path`` does not exist; ConfigError when it is a link or not what Hydra writes there."""
    import stat

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(mode):
        raise ConfigError(
            f"{path} is a symbolic link (to {os.readlink(path)!r}); Hydra would write through it. Remove "
            "the link or pick another run_id."
        )
    if want_dir != stat.S_ISDIR(mode) or not (want_dir or stat.S_ISREG(mode)):
        kind = "a directory" if want_dir else "a regular file"
        raise ConfigError(
            f"{path} exists and is not {kind}; Hydra writes the run's files there. Move it or pick another "
            "run_id."
        )
    return True


def _probe(directory: Path, run_dir: Path) -> None:
    """Write and remove a small file in ``directory`` (fsynced, so a full disk says so now)."""
    probe = directory / f".rope_ext-probe-{os.getpid()}"
    try:
        fd = safe_io.open_nofollow(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as err:
        raise RunDirUnwritable(
            f"the run directory {run_dir} cannot be written: {err.strerror or err} (a test write in "
            f"{directory.resolve()} failed). Free space, make it writable, or run from another directory; "
            "then rerun the same command."
        ) from None
