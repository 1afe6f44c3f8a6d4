"""``validate(cfg)``: every check a job runs before any data or model is built, each rule once: the run
directory's name, every value against the schema (``config.check``), then what a dataclass cannot say:
rules across keys, the encoding's options (``config.pe``), the dataset's own rules (its registry entry),
the recipe's, and last unknown keys. Returns the resolved encoding spec."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from rope_ext import recipe, schema
from rope_ext.config.arch import is_timm_model
from rope_ext.config.check import UNRESOLVED, check_keys, check_values, get, plain
from rope_ext.config.pe import resolve_pe
from rope_ext.data import registry as datasets
from rope_ext.encoding.spec import RopeSpec
from rope_ext.errors import ConfigError
from rope_ext.safety import check_component
from rope_ext.util import is_int, select

log = logging.getLogger(__name__)


def validate(cfg: Any, *, multirun: bool = False) -> RopeSpec:
    """Every check that can run before any data or model is built; raises ConfigError. Returns the
    job's resolved encoding (``RopeSpec``).

    ``cfg``: a job's composed task config (or a plain mapping of it); ``multirun``: the job is one of a
    sweep (``launcher`` applies)."""
    try:
        return _validate(cfg, multirun)
    except (OmegaConfBaseException, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{one_line(err)}.") from None


def _validate(cfg: Any, multirun: bool) -> RopeSpec:
    if isinstance(cfg, DictConfig) and "hydra" in cfg:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)  # what its ${hydra:...} interpolations read
    run_id = get(cfg, "run_id")
    if run_id is not UNRESOLVED:  # first: a bad run_id is a path problem before it is a type problem
        check_component("run_id", run_id)
    check_values(cfg)
    _check_model(cfg["model"])
    spec = resolve_pe(cfg["pe"], head_dim(cfg["model"]))
    train = cfg["train"]
    if train["min_lr"] > train["lr"]:
        raise ConfigError.bad_value(
            "train.min_lr", train["min_lr"], f"a number in [0, train.lr={train['lr']}]"
        )
    _check_sizes(cfg)
    _check_ranges(cfg)
    _check_dataset(cfg)
    betas = select(cfg, "optimizer.betas")
    if betas is not None and not (len(betas) == 2 and all(0 <= b < 1 for b in betas)):
        raise ConfigError.bad_value(
            "optimizer.betas", plain(betas), "two numbers in [0, 1), e.g. [0.9, 0.999]"
        )
    _check_launcher(cfg, multirun)
    recipe.check(cfg)
    check_keys(cfg)  # last, as a value error of a known key says more than a typo beside it
    return spec


def head_dim(model: Any) -> int | None:
    """The attention head dimension ``embed_dim // num_heads`` (None when either is not a positive int)."""
    embed, heads = select(model, "embed_dim"), select(model, "num_heads")
    if is_int(embed) and is_int(heads) and heads > 0:
        return embed // heads
    return None


def _check_model(model: Any) -> None:
    if model["embed_dim"] % model["num_heads"]:
        raise ConfigError.bad_value(
            "model.embed_dim",
            model["embed_dim"],
            f"a multiple of model.num_heads={model['num_heads']}",
            "each head gets an equal share",
        )
    if not is_timm_model(str(model["arch"])):
        raise ConfigError.bad_value(
            "model.arch",
            model["arch"],
            "a timm VisionTransformer name, e.g. vit_tiny_patch16_224 (timm.list_models('vit_*'))",
        )
    checkpoint = model["checkpoint"]
    if checkpoint is not None and not _is_weights_file(Path(str(checkpoint)).expanduser()):
        raise ConfigError.bad_value(
            "model.checkpoint",
            checkpoint,
            "null or an existing torch checkpoint (.pth: a zip archive) or .safetensors file",
            "its first bytes are checked before the run directory is written; nothing is unpickled",
        )


def _is_weights_file(path: Path) -> bool:
    """A regular file whose first bytes are torch.save's zip archive (or its legacy pickle's protocol
    byte) or a safetensors header (8-byte length, then a JSON object that fits in the file)."""
    try:
        if not path.is_file():
            return False
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except OSError:
        return False
    if head.startswith((b"PK\x03\x04", b"\x80\x02")):
        return True
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8


def _check_dataset(cfg: Any) -> None:
    """The keys every dataset has, then the dataset's own rules (its registry entry)."""
    dataset = cfg["dataset"]
    for key in ("mean", "std"):
        values = plain(dataset[key])
        if len(values) != 3 or (key == "std" and not all(v > 0 for v in values)):
            what = "positive numbers" if key == "std" else "numbers"
            raise ConfigError.bad_value(f"dataset.{key}", values, f"3 finite {what}, one per channel (RGB)")
    workers = dataset["num_workers"]
    if workers != "auto" and not (is_int(workers) and 0 <= workers <= 1024):
        raise ConfigError.bad_value("dataset.num_workers", plain(workers), "auto or an integer in [0, 1024]")
    rules = datasets.get(dataset["name"]).rules
    if rules is not None:
        rules(cfg)


