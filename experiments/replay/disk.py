"""Replay's disk format: chunk files, what a load reads and changes, and damaged files.

A chunk file ``w{worker}-i{first}-n{length}.npz`` holds steps ``[first, first + length)`` of one
stream: every step key under the prefix ``k_`` (so that no key collides with ``np.savez``'s own
argument names) and the global insertion stamp of every step (``stamp``). Writes are atomic
(``<name>.tmp``, then ``os.replace``). ``plan_load`` decides, from the directory's listing alone,
which rows of which files restore a saved state and what to delete or truncate; ``read_plan``
reads each of those files once; the caller commits only after every read succeeded.
"""

from __future__ import annotations

import collections
import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

FORMAT = 1  # of a saved replay state
STAMP = "stamp"
PREFIX = "k_"
CHUNK = re.compile(r"^w(\d+)-i(\d+)-n(\d+)\.npz$")
TEMP = re.compile(r"^w(\d+)-i(\d+)-n(\d+)\.npz\.tmp$")
# The names of the context snapshots (replay/context.py) and their temporaries.
SNAPSHOT = re.compile(r"^context-(\d+)\.npz$")
SNAPSHOT_TEMP = re.compile(r"^context-(\d+)\.npz\.tmp$")


def chunk_file_name(worker: int, first: int, length: int) -> str:
    """File name of the chunk holding steps ``[first, first + length)`` of stream ``worker``."""
    return f"w{worker:05d}-i{first:012d}-n{length:06d}.npz"


@dataclass(frozen=True)
class ChunkFile:
    """One chunk file on disk: steps ``[first, first + length)`` of one stream."""

    first: int
    length: int
    path: str

    @property
    def end(self) -> int:
        return self.first + self.length


def write_chunk(
    directory: str, worker: int, first: int, arrays: Mapping[str, np.ndarray], compress: bool
) -> ChunkFile:
    """Writes ``arrays`` (prefixed step keys and ``STAMP``) atomically as one chunk file."""
    length = len(arrays[STAMP])
    path = os.path.join(directory, chunk_file_name(worker, first, length))
    temp = path + ".tmp"
    with open(temp, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    os.replace(temp, path)
    return ChunkFile(first, length, path)


def discard_replay_files(directory: str | os.PathLike) -> int:
    """Deletes the files in ``directory`` that a Replay writes (chunks, context snapshots and
    their temporaries, by name) and nothing else; returns how many."""
    removed = 0
    for name in os.listdir(directory):
        if any(p.match(name) for p in (CHUNK, TEMP, SNAPSHOT, SNAPSHOT_TEMP)):
            os.remove(os.path.join(directory, name))
            removed += 1
    return removed


class ReplayDamaged(ValueError):
    """A replay file on disk is missing or cannot be read (truncated, overwritten, not a
    .npz)."""

    def __init__(self, path: str, err: BaseException):
        directory = os.path.dirname(path)
        state = "missing" if isinstance(err, FileNotFoundError) else "damaged"
        super().__init__(
            f"replay file {path} is {state} ({type(err).__name__}: {str(err)[:300]}); nothing "
            f"was changed. Restore the file, or move {directory} aside and re-run the same "
            "command: the run resumes its agent from the checkpoint with an empty replay, "
            "refilled by collecting"
        )


# What reading a damaged .npz raises: a short or overwritten zip, a broken member.
_DAMAGE = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile)


