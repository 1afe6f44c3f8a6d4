"""The relpos stall check from its committed report: per arm and budget, how many seeds stalled
(final validation accuracy below 70 %), where the best validation epoch fell, and what tripling the budget
changed, paired by seed (scipy.stats.ttest_rel, 95 % CI).

    python experiments/stall_check.py experiments/results/relpos_stall
"""

from __future__ import annotations

import argparse
import csv
import math
import re
from collections import defaultdict
from pathlib import Path

from scipy import stats

STALL_BELOW = 70.0  # the stalled runs of the relpos_extrap pilot sat at 50-66 %, the others near 90 %


def _budget(arm: str) -> tuple[str, int]:
    """'none_avg train.epochs=120' -> ('none_avg', 120)."""
    found = re.search(r"train\.epochs=(\d+)", arm)
    if found is None:
        raise ValueError(f"arm {arm!r} names no train.epochs: not a relpos_stall report")
    return arm.replace(found.group(0), "").strip(), int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "report", type=Path, help="the report directory (runs.csv from python -m rope_ext.report)"
    )
    args = parser.parse_args(argv)
    with (args.report / "runs.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    train_size = min(int(r["size"]) for r in rows if r["extrap"] == "False")
    acc: dict[tuple[str, int, int], dict[int, float]] = defaultdict(dict)
    final: dict[tuple[str, int], dict[int, tuple[float, int]]] = defaultdict(dict)
    for r in rows:
        arm, epochs = _budget(r["arm"])
        seed, size = int(r["seed"]), int(r["size"])
        acc[(arm, epochs, size)][seed] = float(r["acc"])
        if size == train_size:
            final[(arm, epochs)][seed] = (float(r["val_acc"]), int(r["best_epoch"]))
    print(
        f"| arm | epochs | seeds | stalled (val < {STALL_BELOW:g} %) | lowest final val % | best val epoch (range) |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for (arm, epochs), seeds in sorted(final.items()):
        vals = [v for v, _ in seeds.values()]
        best = sorted(b for _, b in seeds.values())
        stalled = sum(v < STALL_BELOW for v in vals)
        print(f"| {arm} | {epochs} | {len(vals)} | {stalled} | {min(vals):.1f} | {best[0]}-{best[-1]} |")
    print("\n| arm | size | mean at the short budget | mean at the long one | paired diff [95 % CI] | p |")
    print("|---|---:|---:|---:|---|---:|")
    arms = sorted({a for a, _ in final})
    sizes = sorted({s for _, _, s in acc})
    for arm in arms:
        budgets = sorted(e for a, e in final if a == arm)
        short, long = budgets[0], budgets[-1]
        for size in sizes:
            a, b = acc[(arm, short, size)], acc[(arm, long, size)]
            seeds = sorted(set(a) & set(b))
            x, y = [a[s] for s in seeds], [b[s] for s in seeds]
            test = stats.ttest_rel(y, x)
            ci = test.confidence_interval(0.95)
            diff = sum(v - u for u, v in zip(x, y, strict=True)) / len(seeds)
            p = "n/a" if math.isnan(test.pvalue) else f"{test.pvalue:.3f}"
            print(
                f"| {arm} | {size} | {sum(x) / len(x):.2f} ({short} ep) | {sum(y) / len(y):.2f} ({long} ep) "
                f"| {diff:+.2f} [{ci.low:+.2f}, {ci.high:+.2f}] | {p} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
