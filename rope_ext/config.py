"""The one check of a job's config, and the helpers that read it.

``validate(cfg)`` is everything a run checks before it does any work, each rule once: unknown keys and
the values of every key against the schema (``rope_ext.schema``: types, choices, ranges, finite
floats, memory bounds), then what a dataclass cannot say (rules across keys, the encoding's options
through ``rotary.validate_pe``, the run directory's name). ``check_command(argv)`` composes the config
of a ``train.py`` command with Hydra's compose API and validates it (every job of a sweep) before Hydra
writes anything. Errors are ``ConfigError``: one paragraph naming key, value and what is allowed.

Importing this module registers the schema and the OmegaConf resolvers ``conf/config.yaml`` uses
(``rope_ext.slug``, ``rope_ext.unnamed_keys``), so ``train.py`` and tests that compose the config import
it first.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import logging
import math
import re
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from rope_ext import schema

# The encodings' names, options and checks live in rope_ext.encoding.rotary alone
from rope_ext.encoding.spec import is_int, is_number, validate_pe  # is_*: the library's, one definition

log = logging.getLogger(__name__)

# The one place that knows where conf/ is: inside the package (a link to the repository's conf/ in a
# checkout; the copied files in an installed package, pyproject's package-data)
CONF = Path(__file__).resolve().parent / "conf"
# keys of the model group that are not timm keyword arguments
MODEL_KEYS = ("name", "arch", "input_size", "pretrained", "checkpoint", "pos_embed")


class ConfigError(ValueError):
    """A bad configuration, found before any work starts. The message names key, value and what is allowed."""

    @classmethod
    def bad_value(cls, key: str, value: Any, allowed: str, why: str = "") -> ConfigError:
        reason = f" ({why})" if why else ""
        return cls(f"{key}={value!r} is not allowed{reason}; allowed: {allowed}.")


def slug(text: Any) -> str:
    """A directory name from an override string: safe characters only, at most ~100 characters."""
    text = "" if text is None else str(text)
    safe = re.sub(r"[^A-Za-z0-9._=,+\-]+", "_", text).strip("_.") or "default"
    if len(safe) > 100:
        safe = safe[:88] + "-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return safe


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("rope_ext.slug"):
        OmegaConf.register_new_resolver("rope_ext.slug", slug)
    if not OmegaConf.has_resolver("rope_ext.unnamed_keys"):
        OmegaConf.register_new_resolver("rope_ext.unnamed_keys", schema.unnamed_keys)


register_resolvers()


def select(node: Any, key: str, default: Any = None) -> Any:
    """``OmegaConf.select`` that also works on plain dicts and tolerates missing keys."""
    if isinstance(node, DictConfig):
        return OmegaConf.select(node, key, default=default)
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def head_dim(model: Any) -> int | None:
    """The attention head dimension ``embed_dim // num_heads`` (None when either is not a positive int)."""
    embed, heads = select(model, "embed_dim"), select(model, "num_heads")
    if is_int(embed) and is_int(heads) and heads > 0:
        return embed // heads
    return None


# ---------------------------------------------------------------------------------------------------
# the schema's own rules: keys, types, choices, ranges


