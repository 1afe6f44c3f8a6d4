"""Non-editable installs: the whole package runs the job lister and the app from anywhere (it carries
conf/; dependencies are this environment's, --no-deps); the library half alone needs torch and timm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness_helpers import REPO


@pytest.mark.slow
def test_a_non_editable_install_runs_the_job_lister_and_the_app(tmp_path: Path) -> None:
    site, work = tmp_path / "site", tmp_path / "work"
    work.mkdir()
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
         str(site), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    conf = site / "rope_ext" / "conf"
    assert (conf / "config.yaml").is_file() and not conf.is_symlink()
    assert (conf / "experiment" / "study" / "digits_blocks.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True)

    where = run("-c", "import rope_ext.config as c; print(c.CONF, c.__file__)")
    assert where.stdout.split() == [str(conf), str(site / "rope_ext" / "config" / "__init__.py")], (
        where.stderr
    )
    jobs = run("-m", "rope_ext.jobs", "--check", "experiment=study/digits_blocks")
    assert jobs.returncode == 0 and "56 jobs" in jobs.stdout, jobs.stdout + jobs.stderr
    bad = run("-m", "rope_ext.app", "pe.block=70", "model=vit_s16")
    assert bad.returncode == 2 and "Nothing was written" in bad.stderr and not list(work.iterdir())
    app = run("-m", "rope_ext.app", "run_id=inst", "train.epochs=1", "dataset.subset=32", "model.depth=1",
              "eval.bench_seconds=0", "eval.input_sizes=[16]")  # fmt: skip
    assert app.returncode == 0, app.stdout[-2000:] + app.stderr[-2000:]
    record = json.loads((work / "outputs" / "inst" / "metrics.json").read_text())
    assert record["status"] == "ok" and (work / "outputs" / "inst" / "train.log").is_file()


# -- the library half: torch and timm only ------------------------------------------------------------

HARNESS_MODULES = ("hydra", "omegaconf", "wandb", "submitit", "sklearn", "matplotlib", "scipy")
LIBRARY_RUN = """
import sys
import torch, rope_ext
from rope_ext.encoding import registry
assert rope_ext.__file__.startswith(sys.argv[1]), rope_ext.__file__
model = rope_ext.create_vit("vit_tiny_patch16_224", pe="axial_block", pe_options={"block": 4}, num_classes=3,
                            img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2, pool="avg").eval()
x = torch.randn(2, 3, 16, 16)
with torch.no_grad():
    out, folded = model(x), rope_ext.fold_for_inference(model)(x)
torch.testing.assert_close(folded, out)
assert rope_ext.relative_property_error(model) < 1e-10 and registry.names()[0] == "none"
print("harness modules loaded:", sorted(m for m in {HARNESS} if m in sys.modules))
"""


def _closure(*names: str) -> dict[str, Any]:
    """The installed distributions ``names`` require, transitively (markers evaluated here)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # required only elsewhere (a marker this check ignores)
            continue
        for text in found[name].requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _link_distributions(dists: dict[str, Any], folder: Path) -> None:
    """A folder holding links to exactly these distributions' top-level files (packages, modules,
    .dist-info), for a .pth file: an environment with torch and timm and nothing else."""
    folder.mkdir()
    for dist in dists.values():
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (folder / top).exists():
                (folder / top).symlink_to(source)


@pytest.mark.slow
def test_the_library_half_installs_and_runs_with_torch_and_timm_alone(tmp_path: Path) -> None:
    """The wheel requires torch and timm only; installed non-editable into a fresh venv that sees
    torch, timm and their own requirements (nothing of the harness), the library builds a model,
    runs it, folds it and measures its relative property."""
    import zipfile

    wheel_dir = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir",
         str(wheel_dir), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(wheel_dir.glob("rope_ext-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        meta = archive.read(next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    required = [line.split(": ", 1)[1] for line in meta.splitlines() if line.startswith("Requires-Dist: ")]
    assert sorted(r for r in required if "extra ==" not in r) == ["timm>=1.0.3", "torch>=2.1"]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-2000:]
    _link_distributions(_closure("torch", "timm"), tmp_path / "torch_and_timm")
    (site / "torch_and_timm.pth").write_text(str(tmp_path / "torch_and_timm") + "\n")
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env = {**clean, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for module in HARNESS_MODULES:
        probe = subprocess.run([python, "-c", f"import {module}"], env=env, cwd=tmp_path, capture_output=True)
        assert probe.returncode != 0, f"{module} is importable in the library-only venv"
    code = LIBRARY_RUN.replace("{HARNESS}", repr(set(HARNESS_MODULES)))
    run = subprocess.run(
        [python, "-c", code, str(site)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "harness modules loaded: []" in run.stdout
