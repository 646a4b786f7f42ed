"""Sequence replay as a pytree on the device: the host ``Buffer``'s sampling, FIFO capacity,
online queue and stored context, as pure functions a compiled training loop carries.

N environments add one step each per agent step, in lockstep, so every stream holds the same
number of steps and the host buffer's global ring (exact FIFO at step granularity) is N rings
of S = capacity / N rows: ``data[k]: [N, S, *shape]``, step i of stream n in row i mod S.
With ``count`` steps added per stream, the stored ones are [oldest, count), oldest = count - S
once full (``resize`` grows S for a run that goes on longer than it was allocated for).

    add(replay, step [N, ...], context)        one step of every stream (the oldest evicted)
    sample(replay, key, B, T, context)         B windows of context + T steps -> Sample
    write_context(replay, sample, values)      the refreshed context of the sampled steps

Windows are uniform over every valid (stream, start), P(n, p) = 1 / (N (stored - W + 1)) for a
window of W steps, as ``streams.uniform_windows``; with the online queue (``online=W``), every
W steps of each stream the window ending at its newest step is queued, and ``sample`` serves queued
windows still stored, oldest first, before drawing uniformly (``Buffer.sample_sequences``).
Without context a window's first step is marked ``is_first``; with one step of context the
batch is the last T steps and ``context`` the stored context of the step before them.

The queue holds at most N (ceil(S / W) + 1) windows: an older one has been evicted anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.envs.contract import check_int

Spec = Mapping[str, tuple[tuple[int, ...], Any]]


class DeviceReplay(NamedTuple):
    data: dict[str, jax.Array]  # {key: [N, S, *shape]}
    context: dict[str, jax.Array]  # {key: [N, S, *shape]} (empty without context)
    count: jax.Array  # [] int32, steps added to each stream
    oldest: jax.Array  # [] int32, the index of each stream's oldest stored step
    queue: jax.Array  # [Q, 2] int32 (stream, start) of queued windows, a ring
    pushed: jax.Array  # [] int32, windows ever queued
    popped: jax.Array  # [] int32, windows ever taken or skipped


class Sample(NamedTuple):
    batch: dict[str, Any]  # {key: [B, T, ...]} and, with context, 'context': {key: [B, ...]}
    stream: jax.Array  # [B] int32
    start: jax.Array  # [B] int32, the step index of each batch row's first step
    queued: jax.Array  # [] int32, how many rows (the first ones) the online queue served


def init(
    spec: Spec,
    streams: int,
    capacity: int,
    context_spec: Spec | None = None,
    online: int = 0,
) -> DeviceReplay:
    """An empty replay of ``capacity`` steps over ``streams`` streams (``capacity`` divisible by
    ``streams``); ``spec``/``context_spec`` give each key's ``(shape, dtype)``; ``online``: the
    window length W of the online queue (0: off)."""
    n = check_int("streams", streams, 1)
    capacity = check_int("capacity", capacity, n)
    if capacity % n:
        raise ValueError(
            f"capacity {capacity} does not split into {n} equal streams; use a multiple of {n}"
        )
    rows = capacity // n
    online = check_int("online", online, 0)

    def zeros(s: Spec) -> dict[str, jax.Array]:
        return {k: jnp.zeros((n, rows, *shape), dtype) for k, (shape, dtype) in s.items()}

    q = n * (-(-rows // online) + 1) if online else 1
    return DeviceReplay(
        data=zeros(spec),
        context=zeros(context_spec or {}),
        count=jnp.int32(0),
        oldest=jnp.int32(0),
        queue=jnp.zeros((q, 2), jnp.int32),
        pushed=jnp.int32(0),
        popped=jnp.int32(0),
    )


def rows_per_stream(replay: DeviceReplay) -> int:
    return next(iter(replay.data.values())).shape[1]


def nbytes(spec: Spec, capacity: int, context_spec: Spec | None = None) -> int:
    """Bytes of a replay of ``capacity`` steps (its data and context; the queue is small)."""
    specs = [*spec.values(), *(context_spec or {}).values()]
    per_step = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for s, d in specs)
    return per_step * capacity


def stored(replay: DeviceReplay) -> jax.Array:
    """Steps stored per stream: count - oldest (min(count, S) for a replay never resized)."""
    return replay.count - replay.oldest


def add(
    replay: DeviceReplay,
    step: Mapping[str, jax.Array],
    context: Mapping[str, jax.Array] | None = None,
    online: int = 0,
) -> DeviceReplay:
    """Stores ``step`` (``{key: [N, ...]}``, one step of each stream) and its ``context``,
    over the oldest step once full; with ``online`` = W, queues every stream's window of its
    latest W steps when the new step's index is a multiple of W."""
    rows = rows_per_stream(replay)
    row = replay.count % rows

    def put(store: dict, values: Mapping | None) -> dict:
        if not store:
            return store
        return {k: v.at[:, row].set(jnp.asarray(values[k], v.dtype)) for k, v in store.items()}

    count = replay.count + 1
    replay = replay._replace(
        data=put(replay.data, step),
        context=put(replay.context, context),
        count=count,
        oldest=jnp.maximum(replay.oldest, count - rows),
    )
    if not online:
        return replay
    n, q = next(iter(replay.data.values())).shape[0], replay.queue.shape[0]
    # As the host buffer (and DreamerV3): the step with index count - 1 queues the window
    # ending at it when that index is a multiple of W (and the stream holds W steps).
    due = (count >= online) & ((count - 1) % online == 0)
    slots = (replay.pushed + jnp.arange(n)) % q
    entries = jnp.stack([jnp.arange(n, dtype=jnp.int32), jnp.full(n, count - online)], -1)
    queue = jnp.where(due, replay.queue.at[slots].set(entries), replay.queue)
    pushed = replay.pushed + jnp.where(due, n, 0)
    # A full ring drops its oldest windows (evicted from replay by then anyway).
    popped = jnp.maximum(replay.popped, pushed - q)
    return replay._replace(queue=queue, pushed=pushed, popped=popped)


