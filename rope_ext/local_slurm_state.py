"""What the local SLURM cluster tool (``rope_ext.local_slurm``) owns, and how it proves it.

The tool runs as root, so it must never act on what another user (or another program) prepared:

* **Its state directory** is created by it (``make_state_dir``): mode 0700, owned by the caller, holding
  a marker file (``MARKER``: the tool's name and a random token). ``check_state_dir`` refuses any other
  directory before anything is read, written, signalled or deleted in it: a link, a directory owned by
  someone else, one that group or others may write, one without the marker (``UnsafeState``).
* **Its daemons**: right after starting each one, the tool records (``daemons.json``) its pid, its
  executable and its start time (``/proc/<pid>/stat`` field 22, clock ticks since boot, so a reused pid
  never matches). ``stop_daemons`` signals a pid only when all of them still hold and its command line
  names the state directory; pids <= 1 and anything but a plain decimal number in a pid file are never
  signalled, a process group never is. The signal goes through a pidfd opened before the last check.
* **Its ports**: 1024..65535 (no privileged port, which another service of the machine would own) and
  two distinct ones (``check_ports``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import signal
import stat
import time
from pathlib import Path
from typing import Any

from rope_ext import safe_io

MARKER = ".rope-ext-local-slurm"
MADE_BY = "rope_ext.local_slurm"
RECORDS = "daemons.json"
_PID = re.compile(r"[0-9]{1,10}")


class UnsafeState(RuntimeError):
    """A state directory, pid file or port the tool refuses to use; ``str()`` names it and why."""


def default_state_dir() -> Path:
    """``$ROPE_EXT_SLURM_DIR``, else ``$XDG_RUNTIME_DIR/rope-ext-slurm`` (a per-user 0700 directory
    the session manager made), else ``~/.cache/rope-ext/local-slurm``: never a fixed name in a
    world-writable directory such as /tmp, which another user could prepare first."""
    if os.environ.get("ROPE_EXT_SLURM_DIR"):
        return Path(os.environ["ROPE_EXT_SLURM_DIR"])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and _private(os.lstat(runtime)):
        return Path(runtime) / "rope-ext-slurm"
    return Path.home() / ".cache" / "rope-ext" / "local-slurm"


def check_ports(ports: tuple[int, ...]) -> None:
    """``ValueError`` unless ``ports`` are two distinct integers in 1024..65535."""
    if len(ports) != 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports):
        raise ValueError(f"--ports takes two port numbers (slurmctld's, slurmd's), got {ports!r}")
    for port in ports:
        if not 1024 <= port <= 65535:
            raise ValueError(f"--ports: {port} is not an unprivileged TCP port; allowed: 1024..65535")
    if ports[0] == ports[1]:
        raise ValueError(f"--ports: slurmctld and slurmd need two different ports, got {ports[0]} twice")


def _private(st: os.stat_result) -> bool:
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def make_state_dir(path: Path) -> Path:
    """``path`` created private and marked, or (existing) checked to be one this tool made."""
    if os.path.lexists(path):
        check_state_dir(path)
        return path
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:  # something that is not a folder (Path.mkdir's exist_ok allows folders only)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent)) from None
    st = os.stat(parent)
    if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        raise UnsafeState(
            f"refusing to create the state directory {path}: its parent {parent} is world-writable "
            "without the sticky bit, so anyone could replace it; pick a --state-dir in your own directory"
        )
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:  # created by someone else since the check above
        check_state_dir(path)
        return path
    os.chmod(path, 0o700)
    record = {"made_by": MADE_BY, "token": secrets.token_hex(16), "uid": os.geteuid()}
    fd = safe_io.open_nofollow(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return path


def check_state_dir(path: Path) -> None:
    """``UnsafeState`` unless ``path`` is a directory this tool made: not a link, owned by the caller,
    not writable by group or others, holding the tool's marker."""

    def refuse(why: str) -> UnsafeState:
        return UnsafeState(
            f"refusing the state directory {path}: {why}. The tool only uses, signals from and deletes a "
            "directory it created itself (`start` makes a new private one: pick a --state-dir that does "
            "not exist yet)"
        )

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise refuse("it does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise refuse(f"it is a symbolic link (to {os.readlink(path)})")
    if not stat.S_ISDIR(st.st_mode):
        raise refuse("it is not a directory")
    if st.st_uid != os.geteuid():
        raise refuse(f"it is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})")
    if st.st_mode & 0o022:
        raise refuse(f"group or others may write it (mode {stat.S_IMODE(st.st_mode):04o})")
    marker = path / MARKER
    try:
        mst = os.lstat(marker)
        data = safe_io.read_json(marker, max_bytes=4096) if stat.S_ISREG(mst.st_mode) else None
    except (OSError, ValueError):
        data = None
    valid = (
        isinstance(data, dict)
        and data.get("made_by") == MADE_BY
        and re.fullmatch(r"[0-9a-f]{32}", str(data.get("token")))
        and mst.st_uid == os.geteuid()
    )
    if not valid:
        raise refuse(f"it holds no valid marker {MARKER} of this tool")


# --- processes --------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (after the command name, which may hold spaces), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time (``/proc/<pid>/stat`` field 22, clock ticks after boot), or None."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_running(pid: int, started: int) -> bool:
    """Whether the process ``pid`` started at ``started`` still runs (a zombie does not: it only waits
    for its parent, often init, to collect it)."""
    fields = _stat_fields(pid)
    return bool(fields) and int(fields[19]) == started and fields[0] != "Z"


def read_pid_file(path: Path) -> tuple[int | None, str | None]:
    """(pid, None) for a pid file holding one decimal pid > 1; (None, why) for anything else; (None,
    None) when there is no file."""
    try:
        fd = safe_io.open_nofollow(path, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(64).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return None, None
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    if not _PID.fullmatch(raw):
        return None, f"holds {raw[:20]!r}, not a process id"
    pid = int(raw)
    if pid <= 1:
        return None, f"names pid {pid}, which is never signalled (0 and -1 mean a group or every process)"
    return pid, None


def why_not_ours(pid: int, record: dict[str, Any], state_dir: Path) -> str | None:
    """Why ``pid`` is not the daemon this tool recorded (None when it is): gone, another executable,
    started at another time, or a command line that does not name ``state_dir``."""
    if pid <= 1:
        return f"pid {pid} is never signalled"
    started = start_time(pid)
    if started is None:
        return "gone"
    if started != record.get("start_time"):
        return f"pid {pid} was started at another time than the daemon this tool started (a reused pid)"
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError as err:
        return f"pid {pid} cannot be inspected ({err.strerror})"
    if exe != record.get("exe"):
        return f"pid {pid} runs {exe}, not {record.get('exe')}"
    if not any(os.fsencode(state_dir) in arg for arg in cmdline):
        return f"pid {pid}'s command line does not name {state_dir}"
    return None


def record_daemon(state_dir: Path, name: str, executable: str, timeout_s: float = 10.0) -> None:
    """Record ``name``'s pid (from the pid file it writes), executable and start time in ``RECORDS``,
    once its pid file names a live process of ``executable`` whose command line names ``state_dir``."""
    exe = os.path.realpath(executable)
    deadline = time.monotonic() + timeout_s
    while True:
        pid, _ = read_pid_file(state_dir / f"{name}.pid")
        started = start_time(pid) if pid else None
        record = {"pid": pid, "exe": exe, "start_time": started}
        if pid and started is not None and why_not_ours(pid, record, state_dir) is None:
            break
        if time.monotonic() > deadline:
            raise UnsafeState(
                f"{name} started but {state_dir / (name + '.pid')} names no {exe} of this cluster"
            )
        time.sleep(0.05)
    records = _records(state_dir)
    records[name] = record
    text = json.dumps(records).encode()
    safe_io.write_atomic(state_dir / RECORDS, lambda f: f.write(text))


def _records(state_dir: Path) -> dict[str, Any]:
    try:
        data = safe_io.read_json(state_dir / RECORDS, max_bytes=1 << 16)
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def stop_daemons(state_dir: Path, names: tuple[str, ...], wait_s: float = 10.0) -> list[str]:
    """SIGTERM (then, after ``wait_s``, SIGKILL) each daemon of ``names`` this tool started from the
    (already checked) ``state_dir``; a note for every pid file or record naming another process."""
    notes: list[str] = []
    records = _records(state_dir)
    for name in names:
        pid_file = state_dir / f"{name}.pid"
        file_pid, problem = read_pid_file(pid_file)
        record = records.get(name)
        if problem:
            notes.append(f"{pid_file} {problem}: nothing signalled for it")
        if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
            if file_pid is not None:
                notes.append(
                    f"{pid_file} names pid {file_pid}, but this tool recorded no {name} it started: not signalled"
                )
            continue
        pid = record["pid"]
        if file_pid is not None and file_pid != pid:
            notes.append(
                f"{pid_file} names pid {file_pid}, not the {name} this tool started ({pid}): not signalled"
            )
        why = why_not_ours(pid, record, state_dir)
        if why is None:
            _terminate(pid, record, state_dir, wait_s)
        elif why != "gone":
            notes.append(f"{name}: {why}: not signalled")
        safe_io.remove_quietly(pid_file)
        records.pop(name)
    text = json.dumps(records).encode()
    safe_io.write_atomic(state_dir / RECORDS, lambda f: f.write(text))
    return notes


def _terminate(pid: int, record: dict[str, Any], state_dir: Path, wait_s: float) -> None:
    """SIGTERM, then SIGKILL after ``wait_s``, through a pidfd checked to be the recorded process."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        handle = None
    try:
        if why_not_ours(pid, record, state_dir) is not None:  # gone or replaced since the first check
            return
        for sig, wait in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 5.0)):
            _send(pid, handle, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not is_running(pid, record["start_time"]):
                    return
                time.sleep(0.1)
    finally:
        if handle is not None:
            os.close(handle)


def _send(pid: int, handle: int | None, sig: int) -> None:
    try:
        if handle is not None:
            signal.pidfd_send_signal(handle, sig)
        else:
            os.kill(pid, sig)  # pid > 1, checked: one process, never a group
    except ProcessLookupError:
        pass
