"""The report's plots: test accuracy and speed against the block size N, accuracy against the
evaluation resolution. Accuracies with 95 % t-CI bars, the chance level and the baseline marked; speeds
as each run's time ratio to its plain twin (``rope_ext.run.speed``) with bars from its smallest to its
largest round, the runs flagged ``speed_unreliable`` ringed red.

Each figure names the run set, the dataset, the epochs and the seeds per arm; the legend has one entry
per line, named by the arms' names (``rope_ext.report.groups``); the baseline is drawn black; points sit
at their true x unless several series share the axis, and then the x label says they are offset. ``make_figures`` builds them (tests measure their layout), ``write_plots`` saves them.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rope_ext import safe_io, stats
from rope_ext.data.registry import chance_level as registered_chance
from rope_ext.report.groups import Group, arm_name, eval_sizes, variant_label
from rope_ext.report.runs import Run, fixed_block
from rope_ext.report.speed import pooled_ratio
from rope_ext.run.speed import UNRELIABLE_SPREAD

__all__ = ["PLOT_FILES", "ci_bars", "make_figures", "write_plots"]

PLOT_FILES = ("acc_vs_block.png", "throughput_vs_block.png", "acc_vs_resolution.png")
_FONT = 9  # titles; legends and notes are smaller
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_LINESTYLES = ("-", "--", "-.", ":")
_DODGE_NOTE = "\n(series offset by a few % along x to keep them apart)"


def _series(groups: Sequence[Group]) -> dict[str, list[Group]]:
    """Groups that differ only in block size form one line, named by what else sets it apart."""
    series: dict[tuple[Any, ...], list[Group]] = {}
    for g in groups:
        # a variant without a block choice is one level (a horizontal line) per input size
        dropped = ("pe.block",) if fixed_block(g.first.variant) else ("pe.block", "dataset.input_size")
        key = tuple((k, v) for k, v in g.first.identity() if k not in dropped)
        series.setdefault(key, []).append(g)
    contexts = {
        (str(s[0].first.field_value("dataset")), str(s[0].first.field_value("model")), s[0].first.sweep)
        for s in series.values()
    }
    out: dict[str, list[Group]] = {}
    for gs in series.values():
        label = _series_name(gs)
        if len(contexts) > 1:
            # name what differs between the lines' contexts: data and model, and the sweep (one per lr, say)
            r, parts = gs[0].first, []
            if len({c[:2] for c in contexts}) > 1:
                parts += [str(r.field_value("dataset")), str(r.field_value("model"))]
            if len({c[2] for c in contexts}) > 1:
                parts.append(r.sweep)
            label += f" ({', '.join(parts)})"
        base, k = label, 2
        while label in out:
            label, k = f"{base} #{k}", k + 1
        out[label] = sorted(gs, key=lambda g: g.first.pe("block") or 0)
    return out


def _series_name(gs: Sequence[Group]) -> str:
    """One arm: its name. Arms that differ in N only: their names without ``pe.block=N``, else the
    variant label without N followed by the swept settings they share."""
    if len(gs) == 1:
        return arm_name(gs[0])
    tokens = [arm_name(g).split() for g in gs]
    if all(any(t.startswith("pe.block=") for t in ts) for ts in tokens):
        rest = " ".join(t for t in tokens[0] if not t.startswith("pe.block="))
        if rest:
            return rest
    r = gs[0].first
    # settings every member shares (``train.lr=0.003`` in a learning-rate-crossed sweep) tell this line
    # from its twins of the same variant
    shared = [t for t in tokens[0] if "=" in t and all(t in ts for ts in tokens[1:])]
    return " ".join([variant_label(r).replace(f" N={r.pe('block')}", ""), *shared])


def _x_block(group: Group) -> float | None:
    block = group.first.pe("block")
    return float(block) if isinstance(block, (int, float)) else None


def chance_level(dataset: Any, num_classes: Any = None) -> float | None:
    """Top-1 chance level (%) of ``dataset`` (``fake`` by its ``num_classes``); None when unknown."""
    if dataset == "fake":
        ok = isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes > 0
        return 100.0 / num_classes if ok else None
    return registered_chance(str(dataset))


def _chance(runs: Sequence[Run]) -> float | None:
    """Top-1 chance level (%) when all runs share one dataset with a known class count."""
    names = {str(r.field_value("dataset")) for r in runs}
    if len(names) != 1:
        return None
    return chance_level(names.pop(), runs[0].cfg("dataset.num_classes"))


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
    ax: Any, groups: Sequence[Group], key: Callable[[Run], Any], ylabel: str, bases: Sequence[Group] = ()
) -> bool:
    """One line per series with 95 % t-CI bars; variants without a block size as horizontal lines with a
    CI band. Points sit at their true N unless several series share the axis (then offset, and the x
    label says so). The baseline: black, or a black ring on its point of a longer series. True if drawn."""
    drawn = False
    blocks: set[float] = set()
    base_ids = {id(g) for g in bases}
    all_series = _series(groups)
    lines = sum(any(_x_block(g) is not None for g in gs) for gs in all_series.values())
    for i, (label, gs) in enumerate(all_series.items()):
        color, marker, style = f"C{i % 10}", _MARKERS[i % len(_MARKERS)], _LINESTYLES[i % len(_LINESTYLES)]
        whole_base = len(gs) == 1 and id(gs[0]) in base_ids
        xs, means, lows, highs = [], [], [], []
        base_point = None
        for g in gs:
            bars = ci_bars([key(run) for run in g.runs], nonneg=True)
            if bars is None:
                continue
            mean, lo, hi, _ = bars
            x = _x_block(g)
            if x is None:
                ax.axhline(
                    mean,
                    color="k" if whole_base else color,
                    linestyle=style,
                    lw=2.2 if whole_base else 1.4,
                    label=label + (" (baseline)" if whole_base else ""),
                )
                if lo or hi:
                    ax.axhspan(mean - lo, mean + hi, color="k" if whole_base else color, alpha=0.12)
                drawn = True
                continue
            shifted = x * (1 + 0.03 * (i % 5 - 2)) if lines > 1 else x
            if id(g) in base_ids and not whole_base:
                base_point = (shifted, mean, arm_name(g))
            xs.append(shifted)
            blocks.add(x)
            means.append(mean)
            lows.append(lo)
            highs.append(hi)
        if xs:
            ax.errorbar(
                xs,
                means,
                yerr=[lows, highs],
                color="k" if whole_base else color,
                marker=marker,
                linestyle=style,
                capsize=3,
                lw=2.2 if whole_base else 1.4,
                label=label + (" (baseline)" if whole_base else ""),
            )
            drawn = True
        if base_point is not None:
            ax.plot(
                base_point[0],
                base_point[1],
                marker="o",
                ms=13,
                mfc="none",
                mec="k",
                mew=2,
                linestyle="none",
                label=f"baseline: {base_point[2]}",
            )
    _block_axis(ax, blocks, lines, ylabel)
    return drawn


def _block_axis(ax: Any, blocks: Any, lines: int, ylabel: str) -> None:
    """The block-size x axis both block plots share: labels, log scale past N = 8, a tick per N."""
    ax.set_xlabel("block size N" + (_DODGE_NOTE if lines > 1 else ""), fontsize=_FONT)
    ax.set_ylabel(ylabel, fontsize=_FONT)
    if blocks and max(blocks) > 8:
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    if blocks:
        ax.set_xticks(sorted(blocks), [str(int(b)) for b in sorted(blocks)])
        # room around the true N beyond the offsets (at most 6 %): with a single N, autoscaling zoomed onto
        # the offsets alone and the points sat far from their tick
        ax.set_xlim(min(blocks) * 0.85, max(blocks) * 1.15)
    ax.grid(alpha=0.3)


def _plot_ratio_vs_block(ax: Any, groups: Sequence[Group], kind: str, bases: Sequence[Group] = ()) -> bool:
    """Each arm's ``kind`` time ratio to its plain twin (``rope_ext.report.speed.pooled_ratio``: the median, bars from the
    smallest to the largest round) against N, one line per series, at 1 the plain ViT; an arm whose runs
    were flagged ``speed_unreliable`` is ringed red. Variants without a block size: a horizontal line and
    its band. True if anything was drawn."""
    drawn, flagged_label = False, f"speed unreliable (rounds spread > {UNRELIABLE_SPREAD:g} × median)"
    base_ids, blocks = {id(g) for g in bases}, set()
    all_series = _series(groups)
    lines = sum(any(_x_block(g) is not None for g in gs) for gs in all_series.values())
    for i, (label, gs) in enumerate(all_series.items()):
        is_base = len(gs) == 1 and id(gs[0]) in base_ids
        color = "k" if is_base else f"C{i % 10}"
        label += " (baseline)" if is_base else ""
        points = [(g, pooled_ratio(g.runs, kind)) for g in gs]
        points = [(g, r) for g, r in points if r is not None]
        flagged = []
        for r in [r for g, r in points if _x_block(g) is None]:
            named = label + (" (speed unreliable)" if r.unreliable else "")
            ax.axhline(r.median, color=color, linestyle=_LINESTYLES[i % 4], lw=1.4, label=named)
            ax.axhspan(r.low, r.high, color=color, alpha=0.12)
            drawn = True
        xy = [(_x_block(g), r) for g, r in points if _x_block(g) is not None]
        if xy:
            xs = [x * (1 + 0.03 * (i % 5 - 2)) if lines > 1 else x for x, _ in xy]
            blocks |= {x for x, _ in xy}
            mids = [r.median for _, r in xy]
            bars = [[r.median - r.low for _, r in xy], [r.high - r.median for _, r in xy]]
            ax.errorbar(
                xs,
                mids,
                yerr=bars,
                color=color,
                marker=_MARKERS[i % len(_MARKERS)],
                capsize=3,
                linestyle=_LINESTYLES[i % 4],
                lw=1.4,
                label=label,
            )
            flagged = [(x, r.median) for x, (_, r) in zip(xs, xy) if r.unreliable]
            drawn = True
        if flagged:
            ax.plot(
                *zip(*flagged),
                marker="o",
                ms=14,
                mfc="none",
                mec="red",
                mew=2,
                linestyle="none",
                label=flagged_label,
            )
            flagged_label = "_nolegend_"  # one legend entry for all arms
    if drawn:
        ax.axhline(1.0, color="grey", linestyle=":", lw=1, label="plain ViT (pe=none) = 1")
    _block_axis(ax, blocks, lines, "time × plain ViT of the same shape (> 1 slower)")
    return drawn


def _no_data(ax: Any, title: str, why: str) -> None:
    """A panel that says in words why it has nothing to show (never a blank axis)."""
    ax.set_title(title, fontsize=_FONT)
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=_FONT)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(ax: Any) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="best")


def _seeds(groups: Sequence[Group]) -> tuple[str, bool]:
    """``"1 seed per arm"`` / ``"3 seeds per arm"`` / ``"2-3 seeds per arm"``, and whether every arm has
    exactly one seed (then there are no error bars)."""
    ns = sorted({len(g.runs) for g in groups})
    if not ns:
        return "no finished arm", True
    text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    return f"{text} seed{'' if ns == [1] else 's'} per arm", ns == [1]


def _context(runs: Sequence[Run], groups: Sequence[Group], run_set: str, ratios: bool = False) -> str:
    """The figure's second title line(s): the run set, dataset(s), epochs, seeds per arm, the bars (of
    the speed ratios with ``ratios``, and the clocks they were timed on)."""
    ok = [r for r in runs if r.status == "ok"]
    datasets = ", ".join(sorted({str(r.field_value("dataset")) for r in ok})) or "?"
    epochs = sorted({r.cfg("train.epochs") for r in ok if isinstance(r.cfg("train.epochs"), int)})
    ep = "/".join(map(str, epochs)) or "?"
    seeds, single = _seeds(groups)
    bars = "no error bars" if single else "bars: 95 % t-CI of the mean"
    if ratios:
        clocks = sorted({str(r.metrics["speed_vs_none"].get("clock")) for r in ok if r.speed_ratio("train")})
        bars = (
            "each run timed against a plain ViT of its shape, interleaved in its process; point: median over "
            "rounds (over seeds: median of the runs' medians), bars: smallest to largest round; clock: "
            f"{', '.join(clocks) or '?'}"
        )
    where = f"runs: {run_set}\n" if run_set else ""
    return f"{where}{datasets}, {ep} epoch{'' if epochs == [1] else 's'}, {seeds}; {bars}"


def _suptitle(fig: Any, title: str, context: str, width_in: float) -> None:
    """A title and its context, wrapped to the figure's width (long sweep names break at commas)."""
    chars = max(int(width_in * 72 / (_FONT * 0.62)), 20)
    wrapped = []
    for paragraph in context.splitlines():
        lines = [""]
        for piece in re.findall(r".+?(?:[, ]|$)", paragraph):  # pieces end at a comma or a space
            if len(lines[-1]) + len(piece.rstrip()) > chars and lines[-1].strip():
                lines.append("")
            lines[-1] += piece
        wrapped += [
            part for line in lines for part in textwrap.wrap(line.strip(), chars, break_long_words=True)
        ]
    fig.suptitle("\n".join([title, *wrapped]), fontsize=_FONT)