def _keys(node: Any) -> list[str]:
    return [str(k) for k in node] if isinstance(node, DictConfig | Mapping) else []


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(type without ``| None``, whether None is allowed)."""
    args = getattr(tp, "__args__", ())
    if isinstance(tp, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def allowed(f: dataclasses.Field) -> str:
    """What a field allows, in words."""
    tp, nullable = _base_type(f.type)
    is_list = getattr(tp, "__origin__", None) is list
    words = _kind(tp.__args__[0] if is_list else tp, f.metadata)
    if f.metadata.get("choices"):
        words = ", ".join(map(str, f.metadata["choices"]))
    if is_list:
        words = f"a list, each item {words}"
    return words + (", or null" if nullable else "")


def _kind(tp: Any, meta: Mapping[str, Any]) -> str:
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a non-empty string"
    bounds = []
    if meta.get("ge") is not None:
        bounds.append(f">= {_num(meta['ge'])}")
    if meta.get("gt") is not None:
        bounds.append(f"> {_num(meta['gt'])}")
    if meta.get("le") is not None:
        bounds.append(f"<= {_num(meta['le'])}")
    if meta.get("lt") is not None:
        bounds.append(f"< {_num(meta['lt'])}")
    noun = "an integer" if tp is int else "a finite number" if tp is float else "a value"
    return noun + (" " + " and ".join(bounds) if bounds else "")


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _scalar_ok(tp: Any, value: Any, meta: Mapping[str, Any]) -> bool:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = is_int(value)
    elif tp is float:
        ok = is_number(value)
    elif tp is str:
        ok = isinstance(value, str) and value != ""  # an empty string is no value (null is the default)
    else:
        return True
    if ok and meta.get("choices") is not None:
        ok = value in meta["choices"]
    if ok and tp in (int, float):
        ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
        ok = (
            (ge is None or value >= ge)
            and (gt is None or value > gt)
            and (le is None or value <= le)
            and (lt is None or value < lt)
        )
    return ok


_UNRESOLVED = object()


def _get(node: Any, name: str) -> Any:
    """``node[name]``, or ``_UNRESOLVED`` for a ``${hydra:...}`` value of a config composed without its
    Hydra node (a tool's or a test's): Hydra fills those in for a run."""
    if not isinstance(node, DictConfig | Mapping):
        return None
    try:
        return node.get(name)
    except InterpolationResolutionError as err:
        if "HydraConfig was not set" in str(err):
            return _UNRESOLVED
        raise


def _check_node(node: Any, cls: type, prefix: str) -> None:
    """Every value of ``node`` is what its field of ``cls`` allows."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in fields.items():
        path = f"{prefix}{name}"
        value = _get(node, name)
        if value is _UNRESOLVED:
            continue
        tp, nullable = _base_type(f.type)
        if value is None:
            if not nullable:
                raise ConfigError.bad_value(path, value, allowed(f))
            continue
        inner = schema.dataclass_of(tp)
        if inner is not None:
            if not isinstance(value, DictConfig | Mapping):
                raise ConfigError.bad_value(
                    path, _plain(value), f"a mapping with keys {', '.join(_names(inner))}"
                )
            _check_node(value, inner, path + ".")
        elif getattr(tp, "__origin__", None) is list:
            if not isinstance(value, ListConfig | list | tuple):
                raise ConfigError.bad_value(path, _plain(value), allowed(f))
            for item in value:
                if not _scalar_ok(tp.__args__[0], item, f.metadata):
                    raise ConfigError.bad_value(path, _plain(value), allowed(f))
        elif not _scalar_ok(tp, value, f.metadata):
            raise ConfigError.bad_value(path, value, allowed(f))


