"""Faults injected at exact steps, for the tests of divergence and signals (``ROPE_EXT_FAULT``).

``ROPE_EXT_FAULT="KIND@EPOCH:STEP[,...]"`` (1-based; STEP ``end``: right after that epoch's checkpoint).
KIND: a signal name (SIGTERM, SIGUSR1, SIGUSR2, SIGINT; SIGINT2 sends two), sent to this process from
inside the step, after the backward pass, as an operator or a scheduler would; ``loss`` / ``grad`` /
``param``: that step's loss, a gradient or, after the update, a weight made NaN (inf for the gradient);
``solve``: the step's forward raises the LinAlgError of a singular linear solve. Deterministic on every
processor, unlike a huge learning rate. Loaded by ``rope_ext.run.hooks.from_env`` only when it is set.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

import torch

from rope_ext.errors import ConfigError

FAULT_KINDS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT", "SIGINT2", "loss", "grad", "param", "solve")
Faults = dict[tuple[int, int | None], set[str]]  # (epoch, step or None for "end") -> kinds


@dataclass
class FaultInjector:
    """``rope_ext.run.hooks.StepHooks`` injecting ``faults``."""

    faults: Faults = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, variable: str = "ROPE_EXT_FAULT") -> FaultInjector:
        """The value of the environment ``variable``; ConfigError naming it when an item is not
        KIND@EPOCH:STEP."""
        faults: Faults = {}
        for item in filter(None, (part.strip() for part in text.strip().split(","))):
            kind, _, where = item.partition("@")
            epoch, _, step = where.partition(":")
            if kind not in FAULT_KINDS or not epoch.isdigit() or not (step.isdigit() or step == "end"):
                raise ConfigError(
                    f"{variable}={text.strip()!r}: {item!r} is not KIND@EPOCH:STEP (STEP a number or "
                    f"'end', KIND one of {', '.join(FAULT_KINDS)}); unset it outside tests"
                )
            faults.setdefault((int(epoch), None if step == "end" else int(step)), set()).add(kind)
        return cls(faults)

    def _at(self, epoch: int, step: int | None) -> set[str]:
        return self.faults.get((epoch, step), set())

    def before_forward(self, epoch: int, step: int) -> None:
        if "solve" in self._at(epoch, step):
            raise torch.linalg.LinAlgError(
                "linalg.solve: The solver failed because the input matrix is singular (injected)."
            )

    def on_loss(self, epoch: int, step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if "loss" in self._at(epoch, step) else loss

    def after_backward(self, epoch: int, step: int, params: list[torch.Tensor]) -> None:
        kinds = self._at(epoch, step)
        if "grad" in kinds:
            params[0].grad.fill_(float("inf"))
        _send_signals(kinds)

    def after_update(self, epoch: int, step: int, params: list[torch.Tensor]) -> None:
        if "param" in self._at(epoch, step):
            with torch.no_grad():
                params[0].view(-1)[0] = float("nan")

    def after_epoch(self, epoch: int) -> None:
        _send_signals(self._at(epoch, None))


def _send_signals(kinds: set[str]) -> None:
    for kind in sorted(k for k in kinds if k.startswith("SIG")):
        for _ in range(2 if kind == "SIGINT2" else 1):
            os.kill(os.getpid(), getattr(signal, "SIGINT" if kind == "SIGINT2" else kind))
