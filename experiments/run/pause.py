"""Named points where a run can be held, so that tests interrupt it at a known moment.

``RSSM_JAX_PAUSE`` lists points as ``name`` or ``name@value`` (comma-separated). A run that
reaches a listed point (with ``value`` at least the given one) writes the file
``$RSSM_JAX_PAUSE_FILE.<name>`` and waits there until its condition holds (a signal arrived)
or the file ``$RSSM_JAX_PAUSE_FILE.<name>.go`` appears, else forever. A test waits for the
first file, then sends its signal: the signal lands at that point on any machine, however
busy. Without ``RSSM_JAX_PAUSE`` every point is a no-op.

Points: ``env_step@N`` (the loop, between steps, once N env steps are done and every save
before them is complete), ``checkpoint_write@N`` (the background write of checkpoint N, after
its temporary directory holds the meta file, before it is renamed into place), ``final_save``
(the save on the way out, after it started, before it completes).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

ENV = "RSSM_JAX_PAUSE"
ENV_FILE = "RSSM_JAX_PAUSE_FILE"
_passed: set[str] = set()


def wanted(name: str, value: int = 0) -> bool:
    """Whether point ``name`` at ``value`` is listed and not passed yet."""
    for spec in filter(None, os.environ.get(ENV, "").split(",")):
        point, _, at = spec.partition("@")
        if point == name and name not in _passed and value >= int(at or 0):
            return True
    return False


def point(
    name: str, value: int = 0, until: Callable[[], bool] | None = None, tag: str = ""
) -> None:
    """Holds here if ``name`` is listed (see the module doc); ``tag`` names the process."""
    if not wanted(name, value):
        return
    _passed.add(name)
    marker = f"{os.environ.get(ENV_FILE, 'pause')}.{name}{tag}"
    tmp = marker + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(value))
    os.replace(tmp, marker)  # the test sees the whole file or none
    while not os.path.exists(marker + ".go") and not (until is not None and until()):
        time.sleep(0.01)
