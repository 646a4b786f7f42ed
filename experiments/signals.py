"""Stopping a run cleanly: the first SIGINT/SIGTERM asks the loop to stop between steps."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any


class StopRequest:
    """SIGINT/SIGTERM handler. The first signal asks the loop to stop after the current step,
    so that replay and counters stay consistent and a final checkpoint is written; a second
    signal stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        self.signum = signum


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
