"""The dataset registry: one ``DatasetInfo`` per dataset, registered by its own module.

A dataset is one module (``rope_ext/data/<name>.py``, or a user's module named by ``plugins=[...]``) that
defines its schema class (a ``DatasetConfig`` subclass: its keys, types, ranges) and a builder, and calls
``register(DatasetInfo(...))``. The harness reads everything else from here: the schema's options of the
``dataset`` group, the ConfigStore node ``dataset/<name>`` of datasets without a YAML file, the rules
across keys, the recipe's per-image datasets, and the report's chance level.
"""

import copyreg
import dataclasses
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rope_ext.errors import ConfigError
from rope_ext.fields import MAX_SIZE_PX, key

__all__ = [
    "DataAugmentConfig",
    "DatasetConfig",
    "DatasetInfo",
    "SCHEMAS",
    "chance_level",
    "get",
    "names",
    "per_image_names",
    "register",
]


class SchemaClass(type):
    """The metaclass of the datasets' schema classes: such a class pickles as (the module it came from,
    its name) and is looked up again by importing that module, a plugin's ``.py`` file included. The
    config of a job that a launcher starts in another process (submitit, SLURM) holds these classes;
    the new process imports the plugin before it reads the config."""


def schema_class(origin: str, qualname: str) -> type:
    """The class ``qualname`` of the module ``origin`` (a dotted name or a plugin's ``.py`` path)."""
    from rope_ext import plugins

    node: object = sys.modules[plugins.load(origin)]
    for part in qualname.split("."):
        node = getattr(node, part)
    return node  # type: ignore[return-value]


def _reduce_schema_class(cls: type) -> tuple[object, tuple[str, str]]:
    from rope_ext import plugins

    return schema_class, (plugins.origin_of(cls.__module__), cls.__qualname__)


copyreg.pickle(SchemaClass, _reduce_schema_class)


@dataclass
class DataAugmentConfig(metaclass=SchemaClass):
    crop_padding: int = key(0, ge=0, le=MAX_SIZE_PX, help="random translation in native pixels; 0 disables")
    hflip: bool = key(False)


@dataclass
class DatasetConfig(metaclass=SchemaClass):
    """``conf/dataset``: the keys every dataset has (scikit-learn's digits has no more)."""

    name: str = key()
    input_size: int = key(ge=1, le=MAX_SIZE_PX, help="the size trained at, px")
    subset: int | None = key(None, ge=1, help="N: keep the first N train and the first N test images")
    val_fraction: float = key(0.1, ge=0, lt=1, help="held out of the training images for validation")
    mean: list[float] = key(factory=lambda: [0.5, 0.5, 0.5], help="per channel (3 values)")
    std: list[float] = key(factory=lambda: [0.5, 0.5, 0.5], help="per channel (3 positive values)")
    augment: DataAugmentConfig = key(factory=DataAugmentConfig)
    in_memory: bool = key(True, trajectory=False, help="tensors on the device, batches sliced there")
    # an integer >= 0, or auto (checked by rope_ext.config: OmegaConf has no int-or-str type)
    num_workers: Any = key(0, trajectory=False, help="DataLoader workers when in_memory=false; auto")


# (train, test, number of classes): raw images at their native size (uint8 or float CHW) and int64 labels
Built = tuple[Any, Any, int]


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset and what the harness needs to know about it.

    ``build(dataset)``: the ``dataset`` node -> (train, test, classes). ``num_classes``: fixed, or None
    when the config or the files decide. ``chance``: top-1 chance level in % (None: 100 / num_classes when
    that is fixed). ``per_image``: images are transformed one by one in DataLoader workers (the recipe's
    per-image augmentations apply) instead of batches on the device. ``rules(cfg)``: checks across keys
    (ConfigError). ``validation(train, n, dataset)``: generates its own validation split of n images
    instead of holding some out of train. ``finish(train, val, dataset, recipe)``: wraps the splits after
    the validation split (per-image transforms). ``node``: the values of the generated ConfigStore node
    ``dataset/<name>`` (used when ``conf/dataset/<name>.yaml`` does not exist)."""

    name: str
    schema: type
    build: Callable[[Any], Built]
    num_classes: int | None = None
    chance: float | None = None
    per_image: bool = False
    rules: Callable[[Any], None] | None = None
    validation: Callable[[Any, int, Any], Any] | None = None
    finish: Callable[[Any, Any, Any, Any], tuple[Any, Any]] | None = None
    node: dict[str, Any] = field(default_factory=lambda: {"input_size": "${model.input_size}"})
    summary: str = ""


_REGISTRY: dict[str, DatasetInfo] = {}
# name -> schema class: the schema's options of the dataset group (this very dict, kept in step)
SCHEMAS: dict[str, type] = {}


def register(info: "DatasetInfo") -> "DatasetInfo":
    """Add a dataset (a module registering twice, e.g. imported again, replaces its entry)."""
    if not issubclass(info.schema, DatasetConfig):
        raise TypeError(
            f"dataset {info.name!r}: its schema {info.schema.__name__} must subclass DatasetConfig"
        )
    _resolve_annotations(info.schema)
    _REGISTRY[info.name] = info
    SCHEMAS[info.name] = info.schema
    return info


def _resolve_annotations(cls: type) -> None:
    """Field types as types, not strings (a module with ``from __future__ import annotations``): the
    schema's checker reads ``Field.type``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        for arg in (f.type, *getattr(f.type, "__args__", ())):
            if dataclasses.is_dataclass(arg):
                _resolve_annotations(arg)


def get(name: str) -> DatasetInfo:
    """The registered dataset ``name``; ConfigError naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError.bad_value(
            "dataset.name", name, ", ".join(names()) + " (or a plugin's: plugins=[...])"
        ) from None


def names() -> list[str]:
    return list(_REGISTRY)


def per_image_names() -> tuple[str, ...]:
    """Datasets augmented per image in DataLoader workers (the recipe's per-image augmentations)."""
    return tuple(n for n, info in _REGISTRY.items() if info.per_image)


def chance_level(name: str) -> float | None:
    """Top-1 chance level (%) of a registered dataset whose class count is fixed, else None."""
    info = _REGISTRY.get(name)
    if info is None:
        return None
    if info.chance is not None:
        return info.chance
    return 100.0 / info.num_classes if info.num_classes else None
