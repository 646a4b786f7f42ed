"""Sequence replay: uniform [B, T] windows over worker streams, FIFO capacity, on-disk chunks.

A runner steps N environments in parallel; each environment (worker) produces one time-ordered
*stream* of steps. A step is a dict of numpy values (``vector: [D] float32`` or
``image: [64, 64, 3] uint8``, ``action: [A]``, ``reward: []``, ``is_first``/``is_last``/
``is_terminal: []`` bool, or any other keys); its keys, shapes and dtypes are fixed by the first
step added. Training samples ``[B, T]`` batches: each row is T consecutive steps of one stream,
drawn uniformly over every valid start,

    P(stream s, start p) = 1 / sum_s' max(0, L_s' - T + 1)   for start_s <= p <= end_s - T,

where ``[start_s, end_s)`` are the step indices of stream s still stored and ``L_s`` their count.
Windows may cross episode boundaries; ``is_first`` marks them for the model to reset on. A
window sampled without context starts a sequence: ``sample_sequences`` marks its first step
``is_first`` (both DreamerV3 releases' replays do, 2023 ``generic.py`` and 2024 ``replay.py``),
so the model starts it from h_0 whatever state it was handed.

Memory layout. All steps of all streams live in one ring of ``capacity`` rows per key
(``[capacity, *shape]``, allocated lazily so untouched pages cost no RAM), written in
global insertion order. The row about to be overwritten therefore always holds the globally
oldest step, which makes eviction exact FIFO at step granularity: ``len(replay) == capacity``
once full, never more. Each stream keeps the ring rows of its stored steps in time order, so a
batch is one index array ``rows: [B, T]`` and one numpy gather per key, with no per-step Python.
Besides the step data the ring holds 12 bytes of bookkeeping per row (the owner stream and the
global insertion stamp), and each stream's row index takes 8-16 bytes per stored step.

Online queue (``online=L``, DreamerV3's ``replay.online``). Every L steps of a stream, the window
of its latest L steps is queued; ``sample_sequences`` serves queued windows (oldest first) before
drawing uniformly, so every stretch of fresh experience is trained on at least once soon after
it was collected. The queue is part of the saved state.

Context. ``add_batch(steps, context=...)`` also stores per-step *context* values (the RSSM
state of each step for DreamerV3's replay context), which training refreshes through
``update_context``; ``sample_sequences`` returns the context of the step before each window.
Context lives beside the step data and is saved as one snapshot per ``save()`` (see
``experiments.replay.context``).

Not thread-safe: call ``add``, ``sample`` and ``save`` from one thread (or guard with a lock).
"""

from __future__ import annotations

import bisect
import collections
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.envs.contract import check_int
from experiments.malloc import lazy_zeros
from experiments.replay import disk
from experiments.replay.context import ContextStore
from experiments.replay.disk import CHUNK, ChunkFile
from experiments.replay.steps import (
    check_context,
    check_step,
    normalized_spec,
    step_bytes,
    workers_of,
)
from experiments.replay.streams import Stream, queued_windows, uniform_windows, worker_id


