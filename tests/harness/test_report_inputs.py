"""The report, the tuner and the sweep summary on what a run directory may hold: arm names from the swept
overrides, the run's own record (run.json) over Hydra's latest attempt, foreign or corrupt files, and the
plots' layout."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from test_report import _metrics, _pe, _write_job

from rope_ext import report
from rope_ext.report.groups import group_runs
from rope_ext.report.plots import make_figures
from rope_ext.report.runs import RUN_NAME, find_runs, load_yaml, record_run
from rope_ext.report.tables import csv_table, csv_text
from rope_ext.tracking.records import METRICS_NAME, write_record

CONF = Path(__file__).resolve().parents[2] / "conf"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _block_sweep(root: Path, blocks=(2, 3, 4, 5, 6), seeds=(0,)) -> Path:
    """``python train.py -m pe=axial_block pe.block=2,3,4,5,6``: the overrides Hydra records per job."""
    for n, (block, seed) in enumerate(itertools.product(blocks, seeds)):
        pe = _pe("axial_block", block)
        overrides = ["pe=axial_block", f"pe.block={block}"] + ([f"seed={seed}"] if len(seeds) > 1 else [])
        metrics = _metrics(pe, seed, 60.0 + block + seed, 900.0 + block, 3000.0)
        _write_job(root, n, pe, seed, metrics, overrides=overrides)
    return root


def test_arms_are_named_by_the_swept_overrides_and_the_baseline_by_any_of_its_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = _block_sweep(tmp_path / "multirun" / "blocks")
    summary = report.write_report(root, baseline="pe.block=2")
    stats = [r for r in _rows(summary["stats_csv"]) if r["extrap"] == "False"]
    assert [r["arm"] for r in stats] == [f"pe.block={b}" for b in (2, 3, 4, 5, 6)]
    assert {r["baseline"] for r in stats} == {"pe.block=2"}
    assert [r["diff"] for r in stats][1:] == ["1.0", "2.0", "3.0", "4.0"]
    assert sorted(r["arm"] for r in _rows(summary["csv"])) == [f"pe.block={b}" for b in (2, 3, 4, 5, 6)]
    assert {r["table"] for r in stats} == {"blocks (relpos)"}
    md = summary["md"].read_text()  # one seed per arm: no statistics table, the way to get one
    assert "1 seed per arm" in md and "`seed=0,1,2`" in md and "### " not in md
    assert "0 comparisons" not in md and "| n/a |" not in md.split("## All groups")[0]
    # the same arm by its variant label, and by key=value with Hydra's + prefix
    for name in ("axial_block N=4 fast", "+pe.block=4", "pe.block=4"):
        rows = _rows(report.write_report(root, baseline=name)["stats_csv"])
        assert {r["baseline"] for r in rows} == {"pe.block=4"}, name
    # an unknown baseline: exit 2, one line listing the arms, nothing (re)written
    (root / "stats.csv").unlink()
    assert report.main([str(root), "--baseline", "foo", "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert "'foo' names no arm" in err and "'pe.block=2'" in err and "'pe.block=6'" in err
    assert len(err.strip().splitlines()) == 1 and not (root / "stats.csv").exists()
    assert report.main([str(root), "--baseline", "axial_block", "--no-wandb"]) == 2  # no arm is just that


def test_study_arms_keep_their_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``+experiment/arm=<name>`` sweeps (the study presets): the arm file's name is the arm's name."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = tmp_path / "multirun" / "study"
    for n, (arm, block) in enumerate((("axial2_complex", 2), ("axial_block_n3", 3))):
        for seed in (0, 1):
            pe = _pe("axial_block", block)
            overrides = ["experiment=toy", f"+experiment/arm={arm}", f"seed={seed}"]
            _write_job(
                root, 2 * n + seed, pe, seed, _metrics(pe, seed, 50.0 + block, 1.0, 1.0), overrides=overrides
            )
    rows = _rows(report.write_report(root, baseline="axial2_complex")["stats_csv"])
    assert [(r["arm"], r["baseline"], r["n"]) for r in rows if r["size"] == "32"] == [
        ("axial2_complex", "axial2_complex", "2"),
        ("axial_block_n3", "axial2_complex", "2"),
    ]


def test_the_runs_own_record_beats_hydras_latest_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused command used to rewrite .hydra/: run.json, written at the run's start, is what counts."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = _block_sweep(tmp_path / "multirun" / "blocks", blocks=(2, 3))
    job = root / "0"
    config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    record_run(job, config, ["pe=axial_block", "pe.block=2"])
    # a later refused attempt: Hydra rewrote the job's .hydra/ with its own (refused) values
    config["train"]["lr"] = -1.0
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (job / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["pe=axial_block", "pe.block=9", "train.lr=-1"])
    )
    [run] = [r for r in find_runs(root) if r.path == job]
    assert run.overrides == ["pe=axial_block", "pe.block=2"] and run.cfg("train.lr") == pytest.approx(1e-3)
    rows = _rows(report.write_report(root)["csv"])
    assert sorted(r["arm"] for r in rows) == ["pe.block=2", "pe.block=3"]
    assert json.loads((job / RUN_NAME).read_text())["overrides"] == ["pe=axial_block", "pe.block=2"]
    # a run with run.json alone (no .hydra/) is found too
    shutil.rmtree(job / ".hydra")
    assert job in [r.path for r in find_runs(root)]


def test_unreadable_runs_are_skipped_and_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = _block_sweep(tmp_path / "multirun" / "blocks", blocks=(2, 3, 4, 5, 6))
    (root / "0" / ".hydra" / "config.yaml").write_text("pe: [unclosed\n  : :")  # a YAML ScannerError
    for job, value in (("1", "high"), ("2", float("inf"))):
        data = json.loads((root / job / METRICS_NAME).read_text())
        # written by hand as another tool might: json.dumps writes inf as the non-standard token Infinity
        (root / job / METRICS_NAME).write_text(json.dumps({**data, "test_acc": value}))
    (root / "3" / RUN_NAME).write_text("[1, 2]")
    assert report.main([str(root), "--no-wandb"]) == 0
    err = capsys.readouterr().err
    assert "4 run directories could not be read" in err
    for job in ("0", "1", "2", "3"):
        assert str(root / job) in err
    assert "test_acc='high'" in err and "test_acc=inf" in err
    assert [r["arm"] for r in _rows(root / "report.csv")] == ["axial_block N=6 fast"]  # one arm left
    md = (root / "report.md").read_text()
    assert "could not be read (left out)" in md and "`0`: " in md


def test_run_files_are_data_never_resolved_and_csv_cells_never_formulas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t-value")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = _block_sweep(tmp_path / "multirun" / "foreign", blocks=(2, 3))
    for job in ("0", "1"):
        path = root / job / ".hydra" / "config.yaml"
        config = yaml.safe_load(path.read_text())
        config["wandb"]["group"] = "${oc.env:SECRET_TOKEN}"
        config["wandb"]["notes"] = "\\${oc.env:SECRET_TOKEN}"  # escaped: OmegaConf would still resolve it
        config["train"]["lr"] = "${optimizer.lr}"  # not even a reference inside the file is followed
        path.write_text(yaml.safe_dump(config))
    data = json.loads((root / "1" / METRICS_NAME).read_text())
    write_record(root / "1" / METRICS_NAME, {**data, "model": '=HYPERLINK("http://x","y")'})
    [run] = [r for r in find_runs(root) if r.path.name == "0"]
    assert run.cfg("wandb.group") == "${oc.env:SECRET_TOKEN}" and run.cfg("train.lr") == "${optimizer.lr}"
    assert run.cfg("wandb.notes") == "\\${oc.env:SECRET_TOKEN}"
    summary = report.write_report(root)
    assert summary["wandb_groups"] == ["${oc.env:SECRET_TOKEN}"]
    for path in [*root.rglob("*.csv"), *root.rglob("*.md"), *(root / "wandb").rglob("*")]:
        if path.is_file():
            assert b"s3cr3t-value" not in path.read_bytes(), path
    with (root / "report.csv").open() as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    assert any(c.startswith("'") and "HYPERLINK" in c for c in cells)
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]
    # --out naming an existing file: one line, exit 2
    (tmp_path / "file").write_text("x")
    assert report.main([str(root), "--out", str(tmp_path / "file"), "--no-wandb"]) == 2
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(
    "text",
    [
        "=1+1",
        "+1",
        "-1+2",
        "@SUM(A1)",
        "\tx",
        "\rx",
        "\nx",
        " =1",
        "\uff1dcmd",
        "\uff0b1",
        "\uff0d1",
        "\uff20x",
    ],
)
def test_every_cell_a_spreadsheet_could_read_as_a_formula_is_escaped(text: str, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    csv_table(path, ["name", "value"], [{"name": text, "value": -0.28}])
    with path.open(newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["name"] == "'" + text and csv_text(row["name"]) == text
    assert row["value"] == "-0.28"  # a number stays a number


def test_plain_negative_numbers_stay_numbers_as_text_too(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    csv_table(path, ["a", "b", "c"], [{"a": "-0.28", "b": "-1e-05", "c": "-3"}])
    assert path.read_text().splitlines()[1] == "-0.28,-1e-05,-3"


def test_a_yaml_alias_bomb_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A 1 KB "billion laughs" file in a foreign run's .hydra/config.yaml: refused in well under a second
    with the run listed as unreadable, never expanded."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = _block_sweep(tmp_path / "multirun" / "bomb", blocks=(2, 3))
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = "\n".join(lines) + "\n"
    assert len(bomb) < 1100
    (root / "0" / RUN_NAME).unlink(missing_ok=True)
    (root / "0" / ".hydra" / "config.yaml").write_text(bomb)
    started = time.monotonic()
    assert report.main([str(root), "--no-wandb"]) == 0
    assert time.monotonic() - started < 60  # the report itself; the bomb costs nothing
    err = capsys.readouterr().err
    assert str(root / "0") in err and "YAML alias *a0" in err and "without aliases" in err
    with pytest.raises(Exception, match="alias"):
        load_yaml(root / "0" / ".hydra" / "config.yaml")


def test_deeply_nested_json_is_a_clear_failure_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = _block_sweep(tmp_path / "multirun" / "deep", blocks=(2, 3, 4))
    deep = "[" * 100_000 + "]" * 100_000
    (root / "0" / METRICS_NAME).write_text(deep)
    (root / "1" / RUN_NAME).write_text('{"config": ' + deep + ', "overrides": []}')
    assert report.main([str(root), "--no-wandb"]) == 0
    err = capsys.readouterr().err
    # safe_io.read_json's bound, checked before parsing: never a RecursionError
    assert str(root / "1") in err and "run.json nests 100001 levels deep" in err  # left out, said why
    rows = {r["run_dir"]: r for r in _rows(root / "report.csv")}
    assert rows["0"]["status"] == "failed" and "nests 100000 levels deep" in rows["0"]["error"]
    from rope_ext.summary import sweep_rows

    _, failures = sweep_rows(root)
    assert "metrics.json nests 100000 levels deep" in dict(failures)["0"]


def test_report_files_are_never_written_through_planted_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = _block_sweep(tmp_path / "multirun" / "links", blocks=(2, 3))
    out = tmp_path / "out"
    out.mkdir()
    for name in ("report.md", "stats.csv.tmp"):
        victim = tmp_path / f"victim-{name}"
        victim.write_text("precious")
        (out / name).symlink_to(victim)
        assert report.main([str(root), "--out", str(out), "--no-wandb"]) == 2
        err = capsys.readouterr().err
        assert str(out / name) in err and "symbolic link" in err
        assert victim.read_text() == "precious" and not (out / "report.csv").exists()  # nothing written
        (out / name).unlink()
    assert report.main([str(root), "--out", str(out), "--no-wandb"]) == 0
    assert not any(p.is_symlink() for p in out.iterdir())


def _boxes(fig) -> list[tuple[str, object]]:
    """Every drawn, non-empty text of ``fig`` with its bounding box in display pixels."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    shown = []
    for ax in fig.axes:  # tick labels: only the ticks inside the view are drawn
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = min(lim), max(lim)
            for tick in axis.get_major_ticks():
                if lo - 1e-9 <= tick.get_loc() <= hi + 1e-9:
                    shown.append(tick.label1)
    ticks = {id(t.label1) for ax in fig.axes for a in (ax.xaxis, ax.yaxis) for t in a.get_major_ticks()}
    ticks |= {id(t.label1) for ax in fig.axes for a in (ax.xaxis, ax.yaxis) for t in a.get_minor_ticks()}
    shown += [t for t in fig.findobj(Text) if id(t) not in ticks]
    return [
        (t.get_text(), t.get_window_extent(renderer))
        for t in shown
        if t.get_visible() and t.get_text().strip()
    ]


