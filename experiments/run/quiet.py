"""orbax's own reports of a failed checkpoint write, left out: its writer threads log the error
with a long traceback once per array, its event loop's closed callbacks print dozens more,
while ``Checkpointer`` reports the failure as one ``StorageError`` line that names the
checkpoint, the cause, the complete checkpoints and the fix."""

from __future__ import annotations

import errno
import functools
import logging
import sys
from typing import Any

# errno of a write that failed for want of space: ENOSPC, EDQUOT, EFBIG (a file size limit).
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _FailedWriteLog(logging.Filter):
    """Drops orbax's own log of a failed write (its writer threads log the error with a long
    traceback, once per array): ``Checkpointer`` reports it as one ``StorageError`` line that
    names the checkpoint, the cause, the complete checkpoints and the fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "os_error_code" in record.getMessage():
            return False
        err, depth = (record.exc_info[1] if record.exc_info else None), 0
        while err is not None and depth < 16:  # the error and its causes
            if "os_error_code" in str(err) or getattr(err, "errno", None) in STORAGE_ERRNOS:
                return False
            err, depth = err.__cause__ or err.__context__, depth + 1
        return True


def _closed_loop_callback(unraisable: Any, previous: Any) -> None:
    """After a failed write orbax closes its event loop while tensorstore still completes the
    other writes; each completion's callback then raises 'Event loop is closed', which Python
    prints as an ignored exception (dozens of tracebacks). Those are dropped; any other
    unraisable exception goes to the previous hook."""
    value = unraisable.exc_value
    if not (
        isinstance(value, RuntimeError)
        and str(value) == "Event loop is closed"
        and unraisable.object is None
    ):
        previous(unraisable)


def quiet_failed_writes() -> None:
    """Installs both filters once per process."""
    if getattr(quiet_failed_writes, "done", False):
        return
    quiet_failed_writes.done = True  # type: ignore[attr-defined]
    for name in ("absl", "asyncio"):  # orbax's logs, and its tasks' unretrieved errors
        logging.getLogger(name).addFilter(_FailedWriteLog())
    sys.unraisablehook = functools.partial(_closed_loop_callback, previous=sys.unraisablehook)
