"""A sweep's W&B dashboard as code: a saved workspace view and a report, made by one command
(``python -m rope_ext.dashboard``, docs/wandb.md), with W&B's ``wandb-workspaces``.

``panels``: the keys the panels show (one list), the panels by section, the view and the report built
from them, offline. ``cli``: the command: the study a sweep directory names, the dry run's printout, saving.
"""

from rope_ext.dashboard.cli import DashboardError, main, study_of_sweep
from rope_ext.dashboard.panels import Study, build_report, build_view, panel_keys, view_sections

__all__ = [
    "DashboardError",
    "Study",
    "build_report",
    "build_view",
    "main",
    "panel_keys",
    "study_of_sweep",
    "view_sections",
]
