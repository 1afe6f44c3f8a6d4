"""rope_ext.tracking.provenance: the record metrics.json and failure.json carry, against real git repositories."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import torch

from rope_ext.tracking import provenance


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one commit (tracked code.py, ignored-by-rule run dirs not in .gitignore)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repository above
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "t@example.com")
    _git(root, "config", "user.name", "t")
    (root / "code.py").write_text("x = 1\n")
    _git(root, "add", "code.py")
    _git(root, "commit", "-qm", "one")
    return root


def test_clean_dirty_and_run_outputs(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert provenance.code_revision(repo) == {"commit": head, "dirty": False, "reason": None}
    for d in ("outputs/2026-01-01", "multirun/x", "wandb/offline-run"):  # run outputs do not count
        (repo / d).mkdir(parents=True)
        (repo / d / "metrics.json").write_text("{}")
    assert provenance.code_revision(repo)["dirty"] is False
    (repo / "notes.py").write_text("y = 2\n")  # untracked code does
    assert provenance.code_revision(repo)["dirty"] is True
    (repo / "notes.py").unlink()
    (repo / "code.py").write_text("x = 2\n")  # a modified tracked file does
    rev = provenance.code_revision(repo)
    assert rev["dirty"] is True and rev["commit"] == head
    _git(repo, "commit", "-qam", "two")
    rev = provenance.code_revision(repo)
    assert rev["dirty"] is False and rev["commit"] == _git(repo, "rev-parse", "HEAD").strip() != head
    (repo / "code.py").unlink()  # a deleted tracked file, staged rename: still dirty
    assert provenance.code_revision(repo)["dirty"] is True


def test_no_repository_no_commit_no_git_or_too_slow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()
    rev = provenance.code_revision(plain)
    assert rev["commit"] is None and rev["dirty"] is None and "not a git repository" in rev["reason"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _git(empty, "init", "-q")
    rev = provenance.code_revision(empty)
    assert rev["commit"] is None and rev["dirty"] is None and "without a commit" in rev["reason"]
    assert provenance.code_revision(tmp_path / "gone")["commit"] is None  # a directory that is not there
    sleep = shutil.which("sleep")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no git anywhere on PATH
    rev = provenance.code_revision(plain)
    assert rev == {"commit": None, "dirty": None, "reason": "git is not installed (no git on PATH)"}
    slow = bin_dir / "git"  # a git that hangs (a stuck network filesystem, say)
    slow.write_text(f"#!/bin/sh\nexec {sleep} 30\n")
    slow.chmod(0o755)
    rev = provenance.code_revision(plain, timeout=0.5)
    assert rev["commit"] is None and "longer than 0.5 s" in rev["reason"]


def test_record_types_values_and_json(repo: Path) -> None:
    rec = provenance.provenance(torch.device("cpu"), repo_dir=repo)
    text = json.dumps(rec, allow_nan=False)
    assert json.loads(text) == rec
    assert set(rec) == set(provenance.Provenance.__annotations__)
    assert rec["python"] == platform.python_version()
    assert rec["versions"]["torch"] == metadata.version("torch")
    assert set(rec["versions"]) == set(provenance.PACKAGES)
    for name in ("torch", "timm", "numpy", "hydra-core", "omegaconf", "wandb"):
        assert isinstance(rec["versions"][name], str) and rec["versions"][name][0].isdigit()
    assert rec["threads"] == torch.get_num_threads() and isinstance(rec["threads"], int)
    assert rec["gpu"] is None  # a CPU run names no GPU
    assert rec["processor"] is None or (isinstance(rec["processor"], str) and rec["processor"])
    assert rec["revision"]["commit"] == _git(repo, "rev-parse", "HEAD").strip()
    torch.set_num_threads(1)
    try:
        assert provenance.provenance(torch.device("cpu"), repo_dir=repo)["threads"] == 1
    finally:
        torch.set_num_threads(rec["threads"])


def test_processor_name_reads_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Example CPU @ 2.0GHz\nflags\t: a b\n")
    assert provenance.processor_name(info) == "Example CPU @ 2.0GHz"
    info.write_text("processor\t: 0\nBogoMIPS\t: 50\n")  # e.g. arm64: no model name line
    assert provenance.processor_name(info) == (platform.processor() or None)
    assert provenance.processor_name(tmp_path / "missing") == (platform.processor() or None)


def test_cpu_identity_reads_the_first_processor_of_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    first = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: X\n"
    info.write_text(first + "stepping\t: 8\n\nprocessor\t: 1\nvendor_id\t: Other\nstepping\t: 9\n")
    assert provenance.cpu_identity(info) == {
        "vendor": "GenuineIntel",
        "family": 6,
        "model": 143,
        "stepping": 8,
    }
    info.write_text("processor\t: 0\nvendor_id\t: ARM\nstepping\t: r1p0\n")  # not a number: None
    assert provenance.cpu_identity(info) == {"vendor": "ARM", "family": None, "model": None, "stepping": None}
    info.write_text("processor\t: 0\nBogoMIPS\t: 50\n")
    assert provenance.cpu_identity(info) is None and provenance.cpu_identity(tmp_path / "missing") is None
    assert provenance.iso_utc(0) == "1970-01-01T00:00:00Z"
    assert provenance.iso_utc(1_800_000_000.7) == "2027-01-15T08:00:00Z"


def test_the_report_reads_the_cpu_and_the_times_a_run_records(repo: Path) -> None:
    """runs.csv's processor_id, started_at and finished_at are what metrics.json records under those names."""
    from rope_ext.report.arms import provenance_cells

    rec = provenance.provenance(torch.device("cpu"), repo_dir=repo)
    rec["cpu"] = {"vendor": "AuthenticAMD", "family": 25, "model": 17, "stepping": 1}
    cells = provenance_cells({"provenance": rec, "started_at": "2026-12-07T20:00:00Z", "finished_at": "x"})
    assert cells["processor_id"] == "vendor AuthenticAMD family 25 model 17 stepping 1"
    assert (cells["started_at"], cells["finished_at"]) == ("2026-12-07T20:00:00Z", "x")


