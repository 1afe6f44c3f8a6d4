"""The configuration of a job: the one check, the Hydra plumbing, and the typed result.

* ``config.check``: the generic schema checker (keys, types, choices, ranges) of ``rope_ext.schema``;
* ``config.pe``: the ``pe`` group against the encoding library (the one validation of an encoding);
* ``config.rules``: ``validate(cfg)``, every rule across keys (a dataset's own rules are its registry
  entry's, ``rope_ext.data``);
* ``config.compose``: where ``conf/`` is, resolvers, ConfigStore nodes from the registries, ``composer``;
* ``config.sweep``: a multirun's jobs, as Hydra's basic sweeper expands them;
* ``config.command``: ``check_command(argv)``, a ``train.py`` command checked before Hydra writes anything;
* ``config.resolve``: ``resolve(cfg) -> schema.Config``, validation's typed, resolved result.

Errors are ``rope_ext.errors.ConfigError``: one paragraph naming key, value and what is allowed.
Importing this package registers the schema, the generated nodes and the OmegaConf resolvers
``conf/config.yaml`` uses, so entry points and tests that compose the config import it first.
"""

from rope_ext.config.check import allowed, check_keys, check_values
from rope_ext.config.command import check_command, check_path
from rope_ext.config.compose import CONF, compose_error, composer, register_nodes, register_resolvers, slug
from rope_ext.config.pe import encoding_names, pe_options, resolve_pe, spec_of
from rope_ext.config.resolve import MODEL_KEYS, resolve, timm_kwargs
from rope_ext.config.rules import eval_sizes, head_dim, validate
from rope_ext.config.sweep import check_jobs, list_jobs
from rope_ext.errors import ConfigError
from rope_ext.util import is_int, is_number, select

__all__ = [
    "CONF",
    "MODEL_KEYS",
    "ConfigError",
    "allowed",
    "check_command",
    "check_jobs",
    "check_keys",
    "check_path",
    "check_values",
    "compose_error",
    "composer",
    "encoding_names",
    "eval_sizes",
    "head_dim",
    "is_int",
    "is_number",
    "list_jobs",
    "pe_options",
    "register_nodes",
    "register_resolvers",
    "resolve",
    "resolve_pe",
    "select",
    "slug",
    "spec_of",
    "timm_kwargs",
    "validate",
]