def assert_readable(fig, name: str) -> None:
    """No two texts of ``fig`` overlap and all lie inside it."""
    boxes = _boxes(fig)
    whole = fig.bbox
    for text, box in boxes:
        assert whole.x0 - 1 <= box.x0 and box.x1 <= whole.x1 + 1, (name, text, box, whole)
        assert whole.y0 - 1 <= box.y0 and box.y1 <= whole.y1 + 1, (name, text, box, whole)
    for (t1, b1), (t2, b2) in itertools.combinations(boxes, 2):
        assert not b1.overlaps(b2), (name, t1, t2)


def check_plots(runs, bases_names: set[str] = frozenset()) -> dict[str, object]:
    """Every plot kind of ``runs``: readable, one legend entry per line, no primes, true x for one series."""
    groups = group_runs(runs)
    bases = [g for g in groups if g.name in bases_names]
    figures = make_figures(runs, groups, bases, runs[0].sweep)
    assert set(figures) == set(report.PLOT_FILES)
    for name, fig in figures.items():
        assert_readable(fig, name)
        title = fig._suptitle.get_text()
        assert "seeds per arm" in title or "1 seed per arm" in title
        for ax in fig.axes:
            labels = ax.get_legend_handles_labels()[1]
            assert len(labels) == len(set(labels)) and not any(
                "'" in label or "@" in label for label in labels
            )
    return figures


