"""Stopping a run cleanly: the first SIGINT/SIGTERM asks the loop to stop between steps."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any


class StopRequest:
    """SIGINT/SIGTERM handler.

    The first signal asks the loop to stop after the current step, so that replay and counters
    stay consistent and a final checkpoint is written. A second signal stops at once
    (KeyboardInterrupt: no final checkpoint, the run resumes from its last periodic one),
    except inside ``hold()`` (the final save): there it is counted and the save completes.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.count = 0  # signals received
        self.holding = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.signum is not None and not self.holding:
            raise KeyboardInterrupt(f"signal {signum}")
        self.signum = self.signum or signum

    @contextlib.contextmanager
    def hold(self):
        """Signals inside wait for the block to finish (a checkpoint being written)."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False


@contextlib.contextmanager
def stop_on_signals():
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # handlers can only be installed from the main thread
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
