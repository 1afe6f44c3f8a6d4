"""The config groups ``python train.py --help`` lists: the ones a user picks, each with its options.

Hydra's own list (``$APP_CONFIG_GROUPS`` in a help template) holds every group it finds, internal ones
too: the schema's nodes (``schema/*``), the learning rates ``rope_ext.tune`` writes
(``experiment/tuned/<study>``), and presets as ``experiment/study: ...`` where they are chosen as
``experiment=study/<name>``. ``config_groups`` (the resolver ``rope_ext.config_groups`` of the help template
in ``conf/config.yaml``) lists the groups a user picks as they are typed; with ``ROPE_EXT_HELP=all`` in
the environment it lists every group, as Hydra would.
"""

from __future__ import annotations

import os

# the groups a user picks (group=option), in the order of conf/config.yaml's defaults
USER_GROUPS = ("model", "pe", "dataset", "optimizer", "hardware", "launcher", "recipe")
ARMS = "experiment/arm"  # +experiment/arm=<name>: one compared configuration, added to a study preset
INTERNAL = ("schema", "experiment/tuned")  # the schema's nodes; the lrs rope_ext.tune writes
ENV_VAR = "ROPE_EXT_HELP"


def config_groups() -> str:
    """The help's list of groups and options, from Hydra's running instance (plugins' options included);
    empty where no Hydra instance runs (a config resolved elsewhere)."""
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return ""
    hydra = GlobalHydra.instance().hydra
    if os.environ.get(ENV_VAR) == "all":
        groups = sorted(hydra.list_all_config_groups())
        return "\n".join(
            f"{g}: {', '.join(sorted(hydra.config_loader.get_group_options(g)))}" for g in groups
        )
    # only the groups shown are listed (Hydra's loader searches every config source for each group)
    loader = hydra.config_loader
    shown = [*USER_GROUPS, *(f"experiment/{g}" for g in loader.list_groups("experiment"))]
    options = {g: sorted(loader.get_group_options(g)) for g in shown if not internal(g)}
    present = [r for r in INTERNAL if r.rpartition("/")[2] in loader.list_groups(r.rpartition("/")[0])]
    return "\n".join(user_lines(options, present))


def user_lines(options: dict[str, list[str]], internal_roots: list[str]) -> list[str]:
    """``group: a, b, c`` per user group, the presets by folder, the arms, and where the internal groups
    are (``options``: the groups shown -> their options; ``internal_roots``: the ``INTERNAL`` present)."""
    lines = [f"{g}: {', '.join(options[g])}" for g in USER_GROUPS if options.get(g)]
    folders = sorted(g for g in options if g.startswith("experiment/") and g != ARMS and options[g])
    if folders:
        lines.append("experiment=<folder>/<name> (presets, conf/experiment/README.md):")
        lines += [f"  {g.split('/', 1)[1]}/: {', '.join(options[g])}" for g in folders]
    if options.get(ARMS):
        lines.append(f"+{ARMS} (an arm, added to a study preset): {', '.join(options[ARMS])}")
    if internal_roots:
        roots = ", ".join(f"{root}/*" for root in internal_roots)
        lines.append(f"Internal groups ({roots}) are listed by: {ENV_VAR}=all python train.py --help")
    return lines


def internal(group: str) -> bool:
    """``group`` is one of ``INTERNAL`` or below one."""
    return any(group == r or group.startswith(r + "/") for r in INTERNAL)


def register() -> None:
    """Register the resolver ``rope_ext.config_groups`` (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("rope_ext.config_groups"):
        OmegaConf.register_new_resolver("rope_ext.config_groups", config_groups)
