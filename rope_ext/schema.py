"""The config schema: one dataclass per config group, registered in Hydra's ConfigStore.

Every YAML file of ``conf/`` extends its schema (Hydra's "Extending configs" pattern: a defaults-list
entry such as ``- /schema/model@_here_``), so OmegaConf itself refuses unknown keys, wrong types and
values that are not of the field's type when the config is composed. Each field carries metadata
(``key(...)``):

* ``help``: what it means (shown by ``python train.py --help`` through the composed config's values);
* ``choices`` / ``ge`` / ``gt`` / ``le`` / ``lt``: the allowed values, checked by ``config.validate``
  (OmegaConf types cannot say "one of" or "at least"); floats must also be finite;
* ``trajectory``: whether changing it changes what training computes. The rest may change between a
  checkpoint and its resumption (``resumable_keys``, read by ``rope_ext.checkpoint``);
* ``names_run``: whether it names the run directory, i.e. makes two runs different. The rest are left out
  of ``hydra.job.override_dirname`` (``unnamed_keys``, read by ``conf/config.yaml``) and of a run's
  identity in the report;
* ``replicate``: seeds: runs that differ only in these are replicates of one experiment (the report).

Metadata on a group's field (``wandb``, ``launcher``, ...) applies to every key under it. The pe group's
options are checked by ``rope_ext.encoding.rotary.validate_pe`` (the library's rules, one place).
"""

import dataclasses
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from rope_ext.encoding.spec import Augment, RopeSpec
from rope_ext.encoding.vit import POOLS, POS_EMBEDS

# Upper bounds of memory-bound sizes: a value past them cannot fit a machine of this project's kind
# (an H200 has 141 GB), so it is refused before any work rather than failing after training.
MAX_SIZE_PX = 4096  # input sizes (train and evaluation)
MAX_TOKENS = 128 * 128  # patches per image: attention is quadratic in them
MAX_DEPTH = 256
MAX_WIDTH = 65536  # embed_dim
MAX_BATCH = 65536
MAX_IMAGES = 10_000_000  # generated datasets (fake, relpos) are built in memory
MAX_SEED = 2**32 - 1  # numpy's generators take 32 bits
MAX_EPOCHS = 1_000_000
MAX_BENCH_SECONDS = 3600.0


def key(
    default: Any = MISSING,
    *,
    help: str = "",
    choices: tuple | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    trajectory: bool = True,
    names_run: bool = True,
    replicate: bool = False,
    factory: Any = None,
) -> Any:
    """A dataclass field with the metadata described in the module docstring."""
    meta = dict(help=help, choices=choices, ge=ge, gt=gt, le=le, lt=lt)
    meta |= dict(trajectory=trajectory, names_run=names_run, replicate=replicate)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def group(factory: Any = MISSING, *, trajectory: bool = True, names_run: bool = True) -> Any:
    """A group's field in the top-level schema; its metadata applies to every key below it."""
    meta = dict(trajectory=trajectory, names_run=names_run, group=True)
    if factory is MISSING:
        return field(default=MISSING, metadata=meta)
    return field(default_factory=factory, metadata=meta)


# ---------------------------------------------------------------------------------------------------
# groups chosen on the command line (conf/<group>/<option>.yaml)


@dataclass
class ModelConfig:
    """``conf/model``: a timm ViT. The shape keys are timm keyword arguments; every option states them,
    so the head dimension (``embed_dim / num_heads``) is known before any model is built."""

    name: str = key(help="the option's name")
    arch: str = key(help="timm architecture the ViT is built from; the keys below override it")
    input_size: int = key(
        32, ge=1, le=MAX_SIZE_PX, help="default dataset.input_size of datasets without their own"
    )
    pretrained: bool = key(False, trajectory=False, help="timm's pretrained weights (needs the network)")
    checkpoint: str | None = key(
        None, trajectory=False, help="local .pth/.safetensors state dict (offline alternative to pretrained)"
    )
    pos_embed: str | None = key(
        None, choices=POS_EMBEDS, help="learn | none; null: learn for pe=none, none for rotary encodings"
    )
    pool: str | None = key(
        "cls", choices=POOLS, help="cls (class token) | avg (no class token, global average pooling)"
    )
    patch_size: int = key(ge=1, le=MAX_SIZE_PX)
    embed_dim: int = key(ge=1, le=MAX_WIDTH)
    depth: int = key(ge=1, le=MAX_DEPTH)
    num_heads: int = key(ge=1, le=MAX_WIDTH)
    mlp_ratio: float | None = key(None, gt=0, le=64)
    qkv_bias: bool | None = key(None)
    drop_rate: float | None = key(None, ge=0, lt=1)
    drop_path_rate: float | None = key(None, ge=0, lt=1)
    attn_drop_rate: float | None = key(None, ge=0, lt=1)
    proj_drop_rate: float | None = key(None, ge=0, lt=1)
    pos_drop_rate: float | None = key(None, ge=0, lt=1)


