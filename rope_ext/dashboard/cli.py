"""``python -m rope_ext.dashboard``: a sweep's W&B dashboard (a saved workspace view and a report), made by
one command.

    python -m rope_ext.dashboard --entity E --sweep multirun/<sweep> [--dry-run]
    python -m rope_ext.dashboard --entity E --project P --group G --sizes 32,40,48,64 [--dry-run]

``--sweep`` reads the W&B group, project and evaluation sizes from the sweep's own records; ``--group``
names them. ``--dry-run`` prints the panels (``--json``: the full specifications) and saves nothing, with
no network. Saving needs a W&B account (``wandb login``) and the sweep's runs uploaded (``wandb sync``):
docs/wandb.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rope_ext.dashboard.panels import BLOCK, VARIANT, Study, build_report, build_view, panel_keys
from rope_ext.schema import WandbConfig

__all__ = ["DashboardError", "main", "outline", "report_spec", "save", "study_of_sweep", "sweep_tables"]


class DashboardError(ValueError):
    """Bad input: said in one paragraph, before anything is built or saved."""


def study_of_sweep(
    sweep: Path, entity: str | None = None, project: str | None = None, sizes: Sequence[int] = ()
) -> Study:
    """``Study`` of a sweep directory from its jobs' records: the W&B group and project each job logged
    to (run.json's config, as ``rope_ext.trainer`` names them), the sizes its finished jobs were tested at
    (metrics.json's ``test_acc_at``). ``entity``, ``project`` and ``sizes`` override the records'."""
    from rope_ext.metrics import METRICS_NAME, RUN_NAME, read_record

    if not sweep.is_dir():
        raise DashboardError(
            f"--sweep {sweep}: not a directory (a sweep's output directory: multirun/<sweep>)"
        )
    groups, projects, entities, tested = set(), set(), set(), set()
    for path in sorted(sweep.rglob(RUN_NAME)):
        config = (read_record(path) or {}).get("config") or {}
        wandb = config.get("wandb") or {}
        job = path.parent
        # a multirun job logs to its sweep directory's name, a single run to its run_id
        swept = (job.parent / "multirun.yaml").is_file()
        groups.add(wandb.get("group") or (job.parent.name if swept else config.get("run_id")))
        projects.add(wandb.get("project"))
        entities.add(wandb.get("entity"))
        metrics = read_record(job / METRICS_NAME) or {}
        if metrics.get("status") == "ok":
            tested |= {int(s) for s in metrics.get("test_acc_at") or {} if str(s).isdigit()}
    if not groups:
        raise DashboardError(
            f"--sweep {sweep}: no job records ({RUN_NAME}) under it: is it a sweep's directory?"
        )
    if len(groups) > 1:
        raise DashboardError(
            f"--sweep {sweep}: its jobs log to {len(groups)} W&B groups {sorted(groups)}: use --group"
        )
    if not (sizes or tested):
        raise DashboardError(
            f"--sweep {sweep}: no finished job ({METRICS_NAME} with status ok): the extrapolation panels "
            "need the sizes the jobs were tested at: give them with --sizes"
        )
    recorded = sorted(p for p in projects if p)
    if project is None and len(recorded) != 1:
        raise DashboardError(
            f"--sweep {sweep}: its jobs log to W&B projects {recorded}: name one with --project"
        )
    known = sorted(e for e in entities if e)
    return Study(
        entity=_entity(entity or (known[0] if len(known) == 1 else None)),
        project=project or recorded[0],
        group=str(groups.pop()),
        sizes=tuple(sorted(sizes or tested)),
    )


def _entity(entity: str | None) -> str:
    entity = entity or os.environ.get("WANDB_ENTITY")
    if not entity:
        raise DashboardError(
            "--entity is needed (the W&B user or team that owns the project; or set $WANDB_ENTITY): "
            "a saved view and report belong to an entity"
        )
    return entity


def sweep_tables(sweep: Path) -> str | None:
    """The sweep's report.md (``python -m rope_ext.report`` wrote it there), without its image lines (the
    plots point at local files; the report run's images are in the "Report table" section)."""
    path = sweep / "report.md"
    if not path.is_file():
        return None
    return "\n".join(line for line in path.read_text().splitlines() if not line.startswith("!["))


def report_spec(report: Any) -> dict[str, Any]:
    """The report's specification as ``save()`` sends it, built offline: each runset names its project
    by entity and name (``save()`` looks up the project's id online)."""
    import copy

    offline = copy.deepcopy(report)
    for block in offline.blocks:
        for runset in getattr(block, "runsets", ()):
            runset.entity = ""  # no project lookup
    spec = offline._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")
    originals = [rs for block in report.blocks for rs in getattr(block, "runsets", ())]
    grids = [b for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]
    for runset, dumped in zip(originals, (rs for g in grids for rs in g["metadata"]["runSets"])):
        dumped["project"] = {"entityName": runset.entity, "name": runset.project}
    return spec


def outline(study: Study, view: Any, report: Any, tables: bool) -> str:
    """The view's and the report's panels, one line each: section, panel type, title and keys."""
    lines = [
        f'view "{view.name}" in {study.entity}/{study.project}: runs of group {study.group!r}, '
        f"grouped by {VARIANT} and {BLOCK}",
    ]
    for section in view.sections:
        lines.append(f"  {section.name}")
        for panel in section.panels:
            keys = ", ".join(f"{where} {key}" for where, key in panel_keys(panel))
            title = getattr(panel, "title", None) or getattr(panel, "table_name", "")
            lines.append(f"    {type(panel).__name__:<22} {title:<40} {keys}")
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    panels = sum(len(g.panels) for g in grids)
    lines.append(
        f'report "{report.title}": {len(grids)} panel grids ({panels} panels, the sections above, each '
        f"on its runs of group {study.group!r}){' and the sweep report.md' if tables else ''}"
    )
    return "\n".join(lines)


SAVE_HELP = (
    "Saving needs a W&B account and the network: log in once (`wandb login`, or export "
    "WANDB_API_KEY=<key>), upload the sweep's runs and its report run (`wandb sync <sweep>/*/wandb/offline-run-*` "
    "and `wandb sync <sweep>/wandb/offline-run-*`), then rerun this command. `--dry-run` builds the same "
    "view and report offline and prints them."
)


def save(view: Any, report: Any) -> list[str]:
    """Save the view and the report to W&B; their URLs. Raises ``DashboardError`` (one paragraph) when W&B
    refuses or cannot be reached."""
    urls: dict[str, str] = {}
    for what, item in (("view", view), ("report", report)):
        try:
            item.save()
            urls[what] = item.url
        except Exception as err:  # noqa: BLE001 - any W&B or network failure: said in one paragraph
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            done = f" The view was saved: {urls['view']}." if urls else ""
            raise DashboardError(
                f"Could not save the {what} to W&B ({type(err).__name__}: {first}).{done} {SAVE_HELP}"
            ) from err
    return [f"{what}: {url}" for what, url in urls.items()]


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(s) for s in text.split(",") if s.strip()}))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise DashboardError(
            f"--sizes {text!r}: expected positive integers, comma separated (e.g. 32,40,48,64)"
        )
    return sizes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rope_ext.dashboard",
        description="Build a sweep's W&B dashboard (a saved workspace view and a report) with wandb-workspaces "
        "and save it to W&B, or print it offline (--dry-run). docs/wandb.md",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--sweep", type=Path, help="the sweep's directory (multirun/<sweep>): group, project, sizes"
    )
    where.add_argument("--group", help="the W&B group of the sweep's runs (then --sizes is needed)")
    parser.add_argument(
        "--sizes", help="evaluation input sizes, comma separated (the test_acc_at/<size> keys)"
    )
    parser.add_argument("--entity", help="W&B entity (user or team); default $WANDB_ENTITY")
    parser.add_argument("--project", help="W&B project; default: the sweep's wandb.project, else its default")
    parser.add_argument("--dry-run", action="store_true", help="print the view and report, save nothing")
    parser.add_argument("--json", action="store_true", help="with --dry-run: the full specifications as JSON")
    return parser


