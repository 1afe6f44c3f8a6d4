"""Config composition (Hydra's compose API) and the checks that stop a run before any work starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness_helpers import compose_job
from omegaconf import OmegaConf

from rope_ext.config import ConfigError, encoding_names, eval_sizes, pe_options, slug, validate
from rope_ext.encoding.spec import validate_pe

CONF = Path(__file__).resolve().parents[2] / "conf"
# the experiment group (presets) is composed by tests/harness/test_experiments.py
GROUPS = ["model", "pe", "dataset", "optimizer", "hardware", "launcher"]


def compose_cfg(overrides: list[str] | None = None):
    """Compose like the app does, with the Hydra node set so ${hydra:...} interpolations resolve."""
    return compose_job(overrides or [])[1]


def options(group: str) -> list[str]:
    """A group's options: its YAML files, and for pe the encodings (their nodes are generated)."""
    if group == "pe":
        return sorted(encoding_names())
    root = CONF / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


ALL_OPTIONS = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_the_options_the_issue_names():
    assert {"vit_cifar", "vit_s16", "vit_b16"} <= set(options("model"))
    assert set(options("pe")) == {"none", "axial2_matrix", "axial2_complex", "axial_block", "lie_block"}
    assert {"digits", "cifar10", "cifar100", "fake"} <= set(options("dataset"))
    assert set(options("optimizer")) == {"adamw", "adam", "sgd"}
    assert set(options("hardware")) == {"auto", "cpu", "gpu"}
    assert set(options("launcher")) == {"local", "submitit_local", "slurm"}


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_group_option_composes_resolves_and_validates(group, option):
    required = {
        ("dataset", "imagefolder"): ["dataset.root=/data/images"],  # no default folder exists
        # 16-px patches need an input of at least 2 patches per side (digits trains at 16 px)
        ("model", "vit_b16"): ["dataset.input_size=32"],
        ("model", "vit_s16"): ["dataset.input_size=32"],
    }
    cfg = compose_cfg([f"{group}={option}", *required.get((group, option), [])])
    job = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves, the hydra node included
    assert OmegaConf.select(cfg, f"hydra.runtime.choices.{group}") == option
    job.pop("hydra")
    validate(OmegaConf.create(job))


