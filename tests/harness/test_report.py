"""The report on a tiny fake sweep: real Hydra-style run directories, seeds, a none baseline, a failure."""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml
from record_helpers import failure_record, run_metrics

from rope_ext import report
from rope_ext.tracking.records import FAILURE_NAME, METRICS_NAME, RunMetrics, write_record

SIZES = (32, 40, 48, 64)


def _config(pe: dict, seed: int) -> dict:
    return {
        "seed": seed,
        "run_id": f"run-{pe['name']}-{pe.get('block')}-{seed}",
        "model": {
            "name": "vit_cifar",
            "pretrained": False,
            "pos_embed": "learn" if pe["name"] == "none" else "none",
        },
        "pe": pe,
        "dataset": {
            "name": "relpos",
            "input_size": 32,
            "train_size": 64,
            "test_size": 32,
            "seed": 0,
            "subset": None,
        },
        "optimizer": {"name": "adamw", "lr": 1e-3},
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3},
        "eval": {"input_sizes": list(SIZES)},
        "wandb": {"mode": "offline", "project": "rope-ext-test", "group": "fake-sweep"},
    }


def _pe(name: str, block: int | None = None, impl: str = "fast", mixed: bool = False) -> dict:
    return {
        "name": name,
        "block": block,
        "impl": impl,
        "mixed": mixed,
        "dims": 2,
        "theta": None,
        "learnable": mixed,
        "init": "axial",
    }


