"""A switch between the straightforward formulations and their faster equivalents.

Some computations here are written in a form that runs faster on XLA (the prior head batched
after the observe scan, block layers as one batched matmul with the blocks leading, a two-hot
log-probability by gathering two entries instead of forming the two-hot vector). Each keeps its
straightforward formulation behind ``reference_active()``, so that tests can hold the fast
form to the plain one on the same inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_REFERENCE = [False]


@contextlib.contextmanager
def reference_impl() -> Iterator[None]:
    """Within this context, functions traced compute with the straightforward formulations
    instead of the faster, mathematically equal ones. Only tracing is affected: trace a fresh
    function inside it (the tests compare the two)."""
    _REFERENCE[0] = True
    try:
        yield
    finally:
        _REFERENCE[0] = False


def reference_active() -> bool:
    """Whether tracing happens inside ``reference_impl``."""
    return _REFERENCE[0]