def _writable(frozen: type, name: str, nested: dict[str, type] | None = None) -> type:
    """A mutable copy of one of the library's frozen spec dataclasses, same fields, types and defaults:
    Hydra writes command-line overrides into the composed config, which a frozen node refuses.
    ``nested``: the mutable copies of its nested specs, by field. The copy is a module attribute of this
    module (``__module__`` set), so pickle (submitit's jobs) finds it by name instead of copying it."""
    hints, nested = typing.get_type_hints(frozen), nested or {}
    fields = []
    for f in dataclasses.fields(frozen):
        tp = hints[f.name]
        if f.name in nested:
            copy = nested[f.name]
            tp = copy | None if type(None) in getattr(tp, "__args__", ()) else copy
            fields.append((f.name, tp, field(default_factory=copy)))
        elif f.default_factory is not dataclasses.MISSING:
            fields.append((f.name, tp, field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, tp, field(default=f.default)))
    cls = dataclasses.make_dataclass(name, fields, namespace={"__doc__": frozen.__doc__})
    cls.__module__ = __name__
    return cls


# ``conf/pe``: the position encoding. Its fields, types and defaults are the library's RopeSpec (the one
# place they live; null means the encoding's default); which values and combinations each encoding takes
# is ``rope_ext.encoding.rotary.validate_pe``'s to say. The YAML files set only ``name``.
PEAugmentConfig = _writable(Augment, "PEAugmentConfig")
PEConfig = _writable(RopeSpec, "PEConfig", nested={"augment": PEAugmentConfig})


@dataclass
class DataAugmentConfig:
    crop_padding: int = key(0, ge=0, le=MAX_SIZE_PX, help="random translation in native pixels; 0 disables")
    hflip: bool = key(False)


@dataclass
class DatasetConfig:
    """``conf/dataset``: the keys every dataset has (scikit-learn's digits has no more)."""

    name: str = key()
    input_size: int = key(ge=1, le=MAX_SIZE_PX, help="the size trained at, px")
    subset: int | None = key(None, ge=1, help="N: keep the first N train and the first N test images")
    val_fraction: float = key(0.1, ge=0, lt=1, help="held out of the training images for validation")
    mean: list[float] = key(factory=lambda: [0.5, 0.5, 0.5], help="per channel (3 values)")
    std: list[float] = key(factory=lambda: [0.5, 0.5, 0.5], help="per channel (3 positive values)")
    augment: DataAugmentConfig = key(factory=DataAugmentConfig)
    in_memory: bool = key(True, trajectory=False, help="tensors on the device, batches sliced there")
    # an integer >= 0, or auto (checked by config.validate: OmegaConf has no int-or-str type)
    num_workers: Any = key(0, trajectory=False, help="DataLoader workers when in_memory=false; auto")


@dataclass
class CifarConfig(DatasetConfig):
    root: str = key(trajectory=False, help="the folder holding cifar-10-batches-py / cifar-100-python")
    download: bool = key(True, trajectory=False)


@dataclass
class FakeConfig(DatasetConfig):
    train_size: int = key(256, ge=1, le=MAX_IMAGES)
    test_size: int = key(64, ge=1, le=MAX_IMAGES)
    num_classes: int = key(10, ge=2, le=100_000)
    noise: float = key(1.0, ge=0)


@dataclass
class RelposConfig(DatasetConfig):
    train_size: int = key(5000, ge=1, le=MAX_IMAGES)
    test_size: int = key(1000, ge=1, le=MAX_IMAGES)
    seed: int = key(0, ge=0, le=MAX_SEED, replicate=True, help="the data's seed")