def _find_unknown(node: Any, cls: type, prefix: str, out: list[tuple[str, Any, list[str]]]) -> None:
    """(dotted key, value, the keys its node allows) of every key under ``node`` not in ``cls``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in _keys(node):
        f = fields.get(name)
        if f is None:
            out.append((f"{prefix}{name}", _get(node, name), [f"{prefix}{k}" for k in fields]))
            continue
        inner = schema.dataclass_of(_base_type(f.type)[0])
        value = _get(node, name) if inner is not None else None
        if isinstance(value, DictConfig | Mapping):
            _find_unknown(value, inner, f"{prefix}{name}.", out)


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_keys(
    found: list[tuple[str, Any, list[str]]], typed: Mapping[str, str] | None = None
) -> ConfigError:
    """One paragraph naming every unknown key, its value (as typed, when given) and the closest known key."""
    parts, allowed_keys = [], []
    for key, value, known in found:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "no similar key"
        shown = str(typed[key]) if typed and key in typed else repr(_plain(value))
        parts.append(f"{key}={shown} ({hint})")
        allowed_keys += [k for k in known if k not in allowed_keys]
    plural = "s" if len(found) > 1 else ""
    return ConfigError(
        f"unknown key{plural} {'; '.join(parts)}; allowed: the keys of rope_ext/schema.py "
        f"({', '.join(allowed_keys)}). Unknown keys are refused rather than silently ignored."
    )


def check_keys(cfg: Any) -> None:
    """Every key of the config is a key of ``rope_ext.schema.Config`` (Hydra's ``+key=value`` adds keys
    OmegaConf's struct mode lets through); one ConfigError names them all (works on a plain dict too)."""
    unknown: list[tuple[str, Any, list[str]]] = []
    top_node = {k: _get(cfg, k) for k in _keys(cfg) if k not in schema.OPTION_SCHEMAS and k != "hydra"}
    _find_unknown(top_node, schema.Config, "", unknown)
    for group_name, options in schema.OPTION_SCHEMAS.items():
        node = _get(cfg, group_name)
        if isinstance(node, DictConfig | Mapping) and select(node, "name") in options:
            _find_unknown(node, options[node["name"]], group_name + ".", unknown)
    if unknown:
        raise _unknown_keys(unknown)


def check_values(cfg: Any) -> None:
    """Every value against its field of ``rope_ext.schema.Config``: type, choices, range, finite."""
    for f in dataclasses.fields(schema.Config):
        value = _get(cfg, f.name)
        if value is _UNRESOLVED:
            continue
        cls = schema.dataclass_of(f.type)
        if cls is None:
            if not _scalar_ok(f.type, value, f.metadata):
                raise ConfigError.bad_value(f.name, value, allowed(f))
            continue
        options = schema.OPTION_SCHEMAS.get(f.name)
        if options is not None:
            name = select(value, "name")
            if name not in options:
                raise ConfigError.bad_value(f"{f.name}.name", name, ", ".join(options))
            cls = options[name]
        _check_node(value, cls, f.name + ".")


# ---------------------------------------------------------------------------------------------------
# rules across keys


def validate(cfg: Any, *, multirun: bool = False) -> None:
    """Every check that can run before any data or model is built; raises ConfigError.

    ``cfg``: a job's composed task config (or a plain mapping of it); ``multirun``: the job is one of a
    sweep (``launcher`` applies)."""
    try:
        _validate(cfg, multirun)
    except (OmegaConfBaseException, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{_one_line(err)}.") from None


def _validate(cfg: Any, multirun: bool) -> None:
    if isinstance(cfg, DictConfig) and "hydra" in cfg:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)  # what its ${hydra:...} interpolations read
    from rope_ext.safety import check_component

    run_id = _get(cfg, "run_id")
    if run_id is not _UNRESOLVED:  # first: a bad run_id is a path problem before it is a type problem
        check_component("run_id", run_id)
    check_values(cfg)
    model, train = cfg["model"], cfg["train"]

    if model["embed_dim"] % model["num_heads"]:
        raise ConfigError.bad_value(
            "model.embed_dim",
            model["embed_dim"],
            f"a multiple of model.num_heads={model['num_heads']}",
            "each head gets an equal share",
        )
    _check_arch(model["arch"])
    checkpoint = model["checkpoint"]
    if checkpoint is not None and not Path(str(checkpoint)).expanduser().is_file():
        raise ConfigError.bad_value(
            "model.checkpoint", checkpoint, "null or an existing .pth/.safetensors file"
        )
    try:
        validate_pe(
            select(cfg, "pe.name"),
            pe_options(cfg["pe"]),
            head_dim=head_dim(model),
            prefix="pe.",
            name_key="pe.name",
        )
    except ValueError as err:
        raise ConfigError(f"{err}.") from None

    if train["min_lr"] > train["lr"]:
        raise ConfigError.bad_value(
            "train.min_lr", train["min_lr"], f"a number in [0, train.lr={train['lr']}]"
        )
    _check_sizes(cfg)
    dataset = cfg["dataset"]
    for key in ("mean", "std"):
        values = _plain(dataset[key])
        if len(values) != 3 or (key == "std" and not all(v > 0 for v in values)):
            what = "positive numbers" if key == "std" else "numbers"
            raise ConfigError.bad_value(f"dataset.{key}", values, f"3 finite {what}, one per channel (RGB)")
    if dataset["name"] == "imagefolder":  # its folder itself is checked where the data is (the job's node)
        if dataset["root"] in (None, ""):
            raise ConfigError.bad_value(
                "dataset.root", dataset["root"], "the folder that holds train/<class>/ and val/<class>/"
            )
        if dataset["in_memory"]:
            raise ConfigError.bad_value(
                "dataset.in_memory",
                True,
                "false for dataset=imagefolder (images go through DataLoader workers)",
            )
    workers = dataset["num_workers"]
    if workers != "auto" and not (is_int(workers) and 0 <= workers <= 1024):
        raise ConfigError.bad_value("dataset.num_workers", _plain(workers), "auto or an integer in [0, 1024]")
    betas = select(cfg, "optimizer.betas")
    if betas is not None and not (len(betas) == 2 and all(0 <= b < 1 for b in betas)):
        raise ConfigError.bad_value(
            "optimizer.betas", _plain(betas), "two numbers in [0, 1), e.g. [0.9, 0.999]"
        )
    _check_launcher(cfg, multirun)
    from rope_ext import recipe  # imports this module

    recipe.check(cfg)
    check_keys(cfg)  # last, as a value error of a known key says more than a typo beside it


def _check_arch(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        raise ConfigError.bad_value(
            "model.arch",
            arch,
            "a timm VisionTransformer name, e.g. vit_tiny_patch16_224 (timm.list_models('vit_*'))",
        )


def _check_sizes(cfg: Any) -> None:
    """Train and evaluation sizes are multiples of the patch size and give at most MAX_TOKENS patches."""
    patch = cfg["model"]["patch_size"]
    size = cfg["dataset"]["input_size"]
    sizes = eval_sizes(size, patch, _plain(select(cfg, "eval.input_sizes")))
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


def _check_launcher(cfg: Any, multirun: bool) -> None:
    name = select(cfg, "launcher.name")
    if multirun and name == "slurm" and select(cfg, "hardware.accelerator") == "auto":
        # SLURM allocates GPUs only when asked: auto cannot say whether to ask (issue 20, item 5)
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


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


# ---------------------------------------------------------------------------------------------------
# a command, checked before Hydra writes anything


@contextmanager
def composer(conf_dir: Path = CONF) -> Iterator[Any]:
    """A function composing a job's full config (``hydra`` node included) from its overrides with Hydra's
    compose API, as ``@hydra.main`` would; it sets ``HydraConfig`` so ``${hydra:...}`` resolves. Errors of
    composition (unknown key, wrong type, no such option, unparsable override) become ConfigErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    def compose_job(overrides: list[str]) -> DictConfig:
        try:
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        except Exception as err:  # noqa: BLE001  (Hydra's and OmegaConf's errors: one paragraph each)
            raise compose_error(err, overrides) from None
        HydraConfig.instance().set_config(cfg)
        return cfg

    try:
        with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
            yield compose_job
    except Exception as err:  # noqa: BLE001
        if isinstance(err, ConfigError):
            raise
        raise compose_error(err, []) from None


def compose_error(err: BaseException, overrides: list[str]) -> ConfigError:
    """Hydra's or OmegaConf's composition error as one paragraph naming key, value and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = err.__cause__ or err.__context__
    if isinstance(err, OverrideParseException):
        return ConfigError(
            f"the override {err.override!r} cannot be parsed ({_one_line(err)}); allowed: key=value in "
            "Hydra's override grammar (quote values with brackets or commas)."
        )
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        # Hydra lists only a group's top-level options; presets live in subfolders (experiment=study/x)
        options = list(err.options or [])
        if not options and group and (CONF / group).is_dir():
            found = [p.relative_to(CONF / group).with_suffix("") for p in (CONF / group).rglob("*.yaml")]
            # arms and tuned learning rates are added to a preset (+experiment/arm=...), not chosen as one
            options = [str(p) for p in found if p.parts[0] not in ("arm", "tuned")]
        if options:
            return ConfigError.bad_value(
                group or "config", option, ", ".join(sorted(options)), "no such option"
            )
    if isinstance(cause, ValidationError | ConfigKeyError | ConfigAttributeError) and cause.full_key:
        key = re.sub(r"\[\d+\]$", "", str(cause.full_key))
        given = {o.lstrip("+~").split("=", 1)[0]: o.split("=", 1)[-1] for o in overrides if "=" in o}
        value = given.get(key)
        if value is None:
            found = re.search(r"Value '(.*?)'", str(cause))
            value = found.group(1) if found else "?"
        known = {k.path: k for k in schema.all_keys()}
        if isinstance(cause, ValidationError) and key in known:
            return ConfigError.bad_value(key, value, allowed(known[key].field))
        parent = key.rpartition(".")[0]
        siblings = [k for k in known if k.rpartition(".")[0] == parent]
        return _unknown_keys([(key, None, siblings)], {key: value})
    return ConfigError(f"{_one_line(err)}.")


def check_command(argv: list[str], conf_dir: Path = CONF) -> None:
    """Compose the config of ``python train.py <argv>`` (every job of a sweep) and validate it, raising
    ConfigError; commands that run no job (``--help``, ``--cfg``, another config) are left to Hydra."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or args.cfg:
        return
    if args.config_name or args.config_path or args.config_dir or args.experimental_rerun:
        return
    overrides = list(args.overrides)
    if not args.multirun:
        with composer(conf_dir) as compose_job:
            validate(compose_job(overrides))
        return
    from rope_ext.jobs import list_jobs

    jobs = list_jobs(overrides, conf_dir)
    own = [o for o in overrides if o.lstrip("+~").startswith("hydra.")]
    with composer(conf_dir) as compose_job:
        for i, job in enumerate(jobs):
            try:
                cfg = compose_job([*job, *own])
                validate(cfg, multirun=True)
                check_path("hydra.sweep.subdir", cfg.hydra.sweep.subdir)
            except ConfigError as err:
                raise ConfigError(f"job #{i} of the sweep's {len(jobs)} ({' '.join(job)}): {err}") from None


def check_path(key: str, value: Any) -> None:
    """A relative path below its parent: every component a safe directory name (no ``..``)."""
    from rope_ext.safety import COMPONENT_ALLOWED, check_component

    text = str(value)
    try:
        if text.startswith(("/", "~")):
            raise ConfigError(text)
        for part in text.split("/"):
            check_component(key, part)
    except ConfigError:
        raise ConfigError.bad_value(
            key, text, f"a relative path, each component {COMPONENT_ALLOWED}", "it names the job directory"
        ) from None


# ---------------------------------------------------------------------------------------------------
# helpers that read a validated config


def pe_options(pe: Any) -> dict[str, Any]:
    """The non-null ``pe`` keys of the schema other than ``name``: what ``create_vit`` takes as
    ``pe_options`` (keys the schema lacks are ``check_keys``'s to refuse)."""
    known = {f.name for f in dataclasses.fields(schema.PEConfig)} - {"name"}
    return {k: v for k, v in _plain(pe).items() if k in known and v is not None}


def timm_kwargs(model: Any) -> dict[str, Any]:
    """The model group's timm keyword arguments (every non-null key that is not one of MODEL_KEYS)."""
    kwargs = {k: v for k, v in _plain(model).items() if k not in MODEL_KEYS and v is not None}
    if select(model, "pos_embed") is not None:
        kwargs["pos_embed"] = model["pos_embed"]
    return kwargs


def eval_sizes(input_size: int, patch: int, configured: Any = None) -> list[int]:
    """Resolution-extrapolation sizes: 1×, 1.25×, 1.5×, 2× the train size rounded to patch multiples."""
    if configured is not None:
        sizes = [int(s) for s in configured]
    else:
        sizes = [max(patch, round(input_size * f / patch) * patch) for f in (1.0, 1.25, 1.5, 2.0)]
    return sorted(set(sizes), key=sizes.index)
