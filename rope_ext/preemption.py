"""Time limits and preemption: turn SIGTERM / SIGUSR1 / SIGUSR2 into "checkpoint, then stop".

The signal handler only records the signal. The training loop looks at ``requested`` at its next sync
point (every ``train.log_every`` steps, agreed across ranks), saves a mid-epoch checkpoint and raises
``Interrupted``. ``hand_over`` then gives the signal to whoever handled it before us: submitit's
handler requeues the job (SLURM time limit or preemption, USR2 by default) and exits; with no previous
handler the process exits with status 128 + signal.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


class Interrupted(Exception):
    """Training stopped on a signal after saving its checkpoint."""

    def __init__(self, signum: int, where: str) -> None:
        self.signum = signum
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} {where}; checkpoint saved, rerun the same "
            "command to resume"
        )


class SignalGuard:
    """Context manager installing the recording handler (main thread only; a no-op elsewhere)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning(
                "caught %s: checkpointing after this step (DDP: at the next sync, <= train.log_every steps)",
                signal.Signals(signum).name,
            )

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def restore(self) -> None:
        """Put the previous handlers back (idempotent)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)

    def hand_over(self, signum: int) -> None:
        """Restore the previous handlers and call the one for ``signum`` when it is a Python callable."""
        self.restore()
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, None)
