"""A logdir belongs to one run at a time, and nothing in it is lost.

``LogdirLock`` holds an exclusive ``flock`` on ``<logdir>/.lock`` (``.lock.process<p>`` for
process p of a multi-process run) for as long as the run lives: a second run on the same
logdir, or a second process claiming a process id that is running, is refused at once with the
PID and host that hold it. The kernel drops the lock when its process dies, so a killed run's
lock never blocks the resume; the file itself (a line of JSON naming the holder) stays.

``set_aside_earlier_logs`` keeps the logs of an earlier run that left no checkpoint (killed
before its first save, or whose ``checkpoints/`` was removed): a run that starts afresh moves
them into ``<logdir>/earlier/<UTC time>/`` instead of appending to them, so no step is logged
twice and no row is lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from experiments.errors import ConfigError

LOCK = ".lock"
# What a run writes into its logdir that a fresh start in the same logdir would write again.
RUN_LOGS = ("metrics.jsonl", "config.json", "tb", "videos", "images")
EARLIER = "earlier"


class LogdirInUse(ConfigError):
    """Another live process holds the logdir (or this process id of it)."""


def lock_path(logdir: Path, process: int = 0) -> Path:
    return logdir / (LOCK if process == 0 else f"{LOCK}.process{process}")


class LogdirLock:
    """The exclusive lock of ``logdir`` for process ``process`` of a run (see the module doc);
    ``release()`` (or the process's end) frees it."""

    def __init__(self, logdir: str | os.PathLike, process: int = 0):
        self.path = lock_path(Path(logdir), process)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            who = process_name(process)
            raise LogdirInUse(
                f"--logdir {logdir} is in use: {who} of a run there is running as "
                f"{holder} ({self.path} is locked). Wait for that run to end or stop it, or pass "
                "another --logdir"
            ) from None
        os.ftruncate(fd, 0)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process": process,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.write(fd, (json.dumps(holder) + "\n").encode())
        self._fd: int | None = fd

    def release(self) -> None:
        """Frees the lock (the file stays: removing it could race a run that is opening it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def process_name(process: int) -> str:
    return "the process" if process == 0 else f"process {process}"


def _read_holder(fd: int) -> str:
    """'PID 1234 on host h since T' from a held lock file, or what is known of it."""
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 4096, 0).decode()
        info = json.loads(text)
        return f"PID {info['pid']} on {info['host']} since {info['since']}"
    return "another process (the lock file names none yet)"


def set_aside_earlier_logs(logdir: str | os.PathLike) -> Path | None:
    """Moves the logs of an earlier run without a checkpoint (``RUN_LOGS``, and every
    ``seed<k>/metrics.jsonl``) into ``<logdir>/earlier/<UTC time>/``, keeping their relative
    paths; returns that folder, or None when there was nothing to move. Call it only when the
    run starts afresh (no checkpoint to resume)."""
    logdir = Path(logdir)
    found = [logdir / name for name in RUN_LOGS if (logdir / name).exists()]
    found += sorted(logdir.glob("seed*/metrics.jsonl"))
    if not found:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = logdir / EARLIER / stamp
    n = 1
    while dest.exists():  # two fresh starts within a second
        n += 1
        dest = logdir / EARLIER / f"{stamp}-{n}"
    for path in found:
        target = dest / path.relative_to(logdir)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    print(
        f"note: {logdir} held logs of an earlier run without a checkpoint; this run starts "
        f"afresh and kept them in {dest}",
        file=sys.stderr,
    )
    return dest
