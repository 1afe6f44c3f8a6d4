"""The W&B dashboard made by one command (``python -m rope_ext.dashboard``): its view and report are built
offline, every panel names a key that real offline runs of a tiny sweep and its report log, the group
filter keeps the sweep's name exactly, the dry run prints the panels, and saving without an account
stops with one paragraph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness_helpers import TINY, env, output, run_train, wandb_records

from rope_ext.dashboard import (
    Study,
    build_report,
    build_view,
    main,
    panel_keys,
    study_of_sweep,
    view_sections,
)
from rope_ext.dashboard.cli import report_spec, sweep_tables
from rope_ext.dashboard.panels import REPORT_PLOTS, SPEEDS

GROUP = "pe.block=2,3"  # sweep groups are directory names and hold '='


def logged_keys(wandb_file: Path) -> dict:
    """Group, job type, dotted config keys, summary values and history keys of an offline ``.wandb`` log."""
    out: dict = {"config": set(), "summary": {}, "history": set()}

    def dotted(key: str, value: object) -> set[str]:
        if isinstance(value, dict):
            return {key} | {k for sub, v in value.items() for k in dotted(f"{key}.{sub}", v)}
        return {key}

    for record in wandb_records(wandb_file):
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            update = record.run.config.update if kind == "run" else record.config.update
            for item in update:
                out["config"] |= dotted(item.key, json.loads(item.value_json))
            if kind == "run":
                out["group"], out["job_type"] = record.run.run_group, record.run.job_type
        elif kind == "summary":
            for item in record.summary.update:
                out["summary"][item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
        elif kind == "history":
            out["history"] |= {item.key or "/".join(item.nested_key) for item in record.history.item}
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[dict]]]:
    """A tiny offline sweep (pe=none and axial_block, one epoch) and its report run: the sweep directory
    and the keys each W&B run logged."""
    cwd = tmp_path_factory.mktemp("dashboard")
    proc = run_train(
        ["-m", "pe=none,axial_block", *TINY], cwd=cwd, timeout=300, extra_env={"WANDB_MODE": "offline"}
    )
    assert proc.returncode == 0, output(proc)
    [sweep_dir] = list((cwd / "multirun").iterdir())
    report = subprocess.run(
        [sys.executable, "-m", "rope_ext.report", str(sweep_dir)],
        cwd=cwd,
        env=env(WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, output(report)
    runs = [logged_keys(p) for p in sorted(sweep_dir.rglob("offline-run-*/run-*.wandb"))]
    assert sorted(r["job_type"] for r in runs) == ["report", "train", "train"]
    yield sweep_dir, runs


def check_keys(panels: list, runs: list[dict], job_type: str) -> int:
    """Assert every key of ``panels`` is logged by every ``job_type`` run; the number of keys checked."""
    members = [r for r in runs if r["job_type"] == job_type]
    checked = 0
    for panel in panels:
        for where, key in panel_keys(panel):
            for run in members:
                if where in ("config", "history"):
                    assert key in run[where], (type(panel).__name__, where, key, sorted(run[where]))
                elif where == "summary":
                    assert key in run["summary"], (type(panel).__name__, key, sorted(run["summary"]))
                else:  # a wandb.Table / wandb.Image in the summary: its nested _type says which
                    assert run["summary"].get(f"{key}/_type") == f"{where}-file", (where, key)
                checked += 1
    return checked


@pytest.mark.slow
def test_every_panel_of_the_view_and_the_report_names_a_key_the_runs_log(sweep):
    sweep_dir, runs = sweep
    study = study_of_sweep(sweep_dir, entity="someone")
    assert {r["group"] for r in runs} == {study.group} == {sweep_dir.name}
    assert study.project == "rope-ext"
    logged_sizes = {int(k.split("/")[1]) for r in runs for k in r["summary"] if k.startswith("test_acc_at/")}
    assert set(study.sizes) == logged_sizes and len(logged_sizes) > 1
    job_types = {s.title: s.job_type for s in view_sections(study.sizes)}
    view = build_view(study)
    assert [s.name for s in view.sections] == list(job_types)
    checked = sum(check_keys(s.panels, runs, job_types[s.name]) for s in view.sections)
    report = build_report(study, sweep_tables(sweep_dir))
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    spec_grids = [b for b in report_spec(report)["spec"]["blocks"] if b["type"] == "panel-grid"]
    assert len(grids) == len(spec_grids) == len(job_types)
    for grid, spec in zip(grids, spec_grids):
        [runset] = spec["metadata"]["runSets"]
        conditions = {f["key"]["name"]: f["value"] for f in runset["filters"]["filters"]}
        assert conditions["group"] == study.group
        checked += check_keys(grid.panels, runs, conditions["jobType"])
    assert checked > 40
    # the report carries the sweep's report.md tables, without its local image links
    [tables] = [b.text for b in report.blocks if type(b).__name__ == "MarkdownBlock" and "|---" in b.text]
    assert (sweep_dir / "report.md").read_text().count("|") == tables.count("|")
    assert "![" not in tables


@pytest.mark.slow
def test_dry_run_of_a_sweep_directory_prints_its_panels(sweep, capsys):
    sweep_dir, _ = sweep
    assert main(["--entity", "someone", "--sweep", str(sweep_dir), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"runs of group {sweep_dir.name!r}" in out and "and the sweep report.md" in out
    assert "summary test_acc_at/64" in out and "table report" in out


def test_the_group_filter_keeps_a_group_with_equals_signs_exactly():
    # wandb-workspaces parses its filter strings back with '=' rewritten to '==', inside values too
    study = Study("someone", "rope-ext", GROUP, (16, 24))
    view = build_view(study)._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
    [runset] = view["spec"]["section"]["runSets"]
    assert [(f["key"]["name"], f["op"], f["value"]) for f in runset["filters"]["filters"]] == [
        ("group", "=", GROUP)
    ]
    report = report_spec(build_report(study))
    filters = [
        rs["filters"]["filters"]
        for b in report["spec"]["blocks"]
        if b["type"] == "panel-grid"
        for rs in b["metadata"]["runSets"]
    ]
    assert filters and all(
        [f["value"] for f in group] in ([GROUP, "train"], [GROUP, "report"]) for group in filters
    )
    assert all(
        rs["project"] == {"entityName": "someone", "name": "rope-ext"}
        for b in report["spec"]["blocks"]
        if b["type"] == "panel-grid"
        for rs in b["metadata"]["runSets"]
    )


def test_dry_run_prints_the_view_and_the_report_offline(capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["--entity", "someone", "--group", GROUP, "--sizes", "24,16"]
    assert main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert 'view "rope-ext: pe.block_2,3" in someone/rope-ext' in out  # W&B refuses '=' in a view's name
    for line in ("ScatterPlot", "test_acc against N", "config pe.block, summary test_acc"):
        assert line in out
    assert "summary test_acc_at/16, summary test_acc_at/24" in out
    assert all(f"summary {k}" in out for k in SPEEDS)
    assert "history trainer/epoch, history epoch/val_acc" in out
    assert "image " + ", image ".join(REPORT_PLOTS) in out
    assert "6 panel grids (13 panels" in out
    assert main([*args, "--dry-run", "--json"]) == 0
    spec = json.loads(capsys.readouterr().out)
    sections = spec["view"]["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == [s.title for s in view_sections((16, 24))]
    assert spec["report"]["displayName"] == f"rope-ext: {GROUP}"


def test_report_plots_are_the_plots_the_report_logs():
    from rope_ext.report.plots import PLOT_FILES

    assert REPORT_PLOTS == tuple(Path(f).stem for f in PLOT_FILES)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--group", GROUP, "--dry-run"], "--group needs --sizes"),
        (["--group", GROUP, "--sizes", "16,x", "--dry-run"], "--sizes '16,x': expected positive integers"),
        (["--group", " ", "--sizes", "16", "--dry-run"], "--group is empty"),
        (["--group", GROUP, "--sizes", "16", "--json"], "--json only goes with --dry-run"),
        (["--sweep", "no/such/dir", "--dry-run"], "--sweep no/such/dir: not a directory"),
    ],
)
def test_bad_input_is_refused_in_one_line_before_anything_is_built(args, said, capsys):
    assert main(["--entity", "someone", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("dashboard: ") and said in captured.err


def test_an_entity_is_needed(capsys, monkeypatch):
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    assert main(["--group", GROUP, "--sizes", "16", "--dry-run"]) == 2
    assert "--entity is needed" in capsys.readouterr().err


def test_saving_without_a_wandb_account_stops_with_one_paragraph(tmp_path, monkeypatch, capsys):
    for name in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: never logged in
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    assert main(["--entity", "someone", "--group", GROUP, "--sizes", "16"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [paragraph] = [line for line in captured.err.splitlines() if line.startswith("dashboard: ")]
    assert "Could not save the view to W&B (UsageError: No API key configured" in paragraph
    assert "wandb login" in paragraph and "--dry-run" in paragraph
    assert not (tmp_path / ".netrc").exists()


def test_the_specifications_load_back_with_the_same_sections_and_keys():
    # what W&B returns for a saved view or report is read with the library's own loaders (from_url)
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces.reports.v2.internal import ReportViewspec
    from wandb_workspaces.workspaces.internal import View

    study = Study("someone", "rope-ext", GROUP, (16, 24))
    view = build_view(study)
    loaded = ws.Workspace._from_model(View.model_validate(view._to_model().model_dump(by_alias=True)))
    assert [(s.name, [panel_keys(p) for p in s.panels]) for s in loaded.sections] == [
        (s.name, [panel_keys(p) for p in s.panels]) for s in view.sections
    ]
    report = build_report(study, "| arm | acc |\n|---|---|\n| none | 1.0 |")
    back = wr.Report._from_model(ReportViewspec.model_validate(report_spec(report)))
    grids = [[panel_keys(p) for p in b.panels] for b in back.blocks if isinstance(b, wr.PanelGrid)]
    assert grids == [[panel_keys(p) for p in s.panels] for s in view_sections(study.sizes)]
    assert back.blocks[-1].text.startswith("| arm | acc |")
