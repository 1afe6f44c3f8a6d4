"""Where a run's numbers came from: library versions, processor, threads and code revision, as one
JSON-safe dict that ``metrics.json`` and ``failure.json`` record under ``provenance``.

Bit-for-bit reproduction needs the same versions, the same processor (or GPU) and the same thread count;
this record is what lets two runs that differ be told apart. Nothing here raises: a value that cannot
be found is None (never a placeholder string), and ``revision.reason`` says why the commit is missing.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import TypedDict

import torch

from rope_ext import safe_io

__all__ = [
    "PACKAGES",
    "Provenance",
    "Revision",
    "Weights",
    "code_revision",
    "cpu_identity",
    "iso_utc",
    "process_revision",
    "processor_name",
    "provenance",
    "weights_identity",
]

PACKAGES = ("torch", "timm", "numpy", "scipy", "hydra-core", "omegaconf", "wandb")
# untracked files here are run outputs, not code: they do not make the tree dirty
OUTPUT_DIRS = ("outputs/", "multirun/", "wandb/")
REPO_DIR = Path(__file__).resolve().parents[2]  # the checkout this code runs from


class Revision(TypedDict):
    """The code revision: ``commit`` (40 hex digits) and ``dirty`` (tracked changes or untracked files
    outside outputs/, multirun/, wandb/), both None with a ``reason`` when git cannot tell."""

    commit: str | None
    dirty: bool | None
    reason: str | None


class CpuIdentity(TypedDict):
    """The processor's identity from /proc/cpuinfo (``vendor_id``, ``cpu family``, ``model``,
    ``stepping``): what tells two CPUs of one marketing name apart. None for a field it lacks."""

    vendor: str | None
    family: int | None
    model: int | None
    stepping: int | None


class Weights(TypedDict):
    """The starting weights a run loaded (``model.checkpoint``): the path as given and the file's
    SHA-256 (None with a ``reason`` when it cannot be read), so a row names the pretrained model by
    content, not by a path that a later run may overwrite."""

    path: str
    sha256: str | None
    reason: str | None


class Provenance(TypedDict):
    """``metrics.json``'s ``provenance``."""

    python: str
    versions: dict[str, str | None]  # distribution name -> version (importlib.metadata), None: absent
    platform: str
    processor: str | None  # /proc/cpuinfo "model name", else platform.processor()
    cpu: CpuIdentity | None  # None where /proc/cpuinfo names none of its fields (not Linux x86)
    gpu: str | None  # torch.cuda.get_device_name of the device used; None on the CPU
    cuda: str | None  # torch.version.cuda (the CUDA torch was built with)
    threads: int  # torch.get_num_threads() when the record is made
    revision: Revision
    weights: Weights | None  # None: no model.checkpoint (random init or timm's hub weights)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def processor_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU model: the first ``model name`` line of ``cpuinfo`` (Linux x86), else
    ``platform.processor()`` (e.g. "arm" on macOS); None when neither says anything."""
    try:
        with cpuinfo.open() as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or None


_CPU_FIELDS = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "stepping": "stepping"}


def cpu_identity(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuIdentity | None:
    """The first processor's ``vendor_id``, ``cpu family``, ``model`` and ``stepping`` in ``cpuinfo``
    (numbers as ints); None where the file is missing or names none of them."""
    found: dict[str, str | int | None] = {}
    try:
        with cpuinfo.open() as f:
            for line in f:
                if not line.strip():
                    break  # the end of the first processor's block
                key, _, value = line.partition(":")
                name = _CPU_FIELDS.get(key.strip())
                if name is not None and name not in found:
                    value = value.strip()
                    found[name] = value if name == "vendor" else (int(value) if value.isdigit() else None)
    except OSError:
        return None
    if not found:
        return None
    return {name: found.get(name) for name in _CPU_FIELDS.values()}  # type: ignore[return-value]


def iso_utc(seconds: float) -> str:
    """``seconds`` since the epoch as ISO 8601 UTC to the second (``2026-12-07T20:15:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def code_revision(repo_dir: Path = REPO_DIR, timeout: float = 5.0) -> Revision:
    """The commit checked out in ``repo_dir`` and whether its tree differs from it, from one
    ``git status --porcelain=v2 --branch`` (header ``# branch.oid <sha>``, then one line per change).

    Untracked files under outputs/, multirun/ and wandb/ do not count. No exception escapes: no git
    binary, not a repository, no commit yet, a timeout or a failing git give None values and a reason.
    ``GIT_OPTIONAL_LOCKS=0`` keeps git from taking the index lock, so concurrent runs cannot collide.
    """
    cmd = ["git", "-C", str(repo_dir), "status", "--porcelain=v2", "--branch", "--untracked-files=normal"]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"}

    def missing(reason: str) -> Revision:
        return {"commit": None, "dirty": None, "reason": reason}

    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except FileNotFoundError:
        return missing("git is not installed (no git on PATH)")
    except subprocess.TimeoutExpired:
        return missing(f"git status took longer than {timeout:g} s")
    except (OSError, ValueError) as exc:
        return missing(f"git could not run: {exc}")
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[0]
        return missing(f"git status failed in {repo_dir}: {first}")
    commit: str | None = None
    dirty = False
    for line in done.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split()[2]
            commit = None if oid == "(initial)" else oid
        elif line.startswith("? "):
            path = line[2:].strip('"')
            dirty = dirty or not path.startswith(OUTPUT_DIRS)
        elif line and not line.startswith("#"):
            dirty = True  # changed tracked entry (1/2), unmerged (u); ignored (!) is not listed here
    if commit is None:
        return missing(f"{repo_dir} is a git repository without a commit")
    return {"commit": commit, "dirty": dirty, "reason": None}


@functools.cache
def process_revision() -> Revision:
    """The revision of the code this process runs: ``code_revision`` of this checkout, read once, at the
    first call. Python has the code in memory from then on, so a commit made while a long sweep runs
    in this process is not what its later jobs ran (the trainer calls this when a job starts)."""
    return code_revision(REPO_DIR)


def weights_identity(path: str | os.PathLike) -> Weights:
    """``path``'s SHA-256 (a link followed: shared pretrained weights often are one); an unreadable file
    gives None and the reason."""
    try:
        sha256 = safe_io.sha256_file(Path(path), follow_links=True)
    except OSError as exc:
        return {"path": str(path), "sha256": None, "reason": f"could not read it: {exc}"}
    return {"path": str(path), "sha256": sha256, "reason": None}


def provenance(
    device: torch.device | None = None,
    repo_dir: Path | None = None,
    weights: str | os.PathLike | None = None,
) -> Provenance:
    """The provenance record of a run on ``device`` (the GPU's name is recorded when it is a CUDA
    device; None: the current CUDA device if one is in use, else none), code from ``repo_dir``
    (None: this process's own code, ``process_revision``), starting from the weights file ``weights``
    (``model.checkpoint``; None: none loaded).

    Costs at most one git call, one read of the weights file and no CUDA initialisation on a CPU run.
    """
    gpu: str | None = None
    try:
        if device is not None and device.type == "cuda":
            gpu = torch.cuda.get_device_name(device)
        elif device is None and torch.cuda.is_available() and torch.cuda.is_initialized():
            gpu = torch.cuda.get_device_name(torch.cuda.current_device())
    except (RuntimeError, AssertionError):  # no driver / not compiled with CUDA
        gpu = None
    return {
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in PACKAGES},
        "platform": platform.platform(),
        "processor": processor_name(),
        "cpu": cpu_identity(),
        "gpu": gpu,
        "cuda": torch.version.cuda,
        "threads": int(torch.get_num_threads()),
        "revision": process_revision() if repo_dir is None else code_revision(repo_dir),
        "weights": None if weights is None else weights_identity(weights),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(provenance(), indent=1, allow_nan=False))