def test_every_plot_kind_reads(tmp_path: Path) -> None:
    runs = find_runs(
        _block_sweep(
            tmp_path / "multirun" / "dataset.subset=64,pe.block=2,3,4,5,6,pe=axial_block,train.epochs=1"
        )
    )
    figures = check_plots(runs, {"pe.block=2"})
    ax = figures["acc_vs_block.png"].axes[0]
    [line] = [c for c in ax.containers]  # one series: at its true x, N = 6 drawn at 6
    assert list(line.lines[0].get_xdata()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert "1 seed per arm" in figures["acc_vs_block.png"]._suptitle.get_text()
    speed = figures["throughput_vs_block.png"]
    assert all("time × plain ViT" in a.get_ylabel() for a in speed.axes)  # ratios, not images/s
    assert "bars: smallest to largest round" in speed._suptitle.get_text()
    # the baseline black: its point ringed in black on the line of the five arms
    assert any(
        line.get_label() == "baseline: pe.block=2" and line.get_markeredgecolor() == "k" for line in ax.lines
    )
    # several series and seeds: offsets said in the x label, baseline black, error bars named
    root = tmp_path / "multirun" / "mixed"
    for n, (name, block, seed) in enumerate(
        itertools.product(("none", "axial_block", "lie_block"), (2, 3), (0, 1))
    ):
        if name == "none" and block == 3:
            continue  # none has no block: one arm
        pe = _pe(name, None if name == "none" else block)
        ov = [f"pe={name}", f"seed={seed}"] + ([] if name == "none" else [f"pe.block={block}"])
        _write_job(root, n, pe, seed, _metrics(pe, seed, 50.0 + block + seed, 900.0, 3000.0), overrides=ov)
    figures = check_plots(find_runs(root), {"pe=none"})
    ax = figures["acc_vs_block.png"].axes[0]
    assert "offset" in ax.get_xlabel()
    assert "2 seeds per arm" in figures["acc_vs_block.png"]._suptitle.get_text()
    assert any(line.get_color() == "k" and "(baseline)" in line.get_label() for line in ax.lines)


def test_series_at_one_block_size_sit_at_their_tick(tmp_path: Path) -> None:
    """Two arms, both N = 16 (learned vs frozen basis): offset apart, yet both close to the tick at 16,
    not spread over the whole axis."""
    root = tmp_path / "multirun" / "one_n"
    for n, (arm, impl, seed) in enumerate(itertools.product(("learned", "frozen"), ("fast",), (0, 1))):
        pe = {**_pe("axial_block", 16, impl=impl), "basis": arm}
        ov = [f"+experiment/arm={arm}", f"seed={seed}"]
        _write_job(root, n, pe, seed, _metrics(pe, seed, 90.0 + seed, 900.0, 3000.0), overrides=ov)
    figures = check_plots(find_runs(root), {"frozen"})
    for name in ("acc_vs_block.png", "throughput_vs_block.png"):
        for ax in figures[name].axes:
            low, high = ax.get_xlim()
            xs = [x for c in ax.containers for x in c.lines[0].get_xdata()]
            assert len(xs) == 2 and len(set(xs)) == 2, (name, xs)  # offset apart
            assert all(abs(x - 16) < 0.25 * (high - low) for x in xs), (name, xs, low, high)
            assert low < min(xs) and high > 16


def test_sweep_end_names_the_report_and_fails_without_a_success(tmp_path: Path, capsys) -> None:
    from rope_ext.summary import SweepCallback

    root = _block_sweep(tmp_path / "multirun" / "blocks", blocks=(2, 3))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}})
    SweepCallback().on_multirun_end(config)
    out = capsys.readouterr().out
    assert f"python -m rope_ext.report {root}" in out and "job peak MB" in out
    empty = tmp_path / "multirun" / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exc:
        SweepCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(empty)}}}))
    assert exc.value.code == 1 and "no job of the sweep left a result" in capsys.readouterr().err
    for job in root.iterdir():
        (job / METRICS_NAME).unlink()
    with pytest.raises(SystemExit):
        SweepCallback().on_multirun_end(config)
    assert "python -m rope_ext.report" not in capsys.readouterr().out


