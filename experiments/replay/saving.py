"""Replay on disk: writing chunks as streams fill them, ``save`` and ``load``.

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
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.malloc import lazy_zeros
from experiments.replay import disk
from experiments.replay.buffer import Buffer, Stream
from experiments.replay.context import ContextStore


def save(r: Buffer) -> dict[str, Any]:
    """Writes every pending step to disk and returns the JSON-able state for ``load``.

    The state holds, per stream, the stored window ``[start, end)`` (``end`` = steps ever
    added), the global insertion counter, the RNG state, the step spec and the sizes.
    Without a directory nothing is written and the state still records counters and RNG.
    """
    r._check_resumable()
    if r.directory is not None:
        for stream in r._sorted:
            r.flush(stream)
    state = _state(r)
    if r._context.data:
        if r.directory is None:
            raise ValueError("saving a replay with context needs a directory")
        rows = r._stored_rows()
        state["context"] = {
            "file": r._context.save(r.directory, rows, r._stamps[rows]),
            "index": r._context.saves - 1,
            "spec": [[k, list(v)] for k, v in r._context.spec.items()],
            "dtype": r._context.dtype.str,
        }
        r._saved_context = [*r._saved_context, state["context"]["file"]][-r.keep_states :]
        r._context.cleanup(r.directory, set(r._saved_context))
    r._saved = [*r._saved, {s.worker: (s.start, s.end) for s in r._sorted}][-r.keep_states :]
    deferred, r._deferred = r._deferred, []
    for worker, file in deferred:
        r.drop(worker, file)
    return state


def _state(r: Buffer) -> dict[str, Any]:
    return {
        "format": disk.FORMAT,
        "capacity": r.capacity,
        "chunk_size": r.chunk_size,
        "spec": [[k, list(s), d.str] for k, (s, d) in r._spec.items()],
        "streams": [[s.worker, s.start, s.end] for s in r._sorted],
        "next_stamp": r._next_stamp,
        "rng": _to_json(r._rng.bit_generator.state),
        "online_queue": [list(q) for q in r._queue],
    }


def _to_json(value: Any) -> Any:
    """Numpy scalars in the bit generator's state become plain Python values."""
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value


def load(r: Buffer, state: Mapping[str, Any]) -> None:
    """Restores a fresh replay ``r`` to the ``state`` returned by an earlier ``save()``.

    Reads the chunk files (each once), keeps exactly the steps ``[start, end)`` of each stream
    recorded in ``state``, deletes files of later steps (truncating a file that runs past
    ``end``), files of streams the state does not know, fully evicted files and ``.tmp``
    leftovers, and restores the sampling RNG. Everything is read before anything changes: a
    missing or damaged file raises ``ReplayDamaged`` (a ``ValueError``) with the directory and
    the replay as they were.
    """
    spec, windows = _check_state(r, state)
    loaded = _read(r, state, spec, windows)
    _commit(r, state, spec, windows, loaded)


def _check_state(r: Buffer, state: Mapping[str, Any]):
    """(step spec, windows by stream) of a state this fresh replay can load."""
    if r._streams or r._spec:
        raise ValueError(
            "load() needs a fresh Replay (nothing added yet); this one stores "
            f"{len(r)} steps of workers {r.workers}"
        )
    if not isinstance(state, Mapping) or state.get("format") != disk.FORMAT:
        raise ValueError(
            f"state must be a dict returned by Replay.save() with format {disk.FORMAT}, got "
            f"{state if not isinstance(state, Mapping) else state.get('format')!r}"
        )
    spec = {k: (tuple(s), np.dtype(d)) for k, s, d in state["spec"]}
    windows = {int(w): (int(a), int(b)) for w, a, b in state["streams"]}
    stored = sum(b - a for a, b in windows.values())
    if stored > r.capacity:
        raise ValueError(
            f"the state stores {stored} steps but this replay's capacity is {r.capacity}; "
            f"create the Replay with capacity >= {stored}"
        )
    if r.directory is None and stored:
        raise ValueError(
            f"the state stores {stored} steps but this Replay has no directory to read them "
            "from; pass the directory the saving replay wrote to"
        )
    return spec, windows


