"""The dashboard's panels and the W&B objects made of them: the workspace view and the report of one sweep's
W&B group (``wandb_workspaces.workspaces`` and ``wandb_workspaces.reports.v2``; built without network)."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["Study", "ViewSection", "build_report", "build_view", "panel_keys", "view_name", "view_sections"]

# The keys the panels show, one place. Every one is what the runs log (tests/harness/test_dashboard.py reads them
# from real offline runs): config keys (nested, as the resolved Hydra config), summary keys, history keys.
BLOCK = "pe.block"  # config: the block size N, the x of every "against N" panel
VARIANT = "pe.name"  # config
ACCURACY = "test_acc"  # summary
# summary: the speeds plotted against N: each run's training-step and inference time over a plain ViT of
# its shape, timed interleaved in its process (rope_ext.run.speed.RATIO_KEYS; > 1 slower), which a
# machine's load moves far less than the absolute images/s the runs also log
SPEEDS = ("train_time_vs_none", "infer_time_vs_none")
RELATIVE_ERROR = "relative_error"  # summary
ACC_AT = "test_acc_at/{size}"  # summary: accuracy at each evaluation input size
EPOCH = "trainer/epoch"  # history: the x of the learning curves
CURVES = ("epoch/val_acc", "epoch/train_loss")  # history
# the report run (job_type=report, rope_ext.report.wandb_log): its table and the stems of its plots
# (rope_ext.report.plots.PLOT_FILES)
REPORT_TABLE = "report"
REPORT_PLOTS = ("acc_vs_block", "throughput_vs_block", "acc_vs_resolution")

TRAIN, REPORT = "train", "report"  # the runs' job types
TITLE_MAX = 128  # W&B's limit on a report's title


class Study(NamedTuple):
    """Where a sweep's runs are on W&B and the evaluation sizes they were tested at."""

    entity: str
    project: str
    group: str
    sizes: tuple[int, ...]


class ViewSection(NamedTuple):
    """Panels of one kind and the job type of the runs they show."""

    title: str
    job_type: str
    panels: list[Any]


def view_sections(sizes: Sequence[int]) -> list[ViewSection]:
    """The panels of the view and the report, by section (new objects on every call)."""
    import wandb_workspaces.reports.v2 as wr

    block = wr.Config(BLOCK)

    def against_n(key: str, **kw: Any) -> Any:
        return wr.ScatterPlot(title=f"{key} against N", x=block, y=wr.SummaryMetric(key), **kw)

    def bars(keys: Sequence[str], title: str) -> Any:
        # one bar per arm: the runset groups runs by pe.name and pe.block (mean, min-max over seeds)
        return wr.BarPlot(title=title, metrics=list(keys), groupby_aggfunc="mean", groupby_rangefunc="minmax")

    def curve(key: str) -> Any:  # each arm's mean over seeds, with its min-max
        return wr.LinePlot(
            title=f"{key} per epoch", x=EPOCH, y=[key], groupby_aggfunc="mean", groupby_rangefunc="minmax"
        )

    def wide() -> Any:  # the report table: the grid's full width
        return wr.Layout(w=24, h=12)

    acc_at = [ACC_AT.format(size=s) for s in sizes]
    return [
        ViewSection("Accuracy against N", TRAIN, [against_n(ACCURACY), bars([ACCURACY], ACCURACY)]),
        ViewSection(
            "Speed against N",
            TRAIN,
            [against_n(k) for k in SPEEDS] + [bars([k], k) for k in SPEEDS],
        ),
        ViewSection(
            "Extrapolation",
            TRAIN,
            [bars(acc_at, "accuracy at each evaluation size"), against_n(acc_at[-1])],
        ),
        ViewSection("Learning curves", TRAIN, [curve(k) for k in CURVES]),
        ViewSection("Relative-position error", TRAIN, [against_n(RELATIVE_ERROR, log_y=True)]),
        ViewSection(
            "Report table",
            REPORT,
            [
                wr.WeavePanelSummaryTable(table_name=REPORT_TABLE, layout=wide()),
                wr.MediaBrowser(title="report plots", media_keys=list(REPORT_PLOTS), layout=wide()),
            ],
        ),
    ]


def panel_keys(panel: Any) -> list[tuple[str, str]]:
    """``(where, key)`` for every key ``panel`` shows: where is ``config``, ``summary`` or ``history`` of
    a run, or ``table`` / ``image`` (a summary key holding a ``wandb.Table`` / ``wandb.Image``)."""
    import wandb_workspaces.reports.v2 as wr

    def of(metric: Any, plain: str) -> tuple[str, str]:
        if isinstance(metric, wr.Config):
            return "config", metric.name
        if isinstance(metric, wr.SummaryMetric):
            return "summary", metric.name
        return plain, metric.name if isinstance(metric, wr.Metric) else metric

    if isinstance(panel, wr.ScatterPlot):
        return [of(m, "summary") for m in (panel.x, panel.y, panel.z) if m is not None]
    if isinstance(panel, wr.BarPlot):  # bars show each run's last value: its summary
        return [of(m, "summary") for m in panel.metrics]
    if isinstance(panel, wr.LinePlot):
        return [of(m, "history") for m in (panel.x, *panel.y)]
    if isinstance(panel, wr.WeavePanelSummaryTable):
        return [("table", panel.table_name)]
    if isinstance(panel, wr.MediaBrowser):
        return [("image", k) for k in panel.media_keys]
    raise TypeError(f"panel_keys: no rule for {type(panel).__name__}")