def _tune_sweep(root: Path, arm: str) -> Path:
    from record_helpers import run_metrics

    for n, lr in enumerate((1e-3, 3e-3)):
        job = root / str(n)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "train": {"lr": lr}}))
        (job / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"+experiment/arm={arm}", f"train.lr={lr}"])
        )
        write_record(job / METRICS_NAME, run_metrics(val_acc=50.0 + n))
    return root


@pytest.mark.parametrize(
    "study, arm, named",
    [
        ("../../..", "none", "--study='../../..'"),
        ("x/y", "none", "--study='x/y'"),
        ("digits_blocks", "../../../../evil", "'../../../../evil'"),
        ("digits_blocks", "none\nhydra:\n  callbacks: {}", "hydra:"),
        ("digits_blocks", "no_such_arm", "'no_such_arm'"),
    ],
)
def test_tune_refuses_names_that_are_not_one_component(
    tmp_path: Path, capsys, study: str, arm: str, named: str
) -> None:
    from rope_ext import tune

    conf = tmp_path / "conf"
    shutil.copytree(CONF / "experiment" / "arm", conf / "experiment" / "arm")
    sweep = _tune_sweep(tmp_path / "multirun" / "tune", arm)
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert tune.main([str(sweep), "--study", study, "--conf", str(conf)]) == 2
    assert named in capsys.readouterr().err
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before  # nothing written anywhere


