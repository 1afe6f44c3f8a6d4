"""Compare the runs of a sweep: ``python -m rope_ext.report DIR``.

Finds every run under ``DIR`` (a directory holding ``run.json`` or ``.hydra/config.yaml``: a single run's
output directory or each job directory of a multirun), reads its ``metrics.json`` and its identity (config
and overrides: the run's own ``run.json``, ``.hydra/`` only for runs without one; never resolving
``${...}`` resolvers found there), leaves out and lists the run directories it cannot read, and writes
into ``DIR`` (or ``--out``, a directory):

* ``report.csv``: one row per run, failed and missing runs included (``status``), each speed figure also as
  a ratio to the mean of the ``pe=none`` runs of the same sweep, model, input size and batch size (columns
  ``*_ratio_vs_none``);
* every arm (the runs that differ only in seed) named by what sets it apart within its sweep: the swept
  overrides (``pe.block=3``; a study arm by its name, ``axial2_complex``), used alike in every table, plot
  and the W&B table; ``--baseline`` takes that name, ``key=value`` overrides or a variant label
  (``axial_block N=2 fast``), and an unknown one exits 2 listing the arms;
* ``stats.csv``: one row per table (a sweep on a dataset, one per learning rate where the sweep sets
  ``train.lr`` on the command line), arm and evaluation size (the training size included): test accuracy
  as mean, 95 % t-CI and n; against ``--baseline``, paired over common seeds, the difference with the 90 %
  CI TOST uses, the paired t and exact sign-flip p's, the lead test, Holm over every comparison of the
  report, TOST against the pre-registered margin (``study.margin`` / ``study.margin_extrap`` in the runs'
  config, else ``--margin`` / ``--margin-extrap``) and its verdict ``equivalent`` / ``different`` /
  ``inconclusive`` (null without a margin) in two readings: as part of the conjunctive claim "all are
  equivalent" (raw TOST p) and for the comparison alone (TOST p Holm-adjusted over the report's
  equivalence tests); ``uninformative (near chance)`` where both arms score below chance + 2 margins;
  the paired minimal detectable difference, whether the arm was still rising at the end of training,
  the ``command`` rerunning one seed (``rope_ext.stats``; columns in docs/statistics.md);
* ``runs.csv``: one row per run and evaluation size (table, arm, baseline, size, seed, acc, margin, val_acc,
  lr, command, chance and the run's provenance: revision, dirty, start and end time, processor, threads,
  versions): the rows the statistics are computed from, small enough to commit; ``history.csv``: the
  learning curves; ``--from-rows FOLDER`` recomputes a committed report from these rows;
* ``report.md``: those tables (``n.s.`` where the Holm-adjusted p is >= 0.05, ``n/a`` for what was not
  measured; with one seed per arm a sentence saying how to add seeds instead), every group as mean ± std (sample std over seeds) with the ``lie_block`` control's measured
  relative-property error and the shift metrics beside its accuracy, and a list of the failed
  (``failure.json`` or a non-ok ``metrics.json``), interrupted (a user stop, resumable) and missing runs;
* ``acc_vs_block.png``, ``throughput_vs_block.png``, ``acc_vs_resolution.png`` with 95 % CI bars, the
  chance level and the baseline marked;
* CSV cells that a spreadsheet could take for a formula (``= + - @``, tab, CR, LF, space or their
  fullwidth forms first; plain numbers excepted) get a leading ``'``; no file is written through a link;
* a ``wandb.Table`` of the rows (and the plots) logged to each sweep's W&B group, in ``WANDB_MODE``
  (``offline`` when unset; ``disabled`` skips it). A W&B failure only warns.

A *sweep* is the directory holding the job directories (a multirun's sweep directory; for single runs,
their common parent).

Modules: ``runs`` (run discovery: ``Run``, ``find_runs``; also the sweep summary's and the tuner's),
``tables`` (cell formatting, Markdown and CSV tables; also the sweep summary's and the benchmark's),
``groups`` (seeds grouped into arms, speed ratios), ``arms`` (per-arm statistics, ``stats.csv``),
``stats_md`` (its report.md section), ``convergence`` (still rising at the end), ``plots``, ``wandb_log``, ``write`` (``report.csv``,
``report.md``, ``write_report``), ``rows`` (``--from-rows``) and ``cli``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "MARGIN_KEYS",
    "PLOT_FILES",
    "RUN_COLUMNS",
    "STAT_COLUMNS",
    "Margins",
    "Run",
    "find_runs",
    "main",
    "write_report",
]

# Imported on first use: the trainer imports the sweep summary, which imports ``runs`` and ``tables``
# from this package, and should not pay for scipy and the report's writers at every start.
_EXPORTS = {
    "MARGIN_KEYS": "rope_ext.report.arms",
    "Margins": "rope_ext.report.arms",
    "RUN_COLUMNS": "rope_ext.report.arms",
    "PLOT_FILES": "rope_ext.report.plots",
    "STAT_COLUMNS": "rope_ext.report.arms",
    "Run": "rope_ext.report.runs",
    "find_runs": "rope_ext.report.runs",
    "main": "rope_ext.report.cli",
    "write_report": "rope_ext.report.write",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
