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

Disk layout. With a ``directory``, every time a stream completes a chunk (its step count reaches
a multiple of ``chunk_size``) the steps not yet on disk are written as one file
``w{worker}-i{first}-n{length}.npz`` (stream id, index of its first step, number of steps).
``save()`` also writes each stream's pending partial chunk, so every stored step is on disk;
later steps go to new files and no file is ever rewritten. Writes are atomic: the file is
written under ``<name>.tmp`` and renamed with ``os.replace``, so a process killed mid-write
leaves only a ``.tmp`` file, which ``load`` removes. (Atomicity covers killed processes; surviving
a power loss would also need ``fsync``, which is not done.) Files are *uncompressed* ``.npz``
by default because the collector blocks while a chunk is written and ``load`` reads them all
back: for 1024 rendered 64x64 cheetah frames (12.6 MB) ``np.savez`` took 16 ms and
``np.savez_compressed`` 66 ms (1.5 MB) on one core of the development machine, and inflating is
slower than reading raw bytes from a local disk. Pass ``compress=True`` where disk space or a
slow network filesystem matters more than CPU time.
Each file also stores the global insertion stamp of every step, so a resumed replay evicts in
exactly the order the uninterrupted one would have.

Eviction and deletion. A file is deleted once all of its steps are evicted, unless one of the
``keep_states`` most recent ``save()`` states still refers to it: then it is deleted at the
first later ``save()`` after which no kept state needs it. This keeps the state of the latest
save (and the one before, by default) loadable after a kill, even while the process that was
killed kept evicting. The directory may thus hold somewhat more than ``capacity`` steps.

Resume. ``state = replay.save()`` is a small JSON-able dict (steps stored per stream, the global
insertion counter, the sampling RNG state, the step spec). ``Replay(capacity, directory).load(
state)`` on a fresh replay over the same directory restores exactly the steps stored at that
save and the RNG state, so the same further adds give the same samples as an uninterrupted run.
It deletes whatever was written after the save (files of later steps, of streams that did not
exist yet, leftover ``.tmp`` files) and truncates a file that runs past the saved end.

