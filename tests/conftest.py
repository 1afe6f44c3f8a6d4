"""Fixtures shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_helpers import TinyVit, build_tiny_vit, stand_in_finetune_source


@pytest.fixture
def tiny_vit() -> TinyVit:
    """The builder of tiny ViTs (``build_tiny_vit``): one model shape for the model tests."""
    return build_tiny_vit


@pytest.fixture
def preset_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working folder, holding what every preset reads from it: a stand-in for the
    fine-tune presets' source weights (``stand_in_finetune_source``), as after their source run."""
    monkeypatch.chdir(tmp_path)
    stand_in_finetune_source(tmp_path)
    return tmp_path


from slurm_fixture import slurm_cluster  # noqa: E402, F401  (the session's local SLURM cluster)