def _write_job(
    sweep: Path,
    num: int,
    pe: dict,
    seed: int,
    metrics: dict[str, Any] | None,
    *,
    overrides: list[str] | None = None,
    config: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """A Hydra job dir. ``overrides``: the recorded command line (default: ``pe=…``, ``seed=…``,
    ``pe.block=…``); ``config``: values that replace the defaults per section (``{"model": {"pool": "avg"}}``)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    cfg = _config(pe, seed)
    for section, values in (config or {}).items():
        cfg[section].update(values)
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    if overrides is None:
        overrides = [f"pe={pe['name']}", f"seed={seed}"] + (
            [f"pe.block={pe['block']}"] if pe["block"] else []
        )
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        write_record(job / METRICS_NAME, metrics)
    return job


def _ratio(median: float, low: float, high: float, unreliable: bool = False) -> dict[str, Any]:
    """One measurement of ``speed_vs_none`` (``rope_ext.run.speed.RatioSummary``) with these figures."""
    return {
        "median": median,
        "low": low,
        "high": high,
        "spread": (high - low) / median,
        "ratios": [low, median, high],
        "unreliable": unreliable,
        "calls": [3, 3],
        "batch": 16,
    }


def _speed(train: float, infer: float, unreliable: bool = False) -> dict[str, Any]:
    """``speed_vs_none`` whose train and inference ratios are ``train``, ``infer`` with bars of ±2 % (±40 %
    and flagged when ``unreliable``)."""
    width = 0.4 if unreliable else 0.02
    record = {
        kind: _ratio(r, r - width, r + width, unreliable)
        for kind, r in (("train", train), ("infer", infer), ("latency", infer))
    }
    return record | {"repeats": 3, "clock": "cpu", "threads": 2, "load_avg_start": None, "load_avg_end": None}


def _metrics(pe: dict, seed: int, acc: float, train: float, infer: float, rel: float = 0.0) -> RunMetrics:
    return run_metrics(
        train_time_vs_none=1000.0 / train,
        infer_time_vs_none=4000.0 / infer,
        latency_vs_none=4000.0 / infer,
        speed_unreliable=False,
        speed_vs_none=_speed(1000.0 / train, 4000.0 / infer),
        test_acc=acc,
        val_acc=acc + 1.0,
        train_img_per_s=train,
        infer_img_per_s=infer,
        infer_latency_ms=1000.0 / infer,
        peak_mem_mb=100.0,
        params=2_700_000,
        epochs_done=2,
        relative_error=rel,
        test_acc_at={str(s): acc - (s - 32) * (0.5 if pe["name"] == "none" else 0.1) for s in SIZES},
        pe=pe,
        model="vit_cifar",
        dataset="relpos",
        input_size=32,
        seed=seed,
    )


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "multirun" / "fake"
    n = 0
    for seed in (0, 1):
        pe = _pe("none")
        _write_job(
            root, n, pe, seed, _metrics(pe, seed, 20.0 + seed, train=1000.0 + 100 * seed, infer=4000.0)
        )
        n += 1
        for block in (2, 3):
            pe = _pe("axial_block", block)
            acc = 60.0 + block + 2 * seed
            _write_job(root, n, pe, seed, _metrics(pe, seed, acc, train=950.0, infer=3800.0))
            n += 1
    pe = _pe("lie_block", 3)
    _write_job(root, n, pe, 0, _metrics(pe, 0, 55.0, train=900.0, infer=3600.0, rel=0.42))
    n += 1
    pe = _pe("axial_block", 4)
    # a non-ok metrics.json, as trainers before failure.json wrote it
    _write_job(root, n, pe, 0, failure_record("RuntimeError: boom", pe=pe, seed=0))
    n += 1
    _write_job(root, n, _pe("axial_block", 5), 0, None)  # killed: no metrics.json
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_csv_one_row_per_run_with_ratios(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    summary = report.write_report(sweep)
    rows = _rows(sweep / "report.csv")
    assert len(rows) == 9 and summary["runs"] == 9 and summary["ok"] == 7
    assert {r["status"] for r in rows} == {"ok", "failed", "missing"}
    ratio_cols = [c for c in rows[0] if "ratio" in c]
    assert set(ratio_cols) >= {"train_img_per_s_ratio_vs_none", "infer_img_per_s_ratio_vs_none"}
    base_train = statistics.fmean([1000.0, 1100.0])  # mean of the two none seeds
    for r in rows:
        if r["status"] != "ok":
            assert r["train_img_per_s_ratio_vs_none"] == ""
            continue
        assert math.isclose(
            float(r["train_img_per_s_ratio_vs_none"]), float(r["train_img_per_s"]) / base_train
        )
        assert math.isclose(float(r["infer_img_per_s_ratio_vs_none"]), float(r["infer_img_per_s"]) / 4000.0)
    lie = next(r for r in rows if r["variant"] == "lie_block")
    assert float(lie["relative_error"]) == pytest.approx(0.42)
    assert lie["test_acc_at_64"] != "" and float(lie["test_acc_at_64"]) == pytest.approx(55.0 - 3.2)
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["block"] == "4" and "boom" in failed["error"]
    missing = next(r for r in rows if r["status"] == "missing")
    assert missing["block"] == "5" and missing["variant"] == "axial_block"  # identified from the config


def test_markdown_groups_seeds_and_lists_failures(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    report.write_report(sweep)
    md = (sweep / "report.md").read_text()
    groups_section = md.split("## All groups")[1].split("## Missing")[0]
    table = [line for line in groups_section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[1:]]
    assert len(body) == 4  # none, axial_block N=2, N=3 (two seeds each) and lie_block N=3 (one seed)
    by = {(row[header.index("variant")], row[header.index("N")]): dict(zip(header, row)) for row in body}
    n3 = by[("axial_block", "3")]
    assert n3["seeds"] == "2" and n3["seed values"] == "0,1"  # the count and the list apart
    assert n3["test acc %"] == f"{statistics.fmean([63.0, 65.0]):.2f} ± {statistics.stdev([63.0, 65.0]):.2f}"
    # each run's own ratio to its plain twin, pooled over seeds: median of the medians [lowest, highest round]
    assert by[("none", "")]["train time ×none"] == "0.95× [0.89, 1.02]"  # seeds 1.00 and 0.91, bars ±0.02
    assert by[("axial_block", "3")]["infer time ×none"] == "1.05× [1.03, 1.07]"
    assert by[("lie_block", "3")]["latency ×none"] == "1.11× [1.09, 1.13]"
    assert "†: speed_unreliable" in md and "0.2 × the median" in md
    assert by[("lie_block", "3")]["rel. error"] == "0.420"
    assert by[("axial_block", "2")]["rel. error"] == "0.000 ± 0.000"  # exact: no error in any seed
    assert "acc@64 %" in header
    failures = md.split("## Missing, failed or interrupted runs")[1]
    assert "failed" in failures and "boom" in failures and "pe.block=4" in failures
    assert "missing" in failures and "pe.block=5" in failures


def test_plots_written_as_png(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    summary = report.write_report(sweep)
    names = sorted(p.name for p in summary["plots"])
    assert names == sorted(report.PLOT_FILES)
    for name in names:
        data = (sweep / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert "![acc_vs_block.png](acc_vs_block.png)" in (sweep / "report.md").read_text()


def test_cli_and_bad_dir(sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert report.main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "report.csv").is_file()
    out = capsys.readouterr().out
    # a short summary, every file written and the path: not the whole report.md
    assert "## All groups" not in out and len(out.splitlines()) <= 5
    written = next(line for line in out.splitlines() if line.startswith("wrote "))
    for name in ("report.md", "report.csv", "stats.csv", "runs.csv", "history.csv", *report.PLOT_FILES):
        assert name in written and (tmp_path / "out" / name).is_file()
    assert f"report: {tmp_path / 'out' / 'report.md'}" in out
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2


def test_wandb_failure_only_warns(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")

    def broken_init(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken_init)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = report.write_report(sweep)
    assert summary["wandb_groups"] == []
    assert any("W&B logging failed" in str(w.message) and "no network" in str(w.message) for w in caught)
    assert (sweep / "report.csv").is_file()


def test_wandb_offline_table_logged_to_group(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = report.write_report(sweep)
    assert summary["wandb_groups"] == ["fake-sweep"]  # the group from the runs' wandb.group
    runs = list((sweep / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = list(runs[0].glob("*.wandb"))
    assert files
    deadline = time.monotonic() + 15  # W&B's service process may still be flushing the transaction log
    while b"fake-sweep" not in files[0].read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b"fake-sweep" in files[0].read_bytes()  # the run's group, in W&B's offline log
    tables = list(runs[0].rglob("report*.table.json"))
    assert tables, "the wandb.Table was not written"
    table = json.loads(tables[0].read_text())
    assert len(table["data"]) == 9 and "train_img_per_s_ratio_vs_none" in table["columns"]
    # the report again: its table goes to the same W&B run (one id), not to a second one
    report.write_report(sweep)
    reruns = sorted((sweep / "wandb").glob("offline-run-*"))
    assert len(reruns) == 2 and len({p.name.split("-")[3] for p in reruns}) == 1
    assert json.loads((sweep / "wandb_report_ids.json").read_text()) == {
        "fake-sweep": reruns[0].name.split("-")[3]
    }


def test_failure_json_means_failed_and_neither_file_means_missing(
    sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    pe = _pe("axial_block", 6)
    job = _write_job(sweep, 50, pe, 0, None)
    write_record(job / FAILURE_NAME, failure_record("ConfigError: refused"))
    rows = {r["run_dir"]: r for r in _rows(report.write_report(sweep)["csv"])}
    assert rows["50"]["status"] == "failed" and "refused" in rows["50"]["error"]
    assert rows["8"]["status"] == "missing" and "failure.json" in rows["8"]["error"]
    md = (sweep / "report.md").read_text().split("## Missing, failed or interrupted runs")[1]
    assert "`50` (failed" in md and "`8` (missing" in md


def test_a_user_stop_is_interrupted_not_failed_in_the_report_and_the_sweep_table(
    sweep: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """failure.json ``"status": "interrupted"`` (a Ctrl-C, resumable) is its own status everywhere."""
    from omegaconf import OmegaConf

    from rope_ext.summary import SweepCallback

    monkeypatch.setenv("WANDB_MODE", "disabled")
    job = _write_job(sweep, 51, _pe("axial_block", 6), 0, None)
    stop = {**failure_record("KeyboardInterrupt: stopped by the user after epoch 1"), "status": "interrupted"}
    write_record(job / FAILURE_NAME, stop)
    rows = {r["run_dir"]: r for r in _rows(report.write_report(sweep)["csv"])}
    assert rows["51"]["status"] == "interrupted" and "failed" in {r["status"] for r in rows.values()}
    md = (sweep / "report.md").read_text()
    assert "1 interrupted, 1 failed, 1 missing" in md
    listed = md.split("## Missing, failed or interrupted runs")[1]
    assert "`51` (interrupted" in listed and "rerun the same command to resume" in listed
    with pytest.raises(SystemExit) as stopped:
        SweepCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    assert stopped.value.code == 1  # not every job finished
    out, err = capsys.readouterr()
    line = next(x for x in out.splitlines() if x.startswith("| 51 "))
    assert "interrupted" in line and "failed" not in line
    assert "1 of 10 jobs were stopped before finishing (interrupted, resumable" in err
    assert "2 of 10 jobs FAILED" in err and f"{sweep / '51'}:" not in err.split("FAILED")[1]


def test_an_arm_still_rising_at_the_end_is_marked_in_the_report_and_the_sweep_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from omegaconf import OmegaConf

    from rope_ext.summary import SweepCallback

    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = tmp_path / "multirun" / "budget"
    curves = {"none": [10.0 + 4 * e for e in range(10)], "axial_block": [80.0 + min(e, 3) for e in range(10)]}
    n = 0
    for name, curve in curves.items():
        for seed in (0, 1):
            pe = _pe(name, 2 if name == "axial_block" else None)
            history = [
                {"epoch": e + 1, "train_loss": 1.0, "val_acc": v + seed, "lr": 1e-3}
                for e, v in enumerate(curve)
            ]
            metrics = {**_metrics(pe, seed, curve[-1], 1.0, 1.0), "history": history}
            _write_job(root, n, pe, seed, metrics)
            n += 1
    summary = report.write_report(root, baseline="none")
    md = summary["md"].read_text()
    assert "Not converged: `pe=none` still rising" in md and "not converged" in md
    groups = md.split("## All groups")[1]
    assert "| still rising |" in groups and "| converged |" in groups
    stat = {r["arm"].split()[0]: r for r in _rows(summary["stats_csv"]) if r["extrap"] == "False"}
    assert stat["pe=none"]["not_converged"] == "True" and stat["pe=axial_block"]["not_converged"] == "False"
    SweepCallback().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}}))
    out = capsys.readouterr().out
    rising = [x for x in out.splitlines() if x.startswith("| ") and " rising " in x]
    assert len(rising) == 2 and all("| none " in x for x in rising)
    assert "Still rising at the end" in out and "not converged" in out


_NOISE = [0.3, -0.5, 0.1, 0.8, -0.2, -0.6, 0.4, -0.3]


def _stat_sweep(root: Path, seeds_b: tuple[int, ...] = tuple(range(8))) -> Path:
    """Arms a (acc 70 + noise) and b (acc 75 + the same noise) on 8 seeds, c (70 + permuted noise)."""
    noise = _NOISE
    n = 0
    for arm, shift, seeds in (("a", 0.0, range(8)), ("b", 5.0, seeds_b), ("c", 0.01, range(8))):
        for seed in seeds:
            pe = _pe("axial_block", {"a": 2, "b": 3, "c": 4}[arm])
            jitter = noise[7 - seed] if arm == "c" else noise[seed]  # c: same mean as a, other noise
            overrides = ["experiment=toy", f"+experiment/arm={arm}", f"seed={seed}", "launcher=local"]
            metrics = _metrics(pe, seed, 70.0 + shift + jitter, 1.0, 1.0)
            _write_job(root, n, pe, seed, metrics, overrides=overrides)
            n += 1
    return root


def test_statistics_against_scipy(tmp_path: Path) -> None:
    from scipy import stats as st

    from rope_ext import stats

    root = _stat_sweep(tmp_path / "multirun" / "toy")
    summary = report.write_report(root, wandb_log=False, baseline="a")
    stat_rows = _rows(summary["stats_csv"])
    assert list(stat_rows[0]) == report.STAT_COLUMNS
    rows = {r["arm"]: r for r in stat_rows if r["size"] == "32"}  # the training size
    assert set(rows) == {"a", "b", "c"} and rows["b"]["baseline"] == "a" and rows["b"]["extrap"] == "False"
    assert {(r["arm"], r["size"]) for r in stat_rows} == {(a, str(s)) for a in "abc" for s in SIZES}
    b = [r.metrics["test_acc"] for r in report.find_runs(root) if r.arm == "b"]
    low, high = st.t.interval(0.95, 7, loc=st.tmean(b), scale=st.sem(b))
    assert float(rows["b"]["acc_mean"]) == pytest.approx(st.tmean(b))
    assert (float(rows["b"]["acc_ci_low"]), float(rows["b"]["acc_ci_high"])) == pytest.approx((low, high))
    # same seeds: paired; the differences are exactly 5 for every seed (no spread) -> CI [5, 5]
    assert float(rows["b"]["diff"]) == pytest.approx(5.0) and rows["b"]["n_pairs"] == "8"
    assert float(rows["b"]["ci90_low"]) == pytest.approx(5.0) and rows["b"]["lead_test"] == "sign-flip"
    assert rows["a"]["diff"] == "" and rows["a"]["p_lead"] == ""
    assert rows["b"]["command"] == "python train.py experiment=toy +experiment/arm=b seed=0"
    c = rows["c"]
    d = [70.01 + n7 - (70.0 + n0) for n7, n0 in zip(reversed(_NOISE), _NOISE)]
    assert float(c["p_t"]) == pytest.approx(st.ttest_1samp(d, 0.0).pvalue)
    md = summary["md"].read_text()
    assert "80 % power" in md
    c_line = next(line for line in md.splitlines() if line.startswith("| c | 32 (train) |"))
    assert "n.s." in c_line and float(c["p_holm_family"]) >= float(c["p_lead"])
    assert stats.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None], nan_ok=True)


def test_welch_when_seeds_differ_and_holm() -> None:
    from scipy import stats as st

    from rope_ext import stats

    a = {0: 70.0, 1: 71.0, 2: 69.5}
    b = {3: 74.0, 4: 76.5, 5: 75.0, 6: 73.0}
    d = stats.compare(b, a)
    ref = st.ttest_ind(list(b.values()), list(a.values()), equal_var=False)
    assert d is not None and not d.paired and d.p_value == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high)) and d.significant
    paired = stats.compare({0: 1.0, 1: 2.0, 2: 4.0}, {0: 1.5, 1: 1.0, 2: 3.0})
    assert paired.paired and paired.p_value == pytest.approx(st.ttest_rel([1, 2, 4], [1.5, 1, 3]).pvalue)
    assert not paired.significant  # CI includes 0
    # Holm: sorted p (0.01, 0.03, 0.04) x (3, 2, 1) = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert stats.holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    m = stats.mean_ci([1.0, 2.0, 3.0])
    assert (m.low, m.high) == pytest.approx(st.t.interval(0.95, 2, loc=2.0, scale=st.sem([1, 2, 3])))


def test_plot_error_bars_are_the_ci_and_stop_at_zero() -> None:
    from scipy import stats as st

    from rope_ext.report.plots import ci_bars

    mean, lower, upper, n = ci_bars([0.0, 0.0, 30.0], nonneg=True)
    low, high = st.t.interval(0.95, 2, loc=10.0, scale=st.sem([0.0, 0.0, 30.0]))
    assert low < 0 and n == 3 and mean == pytest.approx(10.0)
    assert lower == pytest.approx(10.0) and upper == pytest.approx(high - 10.0)  # clipped at 0, upper intact
    assert ci_bars([1.0, 3.0], nonneg=False)[1] == pytest.approx(2.0 - st.t.interval(0.95, 1, 2.0, 1.0)[0])


def test_a_panel_without_training_speed_says_so(sweep: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    monkeypatch.setenv("WANDB_MODE", "disabled")
    for path in sweep.glob(f"*/{METRICS_NAME}"):
        data = json.loads(path.read_text())
        if data["status"] == "ok":
            speed = {k: v for k, v in data["speed_vs_none"].items() if k != "train"}
            write_record(path, {**data, "speed_vs_none": speed})  # a record without the training ratio
    drawn: list[str] = []
    original = Figure.savefig

    def spy(fig, *args, **kwargs):
        drawn.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    report.write_report(sweep)
    assert any("no run recorded speed_vs_none.train" in t for t in drawn)
    assert (sweep / "throughput_vs_block.png").is_file()  # the inference panel is still drawn


def test_records_without_schema_version_are_read_and_newer_ones_refused(
    sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    old, new = sweep / "0" / METRICS_NAME, sweep / "1" / METRICS_NAME
    record = json.loads(old.read_text())
    del record["schema_version"]  # version 1: written before the schema carried a version
    old.write_text(json.dumps(record))
    new.write_text(json.dumps({**json.loads(new.read_text()), "schema_version": 99}))
    rows = {r["run_dir"]: r for r in _rows(report.write_report(sweep)["csv"])}
    assert rows["0"]["status"] == "ok" and float(rows["0"]["test_acc"]) == 20.0
    assert rows["1"]["status"] == "failed" and "schema_version=99" in rows["1"]["error"]


def test_sweep_summary_table(sweep: Path) -> None:
    from rope_ext.summary import format_table, row_of, speed_note, sweep_rows

    rows, failures = sweep_rows(sweep)
    assert len(rows) == 9 and [job for job, _ in failures] == ["7", "8"]
    # the summary counts only an ok metrics.json or a failure.json as a result
    # (rope_ext.tracking.records.job_result)
    assert all("no result" in error for _, error in failures)
    lines = format_table(rows).splitlines()
    assert len({len(line) for line in lines}) == 1  # padded: the columns line up in a terminal
    assert lines[0].startswith("| run | pe ") and set(lines[1]) == {"|", "-"}
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:5] == ["0", "none", "-", "ok", "20.00"] and "2,700,000" in cells  # ints grouped
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert cells[header.index("train ×none")] == "1.00× [0.98, 1.02]"  # each run's own ratio and spread
    assert speed_note(rows).startswith("`×none` (time)") and "Flagged here" not in speed_note(rows)
    flagged = row_of("slow", run_metrics(speed_vs_none=_speed(1.5, 1.2, True), speed_unreliable=True))
    assert "1.50× [1.10, 1.90] †" in format_table([flagged]) and speed_note([flagged]).endswith("here: slow.")
    single = format_table([row_of("x", run_metrics(relative_error=1e-15, peak_mem_mb=2e6))])
    assert "1.0e-15" in single and "2.0e+06" in single


def test_bench_table_marks_missing_figures() -> None:
    from rope_ext.bench import format_table

    row = {"variant": "v", "train_ms": None, "train_ratio": None, "train_img_s": None}
    row |= {"infer_ms": 1.25, "infer_ratio": 1.0, "infer_img_s": 204.8}
    text = format_table([row], "header").splitlines()
    assert text[:2] == ["header", ""] and text[3] == "|---|---:|---:|---:|---:|---:|---:|"
    assert text[4] == "| v | — | — | — | 1.2 | 1.000 | 205 |"


def test_pe_options_and_block_kinds_come_from_the_registry() -> None:
    from rope_ext.encoding import registry
    from rope_ext.encoding.spec import OPTION_KEYS
    from rope_ext.report.runs import PE_OPTIONS, fixed_block, free_block, variant_rank
    from rope_ext.report.write import CSV_COLUMNS

    assert set(PE_OPTIONS) <= set(OPTION_KEYS) and set(PE_OPTIONS) <= set(CSV_COLUMNS)
    names = registry.names()
    assert sorted(names, key=variant_rank) == list(names) and variant_rank("not-registered") == len(names)
    fixed = {n for n in names if n == "none" or registry.get(n).accepts.block is not None}
    assert {n for n in names if fixed_block(n)} == fixed and fixed_block("not-registered")
    assert {n for n in names if free_block(n)} == set(names) - fixed and not free_block("not-registered")
    assert {"none", "axial2_complex"} <= fixed and "axial_block" not in fixed


def test_ratio_cell_formats_the_median_its_spread_and_the_flag() -> None:
    from rope_ext.report.tables import ratio_cell

    assert ratio_cell(1.04, 1.011, 1.09) == "1.04× [1.01, 1.09]"
    assert ratio_cell(1.04, 0.5, 2.0, unreliable=True) == "1.04× [0.50, 2.00] †"
    assert ratio_cell(0.98) == "0.98×" and ratio_cell(None) == "n/a" and ratio_cell(None, missing="-") == "-"


def test_speed_plot_draws_ratios_with_min_max_bars_and_rings_flagged_runs(tmp_path: Path) -> None:
    """The speed figure: each arm's time ratio at its N, bars to its smallest and largest round, the plain
    ViT at 1, a flagged arm ringed red (one legend entry), not absolute img/s."""
    from matplotlib.container import ErrorbarContainer

    from rope_ext.report import plots
    from rope_ext.report.groups import compute_ratios, group_runs
    from rope_ext.report.runs import find_runs

    root = tmp_path / "multirun" / "speed"
    for n, (block, ratio, flagged) in enumerate(((2, 1.05, False), (3, 1.5, True), (4, 1.10, False))):
        pe = _pe("axial_block", block)
        record = _metrics(pe, 0, 60.0, 900.0, 3600.0)
        record |= {"speed_vs_none": _speed(ratio, ratio, flagged), "speed_unreliable": flagged}
        _write_job(root, n, pe, 0, record)
    runs = find_runs(root)
    compute_ratios(runs)
    figure = plots.make_figures(runs, group_runs(runs))["throughput_vs_block.png"]
    train_ax = figure.axes[0]
    [bars] = [c for c in train_ax.containers if isinstance(c, ErrorbarContainer)]
    line, _, (segments,) = bars.lines
    assert list(line.get_xdata()) == [2.0, 3.0, 4.0] and list(line.get_ydata()) == [1.05, 1.5, 1.10]
    spans = [tuple(round(float(y), 6) for y in seg[:, 1]) for seg in segments.get_segments()]
    assert spans == [(1.03, 1.07), (1.1, 1.9), (1.08, 1.12)]  # median ± its rounds' min and max
    _, labels = train_ax.get_legend_handles_labels()
    ringed = [ln for ln in train_ax.lines if ln.get_markeredgecolor() == "red"]
    assert len(ringed) == 1 and list(ringed[0].get_xdata()) == [3.0] and list(ringed[0].get_ydata()) == [1.5]
    assert sum(label.startswith("speed unreliable") for label in labels) == 1
    assert any(ln.get_ydata()[0] == 1.0 and ln.get_linestyle() == ":" for ln in train_ax.lines)  # plain = 1
    assert "time × plain ViT" in train_ax.get_ylabel() and "images/s" not in train_ax.get_ylabel()


def test_a_deeply_nested_record_reads_as_failed_not_a_recursion_error(tmp_path: Path) -> None:
    from rope_ext.tracking.records import job_result, read_record

    (tmp_path / METRICS_NAME).write_text("[" * 100_000 + "]" * 100_000)
    record = read_record(tmp_path / METRICS_NAME)
    assert record["status"] == "failed" and "nests 100000 levels deep" in record["error"]
    assert "nests 100000 levels deep" in job_result(tmp_path)["error"]


def test_the_baseline_is_the_arm_of_that_name_before_a_variant_label(tmp_path: Path) -> None:
    """--baseline none in an extrapolation table: the arm named ``none``, not the first arm whose
    variant label is ``none`` (``none_avg`` is APE too, listed before it)."""
    root = tmp_path / "multirun" / "extrap"
    n = 0
    for arm, acc in (("none_avg", 80.0), ("none", 70.0)):
        for seed in (0, 1):
            pe = _pe("none")
            _write_job(
                root,
                n,
                pe,
                seed,
                _metrics(pe, seed, acc + seed, 1.0, 1.0),
                overrides=["experiment=toy", f"+experiment/arm={arm}", f"seed={seed}"],
                config={"model": {"pool": "avg" if arm == "none_avg" else "cls"}},
            )
            n += 1
    rows = {
        r["arm"].split()[0]: r
        for r in _rows(report.write_report(root, wandb_log=False, baseline="none")["stats_csv"])
        if r["size"] == "32"
    }
    assert rows["none_avg"]["baseline"].split()[0] == "none"
    assert float(rows["none_avg"]["diff"]) == pytest.approx(10.0)


def _legends(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Filled by every later ``make_figures`` call: each figure's file name -> its legend labels."""
    from rope_ext.report import plots

    legends: dict[str, list[str]] = {}
    original = plots.make_figures

    def spy(*args, **kwargs):
        figures = original(*args, **kwargs)
        for name, fig in figures.items():
            legends[name] = [label for ax in fig.axes for label in ax.get_legend_handles_labels()[1]]
        return figures

    monkeypatch.setattr(plots, "make_figures", spy)
    return legends


def test_block_plot_names_the_setting_that_sets_twin_lines_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Experiment arms of one variant crossed with learning rates: each N-line of ``acc_vs_block`` says
    its ``train.lr``, not "#2"."""

    monkeypatch.setenv("WANDB_MODE", "disabled")
    root, n = tmp_path / "multirun" / "lr_crossed", 0
    for lr in (0.001, 0.003):
        for block in (3, 4):
            for seed in (0, 1):
                pe = _pe("axial_block", block)
                _write_job(
                    root,
                    n,
                    pe,
                    seed,
                    _metrics(pe, seed, 60.0 + block + seed, 900.0, 3600.0),
                    overrides=[f"+experiment/arm=axial_block_n{block}", f"train.lr={lr}", f"seed={seed}"],
                    config={"train": {"lr": lr}},
                )
                n += 1
    legends = _legends(monkeypatch)
    report.write_report(root)
    labels = [label for label in legends["acc_vs_block.png"] if not label.startswith("chance")]
    assert len(labels) == 2 and not any("#" in label for label in labels)
    assert any("train.lr=0.001" in label for label in labels)
    assert any("train.lr=0.003" in label for label in labels)


def test_resolution_plot_names_the_sweep_of_an_arm_run_in_several_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One sweep per learning rate (the lr given on each sweep's command line, as study/digits_finetune
    runs): the same arm is a series in each, and the legend of ``acc_vs_resolution`` tells them apart by
    their sweep instead of listing one name twice."""

    monkeypatch.setenv("WANDB_MODE", "disabled")
    root = tmp_path / "multirun" / "by_lr"
    for lr, sweep in ((0.001, "lr1e-3"), (0.003, "lr3e-3")):
        for num, (arm, pe) in enumerate(
            (("none", _pe("none", None)), ("axial2_complex", _pe("axial_block", 2)))
        ):
            for seed in (0, 1):
                _write_job(
                    root / sweep,
                    2 * num + seed,
                    pe,
                    seed,
                    _metrics(pe, seed, 80.0 + seed, 900.0, 3600.0),
                    overrides=[f"+experiment/arm={arm}", f"seed={seed}"],
                    config={"train": {"lr": lr}},
                )
    legends = _legends(monkeypatch)
    report.write_report(root, baseline="none")
    labels = [label for label in legends["acc_vs_resolution.png"] if not label.startswith("chance")]
    assert len(labels) == 4 and len(set(labels)) == 4, labels
    assert {label.split(" ")[0] for label in labels} == {"none", "axial2_complex"}
    assert (
        sum("[lr1e-3]" in label for label in labels) == 2
        and sum("[lr3e-3]" in label for label in labels) == 2
    )
    speed = [label for label in legends["throughput_vs_block.png"] if "(" in label and "pe=none" not in label]
    assert speed and not any("#" in label for label in speed), speed
    assert any("lr1e-3" in label for label in speed) and any("lr3e-3" in label for label in speed), speed


def test_from_rows_refuses_options_it_would_ignore(tmp_path, capsys):
    """``--from-rows`` recomputes a committed report in place: ``--out``/``--baseline`` are refused, not
    silently ignored, and nothing is written."""
    from harness_helpers import REPO

    from rope_ext.report.cli import main as report_main

    out = tmp_path / "elsewhere"
    folder = str(REPO / "experiments" / "results" / "relpos_equiv_blocks")
    assert report_main([folder, "--from-rows", "--out", str(out), "--no-wandb"]) == 2
    assert report_main([folder, "--from-rows", "--baseline", "axial2_complex", "--no-wandb"]) == 2
    assert "cannot be used with it" in capsys.readouterr().err and not out.exists()