def _conditions(group: str, job_type: str | None) -> Any:
    from wandb_workspaces import expr

    conditions = [expr.Metric("Group") == group]
    if job_type is not None:
        conditions.append(expr.Metric("JobType") == job_type)
    return expr.And(*conditions)


def _keep_exact_filters(target: Any, filters: str, conditions: Any) -> None:
    """Send ``target``'s filters (a view's or a report runset's ``filters``, ``conditions`` as a string) as
    built, not re-parsed.

    wandb-workspaces turns filters into a Python-like string and parses it back when it builds the spec;
    that parser rewrites every ``=`` to ``==``, inside quoted values too, and sweep groups hold ``=``
    (``multirun/pe.block=2,3`` is group ``pe.block=2,3``). The library keeps a loaded view's structured
    filters beside their string and sends them while the string is unchanged: the same slot here."""
    from wandb_workspaces import expr

    target._stashed_filters_v2 = expr.filters_tree_to_v2(conditions.to_model())
    target._stashed_filter_string = filters


def view_name(group: str) -> str:
    """The view's name: ``rope-ext: <group>`` with the symbols W&B refuses in a view name (Unicode
    categories S*, ``=`` among them, which every sweep group holds) written as ``_``."""
    return "rope-ext: " + "".join("_" if unicodedata.category(c)[0] == "S" else c for c in group)


def build_view(study: Study) -> Any:
    """The saved workspace view of ``study``'s group: runs grouped by pe.name and pe.block (one row per
    arm), one section per ``view_sections``."""
    import wandb_workspaces.workspaces as ws

    conditions = _conditions(study.group, None)  # train and report runs: one view shows both
    settings = ws.RunsetSettings(
        filters=conditions,
        groupby=[ws.Config(VARIANT), ws.Config(BLOCK)],
        pinned_columns=[f"summary:{k}" for k in (ACCURACY, *SPEEDS, RELATIVE_ERROR)],
    )
    sections = [ws.Section(name=s.title, panels=s.panels, is_open=True) for s in view_sections(study.sizes)]
    view = ws.Workspace(
        entity=study.entity,
        project=study.project,
        name=view_name(study.group),
        sections=sections,
        runset_settings=settings,
    )
    _keep_exact_filters(view, settings.filters, conditions)
    return view


def _runset(study: Study, job_type: str) -> Any:
    import wandb_workspaces.reports.v2 as wr

    conditions = _conditions(study.group, job_type)
    runset = wr.Runset(
        entity=study.entity,
        project=study.project,
        name=f"{job_type} runs",
        filters=conditions,
        groupby=[f"config.{VARIANT}", f"config.{BLOCK}"] if job_type == TRAIN else [],
    )
    _keep_exact_filters(runset, runset.filters, conditions)
    return runset


def build_report(study: Study, tables_md: str | None = None) -> Any:
    """The W&B report of ``study``: a short guide, the view's sections as panel grids (train runs or the
    report run), and ``tables_md`` (the sweep's report.md) when given."""
    import wandb_workspaces.reports.v2 as wr

    intro = (
        f"Block size N against accuracy and speed for the sweep `{study.group}` "
        f"(W&B group; project `{study.project}`). Each point or bar is a run or an arm "
        f"(runs grouped by `{VARIANT}` and `{BLOCK}`; the mean, and the min-max over seeds). Speeds are "
        "each run's time over a plain ViT of its shape, timed interleaved in its own process (> 1 slower), "
        "so arms run at different times or on a busy machine compare; runs whose rounds spread too wide "
        "log `speed_unreliable`. Made by `python -m rope_ext.dashboard`."
    )
    blocks: list[Any] = [wr.MarkdownBlock(text=intro)]
    for section in view_sections(study.sizes):
        grid = wr.PanelGrid(runsets=[_runset(study, section.job_type)], panels=section.panels)
        blocks += [wr.H2(text=section.title), grid]
    if tables_md:
        blocks += [wr.H2(text="The study's tables (report.md)"), wr.MarkdownBlock(text=tables_md)]
    title = f"rope-ext: {study.group}"
    return wr.Report(
        entity=study.entity,
        project=study.project,
        title=title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 3] + "...",
        description=f"Accuracy, speed, extrapolation and learning curves against N: group {study.group}",
        blocks=blocks,
        width="fluid",
    )
