"""Refused inputs: a bad value, key or path on the command line (or in a preset) stops ``train.py`` with
exit 2 and one paragraph naming key, value and what is allowed, before Hydra writes anything.

Most cases go through ``rope_ext.config.check_command``, the function ``train.py`` runs on its argv
before handing over to Hydra (Hydra's compose API, in process); a few run ``python train.py`` itself and
compare every file under the working directory, a finished run's ``.hydra/`` included, before and after.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from harness_helpers import REPO, TINY, output, run_train

from rope_ext.config import ConfigError, check_command
from rope_ext.jobs import main as jobs_main
from rope_ext.schema import MAX_DEPTH, MAX_SEED, MAX_SIZE_PX

# (command line, what the message must name, what it must say is allowed)
BAD = [
    # booleans are booleans
    (["hardware.compile=abc"], "hardware.compile='abc'", "true or false"),
    (["train.resume=maybe"], "train.resume='maybe'", "true or false"),
    (["eval.fold=maybe"], "eval.fold='maybe'", "true or false"),
    (["dataset.in_memory=maybe"], "dataset.in_memory='maybe'", "true or false"),
    # floats are finite
    (["pe.theta=inf"], "pe.theta=inf", "a finite number"),
    (["pe.theta=nan"], "pe.theta=nan", "a finite number"),
    (["train.warmup_epochs=inf"], "train.warmup_epochs=inf", "a finite number"),
    (["eval.bench_seconds=inf"], "eval.bench_seconds=inf", "a finite number"),
    (["train.lr=-1"], "train.lr=-1", "> 0"),
    (["train.label_smoothing=1"], "train.label_smoothing=1", "< 1"),
    (["dataset.val_fraction=1"], "dataset.val_fraction=1", "< 1"),
    # integers in range
    (["seed=10**23"], "seed='10**23'", "an integer"),
    (["seed=100000000000000000000000"], "seed=100000000000000000000000", f"<= {MAX_SEED}"),
    (["seed=-1"], "seed=-1", ">= 0"),
    (["train.epochs=0"], "train.epochs=0", ">= 1"),
    (["train.batch_size=10000000"], "train.batch_size=10000000", "<= 65536"),
    (["dataset=fake", "dataset.num_classes=0"], "dataset.num_classes=0", ">= 2"),
    (["dataset.num_workers=-1"], "dataset.num_workers=-1", "auto or an integer"),
    (["launcher=slurm", "launcher.timeout_min=abc"], "launcher.timeout_min='abc'", "an integer >= 1"),
    # memory-bound sizes, with their limit
    (["model.depth=1000000"], "model.depth=1000000", f"<= {MAX_DEPTH}"),
    (["eval.input_sizes=[100000]"], "eval.input_sizes=[100000]", f"<= {MAX_SIZE_PX}"),
    (["dataset.input_size=4096"], "dataset.input_size=4096", "at most 512 px with model.patch_size=4"),
    # per channel: three values, std positive
    (["dataset.std=[0,0,0]"], "dataset.std=[0.0, 0.0, 0.0]", "3 finite positive numbers"),
    (["dataset.mean=[0.5,0.5]"], "dataset.mean=[0.5, 0.5]", "3 finite numbers"),
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9]", "two numbers in [0, 1)"),
    # choices; an empty string is no value
    (["pe.impl="], "pe.impl=''", "null"),
    (["wandb.mode=sometimes"], "wandb.mode='sometimes'", "offline, online, disabled"),
    (["model.pool=mean"], "model.pool='mean'", "cls, avg"),
    (["experiment=nope"], "experiment='nope'", "study/digits_blocks"),
    # rules across keys, the head dimension known before any data is built
    (["model=vit_s16", "pe.block=70"], "pe.block=70", "2..64 for head_dim 64"),
    (["model.embed_dim=100", "model.num_heads=3"], "model.embed_dim=100", "a multiple of model.num_heads=3"),
    (["dataset.input_size=18"], "dataset.input_size=18", "multiples of the patch size"),
    (["model.checkpoint=/nonexistent/w.pth"], "model.checkpoint='/nonexistent/w.pth'", "an existing"),
    # unknown keys, added with + or not
    (["+foo=bar"], "foo='bar'", "allowed: the keys of rope_ext/schema.py"),
    (["+train2.epochs=5"], "train2", "allowed: the keys of rope_ext/schema.py"),
    (["+model.act_layer=foo"], "model.act_layer='foo'", "model.depth"),
    (["+model.class_token=false"], "model.class_token=False", "model.pool"),
    (["+model.checkpoint_path=/tmp/w.pth"], "model.checkpoint_path='/tmp/w.pth'", "model.checkpoint"),
    (["train.epoch=2"], "train.epoch=2 (did you mean train.epochs?)", "train.epochs"),
    # paths: one safe component per directory name
    (["run_id=../../../elsewhere/x"], "run_id='../../../elsewhere/x'", "one path component"),
    (
        ["-m", "pe.block=2,3", "hydra.sweep.subdir=../../../../elsewhere/x_${pe.block}"],
        "hydra.sweep.subdir='../../../../elsewhere/x_2'",
        "a relative path, each component",
    ),
    # a sweep is checked job by job; SLURM must know whether to allocate GPUs
    (["-m", "pe.block=2,70"], "job #1 of the sweep's 2 (pe.block=70): pe.block=70", "2..64"),
    (["-m", "launcher=slurm", "seed=0,1"], "hardware.accelerator='auto'", "hardware=gpu"),
]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file and directory under ``root``: contents and modification time (ns)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"", p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(("argv", "named", "allowed"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_refused_before_anything_is_written(argv, named, allowed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        check_command(argv)
    message = str(info.value)
    assert named in message and allowed in message, message
    assert "\n" not in message  # one paragraph
    assert snapshot(tmp_path) == {}


@pytest.mark.parametrize(
    "argv",
    [
        ["train.epochs=2", "dataset.subset=64"],
        ["model=vit_s16", "pe.block=64", "dataset=fake"],
        ["-m", "pe.block=2,3", "seed=0,1"],
        ["-m", "launcher=slurm", "hardware=cpu", "seed=0,1"],
        ["experiment=study/digits_blocks", "+experiment/tuned/digits_blocks=axial_block_n3"],
        ["--help"],
    ],
)
def test_good_commands_pass_the_check(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_command(argv)
    assert snapshot(tmp_path) == {}


def test_a_presets_run_id_is_one_path_component(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "experiment" / "escape.yaml").write_text("# @package _global_\nrun_id: ../../../elsewhere/x\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(ConfigError, match=r"run_id='\.\./\.\./\.\./elsewhere/x' is not allowed"):
        check_command(["experiment=escape"], conf_dir=conf)
    assert snapshot(work) == {}


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["experiment=nope"], "experiment='nope'"),
        (["--check", "train.epoch=2"], "train.epoch=2"),
        (["pe.block=[1"], "the override 'pe.block=[1' cannot be parsed"),
        (["--check", "pe.block=2,70"], None),
    ],
)
def test_the_job_lister_refuses_in_one_line(argv, named, capsys):
    assert jobs_main(argv) == 2
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text
    if named is not None:
        assert named in captured.err and captured.err.count("\n") == 1, captured.err
    else:  # a job refused by --check is listed with its reason
        assert "refused: pe.block=70" in captured.out


# ---------------------------------------------------------------------------------------------------
# end to end: python train.py


@pytest.mark.slow
def test_refused_commands_leave_a_finished_run_and_the_outputs_exactly_as_they_were(tmp_path):
    args = [*TINY, "run_id=base"]
    assert run_train(args, tmp_path).returncode == 0
    before = snapshot(tmp_path)
    assert "outputs/base/.hydra/config.yaml" in before and "outputs/base/metrics.json" in before
    for extra, named in (
        (["train.lr=-1"], "train.lr=-1"),
        (["pe.block=13"], "pe.block=13"),
        (["hardware.compile=abc"], "hardware.compile='abc'"),
        (["+foo=bar"], "foo='bar'"),
    ):
        proc = run_train([*args, *extra], tmp_path, timeout=120)
        out = output(proc)
        assert proc.returncode == 2, out
        assert named in out and "Nothing was written." in out and "Traceback" not in out
        assert snapshot(tmp_path) == before  # .hydra/, train.log, no failure.json, no new directory


@pytest.mark.slow
def test_a_refused_sweep_creates_no_directory(tmp_path):
    proc = run_train(["-m", *TINY, "pe.block=2,13"], tmp_path, timeout=120)
    out = output(proc)
    assert proc.returncode == 2, out
    assert "job #1 of the sweep's 2" in out and "pe.block=13" in out and "Nothing was written." in out
    assert snapshot(tmp_path) == {}
