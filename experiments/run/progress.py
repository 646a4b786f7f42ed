"""The console's progress line and the process's start time."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path


class Progress:
    """One console line: steps, env steps/s, updates/s and ETA; newline-terminated off a TTY."""

    def __init__(self, total: int, start: int, updates: int, quiet: bool = False):
        self.total, self.start, self.t0 = total, start, time.time()
        self.updates0, self.last = updates, 0.0
        self.tty, self.quiet = sys.stderr.isatty() and not quiet, quiet

    def show(self, env_steps: int, updates: int, force: bool = False) -> None:
        now = time.time()
        if self.quiet or (not force and now - self.last < (1.0 if self.tty else 30.0)):
            return
        self.last = now
        dt = max(now - self.t0, 1e-6)
        sps = (env_steps - self.start) / dt
        ups = (updates - self.updates0) / dt
        eta = (self.total - env_steps) / sps if sps > 0 else float("inf")
        eta_s = format_duration(eta)
        pct = 100.0 * env_steps / self.total
        line = (
            f"{env_steps}/{self.total} env steps ({pct:.0f}%) | {sps:.0f} env steps/s | "
            f"{ups:.2f} updates/s | ETA {eta_s}"
        )
        print(
            ("\r" + line) if self.tty else line,
            end="" if self.tty else "\n",
            file=sys.stderr,
            flush=True,
        )


def format_duration(seconds: float) -> str:
    """'HH:MM:SS', with whole days before it ('3d 04:05:06') from a day on; '?' if unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    days, rest = divmod(int(seconds), 86_400)
    clock = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock


def process_start() -> float:
    """Wall-clock time this process started (from /proc; the import of this module if absent)."""
    try:
        # Field 22 of /proc/self/stat: start time in clock ticks since boot.
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


_IMPORTED = time.time()
