"""README.md and docs/study.md cite the committed reports: every study table row and every p, Holm p and
verdict they quote is what experiments/results/<report>/stats.csv holds (experiments/check_doc_claims.py)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from harness_helpers import REPO

SCRIPT = REPO / "experiments" / "check_doc_claims.py"


def _module():
    spec = importlib.util.spec_from_file_location("check_doc_claims", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_cited_number_is_in_the_committed_reports() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every table row match" in result.stdout


def test_a_number_that_drifts_from_its_report_is_named(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    study = (REPO / "docs" / "study.md").read_text()
    row = _module().table_rows("relpos_equiv_blocks")[-1]  # N = 16 at lr 3e-3
    assert row in study
    (tmp_path / "docs" / "study.md").write_text(study.replace(row, row.replace("| 0.153 |", "| 0.015 |")))
    readme = (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").write_text(readme.replace("(Holm p 0.031)", "(Holm p 0.013)"))
    found = _module().problems(tmp_path)
    assert len(found) == 2, found
    assert found[0].startswith("docs/study.md lacks the row | 0.003 | N = 16 |")
    assert "canvases (Holm p 0.031)" in found[1] and "p_holm_family" in found[1]
