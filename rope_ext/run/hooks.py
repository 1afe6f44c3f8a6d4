"""A debug hook into the step loop: nothing is installed unless ``ROPE_EXT_FAULT`` is set.

The loop calls a hook only where one is installed (``if hooks is not None``), so a normal run pays one
attribute test per step. ``from_env`` installs ``rope_ext.run.debug_faults`` (faults injected at exact
steps, for the tests of divergence and signals) only when its environment variable is set; that module
is not even imported otherwise.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch

FAULT_ENV = "ROPE_EXT_FAULT"


class StepHooks(Protocol):
    """Called by the loop at fixed points of update ``step`` (1-based) of epoch ``epoch`` (1-based)."""

    def before_forward(self, epoch: int, step: int) -> None: ...

    def on_loss(self, epoch: int, step: int, loss: torch.Tensor) -> torch.Tensor: ...

    def after_backward(self, epoch: int, step: int, params: list[torch.Tensor]) -> None: ...

    def after_update(self, epoch: int, step: int, params: list[torch.Tensor]) -> None: ...

    def after_epoch(self, epoch: int) -> None:
        """After epoch ``epoch``'s checkpoint."""


def from_env() -> StepHooks | None:
    """The hooks ``FAULT_ENV`` asks for (see ``rope_ext.run.debug_faults``); None when it is unset."""
    if not os.environ.get(FAULT_ENV, "").strip():
        return None
    from rope_ext.run.debug_faults import FaultInjector

    return FaultInjector.parse(os.environ[FAULT_ENV], FAULT_ENV)