def test_defaults(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_cfg()
    choices = cfg.hydra.runtime.choices
    assert (choices.model, choices.pe, choices.dataset, choices.optimizer) == (
        "vit_cifar",
        "axial_block",
        "digits",
        "adamw",
    )
    assert (choices.hardware, choices.launcher) == ("auto", "local")
    # the config leaves pe options at null (the library's default); validation resolves them
    spec = validate_pe(cfg.pe.name, pe_options(cfg.pe))
    assert (spec.block, spec.impl) == (3, "fast") and (cfg.train.epochs, cfg.train.batch_size) == (10, 64)
    assert cfg.pe.block is None, "the pe/<name> nodes restate no library default"
    assert cfg.model.pos_embed is None and cfg.model.pretrained is False and cfg.model.checkpoint is None
    assert cfg.dataset.input_size == 16 and cfg.dataset.subset is None  # digits: 8x8 scans
    assert cfg.wandb.mode == "offline"
    assert cfg.train.lr == cfg.optimizer.lr
    assert cfg.run_id == "default"
    assert cfg.hydra.run.dir == "outputs/default"


def test_run_id_comes_from_the_overrides_and_is_stable():
    a = compose_cfg(["pe=none", "train.epochs=2"]).run_id
    b = compose_cfg(["train.epochs=2", "pe=none"]).run_id
    assert a == b == "pe=none,train.epochs=2"
    assert compose_cfg(["pe=none", "wandb.mode=disabled"]).run_id == "pe=none"  # W&B settings don't count
    assert compose_cfg(["run_id=mine", "pe=none"]).hydra.run.dir == "outputs/mine"


def test_slug_is_safe_and_bounded():
    assert slug("") == "default"
    assert slug(None) == "default"
    assert slug("model.checkpoint=/a/b c.pth") == "model.checkpoint=_a_b_c.pth"
    long = ",".join(f"key{i}=value{i}" for i in range(40))
    # a run's directory name: it must not change between versions, or reruns miss their results; a cut
    # keeps whole key=value pairs and ends in ",...=<hash>", which no override value can be read as
    assert slug(long) == (
        "key0=value0,key1=value1,key2=value2,key3=value3,key4=value4,key5=value5,key6=value6,...=6fa000eaf4"
    )
    texts = ["a" * 100, "a" * 101, "a" * 1000, long, long + "x", long.replace("39", "38"), "é/" * 80]
    slugs = [slug(t) for t in texts]
    assert all(len(s) <= 100 and re.fullmatch(r"[A-Za-z0-9._=,+\-]+", s) for s in slugs), slugs
    assert len(set(slugs)) == len(texts)  # cut texts keep a hash of the whole: no two runs share a directory


def test_vit_cifar_is_the_small_vit_of_the_issue():
    from rope_ext import create_vit
    from rope_ext.config import timm_kwargs

    cfg = compose_cfg(["pe=none"])
    model = create_vit(cfg.model.arch, pe="none", num_classes=10, img_size=32, **timm_kwargs(cfg.model))
    n = sum(p.numel() for p in model.parameters())
    assert 2.6e6 < n < 2.8e6
    assert model.patch_embed.patch_size == (4, 4) and len(model.blocks) == 6 and model.embed_dim == 192


def test_eval_sizes_default_to_patch_multiples_of_the_scales():
    assert eval_sizes(32, 4) == [32, 40, 48, 64]
    assert eval_sizes(36, 4) == [36, 44, 56, 72]
    assert eval_sizes(224, 16) == [224, 288, 336, 448]
    assert eval_sizes(32, 4, [32, 64]) == [32, 64]


BAD = [
    (["pe.block=65"], "pe.block=65", "2..64 for head_dim 64"),
    (["pe.block=1"], "pe.block=1", "2..64 for head_dim 64"),
    (["model.embed_dim=8", "model.num_heads=2", "pe.block=5"], "pe.block=5", "2..4 for head_dim 4"),
    (["pe.coords=pixels"], "pe.coords='pixels'", "'patch', 'normalized'"),
    (["pe.augment.jitter=0.5"], "pe.augment.jitter=0.5", "0 (off) or a number >= 1"),
    (["pe.augment.shift=-1"], "pe.augment.shift=-1", "0 (off) or a positive number"),
    (["pe.layout_of=3"], "pe.layout_of=3", "null"),
    (["pe.block=2", "pe.layout_of=65"], "pe.layout_of=65", "2..64 for head_dim 64"),
    (["pe.block=2", "pe.basis=frozen"], "pe.basis='frozen'", "null"),
    (["pe.basis=fixed"], "pe.basis='fixed'", "'learned', 'frozen'"),
    (["model.pool=mean"], "model.pool='mean'", "cls, avg"),
    (["pe=none", "pe.coords=normalized"], "pe.coords set with pe='none'", "null"),
    (["pe=axial2_complex", "pe.block=3"], "pe.block=3", "2 or null"),
    (["pe.name=rope"], "pe.name='rope'", ", ".join(encoding_names())),
    (["pe.impl=slow"], "pe.impl='slow'", "'fast', 'matrix'"),
    (["train.epochs=-1"], "train.epochs=-1", ">= 1"),
    (["train.batch_size=0"], "train.batch_size=0", ">= 1"),
    (["train.lr=0"], "train.lr=0", "> 0"),
    (["wandb.mode=sometimes"], "wandb.mode='sometimes'", "offline, online, disabled"),
    (["hardware.devices=0"], "hardware.devices=0", ">= 1"),
    (["dataset.subset=0"], "dataset.subset=0", ">= 1"),
    (["model.pos_embed=sine"], "model.pos_embed='sine'", "learn, none"),
]


@pytest.mark.parametrize(("overrides", "named", "allowed"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_values_are_named_with_what_is_allowed(overrides, named, allowed):
    cfg = compose_cfg(overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert named in message and allowed in message and "allowed" in message


def test_the_key_lists_come_from_the_schema():
    """Which keys make two runs different, resumable or replicates: the schema's metadata, one place."""
    from rope_ext.checkpoint import RESUMABLE_KEYS
    from rope_ext.report.runs import IGNORED_LEAF, IGNORED_TOP

    # the list checkpoint.py stated by hand before the schema: resuming old checkpoints still works
    assert set(RESUMABLE_KEYS) == {
        "run_id", "train.epochs", "train.lr", "train.resume", "train.log_every", "train.speed_warmup_steps",
        "model.pretrained", "model.checkpoint", "dataset.root", "dataset.download", "dataset.in_memory",
        "dataset.num_workers", "optimizer.lr", "eval.*", "wandb.*", "launcher.*", "hardware.*",
        "study.*",  # a study's margins (the report's, never the training's)
        "plugins",  # modules that register encodings/datasets: the chosen pe/dataset name the run
    }  # fmt: skip
    cfg = compose_cfg(["launcher=slurm", "launcher.partition=gpu", "train.resume=false", "seed=3"])
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    assert {"run_id", "launcher", "launcher.partition", "train.resume", "wandb.tags"} <= excluded
    assert not excluded & {"seed", "pe.block", "hardware.devices", "eval.input_sizes"}
    assert cfg.run_id == "seed=3"  # what names the directory
    assert IGNORED_TOP == {"hydra", "run_id", "wandb", "launcher", "study", "plugins"}
    assert IGNORED_LEAF == {"seed"}


def test_a_failure_newer_than_an_ok_result_is_one_state_for_summary_and_report(tmp_path):
    import json
    import os
    import time

    from rope_ext.report.runs import find_runs
    from rope_ext.tracking.records import job_result

    job = tmp_path / "job"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (job / "metrics.json").write_text(json.dumps({"status": "ok", "test_acc": 50.0}))
    (job / "failure.json").write_text(json.dumps({"status": "failed", "error": "diverged"}))
    os.utime(job / "metrics.json", (time.time() - 100, time.time() - 100))
    (run,) = find_runs(tmp_path)
    assert run.status == job_result(job)["status"] == "failed"
    os.utime(job / "failure.json", (time.time() - 200, time.time() - 200))
    (run,) = find_runs(tmp_path)
    assert run.status == job_result(job)["status"] == "ok"


def test_a_studys_margins_are_schema_keys_the_report_reads():
    """study.margin / study.margin_extrap: typed, positive, not part of a run's identity."""
    from rope_ext.report.arms import MARGIN_KEYS
    from rope_ext.schema import unnamed_keys

    cfg = compose_cfg(["study.margin=1.5", "study.margin_extrap=5"])
    assert (cfg.study.margin, cfg.study.margin_extrap) == (1.5, 5.0)
    assert {OmegaConf.select(cfg, k) for k in MARGIN_KEYS.values()} == {1.5, 5.0}
    assert "study" in unnamed_keys()
    with pytest.raises(ConfigError, match="study.margin=-1"):
        validate(compose_cfg(["study.margin=-1"]))


def _import_graph(root: Path) -> dict[str, set[str]]:
    """rope_ext's modules -> the rope_ext modules each imports (module level and inside functions)."""
    import ast

    mods = {}
    for path in (root / "rope_ext").rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                # `from pkg import sub` depends on the submodule; `from mod import name` on the module
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [t for t in subs if t in mods] or [node.module]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                # a module's own parent packages run first by Python's import of it: not an edge
                if target and not (module + ".").startswith(target + "."):
                    graph[module].add(target)
    return graph


def test_the_package_has_no_import_cycle():
    """No module reaches itself through imports, function-level ones included (they hid one before)."""
    graph = _import_graph(Path(__file__).resolve().parents[2])

    def reaches(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += graph[module]
        return seen

    cycles = sorted(m for m in graph if m in reaches(m))
    assert not cycles, f"modules on an import cycle: {cycles}"
    # the configuration's layers: errors and util at the bottom, data below config, config below the CLI
    assert not graph["rope_ext.errors"] and graph["rope_ext.util"] <= {"rope_ext.encoding.spec"}
    assert not any(m.startswith("rope_ext.config") for m in reaches("rope_ext.data"))


def test_resolve_gives_typed_objects_with_the_encoding_resolved_once():
    """config.resolve: schema.Config with the dataset's own class and pe's defaults filled in (what the
    layer runs); the frozen spec of it is the library's; the recipe reads the typed config."""
    from rope_ext import recipe, schema
    from rope_ext.config import resolve, spec_of
    from rope_ext.data.relpos import RelposConfig

    task, _ = compose_job(["dataset=relpos", "pe.mixed=true"])
    typed = resolve(task)
    assert isinstance(typed, schema.Config) and isinstance(typed.dataset, RelposConfig)
    assert isinstance(typed.pe, schema.PEConfig) and typed.pe.block == 3 and typed.pe.theta == 10.0
    assert typed.pe.learnable is True and typed.pe.basis == "learned"  # mixed: learned frequencies
    assert spec_of(typed.pe) == validate_pe("axial_block", {"mixed": True})
    assert recipe.peak_lr(typed, world_size=2) == typed.train.lr and recipe.build_mixup(typed, 8) is None
    with pytest.raises(ConfigError, match=r"pe.block=1 .*not allowed"):
        resolve(compose_job(["pe.block=1"])[0])
