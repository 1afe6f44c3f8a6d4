"""The report's plots: test accuracy and throughput against the block size N, accuracy against the
evaluation resolution, each with 95 % t-CI bars, the chance level and the baseline marked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rope_ext import stats
from rope_ext.report.groups import Group, arm_name, eval_sizes
from rope_ext.report.runs import FIXED_BLOCK, Run

__all__ = ["PLOT_FILES", "ci_bars", "write_plots"]

PLOT_FILES = ("acc_vs_block.png", "throughput_vs_block.png", "acc_vs_resolution.png")


def _series(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups that differ only in block size form one line; label by what else varies."""
    series: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        # a variant without a block choice is one level (a horizontal line) per input size
        dropped = ("pe.block",) if g.first.variant in FIXED_BLOCK else ("pe.block", "dataset.input_size")
        key = tuple((k, v) for k, v in g.first.identity() if k not in dropped)
        series.setdefault(key, []).append(g)
    contexts = {
        (str(s[0].first.field_value("dataset")), str(s[0].first.field_value("model")), s[0].first.sweep)
        for s in series.values()
    }
    out: dict[str, list[Group]] = {}
    for gs in series.values():
        r = gs[0].first
        label = gs[0].label().replace(f" N={r.pe('block')}", "")
        if gs[0].other:
            label += f" [{gs[0].other}]"
        if len(contexts) > 1:
            label += f" ({r.field_value('dataset')}, {r.field_value('model')})"
        while label in out:
            label += "'"
        out[label] = sorted(gs, key=lambda g: g.first.pe("block") or 0)
    return out


def _x_block(group: Group) -> float | None:
    block = group.first.pe("block")
    return float(block) if isinstance(block, (int, float)) else None


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_LINESTYLES = ("-", "--", "-.", ":")
_CHANCE = {"relpos": 12.5, "digits": 10.0, "cifar10": 10.0, "cifar100": 1.0}


def _chance(runs: Sequence[Run]) -> float | None:
    """Top-1 chance level (%) when all runs share one dataset with a known class count."""
    names = {str(r.field_value("dataset")) for r in runs}
    if len(names) != 1:
        return None
    name = names.pop()
    if name == "fake":
        classes = runs[0].cfg("dataset.num_classes")
        return 100.0 / classes if classes else None
    return _CHANCE.get(name)


def ci_bars(values: Sequence[Any], nonneg: bool) -> tuple[float, float, float, int] | None:
    """(mean, lower error, upper error, n) of the 95 % t-CI; the lower bar stops at 0 for a quantity that
    cannot be negative. None without values."""
    m = stats.mean_ci(values)
    if m.mean is None:
        return None
    if m.low is None:
        return m.mean, 0.0, 0.0, m.n
    low = max(m.low, 0.0) if nonneg else m.low
    return m.mean, m.mean - low, m.high - m.mean, m.n


def _plot_metric_vs_block(
    ax: Any,
    groups: Sequence[Group],
    key: Callable[[Run], Any],
    ylabel: str,
    title: str,
    baseline: str | None = None,
) -> bool:
    """One line per series with 95 % t-CI bars (markers, line styles and a small x offset keep overlapping
    series apart); variants without a block size as horizontal lines with a CI band. True if drawn."""
    drawn = False
    blocks: set[float] = set()
    for i, (label, gs) in enumerate(_series(groups).items()):
        color, marker, style = f"C{i % 10}", _MARKERS[i % len(_MARKERS)], _LINESTYLES[i % len(_LINESTYLES)]
        is_base = baseline is not None and any(baseline in (g.first.arm, arm_name(g)) for g in gs)
        xs, means, lows, highs = [], [], [], []
        for g in gs:
            bars = ci_bars([key(run) for run in g.runs], nonneg=True)
            if bars is None:
                continue
            mean, lo, hi, n = bars
            x = _x_block(g)
            if x is None:
                name = f"{label} (n={n})" + (" — baseline" if is_base else "")
                ax.axhline(
                    mean,
                    color="k" if is_base else color,
                    linestyle=style,
                    lw=2.2 if is_base else 1.4,
                    label=name,
                )
                if lo or hi:
                    ax.axhspan(mean - lo, mean + hi, color="k" if is_base else color, alpha=0.12)
                drawn = True
                continue
            xs.append(x * (1 + 0.03 * (i % 5 - 2)))  # a few % apart: coincident points stay visible
            blocks.add(x)
            means.append(mean)
            lows.append(lo)
            highs.append(hi)
        if xs:
            ax.errorbar(
                xs,
                means,
                yerr=[lows, highs],
                color=color,
                marker=marker,
                linestyle=style,
                capsize=3,
                label=label + (" — baseline" if is_base else ""),
            )
            drawn = True
    ax.set_xlabel("block size N")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if blocks and max(blocks) > 8:
        ax.set_xscale("log", base=2)
    if blocks:
        ax.set_xticks(sorted(blocks), [str(int(b)) for b in sorted(blocks)])
    ax.grid(alpha=0.3)
    return drawn


