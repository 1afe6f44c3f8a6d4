"""The report's equivalence statistics on run directories written from metrics.json records:
Holm over every comparison of the report, "n.s." from the adjusted p, TOST verdicts against the margins the
runs recorded (or the command line's), the paired MDD, and runs.csv from which docs/statistics.md's
plain-scipy recipe reproduces every verdict of stats.csv."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from record_helpers import run_metrics
from scipy import stats as st
from test_stats import write_study_rows

from rope_ext import report, stats
from rope_ext.tracking.records import METRICS_NAME, write_record

DOC = Path(__file__).resolve().parents[2] / "docs" / "statistics.md"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _job(
    job: Path,
    arm: str,
    seed: int,
    acc: dict[int, float],
    study: dict[str, Any] | None,
    lr: float | None = None,
    **metrics: Any,
) -> None:
    """One run directory of ``python train.py -m experiment=toy +experiment/arm=ARM seed=S [train.lr=LR]``
    trained at 32 px and tested at every size of ``acc``."""
    (job / ".hydra").mkdir(parents=True)
    pe = {"name": "none" if arm == "ape" else "axial_block", "block": 2}
    config = {
        "seed": seed,
        "pe": pe,
        "dataset": {"name": "digits", "input_size": 32},
        "train": {"lr": lr or 1e-3, "epochs": 2},
        "toy_arm": arm,  # what the arm's preset would change in the config
    }
    if study is not None:
        config["study"] = study
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = ["experiment=toy", f"+experiment/arm={arm}", f"seed={seed}"]
    overrides += [f"train.lr={lr}"] if lr is not None else []
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    record = run_metrics(
        test_acc=acc[32],
        test_acc_at={str(s): a for s, a in acc.items()},
        val_acc=acc[32] + 1.0,
        pe=pe,
        dataset="digits",
        input_size=32,
        seed=seed,
        **metrics,
    )
    write_record(job / METRICS_NAME, record)


def _study(root: Path, tmp: Path, study: dict[str, Any] | None) -> Path:
    """The made-up study of tests/harness/test_stats.py (baseline axial2 and four arms, 12 seeds, 32 and 48 px) as
    run directories."""
    write_study_rows(tmp / "generated.csv")
    runs: dict[tuple[str, int], dict[int, float]] = {}
    for r in _rows(tmp / "generated.csv"):
        runs.setdefault((r["arm"], int(r["seed"])), {})[int(r["size"])] = float(r["acc"])
    for n, ((arm, seed), acc) in enumerate(sorted(runs.items())):
        _job(root / str(n), arm, seed, acc, study)
    return root


def _docs_recipe(folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str, int], dict[str, Any]]:
    """docs/statistics.md's plain-scipy recipe, run as written in ``folder`` (which holds runs.csv): its
    ``rows``, (table, arm, size) -> diff, 90 % CI, lead p, TOST p, Holm p, verdict."""
    recipe = next(
        b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S) if "runs.csv" in b
    )
    monkeypatch.chdir(folder)
    namespace: dict[str, Any] = {}
    exec(compile(recipe, str(DOC), "exec"), namespace)
    return namespace["rows"]


def test_the_docs_recipe_on_runs_csv_reproduces_every_verdict_of_stats_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _study(tmp_path / "multirun" / "toy", tmp_path, {"margin": 1.5, "margin_extrap": 5})
    summary = report.write_report(root, wandb_log=False, baseline="axial2")
    rows = {(r["arm"], int(r["size"])): r for r in _rows(summary["stats_csv"])}
    runs_csv = _rows(summary["runs_csv"])
    assert len(runs_csv) == 5 * 12 * 2 and set(runs_csv[0]) == set(report.RUN_COLUMNS)
    assert {r["lr"] for r in runs_csv} == {"0.001"}
    assert runs_csv[0]["command"].startswith("python train.py experiment=toy +experiment/arm=")

    plain = _docs_recipe(root, monkeypatch)
    assert {(arm, size) for _, arm, size in plain} == {k for k in rows if k[0] != "axial2"}
    for (_, arm, size), r in plain.items():
        ours = rows[(arm, size)]
        assert float(ours["diff"]) == pytest.approx(r["diff"], abs=1e-12)
        assert (float(ours["ci90_low"]), float(ours["ci90_high"])) == pytest.approx(r["ci90"], abs=1e-12)
        assert float(ours["p_lead"]) == pytest.approx(r["p"], abs=1e-12)
        assert float(ours["p_tost"]) == pytest.approx(r["p_tost"], abs=1e-12)
        assert float(ours["p_holm_family"]) == pytest.approx(r["p_holm"], abs=1e-12)
        assert ours["verdict"] == r["verdict"]
        assert ours["ns"] == str(r["p_holm"] >= 0.05) and ours["family_size"] == "8"
        assert float(ours["margin"]) == (1.5 if size == 32 else 5.0)
        assert float(ours["p_tost_holm"]) == pytest.approx(r["p_tost_holm"], abs=1e-12)
        assert ours["verdict_holm"] == r["verdict_holm"] and ours["near_chance"] == "False"
    verdicts = {r["verdict"] for k, r in rows.items() if k[0] != "axial2"}
    assert verdicts == {"equivalent", "different", "inconclusive"}
    # the distribution-free check beside the t-test, and the lead chosen by Shapiro-Wilk
    stall = rows[("stall", 32)]
    assert stall["lead_test"] == "sign-flip" and float(stall["p_shapiro"]) < 0.05
    assert stall["p_lead"] == stall["p_sign_flip"] and stall["p_t"] != stall["p_sign_flip"]
    assert (
        rows[("noisy", 32)]["lead_test"] == "t"
        and rows[("noisy", 32)]["p_lead"] == rows[("noisy", 32)]["p_t"]
    )
    # "n.s." from the adjusted p: same @32's 90 % CI excludes 0, its Holm p does not reach 0.05
    same = rows[("same", 32)]
    assert float(same["ci90_low"]) > 0 and float(same["p_holm_family"]) >= 0.05 and same["ns"] == "True"
    md = summary["md"].read_text()
    same_line = next(line for line in md.splitlines() if line.startswith("| same | 32 (train) |"))
    assert " n.s." in same_line and "equivalent" in same_line
    far_line = next(line for line in md.splitlines() if line.startswith("| far | 32 (train) |"))
    assert "n.s." not in far_line and "different" in far_line


def test_the_mdd_is_the_paired_tests_from_the_pairs_own_differences(tmp_path: Path) -> None:
    root = _study(tmp_path / "multirun" / "toy", tmp_path, {"margin": 1.5, "margin_extrap": 5})
    summary = report.write_report(root, wandb_log=False, baseline="axial2")
    header = _rows(summary["stats_csv"])[0].keys()
    assert "mdd_paired" in header and "mdd_80" not in header
    runs = {(r["arm"], int(r["size"]), int(r["seed"])): float(r["acc"]) for r in _rows(summary["runs_csv"])}
    for row in _rows(summary["stats_csv"]):
        if row["arm"] == "axial2":
            assert row["mdd_paired"] == "" and row["verdict"] == "" and row["diff"] == ""
            continue
        size = int(row["size"])
        d = [runs[(row["arm"], size, s)] - runs[("axial2", size, s)] for s in range(12)]
        sd = st.tstd(d)
        assert float(row["diff_sd"]) == pytest.approx(sd)
        # 80 % power of the two-sided paired t-test at the family's Bonferroni level, at that difference
        mdd, df, level = float(row["mdd_paired"]), 11, 0.05 / 8
        crit, ncp = st.t.ppf(1 - level / 2, df), mdd / (sd / math.sqrt(12))
        assert st.nct.sf(crit, df, ncp) + st.nct.cdf(-crit, df, ncp) == pytest.approx(0.8, abs=1e-6)
    md = summary["md"].read_text()
    assert "a two-sided t-test at 5 % detects" not in md and "Pooled seed std" not in md


def test_holm_covers_every_table_and_arms_meet_the_baseline_at_their_own_lr(tmp_path: Path) -> None:
    """A sweep crossing train.lr: one table per learning rate, each arm against the baseline at the same
    lr, and one Holm family over both tables and both sizes."""
    root = tmp_path / "multirun" / "lr"
    n = 0
    offsets = {"axial2": 0.0, "n3": 0.5, "n4": -3.0}
    jitter = [0.3, -0.5, 0.1, 0.8, -0.2, -0.6]
    for lr, level in ((0.001, 90.0), (0.003, 80.0)):
        for arm, off in offsets.items():
            for seed in range(6):
                e = jitter[seed] * (1.0 if arm == "axial2" else 0.5 + 0.1 * seed)
                _job(root / str(n), arm, seed, {32: level + off + e, 48: level - 20 + off + e}, None, lr)
                n += 1
    summary = report.write_report(root, wandb_log=False, baseline="axial2")
    rows = _rows(summary["stats_csv"])
    assert {r["table"] for r in rows} == {"lr (digits) train.lr=0.001", "lr (digits) train.lr=0.003"}
    assert {r["baseline"] for r in rows} == {"axial2 train.lr=0.001", "axial2 train.lr=0.003"}
    for r in rows:
        assert r["table"].endswith(r["arm"].split()[1])  # the arm and its baseline share the lr
        if r["arm"].startswith("n4"):  # paired: the baseline's jitter cancels seed by seed
            d = [-3.0 + j * (0.5 + 0.1 * s) - j for s, j in enumerate(jitter)]
            assert float(r["diff"]) == pytest.approx(sum(d) / 6)
    compared = [r for r in rows if r["arm"] != r["baseline"]]
    assert len(compared) == 2 * 2 * 2 and {r["family_size"] for r in compared} == {"8"}
    adjusted = stats.holm([float(r["p_lead"]) for r in compared])
    assert [float(r["p_holm_family"]) for r in compared] == pytest.approx(adjusted)
    # no margin recorded or given: no TOST, no verdict (n/a), and report.md says why
    assert {r["verdict"] for r in compared} == {""} and {r["p_tost"] for r in compared} == {""}
    assert {r["margin"] for r in compared} == {""} and all(r["p_holm_family"] for r in compared)
    md = summary["md"].read_text()
    assert md.count("No equivalence margin: the runs recorded no `study.margin`") == 2
    n4 = next(line for line in md.splitlines() if line.startswith("| n4 train.lr=0.001 | 32 (train) |"))
    assert n4.count("n/a") >= 2  # margin, TOST p and verdict


def test_arms_option_reports_planned_contrasts_as_their_own_family(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--arms keeps only the named arms and the baseline: the Holm family shrinks to those contrasts and
    the other arms are nowhere in the report; an unknown name exits 2 listing the arms, writing nothing."""
    root = tmp_path / "multirun" / "contrasts"
    jitter = [0.3, -0.5, 0.1, 0.8, -0.2, -0.6]
    n = 0
    for arm, off in {"n3": 0.0, "n3_frozen": 0.4, "layout3": -0.3, "n16": -2.0}.items():
        for seed in range(6):
            e = jitter[seed] * (1.0 if arm == "n3" else 0.7)
            learned = arm == "n3"
            motion = [
                {"layer": i, "tilt_max_deg": t, "angle_max_deg": 2 * t} for i, t in enumerate((1.5, seed))
            ]
            history = [
                {"epoch": ep, "train_loss": 2.0 / ep, "val_acc": 50.0 + ep + seed, "lr": 1e-3}
                for ep in (1, 2)
            ]
            _job(
                root / str(n),
                arm,
                seed,
                {32: 90 + off + e, 48: 70 + off + e},
                {"margin": 1.5, "margin_extrap": 5},
                basis_motion=motion if learned else None,
                history=history,
            )
            n += 1
    out = tmp_path / "report"
    argv = [str(root), "--no-wandb", "--baseline", "n3", "--out", str(out)]
    assert report.main([*argv, "--arms", "n3_frozen,layout3"]) == 0
    rows = _rows(out / "stats.csv")
    assert {r["arm"] for r in rows} == {"n3", "n3_frozen", "layout3"}
    compared = [r for r in rows if r["arm"] != r["baseline"]]
    assert len(compared) == 4 and {r["family_size"] for r in compared} == {"4"}
    assert {r["arm"] for r in _rows(out / "runs.csv")} == {"n3", "n3_frozen", "layout3"}
    assert "n16" not in (out / "report.md").read_text()
    # per-run rows carry the largest basis motion over layers (empty without a basis) and the curves
    runs = _rows(out / "runs.csv")
    tilt = {(r["arm"], r["seed"]): r["basis_tilt_max_deg"] for r in runs if r["size"] == "32"}
    assert tilt[("n3", "0")] == "1.5" and tilt[("n3", "4")] == "4" and tilt[("layout3", "0")] == ""
    assert {r["basis_angle_max_deg"] for r in runs if r["arm"] == "n3" and r["seed"] == "5"} == {"10"}
    curves = _rows(out / "history.csv")
    assert len(curves) == 3 * 6 * 2 and {r["arm"] for r in curves} == {"n3", "n3_frozen", "layout3"}
    row = next(r for r in curves if (r["arm"], r["seed"], r["epoch"]) == ("layout3", "3", "2"))
    assert float(row["val_acc"]) == 55.0 and float(row["train_loss"]) == 1.0
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert report.main([str(root), "--no-wandb", "--baseline", "n3", "--out", str(bad), "--arms", "n5"]) == 2
    err = capsys.readouterr().err
    assert "--arms names 'n5', which is no arm" in err and "'n16'" in err and not bad.exists()


