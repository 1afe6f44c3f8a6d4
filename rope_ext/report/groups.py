"""Groups of runs that differ only in seed (the arms of a sweep), and the speed ratios to ``pe=none``."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rope_ext.report.runs import FIXED_BLOCK, FREE_BLOCK, SPEEDS, VARIANT_ORDER, Run
from rope_ext.report.tables import numbers

__all__ = ["Group", "arm_name", "compute_ratios", "eval_sizes", "group_runs"]

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

    @property
    def first(self) -> Run:
        """The group's first run (by seed): what its members share is read from it."""
        return self.runs[0]

    def values(self, key: str) -> list[Any]:
        """Metric ``key`` of every run of the group (None where absent)."""
        return [r.metrics.get(key) for r in self.runs]

    def label(self) -> str:
        """The variant and what distinguishes it, e.g. ``axial_block N=3 mixed fast``."""
        r = self.first
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
    """The group's arm, with the config differences that no column shows."""
    name = group.first.arm
    return f"{name} [{group.other}]" if group.other else name


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


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Group the ok runs by identity (config minus seed); name the config keys that differ elsewhere."""
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in runs:
        if run.status == "ok":
            groups.setdefault(run.identity(), []).append(run)
    result = [Group(sorted(g, key=lambda r: str(r.field_value("seed")))) for g in groups.values()]
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
    result.sort(key=_group_order)
    return result


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