def _read(r: Buffer, state: Mapping[str, Any], spec, windows) -> dict[str, Any]:
    """Everything the commit installs, read without changing the directory or ``r``: the plan,
    each stream's stamps and ring rows, the step data, the files to truncate, the context."""
    plan = disk.plan_load(r.directory, windows, r.keep_states) if r.directory else disk.LoadPlan()
    order = sorted(windows)
    stamps = disk.read_stamps(plan, order)
    flat = np.concatenate([stamps[w] for w in order]) if order else np.zeros(0, np.int64)
    if len(flat) and (
        np.unique(flat).size != len(flat)
        or flat.max() >= int(state["next_stamp"])
        or any(np.any(np.diff(stamps[w]) <= 0) for w in order)
    ):
        raise ValueError(
            f"the insertion stamps in {r.directory} repeat, run backwards within a stream or "
            "exceed the state's counter: the chunk files are corrupt or from another run"
        )
    # Steps go back into the ring in insertion order: rank 0 (the oldest) is evicted first.
    rank = np.empty(len(flat), dtype=np.int64)
    rank[np.argsort(flat, kind="stable")] = np.arange(len(flat))
    offsets = np.cumsum([0] + [len(stamps[w]) for w in order])
    rows = {w: rank[offsets[i] : offsets[i + 1]] for i, w in enumerate(order)}
    data = {k: lazy_zeros((r.capacity, *s), d) for k, (s, d) in spec.items()}
    truncated = disk.read_steps(plan, order, spec, rows, data)
    context = None
    if state.get("context") is not None:
        context = _read_context(r, state["context"], np.sort(flat))
    return dict(plan=plan, stamps=stamps, rows=rows, data=data, truncated=truncated, ctx=context)


def _read_context(r: Buffer, context: Mapping[str, Any], ordered: np.ndarray):
    """(store, arrays) of the state's context snapshot, placed at the rows of the loaded steps
    (``ordered``: their stamps in insertion order)."""

    def stamp_to_row(snap: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(ordered, snap)
        if len(snap) != len(ordered) or not np.array_equal(ordered[rows], snap):
            raise ValueError(
                f"context snapshot {context['file']} does not cover the steps the state "
                "restores: the snapshot belongs to another save"
            )
        return rows

    store = ContextStore(r.capacity, context["dtype"])
    spec = {k: tuple(v) for k, v in context["spec"]}
    return store, store.load(r.directory, context["file"], spec, stamp_to_row)


def _commit(r: Buffer, state: Mapping[str, Any], spec, windows, loaded: dict[str, Any]) -> None:
    """Changes the directory (drops what the state does not describe), then installs the read
    steps, streams, counters, RNG, online queue and context into ``r``."""
    plan = loaded["plan"]
    for path in plan.delete:
        os.remove(path)
    files: dict[int, list[disk.ChunkFile]] = {w: list(fs) for w, fs in plan.keep.items()}
    for w, file, end in plan.truncate:
        arrays = {k: v[: end - file.first] for k, v in loaded["truncated"][file.path].items()}
        kept = disk.write_chunk(r.directory, w, file.first, arrays, r.compress)
        if kept.path != file.path:
            os.remove(file.path)
        files[w].append(kept)
    if spec:
        r._set_spec(spec, loaded["data"])
    for i, w in enumerate(sorted(windows)):
        rows = loaded["rows"][w]
        stream = Stream(w, ident=i, start=windows[w][0], rows=rows)
        stream.files.extend(sorted(files.get(w, []), key=lambda f: (f.first, f.length)))
        r._add_stream(stream)
        r._stamps[rows] = loaded["stamps"][w]
        r._owner[rows] = i
    r._count = sum(len(x) for x in loaded["rows"].values())
    r._next_row = r._count % r.capacity
    r._next_stamp = int(state["next_stamp"])
    r._rng.bit_generator.state = state["rng"]
    r._queue = collections.deque(
        (int(w), int(start))
        for w, start in state.get("online_queue", [])
        if w in windows and start >= windows[w][0]
    )
    r._saved, r._deferred, r._foreign = [windows], [], 0
    if loaded["ctx"] is not None:
        r._context, data = loaded["ctx"]
        r._context.data = data
        r._context.saves = int(state["context"]["index"]) + 1
        r._saved_context = [state["context"]["file"]]
    if r.directory is not None:
        ContextStore.cleanup(r.directory, set(r._saved_context))