def test_margins_from_the_command_line_and_refused_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = _study(tmp_path / "multirun" / "bare", tmp_path, None)
    assert report.main([str(bare), "--no-wandb", "--baseline", "axial2", "--margin", "1.5"]) == 0
    rows = {(r["arm"], r["size"]): r for r in _rows(bare / "stats.csv")}
    assert rows[("far", "32")]["verdict"] == "different" and rows[("far", "32")]["margin"] == "1.5"
    assert rows[("far", "48")]["verdict"] == "" and rows[("far", "48")]["p_tost"] == ""  # no extrap margin
    assert {r["margin"] for r in _rows(bare / "runs.csv") if r["size"] == "48"} == {""}
    md = (bare / "report.md").read_text()
    assert "±1.5 points at the training size, none at the other sizes (no verdict: n/a)" in md
    capsys.readouterr()
    for bad in ("-1", "nan", "0"):
        (bare / "stats.csv").unlink()
        assert report.main([str(bare), "--no-wandb", "--baseline", "axial2", "--margin-extrap", bad]) == 2
        err = capsys.readouterr().err
        assert "--margin-extrap" in err and "> 0" in err and not (bare / "stats.csv").exists()
        (bare / "stats.csv").write_text("")
    # the runs recorded a margin: the command line may repeat it, never change it
    pre = _study(tmp_path / "multirun" / "pre", tmp_path, {"margin": 1.5, "margin_extrap": 5})
    assert report.main([str(pre), "--no-wandb", "--baseline", "axial2", "--margin", "1.5"]) == 0
    (pre / "stats.csv").unlink()
    assert report.main([str(pre), "--no-wandb", "--baseline", "axial2", "--margin", "2"]) == 2
    err = capsys.readouterr().err
    assert "--margin 2.0 contradicts study.margin=1.5" in err and not (pre / "stats.csv").exists()
    # runs of one table that recorded different margins
    path = next(p for p in pre.glob("*/.hydra/config.yaml") if "toy_arm: far" in p.read_text())
    config = yaml.safe_load(path.read_text())
    config["study"]["margin"] = 3
    path.write_text(yaml.safe_dump(config))
    assert report.main([str(pre), "--no-wandb", "--baseline", "axial2"]) == 2
    assert "recorded different study.margin values (1.5, 3.0)" in capsys.readouterr().err


