"""Sequence replay: the in-memory ring of worker streams (``buffer``), its chunk files on disk
(``disk``), ``save``/``load`` (``saving``) and the per-step context store (``context``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.replay import saving
from experiments.replay.buffer import Buffer
from experiments.replay.disk import ReplayDamaged, chunk_file_name, discard_replay_files
from experiments.replay.steps import ROW_BOOKKEEPING, step_bytes

__all__ = [
    "ROW_BOOKKEEPING",
    "Replay",
    "ReplayDamaged",
    "chunk_file_name",
    "discard_replay_files",
    "step_bytes",
]


class Replay(Buffer):
    """FIFO sequence replay over worker streams, mirrored to disk in chunks when it has a
    directory (``buffer.Buffer``), with ``save()`` and ``load(state)`` (``saving``)."""

    def save(self) -> dict[str, Any]:
        """Writes every pending step to disk and returns the JSON-able state for ``load``."""
        return saving.save(self)

    def load(self, state: Mapping[str, Any]) -> None:
        """Restores this fresh replay to the ``state`` an earlier ``save()`` returned."""
        saving.load(self, state)
