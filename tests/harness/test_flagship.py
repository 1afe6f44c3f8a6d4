"""The flow the project exists for, end to end with tiny settings: ``python train.py -m pe=axial_block
pe.block=2,3`` on digits, the sweep's closing table, ``python -m rope_ext.report`` on it (arm names, the
baseline, an unknown baseline refused, readable plots) and W&B's offline files (one run id per job however
often the sweep is rerun)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from harness_helpers import output, run_train
from test_report_inputs import check_plots

from rope_ext import report
from rope_ext.report.runs import RUN_NAME, find_runs

SWEEP = ["-m", "pe=axial_block", "pe.block=2,3", "dataset.subset=64", "train.epochs=1", "model.depth=1"]
SWEEP += ["eval.bench_seconds=0"]


def _report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``python -m rope_ext.report ARGS --no-wandb`` in this process: (exit status, stderr)."""
    capsys.readouterr()
    status = report.main([*args, "--no-wandb"])
    return status, capsys.readouterr().err


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_flagship_sweep_report_and_wandb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    offline = {"WANDB_MODE": "offline"}
    first = run_train(SWEEP, tmp_path, extra_env=offline)
    assert first.returncode == 0, output(first)
    [sweep] = list((tmp_path / "multirun").iterdir())
    assert f"python -m rope_ext.report {sweep.relative_to(tmp_path)}" in first.stdout
    assert "job peak MB" in first.stdout
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != "wandb")
    assert [j.name for j in jobs] == ["pe.block=2", "pe.block=3"]
    for job in jobs:  # each job recorded its own identity at its start
        record = json.loads((job / RUN_NAME).read_text())
        assert f"pe.block={job.name[-1]}" in record["overrides"] and record["config"]["pe"]["block"] == int(
            job.name[-1]
        )
    # the same sweep again: every job resumes its finished run and re-evaluates it, in the same W&B run
    again = run_train(SWEEP, tmp_path, extra_env=offline)
    assert again.returncode == 0, output(again)
    for job in jobs:
        dirs = sorted((job / "wandb").glob("offline-run-*"))
        ids = {re.match(r"offline-run-\d+_\d+-([a-z0-9]+)", d.name).group(1) for d in dirs}
        assert len(dirs) == 2 and ids == {(job / "wandb_id.txt").read_text().strip()}, dirs

    status, err = _report(capsys, str(sweep), "--baseline", "pe.block=3")
    assert status == 0, err
    stats = _rows(sweep / "stats.csv")
    # stats.csv has a row per arm and evaluation size: the training size's rows name each arm once
    assert [(r["arm"], r["baseline"]) for r in stats if r["extrap"] == "False"] == [
        ("pe.block=2", "pe.block=3"),
        ("pe.block=3", "pe.block=3"),
    ]
    assert sorted(r["arm"] for r in _rows(sweep / "report.csv")) == ["pe.block=2", "pe.block=3"]
    assert "1 seed per arm" in (sweep / "report.md").read_text()  # one seed: no statistics table
    # the variant label names the same arm
    status, _ = _report(capsys, str(sweep), "--baseline", "axial_block N=2 fast")
    assert status == 0 and {r["baseline"] for r in _rows(sweep / "stats.csv")} == {"pe.block=2"}
    status, err = _report(capsys, str(sweep), "--baseline", "foo")
    assert status == 2 and "'pe.block=2', 'pe.block=3'" in err and len(err.strip().splitlines()) == 1
    check_plots(find_runs(sweep), {"pe.block=2"})
