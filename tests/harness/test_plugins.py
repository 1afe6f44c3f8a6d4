"""A user's own dataset in one file, with no edit of the package: a module written to a temporary folder,
named by ``plugins=[<path>]``, trains in a sweep, is reported, is listed by ``rope_ext.jobs`` and shown
by ``--help``; the plugin loader's refusals name the module and what is allowed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness_helpers import REPO, env, run_train

from rope_ext import plugins
from rope_ext.config import ConfigError, composer, resolve
from rope_ext.data import build_datasets, registry

# Two classes of 8x8 images, a horizontal or a vertical bar at a random place, plus noise: a dataset
# the harness has never seen, registered the one documented way (docs/data.md).
BARS = """
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import TensorDataset

from rope_ext.data.registry import DatasetConfig, DatasetInfo, register
from rope_ext.fields import key


@dataclass
class BarsConfig(DatasetConfig):
    train_size: int = key(96, ge=2, help="training images")
    test_size: int = key(32, ge=1, help="test images")
    bar_noise: float = key(0.1, ge=0, help="Gaussian noise on the canvas")


def build(dataset):
    g = torch.Generator().manual_seed(7)

    def split(n):
        labels = torch.randint(0, 2, (n,), generator=g)
        where = torch.randint(0, 8, (n,), generator=g)
        images = float(dataset.bar_noise) * torch.randn(n, 3, 8, 8, generator=g)
        for i in range(n):  # a few hundred images, once: clarity over speed
            if labels[i]:
                images[i, :, :, where[i]] += 1.0
            else:
                images[i, :, where[i], :] += 1.0
        return TensorDataset(images, labels)

    return split(int(dataset.train_size)), split(int(dataset.test_size)), 2


register(DatasetInfo("bars", BarsConfig, build, num_classes=2, node={"input_size": 8}))
"""

TINY_MODEL = [
    "model.depth=1",
    "model.embed_dim=24",
    "model.num_heads=2",
    "model.patch_size=4",
    "train.epochs=1",
    "train.batch_size=16",
    "train.speed_warmup_steps=1",
    "eval.batch_size=32",
    "eval.bench_seconds=0.02",
]


@pytest.fixture
def bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The plugin's path; the variable that hands plugins to child processes is restored afterwards."""
    monkeypatch.setenv(plugins.ENV, "")  # recorded, so that what load_all adds is undone
    path = tmp_path / "bars_plugin.py"
    path.write_text(BARS)
    return str(path)


def test_a_plugin_dataset_composes_resolves_to_its_own_typed_class_and_builds(bars):
    with (
        pytest.raises(
            ConfigError,
            match=r"dataset='bars' is not allowed \(no such option\); allowed: .*digits.*plugins=\[\.\.\.\]",
        ),
        composer() as compose,
    ):
        compose(["dataset=bars"])  # before its module is loaded, Hydra's refusal lists the options
    plugins.load_all([bars])
    assert "bars" in registry.names() and registry.chance_level("bars") == 50.0
    with composer() as compose:
        cfg = compose(["dataset=bars", f"plugins=[{bars}]", "dataset.bar_noise=0.2", *TINY_MODEL])
        typed = resolve(cfg)
    assert type(typed.dataset).__name__ == "BarsConfig" and typed.dataset.bar_noise == 0.2
    assert typed.dataset.input_size == 8 and typed.plugins == [bars]
    splits = build_datasets(typed.dataset)
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (86, 10, 32, 2)
    with pytest.raises(
        ConfigError, match=r"dataset.bar_noise=-1.0 is not allowed; allowed: a finite number >= 0"
    ):
        with composer() as compose:
            resolve(compose(["dataset=bars", "dataset.bar_noise=-1.0", *TINY_MODEL]))


def test_without_its_plugin_a_dataset_is_refused_before_anything_is_written(tmp_path, monkeypatch, caplog):
    from rope_ext.app import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["train.py", "dataset=nowhere_set", "run_id=x"])
    with pytest.raises(SystemExit) as stop:
        run()
    assert stop.value.code == 2 and not list(tmp_path.iterdir())
    err = caplog.text
    assert (
        "dataset='nowhere_set' is not allowed" in err
        and "plugins=[...]" in err
        and "Nothing was written" in err
    )


