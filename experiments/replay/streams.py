"""The bookkeeping of one worker stream of replay: its stored steps and their ring rows."""

from __future__ import annotations

import collections
import operator
from typing import Any

import numpy as np

from experiments.replay.disk import ChunkFile


def worker_id(worker: Any) -> int:
    try:
        worker = operator.index(worker)
    except TypeError:
        raise TypeError(
            f"worker must be an int stream id, got {worker!r} of type {type(worker).__name__}"
        ) from None
    if worker < 0:
        raise ValueError(f"worker must be >= 0 (it names the stream's files), got {worker}")
    return worker


class Stream:
    """Bookkeeping of one worker stream: stored step indices and their ring rows.

    ``rows()[i]`` is the ring row of step ``start + i``. The row index is a growable array with a
    moving head, so appending and evicting are amortized O(1) and ``rows()`` is a view.
    """

    __slots__ = ("_head", "_rows", "disk_end", "end", "files", "ident", "start", "worker")

    def __init__(self, worker: int, ident: int, start: int = 0, rows: np.ndarray | None = None):
        self.worker = worker
        self.ident = ident  # position in creation order; the ring's owner array stores it
        self.start = start  # index of the oldest stored step
        n = 0 if rows is None else len(rows)
        self.end = start + n  # steps ever added to this stream
        self.disk_end = self.end  # steps [.., disk_end) are on disk or were evicted unwritten
        self._rows = np.empty(max(16, 2 * n), dtype=np.int64)
        if rows is not None:
            self._rows[:n] = rows
        self._head = 0
        self.files: collections.deque[ChunkFile] = collections.deque()

    @property
    def size(self) -> int:
        return self.end - self.start

    def rows(self) -> np.ndarray:
        return self._rows[self._head : self._head + self.size]

    @property
    def index_nbytes(self) -> int:
        return self._rows.nbytes

    def push(self, row: int) -> None:
        n = self.size
        if self._head + n == len(self._rows):
            if n < len(self._rows) // 2:
                # At least half the buffer was evicted from the head: slide the live part down.
                self._rows[:n] = self._rows[self._head : self._head + n]
                self._head = 0
            else:
                grown = np.empty(2 * len(self._rows), dtype=np.int64)
                grown[:n] = self.rows()
                self._rows, self._head = grown, 0
        self._rows[self._head + n] = row
        self.end += 1

    def pop(self) -> int:
        row = int(self._rows[self._head])
        self._head += 1
        self.start += 1
        return row


def uniform_windows(
    rng: np.random.Generator,
    streams: list[Stream],
    batch_size: int,
    length: int,
    draw: Any = None,
) -> np.ndarray:
    """Ring rows ``[B, length]`` of B windows drawn uniformly over every valid (stream, start):
    P(s, p) = 1 / sum_s' max(0, L_s' - length + 1). ``streams`` in a fixed order (by worker).
    ``draw(B, total)``, if given, makes the B uniform draws in [0, total) instead of ``rng``."""
    sizes = np.fromiter((s.size for s in streams), dtype=np.int64, count=len(streams))
    starts = np.maximum(sizes - length + 1, 0)
    total = int(starts.sum())
    if total == 0:
        longest = int(sizes.max()) if len(sizes) else 0
        raise ValueError(
            f"cannot sample sequences of length {length}: the replay stores {int(sizes.sum())} "
            f"steps and its longest stream has {longest}, but a sequence needs {length} "
            "consecutive steps of one stream; add more steps or sample a shorter length"
        )
    if draw is None:
        draws = rng.integers(0, total, size=batch_size)
    else:
        draws = np.asarray(draw(batch_size, total), np.int64)
    cumulative = np.cumsum(starts)
    which = np.searchsorted(cumulative, draws, side="right")
    offsets = draws - (cumulative[which] - starts[which])
    rows = np.empty((batch_size, length), dtype=np.int64)
    # One slice per sequence (not per step); the gather is one numpy call per key.
    for b, (s, o) in enumerate(zip(which.tolist(), offsets.tolist(), strict=True)):
        rows[b] = streams[s].rows()[o : o + length]
    return rows


def queued_windows(
    queue: collections.deque[tuple[int, int]],
    streams: dict[int, Stream],
    batch_size: int,
    length: int,
) -> np.ndarray:
    """Rows ``[<= B, length]`` of the queued windows ``(worker, start)`` still stored, oldest
    first (popped from the queue; evicted ones are skipped)."""
    out = []
    while queue and len(out) < batch_size:
        worker, start = queue.popleft()
        stream = streams[worker]
        if start >= stream.start:  # not evicted since it was queued
            out.append(stream.rows()[start - stream.start : start - stream.start + length])
    return np.stack(out) if out else np.zeros((0, length), np.int64)
