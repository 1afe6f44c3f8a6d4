"""Scale-out: torchrun DDP (gloo, 2 processes), submitit's local launcher, the SLURM launcher config."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from harness_helpers import TINY, TRAIN, env, last_wins, metrics, output, run_train
from omegaconf import OmegaConf

from rope_ext.data import build_datasets
from rope_ext.loader import Batches, BatchTransform
from rope_ext.run.evaluation import evaluate
from rope_ext.run.model import build_model


@pytest.mark.slow
def test_torchrun_two_processes_train_one_model_matching_a_one_process_evaluation(tmp_path):
    # the whole run is warm-up: a start-up warning every rank sees, printed by rank 0 alone
    args = [*TINY, "hardware=cpu", "run_id=ddp", "train.epochs=2", "train.warmup_epochs=2"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            TRAIN,
            *last_wins(args),
        ],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, output(proc)
    assert output(proc).count("is not longer than train.warmup_epochs=2") == 1, output(proc)
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["ddp"]  # one directory for both ranks
    run_dir = tmp_path / "outputs" / "ddp"
    m = metrics(run_dir)
    assert m["status"] == "ok" and m["world_size"] == 2 and m["global_batch_size"] == 32
    log = (run_dir / "train.log").read_text()
    assert "DDP: rank 0 of 2 (gloo, torchrun)" in log and log.count("epoch 2/2 |") == 1  # rank 0 logs
    # one process, the same weights, the same test set: the same accuracy at every size
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    model = build_model(cfg, num_classes=10)
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"])
    splits = build_datasets(cfg.dataset)
    for size, acc in m["test_acc_at"].items():
        tf = BatchTransform(int(size), cfg.dataset.mean, cfg.dataset.std, train=False)
        batches = Batches(splits.test, batch_size=7, device=torch.device("cpu"), transform=tf, train=False)
        assert evaluate(model, batches, torch.device("cpu"), None) == pytest.approx(acc, abs=1e-9), size


@pytest.mark.slow
def test_submitit_local_multirun_runs_two_ddp_jobs(tmp_path):
    """Two jobs in parallel through Hydra's submitit launcher, each 2 tasks ranked by JobEnvironment."""
    proc = run_train(
        ["-m", "launcher=submitit_local", "hardware=cpu", "hardware.devices=2", "pe.block=2,3", *TINY],
        tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, output(proc)
    [sweep] = list((tmp_path / "multirun").iterdir())
    assert (sweep / ".submitit").is_dir()
    for block in (2, 3):
        m = metrics(sweep / f"pe.block={block}")
        assert m["status"] == "ok" and m["pe"]["block"] == block and m["world_size"] == 2
        assert "(gloo, submitit (local))" in (sweep / f"pe.block={block}" / "train.log").read_text()
    assert "| pe.block=2 " in proc.stdout and "| pe.block=3 " in proc.stdout


def test_slurm_launcher_config_composes_without_slurm(tmp_path):
    overrides = [
        "launcher=slurm",
        "hardware=gpu",
        "hardware.devices=4",
        "hardware.nodes=2",
        "launcher.partition=gpu-long",
        "launcher.account=lab42",
        "launcher.timeout_min=600",
    ]
    proc = run_train(["--cfg", "hydra", *overrides], tmp_path, timeout=120)
    assert proc.returncode == 0, output(proc)
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["nodes"] == "${hardware.nodes}" and launcher["tasks_per_node"] == "${hardware.devices}"
    # resolved against the job config (what the launcher receives)
    proc = run_train(["--cfg", "all", "--resolve", *overrides], tmp_path, timeout=120)
    assert proc.returncode == 0, output(proc)
    resolved = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert resolved["partition"] == "gpu-long" and resolved["account"] == "lab42"
    assert (resolved["nodes"], resolved["tasks_per_node"], resolved["gpus_per_node"]) == (2, 4, 4)
    assert resolved["timeout_min"] == 600 and resolved["max_num_timeout"] >= 1 and resolved["mem_gb"] > 0
