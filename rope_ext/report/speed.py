"""Speed ratios of an arm: its runs' own ratios to their plain twins (``rope_ext.run.speed``, metrics.json
``speed_vs_none``) pooled over seeds, for the report's table and its speed plot."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import NamedTuple

from rope_ext.report.runs import Run

__all__ = ["PooledRatio", "pooled_ratio"]


class PooledRatio(NamedTuple):
    """Runs' speed ratios to the plain ViT pooled: the median of their medians, the smallest and largest
    round ratio of any of them, and whether any run was flagged ``speed_unreliable``."""

    median: float
    low: float
    high: float
    unreliable: bool


def pooled_ratio(runs: Sequence[Run], kind: str) -> PooledRatio | None:
    """The ``kind`` (``rope_ext.run.speed.KINDS``) ratios of ``runs`` pooled; None when none recorded one."""
    found = [s for s in (run.speed_ratio(kind) for run in runs) if s is not None]
    if not found:
        return None
    return PooledRatio(
        statistics.median(s["median"] for s in found),
        min(s["low"] for s in found),
        max(s["high"] for s in found),
        any(bool(s.get("unreliable")) for s in found),
    )