def test_a_process_records_the_revision_it_loaded_not_a_later_commit(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long in-process sweep: jobs after a commit made mid-sweep still ran the code loaded at the start."""
    monkeypatch.setattr(provenance, "REPO_DIR", repo)
    provenance.process_revision.cache_clear()
    try:
        first = _git(repo, "rev-parse", "HEAD").strip()
        assert provenance.process_revision()["commit"] == first  # the trainer calls it as a job starts
        (repo / "code.py").write_text("x = 2\n")
        _git(repo, "commit", "-qam", "two")
        assert _git(repo, "rev-parse", "HEAD").strip() != first
        assert provenance.provenance(torch.device("cpu"))["revision"]["commit"] == first
        # an explicit checkout is read as it is now
        assert provenance.provenance(torch.device("cpu"), repo_dir=repo)["revision"]["commit"] != first
    finally:
        provenance.process_revision.cache_clear()


def test_weights_identity_is_the_files_sha256_and_the_report_row_carries_it(tmp_path: Path) -> None:
    """A run that starts from ``model.checkpoint`` names that file by content in its record and its row:
    the same path overwritten by other weights gives another identity."""
    import hashlib

    from rope_ext.report.arms import provenance_cells

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"first weights")
    first = provenance.provenance(torch.device("cpu"), repo_dir=tmp_path, weights=weights)["weights"]
    assert first == {
        "path": str(weights),
        "sha256": hashlib.sha256(b"first weights").hexdigest(),
        "reason": None,
    }
    weights.write_bytes(b"other weights")
    second = provenance.weights_identity(weights)
    assert second["sha256"] != first["sha256"]
    assert provenance_cells({"provenance": {"weights": second}})["weights_sha256"] == second["sha256"]
    missing = provenance.weights_identity(tmp_path / "gone.pth")
    assert missing["sha256"] is None and "could not read" in missing["reason"]
    rec = provenance.provenance(torch.device("cpu"), repo_dir=tmp_path)
    assert rec["weights"] is None and provenance_cells({"provenance": rec})["weights_sha256"] is None
