"""Every command a committed report gives (stats.csv's and runs.csv's ``command`` cells, report.md's
commands, report.csv's recorded overrides) passes the checks ``python -m rope_ext.jobs --check`` runs:
it composes with today's presets and validates, so it can be copied and run as it stands."""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import pytest

from rope_ext.jobs import check_jobs

RESULTS = Path(__file__).resolve().parents[2] / "experiments" / "results"
_MD_COMMAND = re.compile(r"`(python train\.py [^`]*)`")


def _cells(folder: Path) -> set[str]:
    """The report's commands as override lists' text (``python train.py`` dropped)."""
    commands: set[str] = set()
    for name, column in (("stats.csv", "command"), ("runs.csv", "command"), ("report.csv", "overrides")):
        path = folder / name
        if not path.is_file():
            continue
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                text = (row.get(column) or "").lstrip("'")
                if text:
                    commands.add(text.removeprefix("python train.py").strip())
    if (folder / "report.md").is_file():
        for found in _MD_COMMAND.findall((folder / "report.md").read_text()):
            commands.add(found.removeprefix("python train.py").strip())
    return commands


def _shape(overrides: str) -> tuple[str, ...]:
    """One job per arm and setting: the seed's value does not change what is checked."""
    return tuple(re.sub(r"^seed=\d+$", "seed=0", o) for o in shlex.split(overrides))


REPORTS = sorted(p.name for p in RESULTS.iterdir() if (p / "report.csv").is_file())


@pytest.mark.slow
@pytest.mark.parametrize("study", REPORTS)
def test_every_committed_command_runs_with_todays_presets(study: str, preset_folder: Path) -> None:
    jobs = sorted({_shape(c) for c in _cells(RESULTS / study)})
    assert jobs, f"{study}: no command found"
    for job in jobs:
        assert not any(o.startswith("experiment=") and "/" not in o for o in job), (study, job)
    problems = check_jobs([list(j) for j in jobs])
    refused = [(" ".join(j), p) for j, p in zip(jobs, problems) if p]
    assert not refused, refused