def load_npz(path: str, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays ``names`` (default: every one) of a .npz file, read now; ReplayDamaged names
    the file if it cannot be read or lacks one of them."""
    try:
        with np.load(path) as npz:
            return {name: npz[name] for name in (npz.files if names is None else names)}
    except _DAMAGE as err:
        raise ReplayDamaged(path, err) from err


@dataclass
class LoadPlan:
    """What a load reads and how it changes the directory.

    ``segments[w]``: ``(path, lo, hi)`` in step order, file rows ``[lo, hi)`` cover the window;
    ``keep[w]``: files kept as they are; ``truncate``: ``(w, file, end)`` files cut at ``end``;
    ``delete``: paths removed.
    """

    segments: dict[int, list[tuple[str, int, int]]] = field(default_factory=dict)
    keep: dict[int, list[ChunkFile]] = field(default_factory=dict)
    truncate: list[tuple[int, ChunkFile, int]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def plan_load(directory: str, windows: Mapping[int, tuple[int, int]], keep_states: int) -> LoadPlan:
    """The plan that restores the steps ``windows[w] = [start, end)`` of every stream w from the
    chunk files in ``directory`` (nothing is read or changed); ReplayDamaged if a step is in
    no file."""
    plan = LoadPlan()
    found: dict[int, list[ChunkFile]] = collections.defaultdict(list)
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if TEMP.match(name):
            plan.delete.append(path)
        elif match := CHUNK.match(name):
            w, first, length = (int(g) for g in match.groups())
            if w in windows:
                found[w].append(ChunkFile(first, length, path))
            else:
                plan.delete.append(path)  # a stream created after the save
    for w, (start, end) in windows.items():
        plan.segments[w] = _plan_stream(plan, w, start, end, found.get(w, []))
        covered = sum(hi - lo for _, lo, hi in plan.segments[w])
        if start + covered < end:
            first = start + covered
            missing = os.path.join(directory, chunk_file_name(w, first, end - first))
            raise ReplayDamaged(
                missing,
                FileNotFoundError(
                    f"steps [{first}, {end}) of worker {w} are in no chunk file (a file was "
                    f"removed, or the state is older than the {keep_states} save() states a "
                    "Replay keeps loadable)"
                ),
            )
    return plan


def _plan_stream(
    plan: LoadPlan, w: int, start: int, end: int, files: list[ChunkFile]
) -> list[tuple[str, int, int]]:
    """The segments of stream w's files that cover ``[start, end)`` in order, up to the first
    gap; files outside the window are deleted, one that runs past ``end`` truncated."""
    expected, segments = start, []
    plan.keep[w] = []
    for file in sorted(files, key=lambda f: (f.first, f.length)):
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
    return segments


def read_stamps(plan: LoadPlan, order: list[int]) -> dict[int, np.ndarray]:
    """The insertion stamps of the planned steps of each stream, in step order (only the
    stamp array of each file is read)."""
    out = {}
    for w in order:
        parts = [load_npz(p, (STAMP,))[STAMP][lo:hi] for p, lo, hi in plan.segments.get(w, [])]
        out[w] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return out


def read_steps(
    plan: LoadPlan,
    order: list[int],
    spec: Mapping[str, tuple[tuple[int, ...], np.dtype]],
    rows: Mapping[int, np.ndarray],
    data: Mapping[str, np.ndarray],
) -> dict[str, dict[str, np.ndarray]]:
    """Writes the planned steps of stream w into ``data[key][rows[w]]`` (each file read once)
    and returns the arrays of the files to truncate, by path, for the commit."""
    truncating = {file.path for _, file, _ in plan.truncate}
    kept = {}
    for w in order:
        position = 0
        for path, lo, hi in plan.segments.get(w, []):
            arrays = load_npz(path)
            target = rows[w][position : position + hi - lo]
            for key, (shape, dtype) in spec.items():
                array = arrays.get(PREFIX + key)
                if array is None or array.shape[1:] != shape or array.dtype != dtype:
                    got = "missing" if array is None else f"{array.shape[1:]} {array.dtype}"
                    raise ValueError(
                        f"{path}: step key {key!r} is {got}, the state expects shape {shape} "
                        f"dtype {dtype}; the file belongs to another run"
                    )
                data[key][target] = array[lo:hi]
            position += hi - lo
            if path in truncating:
                kept[path] = arrays
    return kept