def _no_data(ax: Any, title: str, why: str) -> None:
    """A panel that says in words why it has nothing to show (never a blank axis)."""
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, transform=ax.transAxes, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="best")


def _context(runs: Sequence[Run], groups: Sequence[Group], run_set: str = "") -> str:
    """Title suffix: the run set, dataset(s), epochs, seeds per arm, what the bars are."""
    ok = [r for r in runs if r.status == "ok"]
    datasets = ", ".join(sorted({str(r.field_value("dataset")) for r in ok})) or "?"
    epochs = sorted({int(r.cfg("train.epochs")) for r in ok if isinstance(r.cfg("train.epochs"), int)})
    ns = sorted({len(g.runs) for g in groups})
    ep = "/".join(map(str, epochs)) or "?"
    seeds = "/".join(map(str, ns)) or "0"
    where = f"{run_set}: " if run_set else ""
    return f"{where}{datasets}, {ep} epochs, {seeds} seeds per arm; bars: 95 % t-CI of the mean"


def write_plots(
    runs: Sequence[Run],
    groups: Sequence[Group],
    out: Path,
    stat_rows: Sequence[dict[str, Any]] = (),
    baseline: str | None = None,
    run_set: str = "",
) -> list[Path]:
    """The three PNG plots; a plot with nothing to show is not written. Returns the written paths."""
    from matplotlib.figure import Figure

    base = baseline or next((r["baseline"] for r in stat_rows if r.get("baseline")), None)
    context = _context(runs, groups, run_set)
    chance = _chance(runs)
    written = []
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    if _plot_metric_vs_block(
        ax,
        groups,
        lambda r: r.metrics.get("test_acc"),
        "test accuracy (%)",
        f"Test accuracy vs block size\n{context}",
        base,
    ):
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", lw=1, label=f"chance ({chance:g} %)")
        _legend(ax)
        fig.savefig(out / "acc_vs_block.png", dpi=110)
        written.append(out / "acc_vs_block.png")

    fig = Figure(figsize=(12, 5), layout="constrained")
    axes = fig.subplots(1, 2)
    drawn = False
    for ax, key, name in (
        (axes[0], "train_img_per_s", "Training throughput"),
        (axes[1], "infer_img_per_s", "Inference throughput"),
    ):
        has = any(isinstance(r.metrics.get(key), (int, float)) for g in groups for r in g.runs)
        if has:
            drawn |= _plot_metric_vs_block(
                ax, groups, lambda r, k=key: r.metrics.get(k), "images/s", f"{name}\n{context}", base
            )
            _legend(ax)
        else:
            _no_data(ax, name, f"no run recorded {key}\n(e.g. too few steps per epoch to time)")
    if drawn:
        fig.savefig(out / "throughput_vs_block.png", dpi=110)
        written.append(out / "throughput_vs_block.png")

    sizes = eval_sizes(runs)
    if sizes:
        fig = Figure(figsize=(8, 5), layout="constrained")
        ax = fig.add_subplot()
        labels = {}
        span = max(sizes) - min(sizes) or 1
        for i, g in enumerate(groups):
            xs, means, lows, highs = [], [], [], []
            for size in sizes:
                bars = ci_bars([r.acc_at(size) for r in g.runs], True)
                if bars is not None:
                    xs.append(size + span * 0.006 * (i % 7 - 3))
                    means.append(bars[0])
                    lows.append(bars[1])
                    highs.append(bars[2])
            if xs:
                label = arm_name(g) + f" @{g.first.field_value('input_size')}"
                is_base = base is not None and base in (g.first.arm, arm_name(g))
                label += " — baseline" if is_base else ""
                while label in labels:
                    label += "'"
                labels[label] = True
                ax.errorbar(
                    xs,
                    means,
                    yerr=[lows, highs],
                    marker=_MARKERS[i % len(_MARKERS)],
                    capsize=3,
                    linestyle=_LINESTYLES[i % len(_LINESTYLES)],
                    color="k" if is_base else f"C{i % 10}",
                    lw=2.2 if is_base else 1.2,
                    label=label,
                )
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", lw=1, label=f"chance ({chance:g} %)")
        ax.set_xlabel("evaluation input size (px)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"Accuracy vs evaluation resolution\n{context}", fontsize=9)
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
        _legend(ax)
        fig.savefig(out / "acc_vs_resolution.png", dpi=110)
        written.append(out / "acc_vs_resolution.png")
    return written
