"""Groups of runs that differ only in seed (the arms of a sweep), their names, and the speed ratios to
``pe=none``.

An arm is named by what sets it apart within its sweep (``name_arms``): the command-line overrides
whose values differ between the sweep's runs, as ``key=value`` (``pe.block=3``; an experiment arm,
``+experiment/arm=axial2_complex``, by its name alone); a sweep of one arm by its variant label
(``axial_block N=3 fast``). Seeds, ``run_id``, the launcher, Hydra's and W&B's keys never name an arm.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rope_ext.encoding.spec import is_int
from rope_ext.report.runs import (
    FIXED_BLOCK,
    FREE_BLOCK,
    IGNORED_LEAF,  # keys that never name an arm: the schema's (names_run=False, replicate)
    IGNORED_TOP,
    SPEEDS,
    VARIANT_ORDER,
    Run,
)
from rope_ext.report.tables import numbers

__all__ = [
    "Group",
    "arm_name",
    "compute_ratios",
    "eval_sizes",
    "group_runs",
    "name_arms",
    "swept",
    "variant_label",
]

# the config keys with a column of their own in report.md; differences elsewhere land in ``other``
SHOWN_CONFIG = frozenset(
    {
        "pe.name",
        "pe.block",
        "pe.impl",
        "pe.mixed",
        "pe.dims",
        "model.name",
        "dataset.name",
        "dataset.input_size",
    }
)


@dataclass
class Group:
    """Runs that differ only in seed."""

    runs: list[Run]
    other: str = ""
    name: str = ""  # the arm's name, unique within its sweep (``group_runs``)

    @property
    def first(self) -> Run:
        """The group's first run (by seed): what its members share is read from it."""
        return self.runs[0]

    def values(self, key: str) -> list[Any]:
        """Metric ``key`` of every run of the group (None where absent)."""
        return [r.metrics.get(key) for r in self.runs]

    def label(self) -> str:
        """The variant and what distinguishes it, e.g. ``axial_block N=3 mixed fast``."""
        return variant_label(self.first)


def variant_label(r: Run) -> str:
    """A run's variant and what distinguishes it, e.g. ``axial_block N=3 mixed fast``."""
    parts = [r.variant]
    if r.variant not in FIXED_BLOCK and r.pe("block") is not None:
        parts.append(f"N={r.pe('block')}")
    if r.pe("mixed"):
        parts.append("mixed")
    if r.pe("impl") and r.variant in FREE_BLOCK:
        parts.append(str(r.pe("impl")))
    if r.pe("dims") == 1:
        parts.append("1-D")
    return " ".join(parts)


def arm_name(group: Group) -> str:
    """The group's arm name (``group_runs`` sets it; the first run's arm label before that)."""
    return group.name or group.first.arm_label or group.first.arm


def _arm_key(key: str) -> bool:
    return key == "experiment/arm" or key.startswith("experiment/tuned/")


def swept(run: Run) -> dict[str, str]:
    """The run's command-line overrides that can set an arm apart, ``{key: value}`` in command order
    (``+``/``~`` prefixes dropped; seeds, ``run_id``, launcher, Hydra and W&B keys left out)."""
    out: dict[str, str] = {}
    for override in run.overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        top = key.split(".")[0].split("/")[0]
        if sep and top not in IGNORED_TOP and key.rsplit(".", 1)[-1] not in IGNORED_LEAF:
            out[key] = value
    return out


def name_arms(runs: Sequence[Run]) -> None:
    """Set each run's ``arm_label``: per sweep, the overrides whose values differ between its runs (the
    module docstring); the run's experiment arm, else its variant label, when none differ."""
    by_sweep: dict[str, list[Run]] = {}
    for run in runs:
        by_sweep.setdefault(run.sweep, []).append(run)
    for members in by_sweep.values():
        maps = [swept(r) for r in members]
        keys = list(dict.fromkeys(k for m in maps for k in m))
        varying = [k for k in keys if len({m.get(k) for m in maps}) > 1]
        for run, m in zip(members, maps):
            parts = [m[k] if _arm_key(k) else f"{k}={m[k]}" for k in varying if k in m]
            run.arm_label = " ".join(parts) or (run.arm if run.arm != run.variant else variant_label(run))