def test_unmeasured_metrics_are_absent_not_zero(tmp_path: Path) -> None:
    """A model without rotary layers has no shift metrics (null): n/a in report.md, empty in the CSVs, and
    left out of means instead of counted as 0."""
    root = tmp_path / "multirun" / "shift"
    n = 0
    for arm in ("ape", "axial2"):
        for seed in range(3):
            measured = arm == "axial2" and seed < 2  # seed 2 of axial2 did not measure it either
            shift = {"shift_error": 0.01 * (seed + 1), "test_acc_shifted": 80.0 + seed} if measured else {}
            shift = shift or {"shift_error": None, "test_acc_shifted": None}
            _job(root / str(n), arm, seed, {32: 80.0 + seed + (arm == "ape")}, None, **shift)
            n += 1
    summary = report.write_report(root, wandb_log=False, baseline="ape")
    stat = {r["arm"]: r for r in _rows(summary["stats_csv"])}
    assert stat["ape"]["shift_error_mean"] == "" and stat["ape"]["test_acc_shifted_mean"] == ""
    assert float(stat["axial2"]["shift_error_mean"]) == pytest.approx(0.015)
    assert float(stat["axial2"]["test_acc_shifted_mean"]) == pytest.approx(80.5)
    csv_rows = _rows(summary["csv"])
    assert {r["shift_error"] for r in csv_rows if r["arm"] == "ape"} == {""}
    md = summary["md"].read_text().split("## All groups")[1].split("## Missing")[0]
    table = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    body = {
        c[0]: dict(zip(header, c)) for c in ([x.strip() for x in t.strip("|").split("|")] for t in table[1:])
    }
    assert body["ape"]["shift error"] == "n/a" and body["ape"]["shifted acc %"] == "n/a"
    assert body["axial2"]["shifted acc %"] == f"80.50 ± {st.tstd([80.0, 81.0]):.2f}"