@dataclass
class ImagefolderAugmentConfig(DataAugmentConfig):
    scale: list[float] = key(factory=lambda: [0.08, 1.0], help="random-resized crop's area range")


@dataclass
class ImagefolderConfig(DatasetConfig):
    """``dataset=imagefolder``: ``root`` in the ImageNet layout, read through timm's data pipeline."""

    root: str | None = key(None, trajectory=False, help="the folder holding train/<class>/ and val/<class>/")
    crop_pct: float = key(0.875, gt=0, le=1, help="evaluation: resize to input_size / crop_pct, centre crop")
    interpolation: str = key("bicubic", choices=("bicubic", "bilinear", "nearest", "random"))
    augment: ImagefolderAugmentConfig = key(factory=ImagefolderAugmentConfig)


@dataclass
class OptimizerConfig:
    name: str = key()
    lr: float = key(trajectory=False, gt=0, help="default for train.lr")
    weight_decay: float = key(0.0, ge=0)


@dataclass
class AdamConfig(OptimizerConfig):
    betas: list[float] = key(factory=lambda: [0.9, 0.999], help="two numbers in [0, 1)")
    eps: float = key(1e-8, gt=0)


@dataclass
class SGDConfig(OptimizerConfig):
    momentum: float = key(0.9, ge=0, lt=1)
    nesterov: bool = key(True)


@dataclass
class HardwareConfig:
    accelerator: str = key("auto", choices=("auto", "cpu", "gpu"))
    precision: str = key("auto", choices=("auto", "bf16", "fp16", "fp32"))
    compile: bool = key(False, help="torch.compile the model (GPU)")
    devices: int = key(1, ge=1, le=1024, help="processes per node")
    nodes: int = key(1, ge=1, le=100_000)
    gpus_per_node: int = key(0, ge=0, le=1024, help="what the SLURM launcher requests")
    threads: int | None = key(None, ge=1, le=4096, help="torch.set_num_threads; null: torch's default")


@dataclass
class LauncherConfig:
    name: str = key(choices=("local", "submitit_local", "slurm"))


@dataclass
class SubmititLocalConfig(LauncherConfig):
    timeout_min: int = key(60, ge=1)
    cpus_per_task: int | None = key(None, ge=1)


@dataclass
class SlurmConfig(LauncherConfig):
    partition: str | None = key(None)
    account: str | None = key(None)
    qos: str | None = key(None)
    constraint: str | None = key(None)
    timeout_min: int = key(240, ge=1, help="per job; a timed-out job is requeued and resumes")
    mem_gb: int = key(64, ge=1, help="per node")
    cpus_per_task: int | None = key(8, ge=1)
    max_num_timeout: int = key(3, ge=0, help="requeues after a time-out")
    signal_delay_s: int = key(120, ge=0, help="USR2 this long before the time limit: checkpoint")
    array_parallelism: int = key(64, ge=1)
    setup: list[str] = key(factory=list, help="shell lines run before srun")


@dataclass
class RecipeConfig:
    """``conf/recipe``: basic (the dataset's own augmentation) | deit (timm's RandAugment, random erasing,
    Mixup/CutMix and DeiT's schedule; ``rope_ext.recipe``)."""

    name: str = key(choices=("basic", "deit"))
    auto_augment: str | None = key(None, help="timm policy, e.g. rand-m9-mstd0.5-inc1 (imagefolder only)")
    re_prob: float = key(0.0, ge=0, le=1, help="random erasing probability per image (imagefolder only)")
    re_mode: str = key("pixel", choices=("pixel", "rand", "const"))
    mixup: float = key(0.0, ge=0, help="Mixup's Beta alpha; 0 disables")
    cutmix: float = key(0.0, ge=0, help="CutMix's Beta alpha; 0 disables")
    mixup_prob: float = key(1.0, ge=0, le=1)
    mixup_switch_prob: float = key(0.5, ge=0, le=1)
    lr_batch: int | None = key(None, ge=1, help="N: peak lr = train.lr x global batch / N; null: as is")


# ---------------------------------------------------------------------------------------------------
# groups of conf/config.yaml itself