Online queue (``online=L``, DreamerV3's ``replay.online``). Every L steps of a stream, the window
of its latest L steps is queued; ``sample_sequences`` serves queued windows (oldest first) before
drawing uniformly, so every stretch of fresh experience is trained on at least once soon after
it was collected. The queue is part of the saved state.

Context. ``add_batch(steps, context=...)`` also stores per-step *context* values (the RSSM
state of each step for DreamerV3's replay context), which training refreshes through
``update_context``; ``sample_sequences`` returns the context of the step before each window.
Context lives beside the step data and is saved as one snapshot per ``save()`` (see
``experiments.replay_context``).

Not thread-safe: call ``add``, ``sample`` and ``save`` from one thread (or guard with a lock).
"""

from __future__ import annotations

import bisect
import collections
import operator
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from experiments.envs import spec_bytes
from experiments.malloc import lazy_zeros
from experiments.replay_context import OWN_CONTEXT_FILES, ContextStore, ReplayDamaged, load_npz

__all__ = ["ROW_BOOKKEEPING", "Replay", "chunk_file_name", "discard_replay_files", "step_bytes"]

_FORMAT = 1
# Array names inside a chunk file: step keys get a prefix so that no step key can collide with
# the stamp or with ``np.savez``'s own argument names (``file``, ``allow_pickle``).
_STAMP = "stamp"
_PREFIX = "k_"
_CHUNK = re.compile(r"^w(\d+)-i(\d+)-n(\d+)\.npz$")
_TEMP = re.compile(r"^w(\d+)-i(\d+)-n(\d+)\.npz\.tmp$")


# Bytes the replay keeps per stored step besides its data: the ring's insertion stamp (int64)
# and owner stream (int32), and the stream's row index (int64, in a buffer up to twice the
# stream's length: counted at its largest).
ROW_BOOKKEEPING = 8 + 4 + 2 * 8


def step_bytes(
    spec: Mapping[str, tuple[tuple[int, ...], Any]],
    context: Mapping[str, tuple[int, ...]] | None = None,
    context_dtype: Any = "float16",
) -> int:
    """Bytes replay holds per stored step (an upper estimate, exact but for the row index):

        sum_k prod(spec[k].shape) itemsize_k + sum_c prod(context[c]) itemsize(context_dtype)
        + ROW_BOOKKEEPING

    ``spec`` is a step's ``{key: (shape, dtype)}`` (observations, action, reward, flags);
    ``context`` the shapes of the per-step context values (the RSSM state), stored in
    ``context_dtype``. The run's pre-flight line, its memory check and ``Replay.nbytes``'s
    estimate all use this one sum."""
    size = np.dtype(context_dtype).itemsize
    ctx = sum(int(np.prod(s, dtype=np.int64)) * size for s in (context or {}).values())
    return spec_bytes(spec) + ctx + ROW_BOOKKEEPING


def discard_replay_files(directory: str | os.PathLike) -> int:
    """Deletes the files in ``directory`` that a Replay writes (chunks, context snapshots and
    their temporaries, by name) and nothing else; returns how many."""
    removed = 0
    for name in os.listdir(directory):
        if any(p.match(name) for p in (_CHUNK, _TEMP, *OWN_CONTEXT_FILES)):
            os.remove(os.path.join(directory, name))
            removed += 1
    return removed


def chunk_file_name(worker: int, first: int, length: int) -> str:
    """File name of the chunk holding steps ``[first, first + length)`` of stream ``worker``."""
    return f"w{worker:05d}-i{first:012d}-n{length:06d}.npz"


def _positive_int(name: str, value: Any, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}; {fix}")
    return int(value)


def _worker_id(worker: Any) -> int:
    try:
        worker = operator.index(worker)
    except TypeError:
        raise TypeError(
            f"worker must be an int stream id, got {worker!r} of type {type(worker).__name__}"
        ) from None
    if worker < 0:
        raise ValueError(f"worker must be >= 0 (it names the stream's files), got {worker}")
    return worker


@dataclass(frozen=True)
class _File:
    """One chunk file on disk: steps ``[first, first + length)`` of one stream."""

    first: int
    length: int
    path: str

    @property
    def end(self) -> int:
        return self.first + self.length


class _Stream:
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
        self.files: collections.deque[_File] = collections.deque()

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


class Replay:
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
        self.capacity = _positive_int("capacity", capacity, "it is the number of steps stored")
        self.chunk_size = _positive_int(
            "chunk_size", chunk_size, "it is the number of steps per stream in one file"
        )
        self.keep_states = _positive_int(
            "keep_states", keep_states, "the latest save() state must stay loadable"
        )
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int, got {seed!r} of type {type(seed).__name__}")
        self.seed = int(seed)
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

        self._streams: dict[int, _Stream] = {}
        self._by_ident: list[_Stream] = []
        self._sorted: list[_Stream] = []  # by worker id: fixes the order of sampling positions
        self._saved: list[dict[int, tuple[int, int]]] = []  # windows of the kept save() states
        self._saved_context: list[str] = []  # context snapshots of the kept save() states
        self._context = ContextStore(self.capacity, context_dtype)
        if isinstance(online, bool) or not isinstance(online, int) or online < 0:
            raise ValueError(f"online must be a window length >= 0 (0: off), got {online!r}")
        self.online = online
        self._queue: collections.deque[tuple[int, int]] = collections.deque()  # (worker, start)
        self._deferred: list[tuple[int, _File]] = []  # evicted files a kept state still needs

        self._foreign = 0
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
            self._foreign = sum(1 for n in os.listdir(self.directory) if _CHUNK.match(n))

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

    def _stream(self, worker: int) -> _Stream:
        worker = _worker_id(worker)
        if worker not in self._streams:
            raise ValueError(f"no stream for worker {worker}; streams present: {self.workers}")
        return self._streams[worker]

    # ------------------------------------------------------------------ adding

    def add(self, step: Mapping[str, Any], worker: int = 0) -> None:
        """Appends one step (dict of arrays, shapes as in ``spec``) to stream ``worker``."""
        worker = _worker_id(worker)
        self._check_resumable()
        if not isinstance(step, Mapping):
            raise TypeError(f"step must be a dict of arrays, got {type(step).__name__}")
        values = {k: np.asarray(v) for k, v in step.items()}
        if not self._spec:
            self._set_spec({k: (v.shape, v.dtype) for k, v in values.items()})
        self._check_keys(values)
        for key, value in values.items():
            self._check_value(key, value.shape, value.dtype, value.shape, "")
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
        sizes = {}
        for key, value in values.items():
            if value.ndim < 1:
                raise ValueError(
                    f"add_batch needs a leading worker axis: key {key!r} has shape "
                    f"{value.shape}; stack the N workers' steps along axis 0 or use add()"
                )
            sizes[key] = value.shape[0]
        if len(set(sizes.values())) > 1:
            raise ValueError(f"add_batch values disagree on the number of workers N: {sizes}")
        n = next(iter(sizes.values()), 0)
        if n == 0:
            return
        if not self._spec:
            self._set_spec({k: (v.shape[1:], v.dtype) for k, v in values.items()})
        self._check_keys(values)
        for key, value in values.items():
            self._check_value(key, value.shape[1:], value.dtype, value.shape, "[N] + ")
        if context is not None:
            context = {k: np.asarray(v) for k, v in context.items()}
            bad = {k: v.shape for k, v in context.items() if v.ndim < 1 or v.shape[0] != n}
            if bad:
                raise ValueError(f"context values need a leading axis of N={n}: got {bad}")
            stored = sorted(self._context.data)
            if stored and sorted(context) != stored:
                raise ValueError(f"context keys {sorted(context)} differ from the stored {stored}")
        elif self._context.data:
            raise ValueError(
                f"this replay stores context {sorted(self._context.data)} with every step; pass "
                "context= to add_batch"
            )
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
        if not spec:
            raise ValueError("a step needs at least one key, got an empty dict")
        for key, (_, dtype) in spec.items():
            if not isinstance(key, str):
                raise TypeError(f"step keys must be str, got {key!r}")
            if dtype.kind not in "biufc":
                raise TypeError(
                    f"step key {key!r} has dtype {dtype}; only bool and numeric arrays can be "
                    "stored (convert strings or objects before adding)"
                )
        self._spec = {k: (tuple(int(d) for d in s), np.dtype(t)) for k, (s, t) in spec.items()}
        if data is None:
            data = {k: lazy_zeros((self.capacity, *s), t) for k, (s, t) in self._spec.items()}
        self._data = data
        self._stamps = lazy_zeros((self.capacity,), np.int64)
        self._owner = lazy_zeros((self.capacity,), np.int32)

    def _check_keys(self, values: Mapping[str, Any]) -> None:
        if values.keys() != self._spec.keys():
            missing = sorted(self._spec.keys() - values.keys())
            extra = sorted(values.keys() - self._spec.keys(), key=str)
            raise ValueError(
                f"step keys {sorted(values, key=str)} differ from the first step's "
                f"{list(self._spec)}: missing {missing}, unexpected {extra}"
            )

    def _check_value(
        self, key: str, shape: tuple[int, ...], dtype: np.dtype, full: tuple[int, ...], lead: str
    ) -> None:
        expected_shape, expected_dtype = self._spec[key]
        if tuple(shape) != expected_shape or dtype != expected_dtype:
            raise ValueError(
                f"step key {key!r}: received shape {tuple(full)} dtype {dtype}, expected "
                f"shape {lead}{expected_shape} dtype {expected_dtype} (fixed by the first step); "
                f"convert with np.asarray(value, dtype=np.{expected_dtype.name})"
            )

    def _get_stream(self, worker: int) -> _Stream:
        stream = self._streams.get(worker)
        if stream is None:
            stream = _Stream(worker, ident=len(self._by_ident))
            self._add_stream(stream)
        return stream

    def _add_stream(self, stream: _Stream) -> None:
        self._streams[stream.worker] = stream
        self._by_ident.append(stream)
        keys = [s.worker for s in self._sorted]
        self._sorted.insert(bisect.bisect(keys, stream.worker), stream)

    def _append(self, stream: _Stream, values: Mapping[str, np.ndarray]) -> None:
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
            self._flush(stream)

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
            self._drop(stream.worker, stream.files.popleft())

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
        out = []
        while self._queue and len(out) < batch_size:
            worker, start = self._queue.popleft()
            stream = self._streams[worker]
            if start >= stream.start:  # not evicted since it was queued
                out.append(stream.rows()[start - stream.start : start - stream.start + length])
        return np.stack(out) if out else np.zeros((0, length), np.int64)

    def _sample_rows(self, batch_size: int, length: int) -> np.ndarray:
        batch_size = _positive_int("batch_size", batch_size, "sample at least one sequence")
        length = _positive_int("length", length, "a sequence has at least one step")
        streams = self._sorted
        sizes = np.fromiter((s.size for s in streams), dtype=np.int64, count=len(streams))
        starts = np.maximum(sizes - length + 1, 0)
        total = int(starts.sum())
        if total == 0:
            longest = int(sizes.max()) if len(sizes) else 0
            raise ValueError(
                f"cannot sample sequences of length {length}: the replay stores {len(self)} "
                f"steps and its longest stream has {longest}, but a sequence needs {length} "
                "consecutive steps of one stream; add more steps or sample a shorter length"
            )
        draws = self._rng.integers(0, total, size=batch_size)
        cumulative = np.cumsum(starts)
        which = np.searchsorted(cumulative, draws, side="right")
        offsets = draws - (cumulative[which] - starts[which])
        rows = np.empty((batch_size, length), dtype=np.int64)
        # One slice per sequence (not per step); the gather is one numpy call per key.
        for b, (s, o) in enumerate(zip(which.tolist(), offsets.tolist(), strict=True)):
            rows[b] = streams[s].rows()[o : o + length]
        return rows

    # ------------------------------------------------------------------ disk

    def _check_resumable(self) -> None:
        if self._foreign:
            raise ValueError(
                f"directory {self.directory} already holds {self._foreign} chunk files of an "
                "earlier run; call load(state) with that run's saved state to resume it, or use "
                "an empty directory to start afresh"
            )

    def _write(self, worker: int, first: int, arrays: Mapping[str, np.ndarray]) -> _File:
        assert self.directory is not None
        length = len(arrays[_STAMP])
        path = os.path.join(self.directory, chunk_file_name(worker, first, length))
        temp = path + ".tmp"
        with open(temp, "wb") as f:
            (np.savez_compressed if self.compress else np.savez)(f, **arrays)
        os.replace(temp, path)
        return _File(first, length, path)

    def _flush(self, stream: _Stream) -> None:
        """Writes the stream's stored steps that are not on disk yet as one chunk file."""
        first = max(stream.disk_end, stream.start)
        if first < stream.end:
            rows = stream.rows()[first - stream.start :]
            arrays = {_PREFIX + k: v[rows] for k, v in self._data.items()}
            arrays[_STAMP] = self._stamps[rows]
            stream.files.append(self._write(stream.worker, first, arrays))
        stream.disk_end = stream.end

    def _needed(self, worker: int, file: _File) -> bool:
        for windows in self._saved:
            start, end = windows.get(worker, (0, 0))
            if file.first < end and file.end > start:
                return True
        return False

    def _drop(self, worker: int, file: _File) -> None:
        if self._needed(worker, file):
            self._deferred.append((worker, file))
        else:
            os.remove(file.path)

    def save(self) -> dict[str, Any]:
        """Writes every pending step to disk and returns the JSON-able state for ``load``.

        The state holds, per stream, the stored window ``[start, end)`` (``end`` = steps ever
        added), the global insertion counter, the RNG state, the step spec and the sizes.
        Without a directory nothing is written and the state still records counters and RNG.
        """
        self._check_resumable()
        if self.directory is not None:
            for stream in self._sorted:
                self._flush(stream)
        state = self._state()
        if self._context.data:
            if self.directory is None:
                raise ValueError("saving a replay with context needs a directory")
            rows = self._stored_rows()
            state["context"] = {
                "file": self._context.save(self.directory, rows, self._stamps[rows]),
                "index": self._context.saves - 1,
                "spec": [[k, list(v)] for k, v in self._context.spec.items()],
                "dtype": self._context.dtype.str,
            }
            self._saved_context = [*self._saved_context, state["context"]["file"]]
            self._saved_context = self._saved_context[-self.keep_states :]
            self._context.cleanup(self.directory, set(self._saved_context))
        self._saved = [*self._saved, {s.worker: (s.start, s.end) for s in self._sorted}]
        self._saved = self._saved[-self.keep_states :]
        deferred, self._deferred = self._deferred, []
        for worker, file in deferred:
            self._drop(worker, file)
        return state

    def _stored_rows(self) -> np.ndarray:
        """Ring rows of every stored step, in insertion order (oldest first)."""
        if self._count < self.capacity:
            return np.arange(self._count, dtype=np.int64) if self._count else np.zeros(0, np.int64)
        return (np.arange(self.capacity, dtype=np.int64) + self._next_row) % self.capacity

    def _state(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "capacity": self.capacity,
            "chunk_size": self.chunk_size,
            "spec": [[k, list(s), d.str] for k, (s, d) in self._spec.items()],
            "streams": [[s.worker, s.start, s.end] for s in self._sorted],
            "next_stamp": self._next_stamp,
            "rng": _to_json(self._rng.bit_generator.state),
            "online_queue": [list(q) for q in self._queue],
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Restores the replay to the ``state`` returned by an earlier ``save()``.

        Call on a fresh replay over the same directory. Reads the chunk files, keeps exactly the
        steps ``[start, end)`` of each stream recorded in ``state``, deletes files of later
        steps (truncating a file that runs past ``end``), files of streams the state does not
        know, fully evicted files and ``.tmp`` leftovers, and restores the sampling RNG. Raises
        ``ValueError`` before deleting anything if a needed step is missing from disk.
        """
        if self._streams or self._spec:
            raise ValueError(
                "load() needs a fresh Replay (nothing added yet); this one stores "
                f"{len(self)} steps of workers {self.workers}"
            )
        if not isinstance(state, Mapping) or state.get("format") != _FORMAT:
            raise ValueError(
                f"state must be a dict returned by Replay.save() with format {_FORMAT}, got "
                f"{state if not isinstance(state, Mapping) else state.get('format')!r}"
            )
        spec = {k: (tuple(s), np.dtype(d)) for k, s, d in state["spec"]}
        windows = {int(w): (int(a), int(b)) for w, a, b in state["streams"]}
        stored = sum(b - a for a, b in windows.values())
        if stored > self.capacity:
            raise ValueError(
                f"the state stores {stored} steps but this replay's capacity is "
                f"{self.capacity}; create the Replay with capacity >= {stored}"
            )
        if self.directory is None and stored:
            raise ValueError(
                f"the state stores {stored} steps but this Replay has no directory to read "
                "them from; pass the directory the saving replay wrote to"
            )
        plan = self._plan_load(windows) if self.directory is not None else _LoadPlan()

        # Read everything before changing the directory or self, so that a failure leaves both
        # as they were.
        order = sorted(windows)
        stamps = {}
        for w in order:
            parts = [_read(p, _STAMP)[lo:hi] for p, lo, hi in plan.segments.get(w, [])]
            stamps[w] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        flat = np.concatenate([stamps[w] for w in order]) if order else np.zeros(0, np.int64)
        if len(flat) and (
            np.unique(flat).size != len(flat)
            or flat.max() >= int(state["next_stamp"])
            or any(np.any(np.diff(stamps[w]) <= 0) for w in order)
        ):
            raise ValueError(
                f"the insertion stamps in {self.directory} repeat, run backwards within a stream "
                "or exceed the state's counter: the chunk files are corrupt or from another run"
            )
        # Steps go back into the ring in insertion order: rank 0 (the oldest) is evicted first.
        rank = np.empty(len(flat), dtype=np.int64)
        rank[np.argsort(flat, kind="stable")] = np.arange(len(flat))
        offsets = np.cumsum([0] + [len(stamps[w]) for w in order])
        data = {k: lazy_zeros((self.capacity, *s), d) for k, (s, d) in spec.items()}
        for i, w in enumerate(order):
            position = int(offsets[i])
            for path, lo, hi in plan.segments.get(w, []):
                rows = rank[position : position + hi - lo]
                npz = load_npz(path)
                for key, (shape, dtype) in spec.items():
                    name = _PREFIX + key
                    array = npz.get(name)
                    if array is None or array.shape[1:] != shape or array.dtype != dtype:
                        got = "missing" if array is None else f"{array.shape[1:]} {array.dtype}"
                        raise ValueError(
                            f"{path}: step key {key!r} is {got}, the state expects shape "
                            f"{shape} dtype {dtype}; the file belongs to another run"
                        )
                    data[key][rows] = array[lo:hi]
                position += hi - lo
        context = state.get("context")
        context_data = None
        if context is not None:
            ordered = np.sort(flat)

            def stamp_to_row(snap: np.ndarray) -> np.ndarray:
                rows = np.searchsorted(ordered, snap)
                if len(snap) != len(ordered) or not np.array_equal(ordered[rows], snap):
                    raise ValueError(
                        f"context snapshot {context['file']} does not cover the steps the state "
                        "restores: the snapshot belongs to another save"
                    )
                return rows

            store = ContextStore(self.capacity, context["dtype"])
            context_data = store.load(
                self.directory,
                context["file"],
                {k: tuple(v) for k, v in context["spec"]},
                stamp_to_row,
            )

        # Commit: first the directory (drop what the state does not describe), then self.
        for path in plan.delete:
            os.remove(path)
        files: dict[int, list[_File]] = {w: list(fs) for w, fs in plan.keep.items()}
        for w, file, end in plan.truncate:
            arrays = {k: v[: end - file.first] for k, v in load_npz(file.path).items()}
            kept = self._write(w, file.first, arrays)
            if kept.path != file.path:
                os.remove(file.path)
            files[w].append(kept)
        if spec:
            self._set_spec(spec, data)
        for i, w in enumerate(order):
            start, _ = windows[w]
            rows = rank[offsets[i] : offsets[i + 1]]
            stream = _Stream(w, ident=i, start=start, rows=rows)
            stream.files.extend(sorted(files.get(w, []), key=lambda f: (f.first, f.length)))
            self._add_stream(stream)
            self._stamps[rows] = stamps[w]
            self._owner[rows] = i
        self._count = len(flat)
        self._next_row = self._count % self.capacity
        self._next_stamp = int(state["next_stamp"])
        self._rng.bit_generator.state = state["rng"]
        self._queue = collections.deque(
            (int(w), int(start))
            for w, start in state.get("online_queue", [])
            if w in windows and start >= windows[w][0]
        )
        self._saved = [windows]
        self._deferred = []
        self._foreign = 0
        if context_data is not None:
            self._context = store
            self._context.data = context_data
            self._context.saves = int(context["index"]) + 1
            self._saved_context = [context["file"]]
        if self.directory is not None:
            ContextStore.cleanup(self.directory, set(self._saved_context))

    def _plan_load(self, windows: Mapping[int, tuple[int, int]]) -> _LoadPlan:
        assert self.directory is not None
        plan = _LoadPlan()
        found: dict[int, list[_File]] = collections.defaultdict(list)
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if _TEMP.match(name):
                plan.delete.append(path)
            elif match := _CHUNK.match(name):
                w, first, length = (int(g) for g in match.groups())
                if w in windows:
                    found[w].append(_File(first, length, path))
                else:
                    plan.delete.append(path)  # a stream created after the save
        for w, (start, end) in windows.items():
            expected = start
            segments: list[tuple[str, int, int]] = []
            plan.keep[w] = []
            for file in sorted(found.get(w, []), key=lambda f: (f.first, f.length)):
                if file.end <= start or file.first >= end:
                    plan.delete.append(file.path)  # evicted before the save, or added after it
                    continue
                if file.first > expected:
                    break
                lo, hi = max(file.first, expected), min(file.end, end)
                if lo >= hi:
                    plan.delete.append(file.path)  # duplicate of steps another file holds
                    continue
                segments.append((file.path, lo - file.first, hi - file.first))
                expected = hi
                if file.end > end:
                    plan.truncate.append((w, file, end))
                else:
                    plan.keep[w].append(file)
            if expected < end:
                missing = os.path.join(self.directory, chunk_file_name(w, expected, end - expected))
                raise ReplayDamaged(
                    missing,
                    FileNotFoundError(
                        f"steps [{expected}, {end}) of worker {w} are in no chunk file (a file "
                        "was removed, or the state is older than the "
                        f"{self.keep_states} save() states a Replay keeps loadable)"
                    ),
                )
            plan.segments[w] = segments
        return plan


@dataclass
class _LoadPlan:
    """What ``load`` reads and how it changes the directory.

    ``segments[w]``: ``(path, lo, hi)`` in step order, file rows ``[lo, hi)`` cover the window;
    ``keep[w]``: files kept as they are; ``truncate``: ``(w, file, end)`` files cut at ``end``;
    ``delete``: paths removed.
    """

    segments: dict[int, list[tuple[str, int, int]]] = field(default_factory=dict)
    keep: dict[int, list[_File]] = field(default_factory=dict)
    truncate: list[tuple[int, _File, int]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def _read(path: str, name: str) -> np.ndarray:
    arrays = load_npz(path)
    if name not in arrays:
        raise ReplayDamaged(path, KeyError(f"no array {name!r}"))
    return arrays[name]


def _to_json(value: Any) -> Any:
    """Numpy scalars in the bit generator's state become plain Python values."""
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value
