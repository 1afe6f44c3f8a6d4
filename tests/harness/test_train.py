"""End-to-end runs of the real app (``python train.py ...`` in a subprocess) on tiny data.

Covers: a single run's outputs (metrics.json contract, checkpoint, log, resolved config, result table,
W&B offline log), a tiny run for every pe, the block sweep as one command, --help/--cfg, every
bad input (clear message, non-zero exit, no checkpoint left).
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from harness_helpers import (
    TINY,
    compose_job,
    failure,
    metrics,
    output,
    run_train,
    wandb_config,
    wandb_history,
)

CONTRACT = {
    "test_acc",
    "best_val_acc",
    "val_acc",
    "best_epoch",
    "train_img_per_s",
    "infer_img_per_s",
    "infer_latency_ms",
    "peak_mem_mb",
    "params",
    "epochs_done",
    "relative_error",
    "test_acc_at",
    "pe",
    "model",
    "dataset",
    "input_size",
    "seed",
    "status",
}


@pytest.mark.slow
def test_single_run_writes_metrics_checkpoint_log_config_and_wandb_offline(tmp_path):
    proc = run_train(
        TINY + ["train.epochs=2", "run_id=single"], tmp_path, extra_env={"WANDB_MODE": "offline"}
    )
    assert proc.returncode == 0, output(proc)
    run_dir = tmp_path / "outputs" / "single"
    m = metrics(run_dir)
    assert CONTRACT <= set(m) and m["status"] == "ok" and m["epochs_done"] == 2
    assert m["pe"] == {
        "name": "axial_block",
        "block": 3,
        "impl": "fast",
        "mixed": False,
        "dims": 2,
        "theta": 100.0,
        "learnable": False,
        "init": "axial",
        "coords": "patch",
        "augment": {"shift": 0, "jitter": 0, "rescale": 0},
        "layout_of": None,
        "basis": "learned",
    }
    # the learned 3×3 bases moved in 2 epochs: one record per rotary layer (TINY: model.depth=1)
    assert [b["layer"] for b in m["basis_motion"]] == [0]
    assert all(0 < b["tilt_max_deg"] <= 90 and 0 < b["angle_max_deg"] <= 180 for b in m["basis_motion"])
    assert m["shift_error"] > 0 and 0 <= m["test_acc_shifted"] <= 100  # class token: not relative
    assert (m["model"], m["dataset"], m["input_size"], m["seed"]) == ("vit_cifar", "fake", 32, 0)
    assert set(m["test_acc_at"]) == {"32", "40", "48", "64"} and m["test_acc_at"]["32"] == m["test_acc"]
    assert 0 <= m["test_acc"] <= 100 and m["best_val_acc"] >= m["val_acc"] - 1e-9
    # validation every epoch; the best epoch is the first one reaching the best val_acc; no test selection
    vals = [h["val_acc"] for h in m["history"]]
    assert m["val_acc"] == vals[-1] and m["best_val_acc"] == max(vals)
    assert m["best_epoch"] == vals.index(max(vals)) + 1 and "best_test_acc" not in m
    assert all("test_acc" not in h for h in m["history"])
    # each epoch names the code that trained it: here the revision this process loaded, as provenance says
    assert {h["revision"] for h in m["history"]} == {m["provenance"]["revision"]["commit"]}
    assert m["train_img_per_s"] > 0 and m["infer_img_per_s"] > 0 and m["infer_latency_ms"] > 0
    # the speed against a plain ViT of the same shape, interleaved in the process (rope_ext.run.speed)
    from rope_ext.run.speed import KINDS, RATIO_KEYS, REPEATS, UNRELIABLE_SPREAD

    record = m["speed_vs_none"]
    assert record["repeats"] == REPEATS and record["clock"] == "cpu" and record["threads"] >= 1
    assert all(len(record[k]) == 3 for k in ("load_avg_start", "load_avg_end"))
    assert record["budget_s"] == 0.02 and record["unreliable_above"] == UNRELIABLE_SPREAD
    for kind in KINDS:
        summary = record[kind]
        assert len(summary["ratios"]) == REPEATS and summary["low"] <= summary["median"] <= summary["high"]
        assert m[RATIO_KEYS[kind]] == summary["median"]
        assert summary["unreliable"] == (summary["spread"] > UNRELIABLE_SPREAD)
    assert (record["train"]["batch"], record["infer"]["batch"], record["latency"]["batch"]) == (16, 32, 1)
    assert m["speed_unreliable"] == any(record[k]["unreliable"] for k in KINDS)
    assert m["started_at"] <= m["finished_at"] and m["finished_at"].endswith("Z")
    assert set(m["provenance"]["cpu"] or {}) <= {"vendor", "family", "model", "stepping"}
    assert m["relative_error"] < 1e-5 and m["params"] > 0 and m["peak_mem_mb"] > 0
    # checkpoint at each epoch end, written atomically (no temporary file left), with its record
    record = json.loads((run_dir / "checkpoint.json").read_text())
    assert record["epoch"] == 2 and (run_dir / "checkpoint.pt").is_file()
    assert not list(run_dir.glob("*.tmp"))
    # Hydra's resolved config and the log
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["pe"]["name"] == "axial_block" and config["dataset"]["name"] == "fake"
    log = (run_dir / "train.log").read_text()
    assert "epoch 2/2" in log and "epoch 1 step" in log  # plain log lines: the output is not a terminal
    # the one-table summary
    assert "| run " in proc.stdout and "| single " in proc.stdout
    # W&B offline: the run lives inside the run dir; its .wandb log holds the logged metrics
    [wandb_file] = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    rows = wandb_history(wandb_file)
    steps = [r for r in rows if "train/loss" in r]
    # every step of 2 epochs x 3 steps: 64 images minus 6 held out for validation, batches of 16, full only
    assert len(steps) == 2 * 3 and all("train/lr" in r for r in steps)
    epochs = [r for r in rows if "epoch/val_acc" in r]
    assert [round(r["epoch/val_acc"], 6) for r in epochs] == [round(h["val_acc"], 6) for h in m["history"]]
    assert not list(run_dir.glob("wandb/offline-run-*/files/wandb-summary.json"))
    # every recorded config holds the encoding as resolved, the key a W&B panel's X axis reads
    resolved = {k: v for k, v in m["pe"].items() if k != "augment"}
    assert {k: wandb_config(wandb_file)["pe"][k] for k in resolved} == resolved


@pytest.mark.slow
def test_every_pe_trains_end_to_end(tmp_path):
    pes = ["none", "axial2_matrix", "axial2_complex", "axial_block", "lie_block"]
    proc = run_train(["-m", f"pe={','.join(pes)}", *TINY], tmp_path)
    assert proc.returncode == 0, output(proc)
    [sweep] = list((tmp_path / "multirun").iterdir())
    for pe in pes:
        m = metrics(sweep / f"pe={pe}")
        assert m["status"] == "ok" and m["pe"]["name"] == pe and m["epochs_done"] == 1
        assert set(m["test_acc_at"]) == {"32", "40", "48", "64"}
        if pe == "none":
            assert m["relative_error"] == 0.0
        elif pe != "lie_block":
            assert m["relative_error"] < 1e-5, pe


@pytest.mark.slow
def test_block_sweep_is_one_command_with_five_results(tmp_path):
    proc = run_train(["-m", "pe=axial_block", "pe.block=2,3,4,5,6", *TINY], tmp_path)
    assert proc.returncode == 0, output(proc)
    sweeps = list((tmp_path / "multirun").iterdir())
    assert len(sweeps) == 1
    found = sorted(sweeps[0].glob("*/metrics.json"))
    assert len(found) == 5
    blocks = sorted(json.loads(p.read_text())["pe"]["block"] for p in found)
    assert blocks == [2, 3, 4, 5, 6]
    assert {p.parent.name for p in found} == {f"pe.block={b}" for b in range(2, 7)}
    # the sweep's table lists every job
    assert "Sweep " in proc.stdout and all(f"| pe.block={b} " in proc.stdout for b in range(2, 7))


@pytest.mark.slow
def test_help_and_cfg_job_work_as_hydra_users_expect(tmp_path):
    proc = run_train(["--help"], tmp_path)
    assert proc.returncode == 0 and "== Config groups ==" in proc.stdout
    assert "pe: axial2_complex, axial2_matrix, axial_block, lie_block, none" in proc.stdout
    proc = run_train(["--cfg", "job", "pe=lie_block"], tmp_path)
    assert proc.returncode == 0, output(proc)
    job = yaml.safe_load(proc.stdout)
    assert job["pe"]["name"] == "lie_block" and job["train"]["epochs"] == 10
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_bad_input_in_the_app_exits_non_zero_with_one_paragraph(tmp_path):
    """Through the real app: an unknown group option and a bad value, exit 2 before Hydra writes anything."""
    proc = run_train(["pe=rope9"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "pe='rope9'" in proc.stderr and "no such option" in proc.stderr and "axial_block" in proc.stderr
    proc = run_train([*TINY, "pe.block=13", "run_id=bad"], tmp_path, timeout=120)
    text = output(proc)
    assert proc.returncode == 2, text
    assert "Invalid configuration: pe.block=13 is not allowed" in text and "2..12 for head_dim 12" in text
    assert "Traceback" not in text and "epoch 1" not in text
    assert "Nothing was written." in text and not list(tmp_path.iterdir())  # no run directory at all


SMALL = ["model.depth=1", "model.embed_dim=24", "model.num_heads=2", "wandb.mode=disabled"]
BAD_INPUTS = {
    "block out of range": (["pe.block=1"], ["pe.block=1", "allowed", "2..12 for head_dim 12"]),
    "block above head dim": (
        ["model.embed_dim=8", "model.num_heads=2", "pe.block=5"],
        ["pe.block=5", "2..4 for head_dim 4"],
    ),
    "negative epochs": (["train.epochs=-1"], ["train.epochs=-1", "allowed", ">= 1"]),
    "cifar missing offline": (
        ["dataset=cifar10", "dataset.download=false"],
        ["dataset=cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz", "dataset.root"],
    ),
    "pretrained offline without checkpoint": (
        ["model.pretrained=true"],
        ["model.pretrained=true", "model.checkpoint", "Allowed offline"],
    ),
    "missing model.checkpoint file": (
        ["model.checkpoint=/no/such/weights.pth"],
        ["model.checkpoint", "existing"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_before_any_work(tmp_path, monkeypatch, caplog, case):
    """The app's job function on a composed config: exit 2, key/value/allowed named, nothing written."""
    from rope_ext.run.job import run_job

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ROPE_EXT_DATA", str(tmp_path / "data"))
    overrides, expected = BAD_INPUTS[case]
    run_dir = tmp_path / "run"
    task, _ = compose_job([*SMALL, *overrides], run_dir)
    with pytest.raises(SystemExit) as info:
        run_job(task)
    assert info.value.code == 2
    text = caplog.text
    for fragment in expected:
        assert fragment in text, (fragment, text[-3000:])
    assert "epoch 1" not in text
    assert not list(tmp_path.rglob("checkpoint.pt*")) and not list(tmp_path.rglob("checkpoint.json"))
    assert failure(run_dir)["status"] == "failed" and not (run_dir / "metrics.json").exists()


