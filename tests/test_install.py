"""A non-editable install works without the repository: the package carries conf/, and the job lister
and the training app run from anywhere (issue 18). The dependencies are this environment's (--no-deps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    assert where.stdout.split() == [str(conf), str(site / "rope_ext" / "config.py")], where.stderr
    jobs = run("-m", "rope_ext.jobs", "--check", "experiment=study/digits_blocks")
    assert jobs.returncode == 0 and "56 jobs" in jobs.stdout, jobs.stdout + jobs.stderr
    bad = run("-m", "rope_ext.app", "pe.block=70", "model=vit_s16")
    assert bad.returncode == 2 and "Nothing was written" in bad.stderr and not list(work.iterdir())
    app = run("-m", "rope_ext.app", "run_id=inst", "train.epochs=1", "dataset.subset=32", "model.depth=1",
              "eval.bench_seconds=0", "eval.input_sizes=[16]")  # fmt: skip
    assert app.returncode == 0, app.stdout[-2000:] + app.stderr[-2000:]
    record = json.loads((work / "outputs" / "inst" / "metrics.json").read_text())
    assert record["status"] == "ok" and (work / "outputs" / "inst" / "train.log").is_file()
