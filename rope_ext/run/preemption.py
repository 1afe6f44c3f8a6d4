"""Time limits, preemption and Ctrl-C: turn SIGTERM / SIGUSR1 / SIGUSR2 / SIGINT into "checkpoint, then
stop".

The signal handler only records the signal. The training loop looks at ``requested`` at its next sync
point (every ``train.log_every`` steps, agreed across ranks; right after the step on a single process),
saves a checkpoint (mid-epoch, or the epoch's own when it was the epoch's last step) and raises
``Interrupted``. ``hand_over`` then gives the signal to whoever handled it before us: submitit's
handler requeues the job (SLURM time limit or preemption, USR2 by default) and exits; with no previous
handler (or Python's own KeyboardInterrupt handler for SIGINT) the process exits with status
128 + signal. A second SIGINT (Ctrl-C pressed again) exits at once with 130: the checkpoint on disk is
the previous one, and an interrupted save is completed or discarded by the next run
(``rope_ext.checkpoint.recover``).

After the loop (the final evaluation and the speed measurement) no checkpoint is pending: the one on disk
holds every epoch. There ``SignalGuard.stopping_at_once`` makes SIGTERM / SIGUSR1 / SIGUSR2 raise
``Interrupted`` at once, so the stop is recorded and logged like any other before the signal is handed
over (submitit requeues; the rerun only evaluates). SIGINT keeps Python's KeyboardInterrupt there.
Once the record is being written (``SignalGuard.finishing``) the job is complete: those signals are noted
and logged, not acted on, so a time limit in the job's last second does not requeue a finished job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT") if hasattr(signal, name)
)


def interrupted_before_training(on_disk: str) -> str:
    """The one line of a Ctrl-C outside the training loop (setup or final evaluation)."""
    kept = "no checkpoint was written" if on_disk == "none" else f"the checkpoint ({on_disk}) is kept"
    return f"interrupted by SIGINT outside the training loop; {kept}, rerun the same command to resume"


class Interrupted(Exception):
    """Training stopped on a signal after saving its checkpoint."""

    def __init__(self, signum: int, where: str) -> None:
        self.signum = signum
        super().__init__(
            f"interrupted by {signal.Signals(signum).name} {where}; checkpoint saved, rerun the same "
            "command to resume"
        )


def _say_second_sigint() -> None:
    os.write(2, b"second SIGINT: exiting at once (exit 130); the previous checkpoint is kept\n")


class SignalGuard:
    """Context manager installing the recording handler (main thread only; a no-op elsewhere)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.after_finish: int | None = None  # a signal noted by ``finishing``'s handler
        self._unannounced = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum is not None:
            # the line goes straight to file descriptor 2: the logging and buffered streams may be mid-write
            # in the main thread, and re-entering them from a handler raises "reentrant call". Every step
            # is best effort (a closed or broken stderr too): nothing may stop the exit.
            steps = (_say_second_sigint, sys.stdout.flush, sys.stderr.flush, logging.shutdown)
            for step in steps:
                try:
                    step()
                except (RuntimeError, OSError, ValueError):
                    pass
            os._exit(130)
        if self.signum is None:
            self.signum = signum
            # not logged here: the handler can run while the main thread is inside a log handler's flush,
            # and logging again from it raises "reentrant call" with a traceback (seen under CI)
            self._unannounced = True

    def announce(self) -> None:
        """Log the caught signal once, from the training loop that polls the guard."""
        if self._unannounced and self.signum is not None:
            self._unannounced = False
            log.warning(
                "caught %s: checkpointing after this step (DDP: at the next sync, <= train.log_every steps)",
                signal.Signals(self.signum).name,
            )

    @contextlib.contextmanager
    def stopping_at_once(self, where: str) -> Iterator[None]:
        """SIGTERM / SIGUSR1 / SIGUSR2 raise ``Interrupted(signum, where)`` inside the block (main thread
        only): for code after the last checkpoint, where there is nothing to save first."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop_now(signum: int, frame: FrameType | None) -> None:
            # the previous handlers first: a second signal (SLURM's SIGTERM at the limit) while the stop
            # is being recorded goes to them, never into this handler again
            self.restore()
            self.signum = signum
            raise Interrupted(signum, where)

        for sig in SIGNALS:
            if sig != signal.SIGINT:
                self._previous[sig] = signal.signal(sig, stop_now)
        try:
            if self.signum is not None:  # recorded after the loop's last look at it: act on it now
                raise Interrupted(self.signum, where)
            yield
        finally:
            self.restore()

    def finishing(self) -> None:
        """The job is complete and its record is being written: from here until ``restore``, SIGTERM /
        SIGUSR1 / SIGUSR2 are noted in ``after_finish`` and otherwise ignored (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return

        def note(signum: int, frame: FrameType | None) -> None:
            self.after_finish = signum  # logged by ``restore``: logging here may re-enter a handler

        for sig in SIGNALS:
            if sig != signal.SIGINT:
                self._previous[sig] = signal.signal(sig, note)

    @property
    def requested(self) -> bool:
        self.announce()
        return self.signum is not None

    def restore(self) -> None:
        """Put the previous handlers back (idempotent); say so once if a signal came after the job finished."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        if self.after_finish is not None:
            log.warning(
                "caught %s after the job finished (its metrics.json is written): not stopped, not requeued",
                signal.Signals(self.after_finish).name,
            )
            self.after_finish = None

    def hand_over(self, signum: int) -> None:
        """Restore the previous handlers and call the one for ``signum`` when it is a Python callable."""
        self.restore()
        previous = self._previous.get(signum)
        if callable(previous) and previous is not signal.default_int_handler:  # no KeyboardInterrupt
            previous(signum, None)