def sample(
    replay: DeviceReplay,
    key: jax.Array,
    batch_size: int,
    length: int,
    context: int = 0,
    online: bool = False,
) -> tuple[DeviceReplay, Sample]:
    """B windows of ``context + length`` steps (queued ones first with ``online``); returns the
    replay (its queue advanced) and the ``Sample``. Needs ``stored >= context + length``."""
    if context not in (0, 1):
        raise ValueError(f"context={context}; expected 0 or 1 step of replay context")
    n, rows = next(iter(replay.data.values())).shape[:2]
    window = length + context
    have = stored(replay)
    oldest = replay.count - have
    starts_per_stream = jnp.maximum(have - window + 1, 1)
    draws = jax.random.randint(key, (batch_size,), 0, n * starts_per_stream)
    take = jnp.int32(0)
    stream = (draws // starts_per_stream).astype(jnp.int32)
    start = (oldest + draws % starts_per_stream).astype(jnp.int32)
    if online:
        q = replay.queue.shape[0]
        # Queued windows are in time order, so the evicted ones are a prefix of the queue.
        pending = jnp.arange(q) + replay.popped
        entries = replay.queue[pending % q]
        alive = (pending < replay.pushed) & (entries[:, 1] >= oldest)
        gone = jnp.sum((pending < replay.pushed) & (entries[:, 1] < oldest))
        head = replay.popped + gone
        take = jnp.minimum(batch_size, jnp.sum(alive))
        picked = replay.queue[(head + jnp.arange(batch_size)) % q]
        use = jnp.arange(batch_size) < take
        stream = jnp.where(use, picked[:, 0], stream)
        start = jnp.where(use, picked[:, 1], start)
        replay = replay._replace(popped=head + take)
    steps = start[:, None] + jnp.arange(window)  # [B, W] step indices
    at = (stream[:, None], steps % rows)
    body = (stream[:, None], steps[:, context:] % rows)
    batch: dict[str, Any] = {k: v[body] for k, v in replay.data.items()}
    if context:
        batch["context"] = {k: v[at][:, 0].astype(jnp.float32) for k, v in replay.context.items()}
    elif "is_first" in batch:
        batch["is_first"] = batch["is_first"].at[:, 0].set(True)
    return replay, Sample(batch, stream, start + context, take)


def resize(replay: DeviceReplay, rows: int, online: int = 0) -> DeviceReplay:
    """The same stored steps in rings of ``rows`` >= the stored count per stream (a run that
    goes on longer than the one that allocated it): step i moves to row i mod ``rows``; the
    queue (``online``: its window W, as at ``init``) keeps its windows, which name steps."""
    have = int(stored(replay))
    if rows < have:
        raise ValueError(f"cannot shrink replay to {rows} rows a stream: it stores {have}")
    old = rows_per_stream(replay)
    n = next(iter(replay.data.values())).shape[0]
    steps = np.arange(int(replay.count) - have, int(replay.count))

    def move(store: dict) -> dict:
        out = {}
        for k, v in store.items():
            new = jnp.zeros((n, rows, *v.shape[2:]), v.dtype)
            out[k] = new.at[:, steps % rows].set(v[:, steps % old])
        return out

    q = replay.queue.shape[0]
    live = int(replay.pushed) - int(replay.popped)
    entries = np.asarray(replay.queue)[(int(replay.popped) + np.arange(live)) % q]
    size = n * (-(-rows // online) + 1) if online else 1
    queue = np.zeros((max(size, live), 2), np.int32)
    queue[:live] = entries
    return replay._replace(
        data=move(replay.data),
        context=move(replay.context),
        queue=jnp.asarray(queue),
        pushed=jnp.int32(live),
        popped=jnp.int32(0),
    )


def host_draws(key: jax.Array, batch_size: int, updates: Any) -> Any:
    """The draws ``sample`` makes, for the host buffer (its ``draw``): ``draw(count, total)``
    is the last ``count`` of randint(fold_in(key, updates()), [B], 0, total), the uniform
    draws a sample makes after the online queue served B - count rows."""

    def draw(count: int, total: int) -> np.ndarray:
        step_key = jax.random.fold_in(key, updates())
        return np.asarray(jax.random.randint(step_key, (batch_size,), 0, total))[
            batch_size - count :
        ]

    return draw


def write_context(
    replay: DeviceReplay, sampled: Sample, values: Mapping[str, jax.Array]
) -> DeviceReplay:
    """Overwrites the context of the sampled batch's steps with ``values[k]: [B, T, ...]``
    (the update's refreshed posteriors); nothing without context or values."""
    if not replay.context or not values:
        return replay
    rows = rows_per_stream(replay)
    length = next(iter(values.values())).shape[1]
    steps = (sampled.start[:, None] + jnp.arange(length)) % rows
    idx = (sampled.stream[:, None], steps)
    new = {k: v.at[idx].set(jnp.asarray(values[k], v.dtype)) for k, v in replay.context.items()}
    return replay._replace(context=new)