def _check_sizes(cfg: Any) -> None:
    """Train and evaluation sizes are multiples of the patch size and give at most MAX_TOKENS patches."""
    patch = cfg["model"]["patch_size"]
    size = cfg["dataset"]["input_size"]
    sizes = eval_sizes(size, patch, plain(select(cfg, "eval.input_sizes")))
    for key, value in [("dataset.input_size", size)] + [("eval.input_sizes", s) for s in sizes]:
        if value % patch:
            raise ConfigError.bad_value(key, value, f"multiples of the patch size model.patch_size={patch}")
        if (value // patch) ** 2 > schema.MAX_TOKENS:
            limit = math.isqrt(schema.MAX_TOKENS) * patch
            raise ConfigError.bad_value(
                key,
                value,
                f"at most {limit} px with model.patch_size={patch}",
                f"{(value // patch) ** 2} patches "
                f"per image; the harness's limit is {schema.MAX_TOKENS} (attention memory grows with its square)",
            )


# pe.theta: the frequency base. Below 1 the frequencies grow with the pair index; far above the largest
# grid the slowest pairs never turn (1e6 is 100x the 1e4 of language models); 1e308 overflows its powers.
THETA_RANGE = (1.0, 1e6)
MIN_PATCHES = 2  # per side: a 1x1 grid has a single position, nothing for a position encoding to say


def _check_ranges(cfg: Any) -> None:
    """Values the schema's types allow but that make no experiment: theta, sizes, eval sizes, subset."""
    theta = select(cfg, "pe.theta")
    low, high = THETA_RANGE
    if theta is not None and not low <= theta <= high:
        raise ConfigError.bad_value(
            "pe.theta", theta, f"null (the encoding's default) or a number in [{low:g}, {high:g}]"
        )
    configured = select(cfg, "eval.input_sizes")
    if configured is not None and len(configured) == 0:
        raise ConfigError.bad_value(
            "eval.input_sizes", [], "null (1x, 1.25x, 1.5x, 2x the train size) or a non-empty list"
        )
    patch = cfg["model"]["patch_size"]
    sizes = eval_sizes(cfg["dataset"]["input_size"], patch, plain(configured))
    for key, value in [("dataset.input_size", cfg["dataset"]["input_size"])] + [
        ("eval.input_sizes", s) for s in sizes
    ]:
        if value < MIN_PATCHES * patch:
            raise ConfigError.bad_value(
                key,
                value,
                f"at least {MIN_PATCHES * patch} px ({MIN_PATCHES} patches of model.patch_size={patch} per side)",
                "a 1x1 grid of patches has no positions to encode",
            )
    _check_subset(select(cfg, "dataset.subset"), float(select(cfg, "dataset.val_fraction", 0.0) or 0.0))


def _check_subset(subset: Any, val_fraction: float) -> None:
    """A subset leaves at least one training image, and one validation image when validation is on."""
    if subset is None:
        return
    least = max(2, math.ceil(0.5 / val_fraction)) if val_fraction > 0 else 1
    if subset < least:
        raise ConfigError.bad_value(
            "dataset.subset",
            subset,
            f"null or an integer >= {least} (with dataset.val_fraction={val_fraction:g})",
            "the validation split takes round(val_fraction x subset) images and must leave one on each side",
        )


def _check_launcher(cfg: Any, multirun: bool) -> None:
    name = select(cfg, "launcher.name")
    if multirun and name == "slurm" and select(cfg, "hardware.accelerator") == "auto":
        # SLURM allocates GPUs only when asked: auto cannot say whether to ask
        raise ConfigError.bad_value(
            "hardware.accelerator",
            "auto",
            "hardware=gpu (asks SLURM for hardware.devices GPUs per node) or hardware=cpu (asks for none)",
            "launcher=slurm must know whether to ask the cluster for GPUs",
        )
    if name != "local" and not multirun:
        log.warning(
            "launcher=%s applies to multiruns (python train.py -m ...): this single run runs locally, in this "
            "process",
            name,
        )


def eval_sizes(input_size: int, patch: int, configured: Any = None) -> list[int]:
    """Resolution-extrapolation sizes: 1×, 1.25×, 1.5×, 2× the train size rounded to patch multiples."""
    if configured is not None:
        sizes = [int(s) for s in configured]
    else:
        sizes = [max(patch, round(input_size * f / patch) * patch) for f in (1.0, 1.25, 1.5, 2.0)]
    return sorted(set(sizes), key=sizes.index)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split())