def _speed_key(run: Run) -> tuple[Any, ...]:
    return (run.sweep, run.field_value("model"), run.field_value("input_size"), run.field_value("batch_size"))


def _mean(values: Iterable[Any]) -> float | None:
    nums = numbers(values)
    return statistics.fmean(nums) if nums else None


def compute_ratios(runs: Sequence[Run]) -> None:
    """Fill ``run.ratios``: each speed over the mean of the ok ``none`` runs with the same speed key."""
    by_key: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        if run.status == "ok" and run.variant == "none":
            by_key.setdefault(_speed_key(run), []).append(run)
    baselines = {
        key: {s: _mean(r.metrics.get(s) for r in group) for s in SPEEDS} for key, group in by_key.items()
    }
    for run in runs:
        base = baselines.get(_speed_key(run), {})
        for speed in SPEEDS:
            value, ref = run.metrics.get(speed), base.get(speed)
            ok = isinstance(value, (int, float)) and ref not in (None, 0)
            run.ratios[speed] = float(value) / ref if ok else None


def eval_sizes(runs: Sequence[Run]) -> list[int]:
    """Every evaluation input size any run recorded a test accuracy at, ascending."""
    sizes: set[int] = set()
    for run in runs:
        for key in run.metrics.get("test_acc_at") or {}:
            try:
                sizes.add(int(key))
            except ValueError:
                continue
    return sorted(sizes)


def _seed_order(run: Run) -> tuple[bool, Any]:
    """Integer seeds in numeric order (0, 1, 2, ..., 10, not 0, 1, 10), then any other seed as text."""
    seed = run.field_value("seed")
    return (not is_int(seed), seed if is_int(seed) else str(seed))


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group the ok runs by identity (config minus seed); name the config keys that differ elsewhere."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        if run.status == "ok":
            groups.setdefault(run.identity(), []).append(run)
    name_arms(runs)
    result = [Group(sorted(g, key=_seed_order)) for g in groups.values()]
    # config keys that vary between groups but have no column of their own
    flats = [dict(g.first.identity()) for g in result]
    keys = sorted({k for f in flats for k in f})
    shown = [tuple(f.get(k) for k in sorted(SHOWN_CONFIG)) for f in flats]

    def informative(key: str) -> bool:
        """Varies between groups and is not already determined by the shown columns (pe.init by pe.name)."""
        if key == "__sweep__" or key in SHOWN_CONFIG or len({f.get(key) for f in flats}) < 2:
            return False
        by_shown: dict[tuple[Any, ...], set[Any]] = {}
        for s, f in zip(shown, flats):
            by_shown.setdefault(s, set()).add(f.get(key))
        return any(len(values) > 1 for values in by_shown.values())

    varying = [k for k in keys if informative(k)]
    for group, flat in zip(result, flats):
        # null means "the default" (e.g. model.pos_embed: none for rotary variants): not shown
        group.other = " ".join(f"{k}={flat[k]}" for k in varying if k in flat and flat[k] != "null")
    _unique_names(result)
    result.sort(key=_group_order)
    return result


def _unique_names(groups: Sequence[Group]) -> None:
    """``Group.name``: the first run's arm label, with the config differences no override shows (``[k=v]``)
    where two arms of one sweep would otherwise share a name, and a number where even that is not enough."""
    count: dict[tuple[str, str], int] = {}
    for g in groups:
        count[(g.first.sweep, g.first.arm_label)] = count.get((g.first.sweep, g.first.arm_label), 0) + 1
    seen: set[tuple[str, str]] = set()
    for g in groups:
        name = g.first.arm_label
        if count[(g.first.sweep, name)] > 1 and g.other:
            name = f"{name} [{g.other}]"
        base, k = name, 2
        while (g.first.sweep, name) in seen:
            name, k = f"{base} #{k}", k + 1
        seen.add((g.first.sweep, name))
        g.name = name


def _group_order(group: Group) -> tuple[Any, ...]:
    r = group.first
    block = r.pe("block") if isinstance(r.pe("block"), int) else 0
    return (
        r.sweep,
        str(r.field_value("dataset")),
        str(r.field_value("model")),
        VARIANT_ORDER.get(r.variant, len(VARIANT_ORDER)),
        bool(r.pe("mixed")),
        str(r.pe("impl")),
        block,
        str(r.field_value("input_size")),
        group.other,
    )
