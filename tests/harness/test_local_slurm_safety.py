"""The local cluster tool (``rope_ext.local_slurm``, run as root) owns only what it made: its state
directory (created private and marked, refused otherwise), the daemons it started (pid, executable,
start time and command line checked; never pid <= 1, never a group), valid ports. No SLURM daemon is
needed: the processes signalled here are the test's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness_helpers import REPO

from rope_ext import local_slurm, local_slurm_state
from rope_ext.local_slurm_state import MARKER, UnsafeState, make_state_dir, record_daemon, start_time


def _tool(capsys: pytest.CaptureFixture, *args: str) -> subprocess.CompletedProcess:
    """``python -m rope_ext.local_slurm ARGS``, in this process: (exit status, stderr)."""
    try:
        code = local_slurm.main(list(args))
    except SystemExit as exit_:
        code = exit_.code
    return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)


def _tool_in_own_session(*args: str) -> subprocess.CompletedProcess:
    """The tool as a command in its own session: a signal it sends to "its group" stays there."""
    return subprocess.run(
        [sys.executable, "-m", "rope_ext.local_slurm", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


def _sleeper(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])


def test_default_state_dir_is_private_to_the_user_not_a_fixed_name_in_tmp(tmp_path, monkeypatch):
    monkeypatch.delenv("ROPE_EXT_SLURM_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert local_slurm_state.default_state_dir() == tmp_path / "home" / ".cache" / "rope-ext" / "local-slurm"
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert local_slurm_state.default_state_dir() == runtime / "rope-ext-slurm"
    runtime.chmod(0o777)  # not private: not used
    assert local_slurm_state.default_state_dir() == tmp_path / "home" / ".cache" / "rope-ext" / "local-slurm"


def test_the_state_dir_is_created_private_and_marked(tmp_path):
    state = make_state_dir(tmp_path / "a" / "state")
    assert os.stat(state).st_mode & 0o777 == 0o700 and os.stat(state).st_uid == os.geteuid()
    marker = json.loads((state / MARKER).read_text())
    assert marker["made_by"] == "rope_ext.local_slurm" and len(marker["token"]) == 32
    assert make_state_dir(state) == state  # its own directory is accepted again
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # world-writable without the sticky bit: anyone could swap the directory
    with pytest.raises(UnsafeState, match="world-writable without the sticky bit"):
        make_state_dir(shared / "state")


def _unmarked(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "sub" / "precious.txt").write_text("keep me")
    return victim


def _prepared(tmp_path: Path, case: str) -> tuple[Path, Path]:
    """(the --state-dir to pass, the directory whose content must survive) for each refused case."""
    victim = _unmarked(tmp_path)
    if case == "unmarked directory":
        return victim, victim
    if case == "a file":
        return victim / "sub" / "precious.txt", victim
    marked = make_state_dir(tmp_path / "marked")
    (marked / "sub").mkdir()
    (marked / "sub" / "precious.txt").write_text("keep me")
    if case == "link to a marked directory":
        (tmp_path / "link").symlink_to(marked)
        return tmp_path / "link", marked
    if case == "group/world-writable":
        marked.chmod(0o777)
    elif case == "owned by another user":
        if os.geteuid() != 0:
            pytest.skip("changing a directory's owner needs root")
        os.chown(marked, 65534, 65534)
    elif case == "marker is a link":
        (marked / MARKER).unlink()
        (marked / MARKER).symlink_to(victim / "sub" / "precious.txt")
    elif case == "forged marker":
        (marked / MARKER).write_text('{"made_by": "rope_ext.local_slurm", "token": "x"}')
    return marked, marked


REFUSED = [
    "unmarked directory",
    "a file",
    "link to a marked directory",
    "group/world-writable",
    "owned by another user",
    "marker is a link",
    "forged marker",
]


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("action", ["stop --purge", "status"])
def test_a_state_dir_the_tool_did_not_make_is_refused(tmp_path, case, action, capsys):
    state, keep = _prepared(tmp_path, case)
    proc = _tool(capsys, *action.split(), "--state-dir", str(state))
    assert proc.returncode == 2, proc.stderr
    assert f"refusing the state directory {state}" in proc.stderr and "Traceback" not in proc.stderr
    assert (keep / "sub" / "precious.txt").read_text() == "keep me"


def test_start_refuses_an_existing_unmarked_directory_before_anything_runs(tmp_path):
    victim = _unmarked(tmp_path)
    with pytest.raises(UnsafeState, match="holds no valid marker"):
        local_slurm.start(victim, ports=(20001, 20002))
    assert sorted(p.name for p in victim.iterdir()) == ["sub"]


def test_purge_removes_only_a_marked_directory(tmp_path, capsys):
    state = make_state_dir(tmp_path / "state")
    proc = _tool(capsys, "stop", "--purge", "--state-dir", str(state))
    assert proc.returncode == 0, proc.stderr
    assert not state.exists() and tmp_path.exists()


@pytest.mark.slow
def test_pid_0_is_never_signalled(tmp_path):
    """0 would be the caller's process group: the tool runs in its own session here, so that a tool
    that did signal it shows it (exit -15) instead of killing the test run."""
    state = make_state_dir(tmp_path / "state")
    (state / "slurmd.pid").write_text("0\n")
    proc = _tool_in_own_session("stop", "--state-dir", str(state))
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert f"{state / 'slurmd.pid'} names pid 0, which is never signalled" in proc.stderr


@pytest.mark.parametrize("content", ["1", "abc", "12 13", "99999999999", "+5"])
def test_a_pid_file_that_names_no_single_process_signals_nothing(tmp_path, content, capsys):
    state = make_state_dir(tmp_path / "state")
    (state / "slurmd.pid").write_text(content + "\n")
    proc = _tool(capsys, "stop", "--state-dir", str(state))
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert f"{state / 'slurmd.pid'}" in proc.stderr and "nothing signalled" in proc.stderr


def test_minus_one_is_never_a_pid(tmp_path):
    """-1 would signal every process the caller may signal: never run against a tool that reads it."""
    state = make_state_dir(tmp_path / "state")
    (state / "slurmd.pid").write_text("-1\n")
    notes = local_slurm.stop(state)
    assert any("holds '-1', not a process id" in n for n in notes), notes


def test_a_pid_file_naming_a_stranger_does_not_kill_it(tmp_path, capsys):
    state = make_state_dir(tmp_path / "state")
    stranger = _sleeper()
    try:
        (state / "slurmd.pid").write_text(f"{stranger.pid}\n")
        proc = _tool(capsys, "stop", "--state-dir", str(state))
        assert proc.returncode == 0, proc.stderr
        assert stranger.poll() is None, "the tool killed a process it did not start"
        assert f"names pid {stranger.pid}, but this tool recorded no slurmd it started" in proc.stderr
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("lie", ["start time", "executable", "command line"])
def test_a_recorded_pid_is_signalled_only_while_it_is_the_same_process(tmp_path, lie):
    state = make_state_dir(tmp_path / "state")
    proc = _sleeper() if lie == "command line" else _sleeper(str(state))
    try:
        (state / "slurmd.pid").write_text(f"{proc.pid}\n")
        record = {
            "pid": proc.pid,
            "exe": os.path.realpath(sys.executable),
            "start_time": start_time(proc.pid),
        }
        if lie == "start time":  # the pid was reused by another process since the tool started its own
            record["start_time"] += 1
        elif lie == "executable":
            record["exe"] = "/usr/sbin/slurmd"
        (state / local_slurm_state.RECORDS).write_text(json.dumps({"slurmd": record}))
        notes = local_slurm.stop(state)
        assert proc.poll() is None and len(notes) == 1 and "not signalled" in notes[0], notes
    finally:
        proc.kill()
        proc.wait()


def test_the_daemon_it_started_is_stopped(tmp_path):
    state = make_state_dir(tmp_path / "state")
    daemon = _sleeper(str(state))  # a stand-in for slurmd: its command line names the state directory
    try:
        (state / "slurmd.pid").write_text(f"{daemon.pid}\n")
        record_daemon(state, "slurmd", sys.executable)
        assert local_slurm.stop(state) == []
        assert daemon.wait(timeout=15) == -15
        assert not (state / "slurmd.pid").exists()
    finally:
        daemon.kill()
        daemon.wait()


@pytest.mark.parametrize("ports", [("0", "99999"), ("7000", "7000"), ("80", "6818"), ("x", "6818")])
def test_ports_are_checked(ports, capsys):
    with pytest.raises(SystemExit) as exit_:
        local_slurm.main(["conf", "--ports", *ports])
    assert exit_.value.code == 2
    assert "--ports" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--ports"):
        local_slurm_state.check_ports((0, 99999))


def test_a_state_dir_that_cannot_be_created_exits_4_before_anything_runs(tmp_path, capsys):
    """A file where the state directory's parent should be (ENOTDIR): the honest stand-in for a
    read-only disk, which root's chmod cannot make."""
    (tmp_path / "file").write_text("not a folder")
    proc = _tool(
        capsys, "start", "--state-dir", str(tmp_path / "file" / "state"), "--ports", "20001", "20002"
    )
    assert proc.returncode == 4, proc.stderr
    assert (
        f"{tmp_path / 'file'}" in proc.stderr and "ENOTDIR" in proc.stderr and "Traceback" not in proc.stderr
    )
