"""What a new user meets first: speed on short runs, typo'd keys, a sweep's jobs listed before it runs,
README/docs links that stay inside the repository, README's commands that parse."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shlex
import shutil
from pathlib import Path

import pytest
from harness_helpers import (
    REPO,
    TINY,
    compose_job,
    output,
    run_train,
    wandb_records,
)
from omegaconf import OmegaConf

from rope_ext.config import ConfigError, composer, validate
from rope_ext.jobs import check_jobs, list_jobs
from rope_ext.jobs import main as jobs_main
from rope_ext.run.loop import speed_warmup

CONF = REPO / "conf"


def refused(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err, composer(CONF) as compose:
        validate(compose(overrides))
    return str(err.value)


def accepted(overrides: list[str]) -> None:
    task, _ = compose_job(overrides)
    validate(task)


# ---------------------------------------------------------------------------------------------------
# 1. speed on short runs


@pytest.mark.parametrize(
    ("configured", "steps", "expected"), [(5, 22, 5), (5, 4, 2), (5, 1, 0), (0, 10, 0), (3, 6, 3)]
)
def test_speed_warmup_leaves_at_least_half_the_first_epoch_measured(configured, steps, expected):
    assert speed_warmup(configured, steps) == expected


# ---------------------------------------------------------------------------------------------------
# 5. unknown keys


def test_hydras_own_hint_plus_key_is_refused_naming_the_closest_key():
    msg = refused(["+train.epoch=2"])
    assert "train.epoch=2" in msg and "did you mean train.epochs?" in msg


@pytest.mark.parametrize(
    ("override", "closest"),
    [
        ("+eval.batchsize=8", "eval.batch_size"),
        ("+pe.blok=4", "pe.block"),
        ("+dataset.augment.hflp=true", "dataset.augment.hflip"),
        ("+optimizer.weight_decy=0.1", "optimizer.weight_decay"),
        ("+hardware.thread=2", "hardware.threads"),
        ("+wandb.projct=x", "wandb.project"),
        ("+model.dept=3", "model.depth"),
    ],
)
def test_unknown_keys_of_every_project_group_are_refused(override, closest):
    key = override[1:].split("=")[0]
    msg = refused([override])
    assert key in msg and f"did you mean {closest}?" in msg


def test_several_unknown_keys_are_named_together():
    msg = refused(["+train.epoch=2", "+pe.blok=4"])
    assert "train.epoch" in msg and "pe.blok" in msg


def test_the_model_group_takes_the_schemas_timm_keys_only():
    accepted(["model.qkv_bias=false", "model.pool=avg"])
    accepted(["model.depth=2", "++model.drop_rate=0.1"])
    assert "model.qkv_bais" in refused(["+model.qkv_bais=false"])
    # timm keywords the harness does not model (the class token is model.pool's to say) are refused
    assert "model.class_token" in refused(["+model.class_token=false"])
    assert "model.act_layer" in refused(["+model.act_layer=foo"])


def test_every_preset_and_arm_composes_without_unknown_keys(preset_folder):
    root = CONF / "experiment"
    presets = [
        # a published setting reads the user's own images: its folder is theirs to name
        [f"experiment={p.relative_to(root).with_suffix('').as_posix()}"]
        + (["dataset.root=/data/imagenet"] if p.parent.name == "paper" else [])
        for p in sorted(root.rglob("*.yaml"))
        if p.parent != root / "arm"
    ]
    arms = [[f"+experiment/arm={p.stem}"] for p in sorted((root / "arm").glob("*.yaml"))]
    assert len(presets) >= 10 and len(arms) >= 10
    assert not list(root.glob("*.yaml")), "presets live in subfolders by kind (conf/experiment/README.md)"
    for overrides in presets + arms:
        accepted(overrides)


def test_the_schema_is_the_one_list_of_keys_a_yaml_file_cannot_extend(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    model = conf / "model" / "vit_cifar.yaml"
    model.write_text(model.read_text() + "brand_new_option: 1\n")
    with pytest.raises(ConfigError, match="model.brand_new_option"), composer(conf) as compose:
        compose([])


def test_a_typo_key_stops_train_py_with_exit_2_before_any_work(tmp_path):
    proc = run_train([*TINY, "run_id=typo", "+train.epoch=2"], cwd=tmp_path, timeout=120)
    out = output(proc)
    assert proc.returncode == 2, out
    assert "train.epoch" in out and "did you mean train.epochs?" in out
    assert "Nothing was written." in out
    assert sorted(tmp_path.iterdir()) == []  # refused before Hydra creates the run directory


# ---------------------------------------------------------------------------------------------------
# 6. listing a sweep's jobs


def sweep_values(preset: str) -> int:
    """Jobs a preset declares: the product of its hydra.sweeper.params value counts, read from the YAML."""
    params = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml").hydra.sweeper.params
    return math.prod(len(str(v).split(",")) for v in params.values())


@pytest.mark.parametrize("preset", ["original/sweep_arms", "study/relpos_blocks_tune", "original/sweep_impl"])
def test_job_listing_of_a_preset_counts_its_declared_sweep(preset):
    jobs = list_jobs([f"experiment={preset}"])
    assert len(jobs) == sweep_values(preset)
    assert len({tuple(j) for j in jobs}) == len(jobs)  # no job listed twice
    assert all(f"experiment={preset}" in j for j in jobs)
    # a command-line sweep over a key the preset does not sweep multiplies the preset's jobs
    assert len(list_jobs([f"experiment={preset}", "train.label_smoothing=0.0,0.1"])) == 2 * len(jobs)


def test_job_listing_cli_prints_count_and_overrides(capsys):
    assert jobs_main(["pe=axial_block", "pe.block=2,3,4", "seed=0,1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("6 jobs:")
    assert out[1] == "sweep directory: multirun/pe.block=2,3,4,pe=axial_block,seed=0,1/"
    assert out[2:] == [
        f"#{i} pe=axial_block pe.block={b} seed={s}"
        for i, (b, s) in enumerate((b, s) for b in (2, 3, 4) for s in (0, 1))
    ]


def test_job_listing_check_names_the_jobs_that_would_stop(capsys):
    assert jobs_main(["--check", "pe.block=2,70", "+train.epoch=3"]) == 2
    out = capsys.readouterr().out
    assert "pe.block=70 is not allowed" in out and "did you mean train.epochs?" in out
    assert "2 of 2 jobs would stop before training." in out
    assert jobs_main(["--check", "pe.block=2,3"]) == 0


@pytest.mark.slow
def test_listed_jobs_are_the_jobs_a_real_multirun_launches_and_short_runs_have_a_speed(tmp_path):
    # 64 training images in batches of 16: 4 steps per epoch, fewer than the 5 warm-up steps configured
    sweep = [*TINY, "train.speed_warmup_steps=5", "pe.block=2,3", "seed=0,1"]
    listed = list_jobs(sweep)
    proc = run_train(["-m", *sweep], cwd=tmp_path, timeout=400, extra_env={"WANDB_MODE": "offline"})
    out = output(proc)
    assert proc.returncode == 0, out
    runs = sorted(p.parent for p in (tmp_path / "multirun").rglob("metrics.json"))
    assert len(runs) == len(listed) == 4
    launched = [OmegaConf.to_container(OmegaConf.load(r / ".hydra" / "overrides.yaml")) for r in runs]
    for job in listed:  # every listed job's overrides are among one launched job's
        assert sum(set(job) <= set(o) for o in launched) == 1, (job, launched)
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        assert m["train_img_per_s"] is not None and m["train_img_per_s"] > 0, run
    # docs/wandb.md's field names are what the runs log: group = the sweep, config and summary keys
    [sweep_dir] = list((tmp_path / "multirun").iterdir())
    for run in runs:
        logged = wandb_logged(run)
        assert logged["group"] == sweep_dir.name and logged["job_type"] == "train"
        assert {"pe.name", "pe.block", "pe.mixed", "seed", "dataset.name", "train.epochs"} <= logged["config"]
        assert {"test_acc", "train_img_per_s", "infer_img_per_s", "relative_error"} <= logged["summary"]
        assert any(k.startswith("test_acc_at/") for k in logged["summary"])
    lines = out.splitlines()
    # the end-of-sweep table: the last one printed (each job also prints its own row)
    start = max(i for i, line in enumerate(lines) if line.startswith("| run"))
    col = [c.strip() for c in lines[start].split("|")].index("train img/s")
    table = [line for line in lines[start:] if line.startswith("| ") and "axial_block" in line]
    assert len(table) == 4 and all(float(row.split("|")[col]) > 0 for row in table)


def wandb_logged(run_dir: Path) -> dict:
    """Group, job type, dotted config keys and summary keys of a run's offline W&B log."""
    [path] = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    out: dict = {"config": set(), "summary": set()}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["group"], out["job_type"] = record.run.run_group, record.run.job_type
            for item in record.run.config.update:
                out["config"] |= dotted(item.key, json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                out["config"] |= dotted(item.key, json.loads(item.value_json))
        elif kind == "summary":
            out["summary"] |= {item.key or "/".join(item.nested_key) for item in record.summary.update}
    return out


def dotted(key: str, value: object) -> set[str]:
    if isinstance(value, dict):
        return {key} | {k for sub, v in value.items() for k in dotted(f"{key}.{sub}", v)}
    return {key}


# ---------------------------------------------------------------------------------------------------
# 2. links stay inside the repository

LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[str]:
    links = [m for m in LINK.findall(path.read_text()) if not re.match(r"[a-z]+:", m)]
    return [m.split("#")[0] for m in links if not m.startswith("#")]


def test_every_relative_link_in_readme_and_docs_resolves_inside_the_repository():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert (REPO / "docs" / "math.md") in pages
    assert "docs/math.md" in relative_links(REPO / "README.md")
    checked = 0
    for page in pages:
        text = page.read_text()
        assert "../shared" not in text, f"{page.name} points outside the repository"
        for link in relative_links(page):
            target = (page.parent / link).resolve()
            assert target.is_relative_to(REPO), f"{page.name}: {link} leaves the repository"
            assert target.exists(), f"{page.name}: {link} does not exist"
            checked += 1
    assert checked >= 3


def test_every_page_of_the_manual_is_reachable_from_readme_and_readme_stays_short():
    seen, todo = set(), [REPO / "README.md"]
    while todo:  # follow the relative links to Markdown pages, from the front door
        page = todo.pop()
        for link in relative_links(page):
            target = (page.parent / link).resolve()
            if target.suffix == ".md" and target.is_file() and target not in seen:
                seen.add(target)
                todo.append(target)
    pages = set((REPO / "docs").glob("*.md"))
    assert pages <= seen, f"docs pages no link leads to: {sorted(p.name for p in pages - seen)}"
    assert len((REPO / "README.md").read_text().splitlines()) <= 250  # the front door, not the manual


# ---------------------------------------------------------------------------------------------------
# 3. README's commands parse


def readme_commands(heading: str) -> list[str]:
    """The shell commands of the bash blocks of README's section ``## heading`` (its subsections
    included): continuation lines joined, comments and the prompt-less blank lines dropped."""
    text = (REPO / "README.md").read_text()
    section = re.split(r"^## ", text, flags=re.M)
    [body] = [s for s in section if s.startswith(heading + "\n")]
    blocks = re.findall(r"```bash\n(.*?)```", body, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def train_overrides(words: list[str]) -> list[str]:
    """The Hydra overrides of a ``python train.py``/``torchrun ... train.py`` command line."""
    args = words[words.index("train.py") + 1 :]
    flags = {"-m", "--multirun"}
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--cfg":
            skip = True  # its value (job, hydra, all) is Hydra's, not an override
        elif arg not in flags and not arg.startswith("--"):
            out.append(arg)
    return out


@pytest.mark.parametrize("heading", ["Quickstart", "Main commands"])
def test_readme_commands_parse_and_their_jobs_pass_the_checks_train_py_runs_first(heading):
    commands = readme_commands(heading)
    assert commands, heading
    trains = [c for c in commands if "train.py" in c]
    modules = [c[c.index("-m") + 1] for c in commands if c[:2] == ["python", "-m"]]
    for words in trains:
        jobs = list_jobs(train_overrides(words))  # Hydra's own override parser and sweeper expansion
        covering, seen = [], set()  # jobs that between them use every swept value once at least
        for job in jobs:
            if not set(job) <= seen:
                covering.append(job)
                seen |= set(job)
        assert jobs and check_jobs(covering) == [None] * len(covering), " ".join(words)
    for module in modules:
        if module not in {"venv", "pytest", "pip"}:
            assert importlib.util.find_spec(module) is not None, module
    for words in (c for c in commands if c[:3] == ["python", "-m", "rope_ext.jobs"]):
        assert list_jobs([w for w in words[3:] if not w.startswith("--")]), " ".join(words)
    for words in (c for c in commands if c[0].startswith("experiments/")):
        assert (REPO / words[0]).is_file(), words[0]
        if words[0] == "experiments/run_study.sh":  # its study names two presets of conf/experiment/study/
            assert (CONF / "experiment" / "study" / f"{words[1]}_tune.yaml").is_file(), words[1]
            assert (CONF / "experiment" / "study" / f"{words[1]}.yaml").is_file(), words[1]
    if heading == "Quickstart":
        flagship = ["pe=axial_block", "pe.block=2,3,4,5,6"]
        assert any(train_overrides(c)[:2] == flagship for c in trains), "the block-size sweep"
        assert len(list_jobs(flagship)) == 5
        # torch and torchvision always come from the same index in one command (a CPU torch with a
        # CUDA torchvision dies with "operator torchvision::nms does not exist")
        pips = [c for c in commands if c[:2] == ["pip", "install"]]
        assert any("torch" in c for c in pips)
        assert all(("torch" in c) == ("torchvision" in c) for c in pips)


def test_readme_python_example_runs_and_its_folded_model_gives_the_same_logits():
    import torch

    text = (REPO / "README.md").read_text()
    [source] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    scope: dict = {}
    exec(compile(source, "README.md", "exec"), scope)  # noqa: S102  (the README's own example)
    model, fast = scope["model"].eval(), scope["fast"].eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(model(x), fast(x), atol=1e-5)
    assert scope["rope_ext"].relative_property_error(model) < 1e-6


def test_the_job_lister_piped_into_head_ends_quietly():
    """``python -m rope_ext.jobs ... | head -1``: the closed pipe is no traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        # 3000 lines: more than a pipe's buffer, so the lister is still writing when the pipe closes
        [sys.executable, "-m", "rope_ext.jobs", "pe.block=2,3,4,5,6", "seed=range(0,600)"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout.readline().startswith(b"3000 jobs")
    proc.stdout.close()  # as head does after its line
    assert proc.wait(timeout=120) == 0 and b"Traceback" not in proc.stderr.read()