def make_figures(
    runs: Sequence[Run], groups: Sequence[Group], bases: Sequence[Group] = (), run_set: str = ""
) -> dict[str, Any]:
    """The plots with something to show, as matplotlib figures keyed by their ``PLOT_FILES`` name;
    ``bases``: the baseline arms (drawn black)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chance = _chance(runs)
    figures: dict[str, Any] = {}

    fig = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if _plot_metric_vs_block(ax, groups, lambda r: r.metrics.get("test_acc"), "test accuracy (%)", bases):
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", lw=1, label=f"chance ({chance:g} %)")
        _legend(ax)
        _suptitle(fig, "Test accuracy vs block size N", _context(runs, groups, run_set), 8)
        figures["acc_vs_block.png"] = fig

    fig = Figure(figsize=(12, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    drawn = False
    for ax, kind, name in (
        (axes[0], "train", "Training step time × plain ViT"),
        (axes[1], "infer", "Inference time × plain ViT"),
    ):
        if _plot_ratio_vs_block(ax, groups, kind, bases):
            ax.set_title(name, fontsize=_FONT)
            drawn = True
            _legend(ax)
        else:
            _no_data(ax, name, f"no run recorded speed_vs_none.{kind}\n(runs written before it was measured)")
    if drawn:
        _suptitle(fig, "Speed vs block size N", _context(runs, groups, run_set, ratios=True), 12)
        figures["throughput_vs_block.png"] = fig

    sizes = eval_sizes(runs)
    if sizes:
        fig = Figure(figsize=(8, 5.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        base_ids = {id(g) for g in bases}
        span = max(sizes) - min(sizes) or 1
        dodge = len(groups) > 1
        # an arm run in several sweeps (one per lr, say) gets one series per sweep: its sweep tells them apart
        names = [arm_name(g) for g in groups]
        names = [n + (f" [{g.first.sweep}]" if names.count(n) > 1 else "") for n, g in zip(names, groups)]
        for i, g in enumerate(groups):
            xs, means, lows, highs = [], [], [], []
            for size in sizes:
                bars = ci_bars([r.acc_at(size) for r in g.runs], True)
                if bars is not None:
                    xs.append(size + span * 0.006 * (i % 7 - 3) if dodge else size)
                    means.append(bars[0])
                    lows.append(bars[1])
                    highs.append(bars[2])
            if xs:
                is_base = id(g) in base_ids
                ax.errorbar(
                    xs,
                    means,
                    yerr=[lows, highs],
                    marker=_MARKERS[i % len(_MARKERS)],
                    capsize=3,
                    linestyle=_LINESTYLES[i % len(_LINESTYLES)],
                    color="k" if is_base else f"C{i % 10}",
                    lw=2.2 if is_base else 1.2,
                    label=names[i] + (" (baseline)" if is_base else ""),
                )
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", lw=1, label=f"chance ({chance:g} %)")
        ax.set_xlabel("evaluation input size (px)" + (_DODGE_NOTE if dodge else ""), fontsize=_FONT)
        ax.set_ylabel("test accuracy (%)", fontsize=_FONT)
        ax.set_xticks(sizes)
        ax.grid(alpha=0.3)
        _legend(ax)
        _suptitle(fig, "Test accuracy vs evaluation resolution", _context(runs, groups, run_set), 8)
        figures["acc_vs_resolution.png"] = fig
    return figures


def write_plots(
    runs: Sequence[Run],
    groups: Sequence[Group],
    out: Path,
    bases: Sequence[Group] = (),
    run_set: str = "",
) -> list[Path]:
    """The PNG plots of ``make_figures``; a plot with nothing to show is not written. Returns the paths."""
    written = []
    for name, fig in make_figures(runs, groups, bases, run_set).items():
        # through a temporary file and a rename: never through a link planted at the plot's name
        safe_io.write_atomic(out / name, lambda f, fig=fig: fig.savefig(f, dpi=110, format="png"))
        written.append(out / name)
    return written