def _study(args: argparse.Namespace) -> tuple[Study, str | None]:
    """The study the arguments name and the sweep's report.md tables (None without --sweep)."""
    if args.sweep is not None:
        sizes = _sizes(args.sizes) if args.sizes else ()
        return study_of_sweep(args.sweep, args.entity, args.project, sizes), sweep_tables(args.sweep)
    if not args.group or not args.group.strip():
        raise DashboardError(
            "--group is empty: give the W&B group of the sweep's runs (its directory's name)"
        )
    if not args.sizes:
        raise DashboardError(
            "--group needs --sizes, the evaluation input sizes of its runs (their test_acc_at/<size> keys, "
            "e.g. --sizes 32,40,48,64); or use --sweep multirun/<sweep>, which reads them"
        )
    project = args.project or WandbConfig().project
    return Study(_entity(args.entity), project, args.group, _sizes(args.sizes)), None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.json and not args.dry_run:
            raise DashboardError(
                "--json only goes with --dry-run (it prints the specifications instead of saving)"
            )
        study, tables = _study(args)
        view, report = build_view(study), build_report(study, tables)
        if args.dry_run:
            if args.json:
                spec = {"view": view._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")}
                print(json.dumps(spec | {"report": report_spec(report)}, indent=1))
            else:
                print(outline(study, view, report, tables is not None))
            return 0
        print("\n".join(save(view, report)))
        return 0
    except DashboardError as err:
        print(f"dashboard: {err}", file=sys.stderr)
        return 2
