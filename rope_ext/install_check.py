"""Check that torch and torchvision are builds that work together, before anything else runs.

    python -m rope_ext.install_check     # prints both versions and builds; exit 1 with the fix on a mismatch

pip can take torch from one place and torchvision from another (an index it could not reach, a fallback to
PyPI): a CPU torch beside a CUDA torchvision installs without complaint, and the first run dies inside
torchvision with ``operator torchvision::nms does not exist``. This module says so in one paragraph instead.
It imports only torch and torchvision (never timm, Hydra or the rest of rope_ext), so it runs where they
would fail. ``check_torchvision()`` is the same check for a program's start-up: None when fine.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# torch 2.M is released with torchvision 0.(M + 15): 2.0 with 0.15, ..., 2.14 with 0.29
# (pytorch/vision's compatibility table).
_TORCHVISION_MINOR_OFFSET = 15


@dataclass(frozen=True)
class Install:
    """What is installed: versions as pip recorded them, torch's own build, whether torchvision's ops load.

    ``torch_cuda`` is ``torch.version.cuda`` ("13.0"; None for a CPU or ROCm build); ``torchvision_cuda``
    is the CUDA version torchvision's compiled ops report ("13.0"), None when they do not load or are CPU.
    ``ops_error`` is None when ``torch.ops.torchvision.nms`` exists, otherwise why it does not.
    """

    torch_version: str
    torch_cuda: str | None
    torchvision_version: str | None
    torchvision_cuda: str | None = None
    ops_error: str | None = None


def build_of_version(version: str) -> str | None:
    """The build a wheel's local version names: "CPU", "CUDA 13.0", "ROCm 6.4"; None without a suffix."""
    local = version.partition("+")[2]
    if local == "cpu":
        return "CPU"
    cuda = re.fullmatch(r"cu(\d+)(\d)", local)
    if cuda:
        return f"CUDA {cuda[1]}.{cuda[2]}"
    rocm = re.fullmatch(r"rocm([\d.]+)", local)
    return f"ROCm {rocm[1]}" if rocm else None


def _kind(build: str) -> str:
    """CPU, CUDA 13 or ROCm: builds of one kind and major version load each other's ops."""
    name, _, number = build.partition(" ")
    return f"{name} {number.split('.')[0]}" if name == "CUDA" else name


def torch_build(install: Install) -> str:
    return (
        f"CUDA {install.torch_cuda}"
        if install.torch_cuda
        else build_of_version(install.torch_version) or "CPU"
    )


def torchvision_build(install: Install) -> str | None:
    """From the version suffix, else from the CUDA version its ops report; None when neither says."""
    if install.torchvision_version is None:
        return None
    build = build_of_version(install.torchvision_version)
    if build is None and install.torchvision_cuda:
        build = f"CUDA {install.torchvision_cuda}"
    return build


def _release_pair(torch_version: str, torchvision_version: str) -> str | None:
    """The torchvision minor that torch 2.M was released with, when the installed one is another."""
    t = re.match(r"(\d+)\.(\d+)", torch_version)
    v = re.match(r"(\d+)\.(\d+)", torchvision_version)
    if not (t and v) or t[1] != "2" or v[1] != "0":
        return None
    expected = int(t[2]) + _TORCHVISION_MINOR_OFFSET
    return None if int(v[2]) == expected else f"0.{expected}"


def problems(install: Install) -> list[str]:
    """Every reason this torch and torchvision will not work together (empty: they will)."""
    if install.torchvision_version is None:
        return ["torchvision is not installed"]
    found = []
    tb, vb = torch_build(install), torchvision_build(install)
    if vb is not None and _kind(tb) != _kind(vb):
        found.append(f"torch is a {tb} build and torchvision a {vb} build")
    expected = _release_pair(install.torch_version, install.torchvision_version)
    if expected:
        found.append(f"torch {install.torch_version} is released with torchvision {expected}.x")
    if install.ops_error:
        found.append(f"torchvision's compiled ops do not load ({install.ops_error})")
    return found


def diagnose(install: Install) -> str | None:
    """None when torch and torchvision work together, otherwise one paragraph: what is wrong and the fix."""
    found = problems(install)
    if not found:
        return None
    return (
        f"torch {install.torch_version} and torchvision {install.torchvision_version or '(none)'} do not "
        f"work together: {'; '.join(found)}. This happens when pip takes them from different places, and "
        "`pip install torch torchvision` will not repair it (it reports 'Requirement already satisfied'). "
        "Fix: start a fresh virtual environment, or first remove both with `pip uninstall -y torch "
        "torchvision`; then install both in ONE command from ONE index, `pip install torch torchvision "
        "--index-url https://download.pytorch.org/whl/cpu` (CPU) or `pip install torch torchvision` (PyPI), "
        "then `pip install -e '.[dev]'`, and rerun `python -m rope_ext.install_check`."
    )


def _torchvision_version() -> str | None:
    """torchvision's ``__version__`` with its build suffix ("0.29.1+cpu"), read from its version.py
    without importing torchvision (a mismatched build fails on import); pip's record where that file is
    missing (pip's record drops the suffix); None when torchvision is not installed."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or []:
        try:
            text = (Path(folder) / "version.py").read_text()
        except OSError:
            continue
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if found:
            return found[1]
    try:
        return metadata.version("torchvision")
    except metadata.PackageNotFoundError:
        return None


def _torchvision_ops() -> tuple[str | None, str | None]:
    """(CUDA version of torchvision's ops or None, why they do not load or None): imports torchvision."""
    try:
        import torch
        import torchvision  # noqa: F401  (a mismatched build fails here: operator torchvision::nms ...)

        torch.ops.torchvision.nms  # noqa: B018  (raises when the compiled ops are not registered)
        code = torch.ops.torchvision._cuda_version()
    except Exception as e:  # any failure to load is the finding, reported with its own words
        return None, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    return (f"{code // 1000}.{code % 1000 // 10}" if code > 0 else None), None


def probe() -> Install:
    """What this interpreter has: imports torch and torchvision (nothing else)."""
    import torch

    torchvision_version = _torchvision_version()
    cuda, ops_error = _torchvision_ops() if torchvision_version else (None, None)
    return Install(
        torch_version=torch.__version__,
        torch_cuda=torch.version.cuda,
        torchvision_version=torchvision_version,
        torchvision_cuda=cuda,
        ops_error=ops_error,
    )


def check_torchvision() -> str | None:
    """None when torch and torchvision work together, otherwise the paragraph with the fix."""
    return diagnose(probe())


def main() -> int:
    install = probe()
    print(f"torch {install.torch_version}: {torch_build(install)} build")
    if install.torchvision_version is not None:
        ops = (
            "compiled ops load (torchvision::nms)"
            if install.ops_error is None
            else "compiled ops DO NOT load"
        )
        named = torchvision_build(install)
        build = f"{named} build" if named else "build not named by its version"
        print(f"torchvision {install.torchvision_version}: {build}, {ops}")
    message = diagnose(install)
    if message:
        print(textwrap.fill(message, width=110), file=sys.stderr)
        return 1
    print("torch and torchvision work together.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
