"""Replay on the device (experiments/replay/device.py) against the host buffer's semantics:
FIFO capacity, uniform windows, the online queue (the same windows in the same order as the
host `Replay` serves them), the context of the step before a window and its write-back."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.replay import Replay
from experiments.replay import device as dr

SPEC = {"vector": ((2,), np.float32), "is_first": ((), bool)}


def _step(t: int, n: int) -> dict[str, np.ndarray]:
    """Step t of n streams: vector = (stream, t), so a window shows where it came from."""
    vec = np.stack([np.arange(n), np.full(n, t)], -1).astype(np.float32)
    return {"vector": vec, "is_first": np.full(n, t == 0)}


def _fill(steps: int, n: int, capacity: int, online: int = 0, ctx: bool = False):
    cspec = {"deter": ((1,), np.float32)} if ctx else None
    replay = dr.init(SPEC, n, capacity, cspec, online)
    add = jax.jit(lambda r, s, c: dr.add(r, s, c, online))
    for t in range(steps):
        c = {"deter": np.full((n, 1), 100.0 * t + np.arange(n)[:, None], np.float32)}
        replay = add(replay, _step(t, n), c if ctx else None)
    return replay


def test_capacity_is_fifo_per_step_and_windows_are_consecutive_and_stored():
    replay = _fill(steps=9, n=3, capacity=12)  # 4 rows a stream: steps 5..8 stay
    assert int(dr.stored(replay)) == 4 and int(replay.count) == 9
    _, s = dr.sample(replay, jax.random.key(0), 64, 3)
    vec = np.asarray(s.batch["vector"])
    assert np.all(vec[:, :, 1] >= 5) and np.all(vec[:, :, 1] <= 8)
    np.testing.assert_array_equal(np.diff(vec[:, :, 1], axis=1), 1)  # consecutive steps
    assert np.all(vec[:, :, 0] == np.asarray(s.stream)[:, None])  # one stream a window
    np.testing.assert_array_equal(vec[:, 0, 1], np.asarray(s.start))
    assert np.all(np.asarray(s.batch["is_first"])[:, 0])  # a window starts its sequence
    with pytest.raises(ValueError, match="multiple of 3"):
        dr.init(SPEC, 3, 10)


def test_windows_are_uniform_over_stream_and_start():
    """2 streams x 3 valid starts: 6 cells, each 1/6 (P(n, p) = 1 / (N (stored - W + 1)))."""
    replay = _fill(steps=6, n=2, capacity=10)  # 5 stored a stream, windows of 3: starts 1..3
    _, s = jax.jit(lambda r, k: dr.sample(r, k, 12_000, 3))(replay, jax.random.key(1))
    cells = np.asarray(s.stream) * 3 + np.asarray(s.start) - 1
    counts = np.bincount(cells, minlength=6)
    assert counts.sum() == 12_000 and np.all(np.abs(counts - 2000) < 4 * np.sqrt(2000 * 5 / 6))


def test_online_queue_serves_the_host_buffers_windows_in_its_order():
    """The same steps into the host `Replay` and the device replay, both with the online queue
    of 3-step windows: every sample serves the same queued windows first, in the same order
    (uniform draws fill the rest); evicted queued windows are skipped by both."""
    n, cap, w, b = 2, 16, 3, 3
    host = Replay(capacity=cap, online=w, seed=0)
    device = dr.init(SPEC, n, cap, None, w)
    add = jax.jit(lambda r, s: dr.add(r, s, None, w))
    draw = jax.jit(lambda r, k: dr.sample(r, k, b, w, 0, online=True))
    served_host, served_device = [], []
    for t in range(20):
        step = _step(t, n)
        host.add_batch(step)
        device = add(device, step)
        if t >= 4 and t % 4 == 0:  # fewer samples than windows queued: the queue backs up
            hb, _, _ = host.sample_sequences(b, w)
            device, s = draw(device, jax.random.key(t))
            k = int(s.queued)
            served_host.append(hb["vector"][:k, 0])
            served_device.append(np.asarray(s.batch["vector"])[:k, 0])
    assert int(device.pushed) == n * 6  # windows end at steps 3, 6, ..., 18 of each stream
    assert [len(x) for x in served_device] == [2, 2, 3, 3]  # the queue, then backed up
    for h, d in zip(served_host, served_device, strict=True):
        np.testing.assert_array_equal(h, d)  # the same (stream, start), in order


def test_context_is_the_step_before_the_window_and_write_back_lands_on_the_batch():
    replay = _fill(steps=8, n=2, capacity=16, ctx=True)
    replay, s = dr.sample(replay, jax.random.key(3), 5, 3, context=1)
    vec, ctx = np.asarray(s.batch["vector"]), np.asarray(s.batch["context"]["deter"])
    # The context of stream n's step t was stored as 100 t + n; the window's body starts at
    # `start`, so its context is that of step start - 1.
    np.testing.assert_array_equal(ctx[:, 0], 100.0 * (vec[:, 0, 1] - 1) + vec[:, 0, 0])
    assert not np.any(np.asarray(s.batch["is_first"])[:, 0])  # with context: as stored
    fresh = {"deter": -jnp.ones((5, 3, 1))}
    replay = dr.write_context(replay, s, fresh)
    rows = dr.rows_per_stream(replay)
    for stream, start in zip(np.asarray(s.stream), np.asarray(s.start), strict=True):
        for t in range(start, start + 3):
            assert float(replay.context["deter"][stream, t % rows, 0]) == -1.0
    untouched = np.asarray(replay.context["deter"])[..., 0] != -1.0
    assert untouched.sum() == 16 - len({(a, b + i) for a, b in zip(
        np.asarray(s.stream).tolist(), np.asarray(s.start).tolist(), strict=True)
        for i in range(3)})  # fmt: skip


def test_nbytes_counts_data_and_context():
    assert dr.nbytes(SPEC, 100, {"deter": ((4,), np.float16)}) == 100 * (8 + 1 + 8)


def test_resize_keeps_every_stored_step_the_queue_and_the_sampling():
    """Replay of 3 streams x 4 rows grown to 10 rows: the stored steps (5..8), their context
    and the queued windows come along; later adds fill the new rows before evicting."""
    small = _fill(steps=9, n=3, capacity=12, online=2, ctx=True)
    big = dr.resize(small, 10, online=2)
    assert int(dr.stored(big)) == 4 and dr.rows_per_stream(big) == 10
    for t in range(5, 9):
        np.testing.assert_array_equal(big.data["vector"][:, t % 10, 1], t)
        np.testing.assert_array_equal(big.context["deter"][:, t % 10, 0], 100.0 * t + np.arange(3))
    _, a = dr.sample(small, jax.random.key(0), 6, 2, online=True)
    _, b = dr.sample(big, jax.random.key(0), 6, 2, online=True)
    assert int(a.queued) == int(b.queued) > 0
    k = int(a.queued)
    np.testing.assert_array_equal(a.batch["vector"][:k], b.batch["vector"][:k])
    for t in range(9, 15):
        big = dr.add(big, _step(t, 3), {"deter": np.zeros((3, 1), np.float32)}, 2)
    assert int(dr.stored(big)) == 10  # steps 5..14: nothing evicted until the rows are full
    with pytest.raises(ValueError, match="shrink"):
        dr.resize(big, 4)