@dataclass
class TrainConfig:
    epochs: int = key(10, ge=1, le=MAX_EPOCHS, trajectory=False, help="extends the schedule on resume")
    batch_size: int = key(64, ge=1, le=MAX_BATCH, help="per process")
    lr: float = key(
        "${optimizer.lr}", gt=0, trajectory=False, help="peak learning rate; default from the optimizer"
    )
    warmup_epochs: float = key(1.0, ge=0, le=MAX_EPOCHS, help="linear warm-up, then cosine decay to min_lr")
    min_lr: float = key(1e-6, ge=0)
    label_smoothing: float = key(0.1, ge=0, lt=1)
    grad_clip: float | None = key(1.0, gt=0, help="max global grad norm; null disables clipping")
    log_every: int = key(10, ge=1, trajectory=False, help="steps between loss log lines and NaN checks")
    speed_warmup_steps: int = key(5, ge=0, trajectory=False, help="first steps left out of train_img_per_s")
    resume: bool = key(
        True, trajectory=False, names_run=False, help="resume from <run dir>/checkpoint.pt when present"
    )


@dataclass
class EvalConfig:
    batch_size: int = key(256, ge=1, le=MAX_BATCH)
    input_sizes: list[int] | None = key(
        None, ge=1, le=MAX_SIZE_PX, help="px; null: 1x, 1.25x, 1.5x, 2x the train size (patch multiples)"
    )
    fold: bool = key(True, help="measure inference speed on rope_ext.fold_for_inference(model)")
    bench_seconds: float = key(2.0, ge=0, le=MAX_BENCH_SECONDS, help="time measuring inference speed")


@dataclass
class WandbConfig:
    mode: str = key(
        "${oc.env:WANDB_MODE,offline}", choices=("offline", "online", "disabled"), help="default $WANDB_MODE"
    )
    project: str = key("rope-ext")
    entity: str | None = key(None)
    group: str | None = key(None, help="null: the sweep (multirun) or the run_id (single run)")
    tags: list[str] = key(factory=list)
    init_timeout: float = key(60.0, gt=0, le=3600)


@dataclass
class StudyConfig:
    """A study's pre-registered equivalence margins, written in its preset before the runs: the report
    tests equivalence (TOST) against them (``rope_ext.report``, docs/statistics.md); null: no verdict."""

    margin: float | None = key(None, gt=0, help="points, at the training size")
    margin_extrap: float | None = key(None, gt=0, help="points, at every other evaluation size")


@dataclass
class Config:
    """The composed config of a job (``conf/config.yaml`` and one option of every group)."""

    seed: int = key(0, ge=0, le=MAX_SEED, replicate=True)
    # the output directory (outputs/<run_id>): the same command always lands in the same directory
    run_id: str = key("${rope_ext.slug:${hydra:job.override_dirname}}", trajectory=False, names_run=False)
    train: TrainConfig = group(TrainConfig)
    eval: EvalConfig = group(EvalConfig, trajectory=False)
    wandb: WandbConfig = group(WandbConfig, trajectory=False, names_run=False)
    model: ModelConfig = group()
    pe: PEConfig = group()
    dataset: DatasetConfig = group()
    optimizer: OptimizerConfig = group()
    hardware: HardwareConfig = group(trajectory=False)
    launcher: LauncherConfig = group(trajectory=False, names_run=False)
    recipe: RecipeConfig = group()
    study: StudyConfig = group(StudyConfig, trajectory=False, names_run=False)


# Per group whose options differ in their keys: the schema of each option, by the option's ``name``
OPTION_SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {
        "digits": DatasetConfig,
        "cifar10": CifarConfig,
        "cifar100": CifarConfig,
        "fake": FakeConfig,
        "relpos": RelposConfig,
        "imagefolder": ImagefolderConfig,
    },
    "optimizer": {"adamw": AdamConfig, "adam": AdamConfig, "sgd": SGDConfig},
    "launcher": {"local": LauncherConfig, "submitit_local": SubmititLocalConfig, "slurm": SlurmConfig},
}


