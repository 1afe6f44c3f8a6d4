"""Fixtures shared by the model tests."""

from __future__ import annotations

import pytest
from harness_helpers import TinyVit, build_tiny_vit


@pytest.fixture
def tiny_vit() -> TinyVit:
    """The builder of tiny ViTs (``build_tiny_vit``): one model shape for the model tests."""
    return build_tiny_vit


from slurm_fixture import slurm_cluster  # noqa: E402, F401  (the session's local SLURM cluster)