def test_tune_writes_yaml_with_a_yaml_library(tmp_path: Path) -> None:
    from rope_ext import tune

    conf = tmp_path / "conf"
    shutil.copytree(CONF / "experiment" / "arm", conf / "experiment" / "arm")
    sweep = _tune_sweep(tmp_path / "multirun" / "tune\nhydra: {callbacks: 1}", "none")
    assert tune.main([str(sweep), "--study", "digits_blocks", "--conf", str(conf)]) == 0
    path = conf / "experiment" / "tuned" / "digits_blocks" / "none.yaml"
    data = yaml.safe_load(path.read_text())
    assert data == {"defaults": [{"/experiment/arm": "none"}, "_self_"], "train": {"lr": 3e-3}}
    assert path.read_text().startswith("# @package _global_\n")


@pytest.mark.slow
def test_the_trainer_records_its_identity_once_and_readers_keep_it(tmp_path: Path) -> None:
    """A refused command on a finished run must not relabel it for tune or the report."""
    from harness_helpers import TINY, compose_job

    from rope_ext import tune
    from rope_ext.config import ConfigError, check_command
    from rope_ext.run.job import run_job

    run_dir = tmp_path / "multirun" / "lr" / "0"
    first = [*TINY, "train.lr=0.002", "+experiment/arm=none"]
    task, full = compose_job(first, run_dir)
    run_job(task)
    record = json.loads((run_dir / RUN_NAME).read_text())
    assert record["overrides"] == first and record["config"]["train"]["lr"] == pytest.approx(0.002)
    before = (run_dir / RUN_NAME).read_bytes()
    # the same run again (resumes, re-evaluates) and a refused command: run.json is not rewritten
    run_job(compose_job(first, run_dir)[0])
    # a refused command, as train.py refuses it: before Hydra or the trainer writes anything
    with pytest.raises(ConfigError, match="train.lr"):
        check_command([*first, "train.lr=-1"])
    assert (run_dir / RUN_NAME).read_bytes() == before
    # what Hydra wrote for the refused attempt in old versions: .hydra/ says lr -1
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"train": {"lr": -1.0}}))
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*first, "train.lr=-1"]))
    conf = tmp_path / "conf"
    shutil.copytree(CONF / "experiment" / "arm", conf / "experiment" / "arm")
    assert tune.main([str(run_dir.parent), "--study", "s", "--conf", str(conf)]) == 0
    tuned = yaml.safe_load((conf / "experiment" / "tuned" / "s" / "none.yaml").read_text())
    assert tuned["train"]["lr"] == pytest.approx(0.002)
    [run] = find_runs(run_dir.parent)
    assert "train.lr=-1" not in run.command() and "train.lr=0.002" in run.command()