def register() -> None:
    """Store the schema in Hydra's ConfigStore, for the YAML files to extend: ``schema`` (the top level,
    ``conf/config.yaml``'s first default), ``schema/<group>`` (``conf/model/*.yaml``: ``- /schema/model@_here_``)
    and, where options differ in their keys, ``schema/<group>/<option>`` (``- /schema/dataset/cifar10@_here_``)."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    for f in dataclasses.fields(Config):
        cls = dataclass_of(f.type)
        if f.default is not MISSING or cls is None:  # not a config group of conf/
            continue
        for option, node in OPTION_SCHEMAS.get(f.name, {}).items():
            cs.store(group=f"schema/{f.name}", name=option, node=node)
        if f.name not in OPTION_SCHEMAS:
            cs.store(group="schema", name=f.name, node=cls)


# ---------------------------------------------------------------------------------------------------
# reading the schema


@dataclass(frozen=True)
class Key:
    """One leaf key of the schema: its dotted path, field and the metadata in force (a group's applied)."""

    path: str
    field: dataclasses.Field
    trajectory: bool
    names_run: bool
    replicate: bool

    def meta(self, name: str) -> Any:
        return self.field.metadata.get(name)


def schema_of(group_name: str, option_name: Any = None) -> type | None:
    """The dataclass of a top-level group (the option's own one when its keys differ by option)."""
    options = OPTION_SCHEMAS.get(group_name)
    if options is not None and option_name in options:
        return options[option_name]
    fields = {f.name: f for f in dataclasses.fields(Config)}
    node = fields[group_name].type if group_name in fields else None
    return dataclass_of(node)


def field_type(f: dataclasses.Field) -> Any:
    return f.type


def dataclass_of(tp: Any) -> type | None:
    """The dataclass inside ``tp`` (``X``, ``X | None``), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in getattr(tp, "__args__", ()):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _walk(cls: type, prefix: str, inherited: dict[str, bool]) -> Iterator[Key]:
    for f in dataclasses.fields(cls):
        meta = {k: f.metadata.get(k, inherited[k]) for k in ("trajectory", "names_run")}
        meta = {k: inherited[k] and v for k, v in meta.items()}
        meta["replicate"] = bool(f.metadata.get("replicate"))
        path = f"{prefix}{f.name}"
        inner = dataclass_of(field_type(f))
        yield Key(path, f, **meta)
        if inner is not None:
            yield from _walk(inner, path + ".", meta)


def all_keys() -> list[Key]:
    """Every key of every option of every group (a key of several options once), in schema order."""
    seen: dict[str, Key] = {}
    inherited = dict(trajectory=True, names_run=True)
    for f in dataclasses.fields(Config):
        top = {k: f.metadata.get(k, True) for k in ("trajectory", "names_run")}
        classes = list(dict.fromkeys(OPTION_SCHEMAS.get(f.name, {}).values())) or [
            dataclass_of(field_type(f))
        ]
        if classes == [None]:
            key_ = Key(f.name, f, top["trajectory"], top["names_run"], bool(f.metadata.get("replicate")))
            seen.setdefault(f.name, key_)
            continue
        seen.setdefault(f.name, Key(f.name, f, top["trajectory"], top["names_run"], False))
        for cls in classes:
            for k in _walk(cls, f.name + ".", {n: inherited[n] and top[n] for n in inherited}):
                seen.setdefault(k.path, k)
    return list(seen.values())


def _is_group(k: Key) -> bool:
    return bool(k.field.metadata.get("group"))


def resumable_keys() -> tuple[str, ...]:
    """Keys that may change between a checkpoint and its resumption (``trajectory=False``): a whole
    group as ``group.*``, else the key itself."""
    keys = all_keys()
    out = [f"{k.path}.*" if _is_group(k) else k.path for k in keys if not k.trajectory]
    # a key under a group already listed as group.* adds nothing
    groups = tuple(k[:-1] for k in out if k.endswith(".*"))
    return tuple(k for k in out if k.endswith(".*") or not k.startswith(groups))


def unnamed_keys() -> list[str]:
    """Keys that never name the run directory (``names_run=False``): Hydra's ``override_dirname``
    ``exclude_keys``. Hydra matches them exactly, so a group contributes its name and every key."""
    return [k.path for k in all_keys() if not k.names_run]


def replicate_keys() -> list[str]:
    """Seeds: runs differing only in these are replicates of one experiment."""
    return [k.path for k in all_keys() if k.replicate]


register()
