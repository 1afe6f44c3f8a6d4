"""The ``pe`` group against the encoding library: which encodings exist (the ConfigStore's ``pe/<name>``
nodes) and the one validation of a job's encoding, which returns the resolved ``RopeSpec``."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from omegaconf import OmegaConf

from rope_ext import schema
from rope_ext.encoding import registry
from rope_ext.encoding import spec as rotary
from rope_ext.errors import ConfigError


def encoding_names() -> list[str]:
    """Every encoding a job may name as ``pe=<name>`` (``none`` included)."""
    return list(registry.names())


def pe_options(pe: Any) -> dict[str, Any]:
    """The non-null ``pe`` keys of the schema other than ``name``: what ``create_vit`` takes as
    ``pe_options`` (keys the schema lacks are ``check_keys``'s to refuse)."""
    known = {f.name for f in dataclasses.fields(schema.PEConfig)} - {"name"}
    plain = OmegaConf.to_container(pe, resolve=True) if OmegaConf.is_config(pe) else dict(pe)
    return {k: v for k, v in plain.items() if k in known and v is not None}


def resolve_pe(pe: Any, head_dim: int | None) -> rotary.RopeSpec:
    """The job's encoding checked by the library's rules and resolved (every default filled in);
    ConfigError naming the ``pe.*`` key, its value and what is allowed. Checked once per process: the
    command's check and the job's ``resolve`` of the same encoding share the result."""
    options = pe_options(pe)
    memo_key = (str(pe["name"]), json.dumps(options, sort_keys=True, default=str), head_dim)
    if memo_key not in _RESOLVED:
        try:
            _RESOLVED[memo_key] = rotary.validate_pe(
                pe["name"], options, head_dim=head_dim, prefix="pe.", name_key="pe.name"
            )
        except ValueError as err:
            raise ConfigError(f"{err}.") from None
    return _RESOLVED[memo_key]


# (name, options, head_dim) -> the resolved spec (frozen): a sweep's jobs and a run's two checks share it
_RESOLVED: dict[tuple[str, str, int | None], rotary.RopeSpec] = {}


def spec_of(pe: Any) -> rotary.RopeSpec:
    """The frozen ``RopeSpec`` of a resolved ``pe`` group (``config.resolve``'s ``Config.pe``), without
    validating again: what ``create_vit(pe=...)`` takes."""
    fields = {f.name for f in dataclasses.fields(rotary.RopeSpec)}
    values = {k: v for k, v in dataclasses.asdict(pe).items() if k in fields}
    augment = values.pop("augment", None)
    return rotary.RopeSpec(**values, augment=rotary.Augment(**augment) if augment is not None else None)