def test_a_wandb_start_failure_warns_and_leaves_a_tracker_whose_calls_are_no_ops(tmp_path, caplog):
    """W&B refusing to start (here: a mode it does not know) turns the tracker off with a warning."""
    from rope_ext.tracking.wandb_run import Tracker

    tracker = Tracker()
    tracker.start(
        mode="no-such-mode",
        run_dir=tmp_path,
        project="p",
        entity=None,
        group="g",
        name="n",
        config={},
        tags=[],
        init_timeout=5,
        resuming=False,
    )
    assert not tracker.active
    assert "W&B start failed" in caplog.text and "training goes on" in caplog.text
    tracker.log({"train/loss": 1.0})  # no-ops, no exceptions
    tracker.summary({"test_acc": 1.0})
    tracker.finish()


def test_metrics_json_and_failure_json_follow_the_schema(tmp_path, monkeypatch):
    """The real trainer's records have exactly the keys of ``rope_ext.tracking.records`` and its schema_version."""
    from rope_ext.encoding.spec import OPTION_KEYS
    from rope_ext.run.job import run_job
    from rope_ext.tracking import records as schema

    run_dir = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("train.epochs")]
    task, _ = compose_job([*tiny, *SMALL, "train.epochs=1"], run_dir)
    run_job(task)
    m = metrics(run_dir)
    assert set(m) == set(schema.RunMetrics.__annotations__)
    assert m["schema_version"] == schema.SCHEMA_VERSION and m["status"] == "ok"
    assert set(m["history"][0]) == set(schema.EpochRecord.__annotations__)
    # provenance: what a bit-for-bit rerun needs, measured (never a placeholder string)
    prov = m["provenance"]
    assert (
        torch.__version__.startswith(prov["versions"]["torch"]) and prov["threads"] == torch.get_num_threads()
    )
    assert set(prov["revision"]) == {"commit", "dirty", "reason"}

    # the configs it records hold the encoding as resolved (the default axial_block: 3x3 blocks), as pe does
    for config in (
        json.loads((run_dir / name).read_text())["config"] for name in ("run.json", "checkpoint.json")
    ):
        assert config["pe"] == m["pe"] and config["pe"]["block"] == 3

    task, _ = compose_job([*tiny, *SMALL, "train.epochs=1", "train.lr=-1"], tmp_path / "bad")
    with pytest.raises(SystemExit):
        run_job(task)
    f = failure(tmp_path / "bad")
    assert set(f) == set(schema.FailureRecord.__annotations__)
    assert (
        f["schema_version"] == schema.SCHEMA_VERSION and f["status"] == "failed" and "train.lr" in f["error"]
    )
    assert set(f["pe"]) == {"name", *OPTION_KEYS} and isinstance(f["pe"]["augment"], dict)
    assert torch.__version__.startswith(f["provenance"]["versions"]["torch"])