def test_seeds_are_listed_in_numeric_order(tmp_path: Path) -> None:
    root = tmp_path / "multirun" / "twelve"
    for seed in range(12):
        _job(root / str(seed), "axial2", seed, {32: 90.0 + seed % 3, 48: 70.0}, None)
    summary = report.write_report(root, wandb_log=False)
    assert "| 0,1,2,3,4,5,6,7,8,9,10,11 |" in summary["md"].read_text()


COMMITTED = sorted(
    p.parent.name
    for p in (DOC.parent.parent / "experiments" / "results").glob("*/runs.csv")
    if "margin" in p.read_text().splitlines()[0]
)


@pytest.mark.slow
@pytest.mark.parametrize("study", COMMITTED)
def test_the_docs_recipe_recomputes_every_committed_report(
    study: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claims in README and docs/study.md come from these stats.csv files: plain scipy on the committed
    runs.csv rows (docs/statistics.md's recipe) gives every difference, p, Holm p and verdict again."""
    assert {"digits_equiv_blocks", "digits_equiv_controls", "relpos_stall", "relpos_equiv_blocks"} <= set(
        COMMITTED
    )
    folder = DOC.parent.parent / "experiments" / "results" / study
    plain = _docs_recipe(folder, monkeypatch)
    compared = [r for r in _rows(folder / "stats.csv") if r["arm"] != r["baseline"]]
    assert len(compared) == len(plain) > 0
    for ours in compared:
        r = plain[(ours["table"], ours["arm"], int(ours["size"]))]
        assert float(ours["diff"]) == pytest.approx(r["diff"], abs=1e-9)
        assert float(ours["p_lead"]) == pytest.approx(r["p"], abs=1e-9)
        assert float(ours["p_holm_family"]) == pytest.approx(r["p_holm"], abs=1e-9)
        assert ours["verdict"] == (r["verdict"] or "")
        assert ours["verdict_holm"] == (r["verdict_holm"] or "")
        if ours["p_tost"]:
            assert float(ours["p_tost"]) == pytest.approx(r["p_tost"], abs=1e-9)
            assert ours["near_chance"] == str(r["near_chance"])
        if ours["p_tost_holm"]:
            assert float(ours["p_tost_holm"]) == pytest.approx(r["p_tost_holm"], abs=1e-9)
        else:
            assert r["p_tost_holm"] is None
    # the rows carry each run's provenance columns and the curves their revision: filled where the report
    # was written from the run directories, empty (and report.md says so) where it was recomputed from
    # rows written before provenance was kept
    runs = _rows(folder / "runs.csv")
    assert set(report.RUN_COLUMNS) <= set(runs[0])
    assert {"revision", "dirty", "started_at", "finished_at", "processor", "processor_id"} <= set(runs[0])
    assert {"threads", "versions", "chance"} <= set(runs[0])
    if (folder / "history.csv").is_file():
        assert "revision" in _rows(folder / "history.csv")[0]
    md = (folder / "report.md").read_text()
    if "Recomputed from the committed rows" in md:
        assert "provenance" in md and not any(r["revision"] for r in runs)
    else:
        keys = ("revision", "started_at", "finished_at", "processor", "processor_id", "threads", "versions")
        assert all(len(r["revision"]) == 40 and all(r[k] for k in keys) for r in runs)


def test_near_chance_comparisons_get_no_equivalence_verdict_and_leave_the_tost_family(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On digits (chance 10 %) two arms that both score ~13 % at 48 px are "equivalent" within ±5 whatever
    they are: the report says `uninformative (near chance)` there, keeps the comparison out of the TOST
    Holm family, and the docs recipe agrees; at 32 px the same arms get their verdicts."""
    root = tmp_path / "multirun" / "chance"
    jitter = [0.3, -0.5, 0.1, 0.8, -0.2, -0.6]
    n = 0
    for k, (arm, off) in enumerate((("axial2", 0.0), ("n3", 0.2), ("n4", 0.1))):
        for seed in range(6):
            e = jitter[(seed + k) % 6]  # each arm its own noise: no difference survives Holm
            acc = {32: 90.0 + off + e, 48: 13.0 + off + e}
            _job(root / str(n), arm, seed, acc, {"margin": 1.5, "margin_extrap": 5})
            n += 1
    summary = report.write_report(root, wandb_log=False, baseline="axial2")
    rows = {(r["arm"], int(r["size"])): r for r in _rows(summary["stats_csv"])}
    for arm in ("n3", "n4"):
        near, trained = rows[(arm, 48)], rows[(arm, 32)]
        assert near["near_chance"] == "True" and near["chance"] == "10.0"
        assert near["verdict"] == near["verdict_holm"] == stats.UNINFORMATIVE
        assert near["p_tost"] != "" and near["p_tost_holm"] == ""  # computed, not claimed
        assert trained["near_chance"] == "False" and trained["verdict"] == "equivalent"
        assert trained["tost_family_size"] == "2"  # the two 32-px tests only
    assert {r["chance"] for r in _rows(summary["runs_csv"])} == {"10.0"}
    md = summary["md"].read_text()
    line = next(x for x in md.splitlines() if x.startswith("| n3 | 48 |"))
    assert "near chance" in line and "uninformative (near chance)" in line
    assert "All arms at 32 px (train), read together (intersection–union): all 2 equivalent" in md
    assert "All arms at 48 px" not in md  # no equivalence test to read together there
    plain = _docs_recipe(root, monkeypatch)
    for (_, arm, size), r in plain.items():
        assert rows[(arm, size)]["verdict"] == r["verdict"] and rows[(arm, size)]["near_chance"] == str(
            r["near_chance"]
        )
        assert rows[(arm, size)]["verdict_holm"] == r["verdict_holm"]


def test_runs_csv_carries_each_runs_provenance_and_history_its_revision(tmp_path: Path) -> None:
    """runs.csv's provenance columns come from each run's metrics.json (here the real record of this
    process, ``rope_ext.provenance.provenance``); what a record does not hold stays empty."""
    from rope_ext.tracking.provenance import provenance

    prov = dict(provenance())
    prov["cpu"] = {"vendor": "AuthenticAMD", "family": 25, "model": 1, "stepping": 1}
    root = tmp_path / "multirun" / "prov"
    history = [{"epoch": 1, "train_loss": 1.0, "val_acc": 50.0, "lr": 1e-3, "revision": "abc123"}]
    for n, seed in enumerate((0, 1)):
        _job(root / str(n), "axial2", seed, {32: 90.0 + seed}, None, provenance=prov, history=history)
    # a record that also says when the run started and ended (read where metrics.json holds them)
    path = root / "1" / METRICS_NAME
    times = {"started_at": "2026-12-07T10:00:00Z", "finished_at": "2026-12-07T10:01:00Z"}
    write_record(path, {**json.loads(path.read_text()), **times})
    # and one written before records held them (the committed reports' runs): the cells stay empty
    older = root / "0" / METRICS_NAME
    record = {k: v for k, v in json.loads(older.read_text()).items() if k not in times}
    older.write_text(json.dumps(record))
    summary = report.write_report(root, wandb_log=False)
    rows = {r["seed"]: r for r in _rows(summary["runs_csv"])}
    for row in rows.values():
        assert row["revision"] == (prov["revision"]["commit"] or "")
        assert row["dirty"] == ("" if prov["revision"]["dirty"] is None else str(prov["revision"]["dirty"]))
        assert row["processor"] == (prov["processor"] or "") and row["threads"] == str(prov["threads"])
        assert row["processor_id"] == "vendor AuthenticAMD family 25 model 1 stepping 1"
        assert f"torch={prov['versions']['torch']}" in row["versions"] and "python=" in row["versions"]
    assert rows["1"]["started_at"] == "2026-12-07T10:00:00Z" and rows["1"]["finished_at"].endswith("01:00Z")
    assert rows["0"]["started_at"] == "" and rows["0"]["finished_at"] == ""  # not recorded: not guessed
    assert {r["revision"] for r in _rows(summary["history_csv"])} == {"abc123"}