class Buffer:
    """FIFO sequence replay over worker streams, optionally mirrored to disk in chunks.

    Args:
      capacity: most steps stored, summed over streams; adding past it evicts the globally
        oldest step (exact, step granularity).
      directory: where chunk files are written (created if absent); ``None`` keeps everything in
        memory and writes nothing.
      chunk_size: steps per stream per chunk file.
      seed: seeds the ``np.random.Generator`` that draws sample positions.
      compress: write ``np.savez_compressed`` files instead of uncompressed ones.
      keep_states: how many of the most recent ``save()`` states stay loadable; files they need
        are not deleted by eviction until a later ``save()`` supersedes them.
      context_dtype: float type the per-step context values are stored in.
      online: window length L of the online queue (0: off); ``sample_sequences`` must then
        draw windows of exactly L steps (length + context).
    """

    def __init__(
        self,
        capacity: int,
        directory: str | os.PathLike | None = None,
        chunk_size: int = 1024,
        seed: int = 0,
        *,
        compress: bool = False,
        keep_states: int = 2,
        context_dtype: str = "float16",
        online: int = 0,
    ):
        self.capacity = check_int("capacity", capacity, 1, fix="it is the number of steps stored")
        self.chunk_size = check_int(
            "chunk_size", chunk_size, 1, fix="it is the number of steps per stream in one file"
        )
        self.keep_states = check_int(
            "keep_states", keep_states, 1, fix="the latest save() state must stay loadable"
        )
        self.seed = check_int("seed", seed, 0)
        self.compress = bool(compress)
        self.directory = None if directory is None else os.path.abspath(os.fspath(directory))
        self._rng = np.random.default_rng(self.seed)

        self._spec: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._data: dict[str, np.ndarray] = {}  # key -> [capacity, *shape]
        self._stamps = np.zeros(0, dtype=np.int64)  # [capacity] global insertion stamp per row
        self._owner = np.zeros(0, dtype=np.int32)  # [capacity] stream ident per row
        self._count = 0
        self._next_row = 0
        self._next_stamp = 0

        self._streams: dict[int, Stream] = {}
        self._by_ident: list[Stream] = []
        self._sorted: list[Stream] = []  # by worker id: fixes the order of sampling positions
        self._saved: list[dict[int, tuple[int, int]]] = []  # windows of the kept save() states
        self._saved_context: list[str] = []  # context snapshots of the kept save() states
        self._context = ContextStore(self.capacity, context_dtype)
        self.online = check_int("online", online, 0, fix="a window length, or 0 for off")
        self._queue: collections.deque[tuple[int, int]] = collections.deque()  # (worker, start)
        self._deferred: list[tuple[int, ChunkFile]] = []  # evicted files a kept state still needs
        # draw(count, total) -> [count] ints in [0, total): the uniform draws of one sample, in
        # place of the seeded generator's (the runner's run.replay_sampler='keyed').
        self.draw: Any = None

        self._foreign = 0
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
            self._foreign = sum(1 for n in os.listdir(self.directory) if CHUNK.match(n))

    # ------------------------------------------------------------------ spec and sizes

    @property
    def spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-key ``(shape, dtype)`` of one step, fixed by the first step (empty before)."""
        return dict(self._spec)

    @property
    def bytes_per_step(self) -> int:
        """``step_bytes`` of this replay's steps and context (0 before the first step)."""
        if not self._spec:
            return 0
        return step_bytes(self._spec, self._context.spec, self._context.dtype)

    def ram_at_capacity(self) -> int:
        """Bytes when full: capacity * bytes_per_step (data, context and bookkeeping)."""
        return self.capacity * self.bytes_per_step

    def nbytes(self) -> int:
        """Bytes of the arrays this replay has allocated: the ring's data, stamps and owners,
        the context and the streams' row indices (allocated at capacity, touched lazily)."""
        arrays = [*self._data.values(), self._stamps, self._owner, *self._context.data.values()]
        return sum(a.nbytes for a in arrays) + sum(s.index_nbytes for s in self._sorted)

    def __len__(self) -> int:
        return self._count

    def windows(self, length: int) -> int:
        """The windows of ``length`` consecutive steps it can sample, sum_s max(0, L_s - length
        + 1): what DreamerV3's ``len(replay)`` counts (an item per window), and what training
        waits for (a batch's worth, B x T, before the first update)."""
        return sum(max(0, s.size - length + 1) for s in self._sorted)

    @property
    def workers(self) -> tuple[int, ...]:
        """Ids of every stream seen so far, ascending (streams may be empty after eviction)."""
        return tuple(s.worker for s in self._sorted)

    def stream_range(self, worker: int) -> tuple[int, int]:
        """``(start, end)``: steps ``[start, end)`` of stream ``worker`` are stored."""
        s = self._stream(worker)
        return s.start, s.end

    def stream_steps(self, worker: int) -> dict[str, np.ndarray]:
        """Copies of the stored steps of one stream in time order, each ``[end - start, ...]``."""
        rows = self._stream(worker).rows()
        return {k: v[rows] for k, v in self._data.items()}

    def stream_context(self, worker: int) -> dict[str, np.ndarray]:
        """float32 copies of the stored context of one stream's steps, in time order."""
        return self._context.read(self._stream(worker).rows())

    def _stream(self, worker: int) -> Stream:
        worker = worker_id(worker)
        if worker not in self._streams:
            raise ValueError(f"no stream for worker {worker}; streams present: {self.workers}")
        return self._streams[worker]

    # ------------------------------------------------------------------ adding

    def add(self, step: Mapping[str, Any], worker: int = 0) -> None:
        """Appends one step (dict of arrays, shapes as in ``spec``) to stream ``worker``."""
        worker = worker_id(worker)
        self._check_resumable()
        if not isinstance(step, Mapping):
            raise TypeError(f"step must be a dict of arrays, got {type(step).__name__}")
        values = {k: np.asarray(v) for k, v in step.items()}
        if not self._spec:
            self._set_spec({k: (v.shape, v.dtype) for k, v in values.items()})
        check_step(self._spec, values, 0)
        self._append(self._get_stream(worker), values)

    def add_batch(self, steps: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> None:
        """Appends ``steps[k][i]`` to stream ``i`` for every i: each value is ``[N, *shape]``.

        ``context``: per-step context values ``{key: [N, ...]}`` (the same keys and shapes every
        time, float), stored beside the steps; see ``sample_sequences``.
        """
        self._check_resumable()
        if not isinstance(steps, Mapping):
            raise TypeError(f"steps must be a dict of [N, ...] arrays, got {type(steps).__name__}")
        values = {k: np.asarray(v) for k, v in steps.items()}
        n = workers_of(values)
        if n == 0:
            return
        if not self._spec:
            self._set_spec({k: (v.shape[1:], v.dtype) for k, v in values.items()})
        check_step(self._spec, values, 1)
        context = check_context(context, n, sorted(self._context.data))
        rows = np.empty(n, np.int64)
        for i in range(n):
            rows[i] = self._next_row
            self._append(self._get_stream(i), {k: v[i] for k, v in values.items()})
        if context is not None:
            self._context.write(rows, context)

    def _set_spec(
        self,
        spec: Mapping[str, tuple[tuple[int, ...], np.dtype]],
        data: dict[str, np.ndarray] | None = None,
    ) -> None:
        self._spec = normalized_spec(spec)
        if data is None:
            data = {k: lazy_zeros((self.capacity, *s), t) for k, (s, t) in self._spec.items()}
        self._data = data
        self._stamps = lazy_zeros((self.capacity,), np.int64)
        self._owner = lazy_zeros((self.capacity,), np.int32)

    def _get_stream(self, worker: int) -> Stream:
        stream = self._streams.get(worker)
        if stream is None:
            stream = Stream(worker, ident=len(self._by_ident))
            self._add_stream(stream)
        return stream

    def _add_stream(self, stream: Stream) -> None:
        self._streams[stream.worker] = stream
        self._by_ident.append(stream)
        keys = [s.worker for s in self._sorted]
        self._sorted.insert(bisect.bisect(keys, stream.worker), stream)

    def _append(self, stream: Stream, values: Mapping[str, np.ndarray]) -> None:
        if self._count == self.capacity:
            self._evict_oldest()
        row = self._next_row
        for key, value in values.items():
            self._data[key][row] = value
        self._stamps[row] = self._next_stamp
        self._owner[row] = stream.ident
        self._next_stamp += 1
        stream.push(row)
        self._count += 1
        self._next_row = (row + 1) % self.capacity
        # As DreamerV3: the step with index n = end - 1 queues the window ending at it whenever
        # n is a multiple of L (and the stream holds L steps).
        if self.online and stream.end >= self.online and (stream.end - 1) % self.online == 0:
            self._queue.append((stream.worker, stream.end - self.online))
        if self.directory is not None and stream.end % self.chunk_size == 0:
            self.flush(stream)

    def _evict_oldest(self) -> None:
        # The ring is written in insertion order, so the row about to be reused holds the
        # globally oldest step, and that step is the head of its stream.
        row = self._next_row
        stream = self._by_ident[int(self._owner[row])]
        popped = stream.pop()
        if popped != row:  # an internal invariant; a failure here is a bug, not a user error
            raise RuntimeError(f"replay ring out of order: row {row} vs stream head {popped}")
        self._count -= 1
        while stream.files and stream.files[0].end <= stream.start:
            self.drop(stream.worker, stream.files.popleft())

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, length: int) -> dict[str, np.ndarray]:
        """Draws ``batch_size`` windows of ``length`` consecutive steps of one stream each.

        Windows are uniform over all valid (stream, start) pairs (see the module docstring).

        Returns:
          dict key -> ``[B, T, *shape]`` array, dtype as stored (images stay uint8).
        """
        rows = self._sample_rows(batch_size, length)
        return {key: np.take(value, rows, axis=0) for key, value in self._data.items()}

    def sample_sequences(
        self, batch_size: int, length: int, context: int = 0
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """Windows of ``context + length`` steps: the last ``length`` as the batch, and the
        stored context of the step just before them.

        Returns (batch, rows, stamps): batch holds ``[B, length, ...]`` step arrays and, with
        ``context``, ``batch['context'] = {key: [B, ...]}`` (float32); rows and stamps
        ``[B, length]`` name the batch's steps for ``update_context``.
        """
        if context not in (0, 1):
            raise ValueError(f"context={context}; expected 0 or 1 step of replay context")
        if context and not self._context.data:
            raise ValueError("sample_sequences(context=1) needs steps added with context=")
        rows = self._online_rows(batch_size, length + context)
        if len(rows) < batch_size:
            uniform = self._sample_rows(batch_size - len(rows), length + context)
            rows = np.concatenate([rows, uniform]) if len(rows) else uniform
        body = rows[:, context:]
        batch: dict[str, Any] = {k: np.take(v, body, axis=0) for k, v in self._data.items()}
        if context:
            batch["context"] = self._context.read(rows[:, 0])
        elif "is_first" in batch:
            # A window without context starts its sequence (as both DreamerV3 releases' replays
            # mark it): the model resets to h_0 and a zero previous action there. With context,
            # the window's first step is the context step, which the batch leaves out.
            batch["is_first"][:, 0] = True
        return batch, body, self._stamps[body]

    def update_context(
        self, rows: np.ndarray, stamps: np.ndarray, values: Mapping[str, Any]
    ) -> int:
        """Overwrites the context of the steps ``rows`` ``[B, T]`` with ``values[k]
        [B, T, ...]``, skipping rows whose step (``stamps``) was evicted since it was sampled.
        Returns the number of steps written."""
        return self._context.update(rows, stamps, values, self._stamps)

    def _online_rows(self, batch_size: int, length: int) -> np.ndarray:
        """Rows ``[<= B, length]`` of queued windows still stored (popped from the queue)."""
        if not self.online:
            return np.zeros((0, length), np.int64)
        if length != self.online:
            raise ValueError(
                f"this replay queues online windows of {self.online} steps but was asked for "
                f"{length}; create it with online=length + context"
            )
        return queued_windows(self._queue, self._streams, batch_size, length)

    def _sample_rows(self, batch_size: int, length: int) -> np.ndarray:
        batch_size = check_int("batch_size", batch_size, 1, fix="sample at least one sequence")
        length = check_int("length", length, 1, fix="a sequence has at least one step")
        return uniform_windows(self._rng, self._sorted, batch_size, length, self.draw)

    # ------------------------------------------------------------------ disk

    def _check_resumable(self) -> None:
        if self._foreign:
            raise ValueError(
                f"directory {self.directory} already holds {self._foreign} chunk files of an "
                "earlier run; call load(state) with that run's saved state to resume it, or use "
                "an empty directory to start afresh"
            )

    def flush(self, stream: Stream) -> None:
        """Writes the stream's stored steps that are not on disk yet as one chunk file."""
        first = max(stream.disk_end, stream.start)
        if first < stream.end:
            rows = stream.rows()[first - stream.start :]
            arrays = {disk.PREFIX + k: v[rows] for k, v in self._data.items()}
            arrays[disk.STAMP] = self._stamps[rows]
            file = disk.write_chunk(self.directory, stream.worker, first, arrays, self.compress)
            stream.files.append(file)
        stream.disk_end = stream.end

    def drop(self, worker: int, file: ChunkFile) -> None:
        """Deletes an evicted file, or defers it while a kept save() state refers to it."""
        for windows in self._saved:
            start, end = windows.get(worker, (0, 0))
            if file.first < end and file.end > start:
                self._deferred.append((worker, file))
                return
        os.remove(file.path)

    def _stored_rows(self) -> np.ndarray:
        """Ring rows of every stored step, in insertion order (oldest first)."""
        if self._count < self.capacity:
            return np.arange(self._count, dtype=np.int64) if self._count else np.zeros(0, np.int64)
        return (np.arange(self.capacity, dtype=np.int64) + self._next_row) % self.capacity