def test_a_plugin_that_cannot_be_imported_is_refused_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv(plugins.ENV, "")
    missing = tmp_path / "nowhere.py"
    with pytest.raises(
        ConfigError, match=r"plugins=\[.*nowhere.py\]: .*could not be loaded \(FileNotFoundError.*allowed"
    ):
        plugins.load(str(missing))
    assert plugins.from_overrides(["seed=1", "plugins=[a.b,/x/c.py]", "+plugins=d"]) == [
        "a.b",
        "/x/c.py",
        "d",
    ]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=240
    )


# A new encoding for the same proof: Heo's 2x2 RoPE-Axial with its planes in a fixed permuted order (x
# and y planes interleaved), registered through the encoding registry (docs/encodings.md).
PERM = """
import torch

from rope_ext.encoding.encodings.axial_block import BlockRotary
from rope_ext.encoding.registry import Accepts, EncodingInfo, register


class InterleavedPlanes(BlockRotary):
    def __init__(self, spec, *, head_dim, num_heads):
        super().__init__(spec, head_dim=head_dim, num_heads=num_heads)
        p = self.num_planes
        perm = torch.arange(p).view(2, -1).t().flatten() if p % 2 == 0 else torch.arange(p).flip(0)
        with torch.no_grad():
            self.freqs.copy_(self.freqs[..., perm])
        self.axis_onehot = self.axis_onehot[perm]


register(
    EncodingInfo(
        name="axial2_interleaved",
        layer=InterleavedPlanes,
        summary="2x2 RoPE-Axial, x and y planes interleaved",
        accepts=Accepts(block=2, impls=("fast", "matrix"), mixed=False, layout_of=False, learnable_false=True),
    )
)
"""


@pytest.mark.slow
def test_a_new_encoding_and_a_new_dataset_in_one_file_each_are_listed_shown_trained_and_reported(
    bars, tmp_path
):
    """No package edit: each module named on the command line is listed by rope_ext.jobs, shown by
    --help, trained by a sweep over seeds and reported by rope_ext.report."""
    perm = tmp_path / "perm_plugin.py"
    perm.write_text(PERM)
    named = ["pe=axial2_interleaved", "dataset=bars", f"plugins=[{perm},{bars}]"]
    listed = _cli("-m", "rope_ext.jobs", *named, "seed=0,1", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "2 jobs" in listed.stdout and "#1 pe=axial2_interleaved dataset=bars" in listed.stdout

    shown = run_train(["--help", *named], cwd=tmp_path, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "name: axial2_interleaved" in shown.stdout and "bar_noise: 0.1" in shown.stdout
    assert re.search(r"pe: .*axial2_interleaved", shown.stdout) and re.search(
        r"dataset: .*bars", shown.stdout
    )

    sweep = ["-m", *named, "seed=0,1", "hydra.sweep.dir=multirun/new"]
    trained = run_train([*sweep, *TINY_MODEL], cwd=tmp_path, timeout=240)
    assert trained.returncode == 0, trained.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "new"
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)

    reported = _cli("-m", "rope_ext.report", str(sweep_dir), cwd=REPO)
    assert reported.returncode == 0, reported.stderr[-3000:]
    written = reported.stdout + "".join(p.read_text() for p in sweep_dir.rglob("*.md"))
    assert "axial2_interleaved" in written


@pytest.mark.slow
def test_a_config_naming_a_plugin_dataset_unpickles_in_a_fresh_process(bars, tmp_path):
    """What submitit and SLURM do with a job's config: the new process finds the plugin's schema class
    from the pickle alone (its module is imported from where it was loaded; no variable needed)."""
    import pickle

    plugins.load_all([bars])
    with composer() as compose:
        cfg = compose(["dataset=bars", "dataset.bar_noise=0.3", *TINY_MODEL])
    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(cfg.dataset))
    read = "import pickle, sys; d = pickle.load(open(sys.argv[1], 'rb')); print(type(d._metadata.object_type).__name__, d._metadata.object_type.__name__, d.bar_noise)"
    child = env()
    child.pop(plugins.ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", read, str(tmp_path / "cfg.pkl")],
        env=child,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["SchemaClass", "BarsConfig", "0.3"]
