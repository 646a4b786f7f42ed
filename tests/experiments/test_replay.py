"""Tests of the sequence replay: batch layout, consecutive windows, uniform starts, FIFO
eviction, and exact resume from disk after a simulated kill.

Every step encodes ``vector = [worker, counter, tag]`` so that a sampled window reveals which
stream and which steps it came from (float32 holds these integers exactly).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from experiments.replay import Replay, chunk_file_name


def make_step(worker: int, counter: int, tag: int = 0, image: bool = False) -> dict:
    step = {
        "vector": np.array([worker, counter, tag], np.float32),
        "action": np.array([counter % 3, -1.0], np.float32),
        "reward": np.float32(counter * 0.5),
        "is_first": np.bool_(counter % 7 == 0),
        "is_last": np.bool_(counter % 7 == 6),
        "is_terminal": np.bool_(False),
    }
    if image:
        step["image"] = np.full((64, 64, 3), (worker * 31 + counter) % 256, np.uint8)
    return step


def make_batch(counter: int, workers: int, tag: int = 0, image: bool = False) -> dict:
    steps = [make_step(w, counter, tag, image) for w in range(workers)]
    return {k: np.stack([s[k] for s in steps]) for k in steps[0]}


def fill(replay: Replay, steps: int, workers: int, start: int = 0, tag: int = 0) -> None:
    for t in range(start, start + steps):
        replay.add_batch(make_batch(t, workers, tag))


def chunk_files(directory) -> list[tuple[int, int, int]]:
    """(worker, first, length) of every chunk file, sorted."""
    out = []
    for name in os.listdir(directory):
        assert not name.endswith(".tmp"), name
        worker, first, length = name[: -len(".npz")].split("-")
        out.append((int(worker[1:]), int(first[1:]), int(length[1:])))
    return sorted(out)


def counters(replay: Replay, worker: int) -> list[int]:
    vector = replay.stream_steps(worker)["vector"]
    assert np.all(vector[:, 0] == worker)
    return vector[:, 1].astype(int).tolist()


def assert_same_content(a: Replay, b: Replay) -> None:
    assert len(a) == len(b)
    assert a.workers == b.workers
    for w in a.workers:
        assert a.stream_range(w) == b.stream_range(w)
        sa, sb = a.stream_steps(w), b.stream_steps(w)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert sa[k].dtype == sb[k].dtype
            np.testing.assert_array_equal(sa[k], sb[k])


def assert_same_samples(a: Replay, b: Replay, draws: int = 5, length: int = 4) -> None:
    for _ in range(draws):
        xa, xb = a.sample(8, length), b.sample(8, length)
        for k in xa:
            np.testing.assert_array_equal(xa[k], xb[k])


# ---------------------------------------------------------------------- layout


def test_sampled_batch_shapes_and_dtypes_keep_uint8_images():
    replay = Replay(capacity=100, seed=1)
    for t in range(30):
        replay.add(make_step(0, t, image=True))
    batch = replay.sample(5, 7)
    expected = {
        "vector": ((5, 7, 3), np.float32),
        "action": ((5, 7, 2), np.float32),
        "reward": ((5, 7), np.float32),
        "is_first": ((5, 7), np.bool_),
        "is_last": ((5, 7), np.bool_),
        "is_terminal": ((5, 7), np.bool_),
        "image": ((5, 7, 64, 64, 3), np.uint8),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    # The image of step t is filled with t (worker 0): it must match the window's counters.
    first = batch["vector"][:, :, 1].astype(np.uint8)
    np.testing.assert_array_equal(batch["image"][:, :, 0, 0, 0], first)
    np.testing.assert_array_equal(batch["image"].min(axis=(2, 3, 4)), first)
    np.testing.assert_array_equal(batch["image"].max(axis=(2, 3, 4)), first)


def test_bytes_per_step_counts_data_context_and_bookkeeping():
    replay = Replay(capacity=1000)
    assert replay.bytes_per_step == 0
    replay.add(make_step(0, 0, image=True))
    # vector 3*4 + action 2*4 + reward 4 + three bools + image 64*64*3, and the bookkeeping:
    # stamp int64, owner int32, the stream's row index (int64 in a buffer up to twice as long).
    data = 12 + 8 + 4 + 3 + 12288
    assert replay.bytes_per_step == data + 8 + 4 + 16
    assert replay.ram_at_capacity() == 1000 * (data + 28)
    with_context = Replay(capacity=1000)
    context = {"deter": np.zeros((1, 6), np.float32), "stoch": np.zeros((1, 10), np.float32)}
    with_context.add_batch(make_batch(0, 1), context=context)
    assert with_context.bytes_per_step == 12 + 8 + 4 + 3 + 2 * 16 + 28  # float16 context


def test_windows_count_every_valid_start_and_sequences_start_at_a_first_step():
    replay = Replay(capacity=1000, seed=1)
    fill(replay, 10, workers=3)
    # Three streams of 10 steps: 10 - 4 + 1 = 7 starts of 4 steps each, 1 of 10, none of 11.
    assert (replay.windows(4), replay.windows(10), replay.windows(11)) == (21, 3, 0)
    batch, _, _ = replay.sample_sequences(64, 4)
    # make_step marks every 7th step first; a window starts a sequence wherever it starts.
    counters = batch["vector"][:, :, 1].astype(int)
    assert batch["is_first"][:, 0].all()
    np.testing.assert_array_equal(batch["is_first"][:, 1:], counters[:, 1:] % 7 == 0)
    assert not replay.sample(64, 4)["is_first"][:, 0].all()  # stored flags are untouched
    ctx = Replay(capacity=1000, seed=1)
    for t in range(10):
        ctx.add_batch(make_batch(t, 3), context={"h": np.full((3, 2), t, np.float32)})
    batch, _, _ = ctx.sample_sequences(64, 4, context=1)
    # With context the window's first step is the context step: the batch's flags are as stored.
    np.testing.assert_array_equal(batch["is_first"], batch["vector"][:, :, 1] % 7 == 0)
    np.testing.assert_array_equal(batch["context"]["h"][:, 0], batch["vector"][:, 0, 1] - 1)


def test_add_batch_equals_add_per_worker():
    a, b = Replay(capacity=200, seed=3), Replay(capacity=200, seed=3)
    for t in range(20):
        a.add_batch(make_batch(t, workers=3))
        for w in range(3):
            b.add(make_step(w, t), worker=w)
    assert_same_content(a, b)
    assert_same_samples(a, b)


# ---------------------------------------------------------------------- sampling


def test_sequences_are_consecutive_steps_of_one_stream():
    replay = Replay(capacity=10_000, seed=0)
    # Three streams at different rates, interleaved, with a gap in worker ids.
    rates = {0: 1, 2: 3, 5: 2}
    count = dict.fromkeys(rates, 0)
    for _ in range(40):
        for w, rate in rates.items():
            for _ in range(rate):
                replay.add(make_step(w, count[w]), worker=w)
                count[w] += 1
    assert replay.workers == (0, 2, 5)
    assert len(replay) == sum(count.values())
    seen_workers = set()
    for _ in range(50):
        vector = replay.sample(16, 9)["vector"]
        worker, counter = vector[..., 0], vector[..., 1]
        assert np.all(worker == worker[:, :1])  # never mixes streams
        np.testing.assert_array_equal(np.diff(counter, axis=1), 1.0)  # consecutive
        for w, c in zip(worker[:, 0].astype(int), counter[:, -1].astype(int), strict=True):
            assert c < count[w]
        seen_workers.update(worker[:, 0].astype(int).tolist())
    assert seen_workers == {0, 2, 5}


def test_start_positions_are_uniform_over_valid_starts():
    replay = Replay(capacity=100, seed=7)
    for t in range(10):
        replay.add(make_step(0, t), worker=0)
    for t in range(6):
        replay.add(make_step(1, t), worker=1)
    length = 3
    # Valid starts: worker 0 at 0..7 (8), worker 1 at 0..3 (4): 12 equally likely windows.
    valid = [(0, c) for c in range(8)] + [(1, c) for c in range(4)]
    draws = 24_000
    starts = np.concatenate(
        [replay.sample(1000, length)["vector"][:, 0, :2] for _ in range(draws // 1000)]
    ).astype(int)
    cells, counts = np.unique(starts, axis=0, return_counts=True)
    assert [tuple(c) for c in cells] == valid
    expected = draws / len(valid)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    # 11 degrees of freedom: P(chi2 > 31.26) = 0.001 under uniformity. Choosing the stream
    # uniformly instead of the window would put 1/8 on each worker-1 start: chi2 ~ 6000.
    assert chi2 < 31.26, (chi2, counts)


def test_same_seed_same_samples_and_other_seed_differs():
    replays = [Replay(capacity=500, seed=s) for s in (11, 11, 12)]
    for r in replays:
        fill(r, steps=50, workers=2)
    a, b, c = (r.sample(8, 5)["vector"] for r in replays)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# ---------------------------------------------------------------------- capacity


def test_fifo_evicts_the_globally_oldest_steps():
    replay = Replay(capacity=40, chunk_size=8)
    for t in range(30):
        replay.add(make_step(0, t), worker=0)
    for t in range(30):
        replay.add(make_step(1, t), worker=1)
    assert len(replay) == 40
    # 60 steps added, 20 evicted: the first 20 of worker 0, none of worker 1.
    assert replay.stream_range(0) == (20, 30)
    assert replay.stream_range(1) == (0, 30)
    assert counters(replay, 0) == list(range(20, 30))
    for t in range(30, 45):
        replay.add(make_step(0, t), worker=0)
        assert len(replay) == 40
    # The oldest stored steps are worker 0's 20..29 (added first), then worker 1's 0..29:
    # 15 evictions take all ten of the former and five of the latter.
    assert replay.stream_range(0) == (30, 45)
    assert replay.stream_range(1) == (5, 30)
    seen = np.concatenate([replay.sample(16, 5)["vector"] for _ in range(40)])
    for w, oldest in ((0, 30), (1, 5)):
        mine = seen[seen[..., 0] == w][:, 1]
        assert mine.size > 0 and mine.min() >= oldest


def test_capacity_holds_for_many_streams_and_evicted_files_are_deleted(tmp_path):
    replay = Replay(capacity=50, directory=tmp_path, chunk_size=8)
    fill(replay, steps=40, workers=2)  # 80 steps, interleaved: 15 per worker evicted
    assert len(replay) == 50
    assert replay.stream_range(0) == (15, 40) and replay.stream_range(1) == (15, 40)
    # [0, 8) is fully evicted and deleted; [8, 16) still holds step 15.
    expected = [(w, first, 8) for w in (0, 1) for first in (8, 16, 24, 32)]
    assert chunk_files(tmp_path) == expected
    for _ in range(20):
        assert replay.sample(16, 6)["vector"][..., 1].min() >= 15


def test_capacity_smaller_than_a_chunk():
    replay = Replay(capacity=3, chunk_size=8)
    for t in range(20):
        replay.add(make_step(0, t))
        assert len(replay) == min(t + 1, 3)
    assert counters(replay, 0) == [17, 18, 19]


# ---------------------------------------------------------------------- disk


def test_chunks_are_written_as_they_complete_and_save_writes_the_rest(tmp_path):
    replay = Replay(capacity=1000, directory=tmp_path, chunk_size=8)
    fill(replay, steps=20, workers=2)
    assert chunk_files(tmp_path) == [(w, f, 8) for w in (0, 1) for f in (0, 8)]
    replay.save()
    ranges = ((0, 8), (8, 8), (16, 4))
    assert chunk_files(tmp_path) == [(w, f, n) for w in (0, 1) for f, n in ranges]
    fill(replay, steps=10, workers=2, start=20)  # completes the chunk [16, 24) at step 24
    files = [(w, f, n) for w in (0, 1) for f, n in ((0, 8), (8, 8), (16, 4), (20, 4))]
    assert chunk_files(tmp_path) == files  # new steps in a new file, the old one untouched
    with np.load(tmp_path / chunk_file_name(1, 20, 4)) as npz:
        np.testing.assert_array_equal(npz["k_vector"][:, :2], [[1, t] for t in range(20, 24)])


def test_save_load_round_trip_restores_content_and_rng(tmp_path):
    a = Replay(capacity=300, directory=tmp_path / "a", chunk_size=16, seed=5)
    for t in range(50):
        for w in range(3):
            a.add(make_step(w, t, image=True), worker=w)
    a.sample(4, 8)  # the RNG has moved: load must restore its state, not the seed's
    state = a.save()
    state = json.loads(json.dumps(state))  # as stored in a checkpoint's JSON metadata
    # A copy of the directory, so that both replays can go on writing without sharing files.
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = Replay(capacity=300, directory=tmp_path / "b", chunk_size=16, seed=999)
    b.load(state)
    assert_same_content(a, b)
    assert b.spec == a.spec and b.bytes_per_step == a.bytes_per_step
    assert_same_samples(a, b, length=8)
    # Both continue identically, evictions included.
    for t in range(50, 250):
        a.add(make_step(1, t, image=True), worker=1)
        b.add(make_step(1, t, image=True), worker=1)
    assert len(b) == 300
    assert_same_content(a, b)
    assert_same_samples(a, b, length=8)


def test_kill_after_save_restores_exactly_the_saved_steps(tmp_path):
    def run_until_save(replay: Replay) -> dict:
        fill(replay, steps=21, workers=3)
        replay.sample(8, 4)
        return replay.save()

    live = Replay(capacity=1000, directory=tmp_path, chunk_size=8, seed=2)
    state = run_until_save(live)
    # Work after the save that a kill throws away: full chunks reach the disk, a new stream too.
    fill(live, steps=30, workers=4, start=21, tag=1)
    assert any(first >= 21 for _, first, _ in chunk_files(tmp_path))
    del live  # SIGKILL: nothing else runs

    resumed = Replay(capacity=1000, directory=tmp_path, chunk_size=8, seed=2)
    resumed.load(json.loads(json.dumps(state)))
    assert resumed.workers == (0, 1, 2)
    for w in range(3):
        assert counters(resumed, w) == list(range(21))  # none lost, none duplicated
        assert np.all(resumed.stream_steps(w)["vector"][:, 2] == 0)  # no post-save data
    assert chunk_files(tmp_path) == [
        (w, f, n) for w in range(3) for f, n in ((0, 8), (8, 8), (16, 5))
    ]

    # Continue: the resumed run equals one that was never interrupted.
    reference = Replay(capacity=1000, chunk_size=8, seed=2)
    run_until_save(reference)
    for r in (resumed, reference):
        fill(r, steps=30, workers=3, start=21, tag=2)
    assert_same_content(resumed, reference)
    assert_same_samples(resumed, reference)
    for w in range(3):
        assert counters(resumed, w) == list(range(51))
    # A second save/kill/load cycle reads the continued files without gaps or overlaps.
    state = resumed.save()
    again = Replay(capacity=1000, directory=tmp_path, chunk_size=8)
    again.load(state)
    assert_same_content(resumed, again)
    ranges = ((0, 8), (8, 8), (16, 5), (21, 3), (24, 8), (32, 8), (40, 8), (48, 3))
    assert chunk_files(tmp_path) == [(w, f, n) for w in range(3) for f, n in ranges]


def test_files_a_saved_state_needs_survive_eviction_until_superseded(tmp_path):
    live = Replay(capacity=30, directory=tmp_path, chunk_size=5, seed=4)
    fill(live, steps=12, workers=2)
    state = live.save()  # stores steps 0..11 of each worker
    fill(live, steps=40, workers=2, start=12, tag=1)  # evicts everything the state stored
    assert live.stream_range(0) == (37, 52)
    assert (0, 0, 5) in chunk_files(tmp_path)  # evicted, but the state still needs it

    resumed = Replay(capacity=30, directory=tmp_path, chunk_size=5, seed=4)
    resumed.load(state)
    for w in range(2):
        assert counters(resumed, w) == list(range(12))
    ranges = ((0, 5), (5, 5), (10, 2))
    assert chunk_files(tmp_path) == [(w, f, n) for w in (0, 1) for f, n in ranges]

    # Once two later saves supersede the state, eviction deletes the files it needed.
    fill(resumed, steps=40, workers=2, start=12)
    resumed.save()
    assert (0, 0, 5) in chunk_files(tmp_path)  # the loaded state is still one of the last two
    resumed.save()
    ranges = ((35, 5), (40, 5), (45, 5), (50, 2))
    assert chunk_files(tmp_path) == [(w, f, n) for w in (0, 1) for f, n in ranges]


def test_load_the_state_before_the_latest_and_reject_an_evicted_one(tmp_path):
    live = Replay(capacity=6, directory=tmp_path, chunk_size=4, seed=6)
    fill(live, steps=3, workers=1)
    oldest = live.save()  # steps [0, 3)
    fill(live, steps=6, workers=1, start=3)
    previous = live.save()  # steps [3, 9): [0, 3) is evicted, its file kept for `oldest`
    assert (0, 0, 3) in chunk_files(tmp_path)
    fill(live, steps=30, workers=1, start=9)
    live.save()  # the last two states are `previous` and this one: `oldest` is dropped
    assert (0, 0, 3) not in chunk_files(tmp_path)
    fill(live, steps=5, workers=1, start=39)  # a kill here falls back to `previous` at worst

    with pytest.raises(ValueError, match=r"steps \[0, 3\) of worker 0 are in no chunk file"):
        Replay(capacity=6, directory=tmp_path, chunk_size=4).load(oldest)
    assert (0, 39, 1) in chunk_files(tmp_path)  # a failed load changed nothing

    resumed = Replay(capacity=6, directory=tmp_path, chunk_size=4)
    resumed.load(previous)
    assert counters(resumed, 0) == list(range(3, 9))
    assert chunk_files(tmp_path) == [(0, 3, 1), (0, 4, 4), (0, 8, 1)]


def test_load_truncates_a_file_past_the_saved_end_and_removes_leftovers(tmp_path):
    live = Replay(capacity=100, directory=tmp_path, chunk_size=8)
    fill(live, steps=10, workers=2)
    state = live.save()
    # A state whose end lies inside a chunk file, a torn write and a foreign stream's file.
    state["streams"] = [[0, 0, 6], [1, 0, 10]]
    state["next_stamp"] = 20
    (tmp_path / (chunk_file_name(0, 10, 8) + ".tmp")).write_bytes(b"torn")
    (tmp_path / chunk_file_name(7, 0, 8)).write_bytes(b"not read")
    resumed = Replay(capacity=100, directory=tmp_path, chunk_size=8)
    resumed.load(state)
    assert counters(resumed, 0) == list(range(6))
    assert counters(resumed, 1) == list(range(10))
    assert chunk_files(tmp_path) == [(0, 0, 6), (1, 0, 8), (1, 8, 2)]
    with np.load(tmp_path / chunk_file_name(0, 0, 6)) as npz:
        np.testing.assert_array_equal(npz["k_vector"][:, 1], np.arange(6))
    resumed.add(make_step(0, 6), worker=0)
    assert counters(resumed, 0) == list(range(7))


def test_memory_only_replay_writes_nothing_and_saves_counters(tmp_path):
    replay = Replay(capacity=50, directory=None, chunk_size=4)
    fill(replay, steps=10, workers=2)
    state = replay.save()
    assert state["streams"] == [[0, 0, 10], [1, 0, 10]]
    json.dumps(state)
    with pytest.raises(ValueError, match="no directory"):
        Replay(capacity=50).load(state)


# ---------------------------------------------------------------------- errors


def test_add_rejects_steps_that_disagree_with_the_first():
    replay = Replay(capacity=10)
    replay.add(make_step(0, 0))
    bad_shape = make_step(0, 1) | {"action": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"'action'.*\(3,\).*float32.*expected shape \(2,\)"):
        replay.add(bad_shape)
    bad_dtype = make_step(0, 1) | {"reward": 0.5}  # a Python float is float64
    with pytest.raises(ValueError, match=r"'reward'.*float64.*expected.*float32"):
        replay.add(bad_dtype)
    missing = {k: v for k, v in make_step(0, 1).items() if k != "is_terminal"}
    with pytest.raises(ValueError, match=r"missing \['is_terminal'\]"):
        replay.add(missing)
    batch = make_batch(1, workers=2)
    batch["vector"] = batch["vector"].astype(np.float64)
    with pytest.raises(ValueError, match=r"'vector'.*float64.*expected shape \[N\] \+ \(3,\)"):
        replay.add_batch(batch)
    with pytest.raises(ValueError, match="disagree on the number of workers"):
        replay.add_batch(make_batch(1, 2) | {"reward": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="worker must be >= 0"):
        replay.add(make_step(0, 1), worker=-1)
    assert len(replay) == 1  # nothing half-added


def test_sample_with_too_few_steps_says_what_is_stored_and_needed():
    replay = Replay(capacity=100)
    with pytest.raises(ValueError, match="stores 0 steps"):
        replay.sample(4, 2)
    fill(replay, steps=5, workers=2)
    with pytest.raises(ValueError, match=r"stores 10 steps.*longest stream has 5.*needs 6"):
        replay.sample(4, 6)
    assert replay.sample(4, 5)["vector"].shape == (4, 5, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"capacity": 0}, "capacity must be >= 1"),
        ({"capacity": 10, "chunk_size": 0}, "chunk_size must be >= 1"),
        ({"capacity": 10, "keep_states": 0}, "keep_states must be >= 1"),
    ],
)
def test_constructor_rejects_non_positive_sizes(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Replay(**kwargs)


def test_directory_of_an_earlier_run_requires_load(tmp_path):
    live = Replay(capacity=100, directory=tmp_path, chunk_size=4)
    fill(live, steps=6, workers=1)
    state = live.save()
    fresh = Replay(capacity=100, directory=tmp_path, chunk_size=4)
    with pytest.raises(ValueError, match="call load"):
        fresh.add(make_step(0, 0))
    fresh.load(state)
    with pytest.raises(ValueError, match="needs a fresh Replay"):
        fresh.load(state)
    with pytest.raises(ValueError, match="capacity >= 6"):
        Replay(capacity=5, directory=tmp_path).load(state)


def _context_of(t: int, workers: int, offset: float = 0.0) -> dict:
    # Integers below 2048 (and halves below 1024) are exact in float16.
    value = np.array([[w * 100 + t + offset] * 3 for w in range(workers)], np.float32)
    return {"deter": value, "stoch": value[:, :2]}


def test_context_is_stored_sampled_refreshed_and_resumed_exactly(tmp_path):
    replay = Replay(1000, tmp_path, chunk_size=16, seed=0)
    for t in range(40):
        replay.add_batch(make_batch(t, 2), context=_context_of(t, 2))
    batch, rows, stamps = replay.sample_sequences(6, 5, context=1)
    assert batch["vector"].shape == (6, 5, 3) and rows.shape == stamps.shape == (6, 5)
    assert (
        batch["context"]["deter"].shape == (6, 3) and batch["context"]["deter"].dtype == np.float32
    )
    # The context is the stored state of the step just before each sequence.
    worker, first = batch["vector"][:, 0, 0], batch["vector"][:, 0, 1]
    np.testing.assert_array_equal(batch["context"]["deter"][:, 0], worker * 100 + first - 1)
    # Training refreshes the states of the steps it saw (here: + 0.5).
    seen = batch["vector"][..., 0] * 100 + batch["vector"][..., 1]
    fresh = {
        "deter": np.repeat(seen[..., None] + 0.5, 3, -1),
        "stoch": np.repeat(seen[..., None] + 0.5, 2, -1),
    }
    assert replay.update_context(rows, stamps, fresh) == rows.size
    for w in (0, 1):
        ctx = replay.stream_context(w)["deter"][:, 0]
        touched = {int(c) for c in batch["vector"][batch["vector"][..., 0] == w][:, 1]}
        expected = [w * 100 + t + (0.5 if t in touched else 0.0) for t in range(40)]
        np.testing.assert_array_equal(ctx, expected)
    saved = {w: replay.stream_context(w) for w in (0, 1)}
    state = replay.save()
    assert state["context"]["file"] in os.listdir(tmp_path)
    # The process goes on after the save (more steps, more refreshes), then dies.
    for t in range(40, 50):
        replay.add_batch(make_batch(t, 2), context=_context_of(t, 2))
    batch, rows, stamps = replay.sample_sequences(4, 5, context=1)
    replay.update_context(rows, stamps, {k: v[:4] * 0 - 7 for k, v in fresh.items()})
    replay.save()
    del replay
    resumed = Replay(1000, tmp_path, chunk_size=16, seed=0)
    resumed.load(state)
    for w in (0, 1):
        for k in ("deter", "stoch"):
            np.testing.assert_array_equal(resumed.stream_context(w)[k], saved[w][k])
    # Only the loaded state's snapshot remains; the later one is gone with its steps.
    snapshots = [n for n in os.listdir(tmp_path) if n.startswith("context-")]
    assert snapshots == [state["context"]["file"]]


def test_context_refresh_skips_evicted_steps_and_snapshots_are_bounded(tmp_path):
    replay = Replay(20, tmp_path, chunk_size=8, seed=1, keep_states=2)
    for t in range(15):
        replay.add_batch(make_batch(t, 1), context=_context_of(t, 1))
    _, rows, stamps = replay.sample_sequences(3, 4, context=1)
    for t in range(15, 40):  # evicts every sampled step
        replay.add_batch(make_batch(t, 1), context=_context_of(t, 1))
    before = replay.stream_context(0)["deter"].copy()
    values = {
        "deter": np.full((3, 4, 3), -1.0, np.float32),
        "stoch": np.full((3, 4, 2), -1.0, np.float32),
    }
    assert replay.update_context(rows, stamps, values) == 0
    np.testing.assert_array_equal(replay.stream_context(0)["deter"], before)
    for _ in range(4):
        replay.save()
    assert len([n for n in os.listdir(tmp_path) if n.startswith("context-")]) == 2
    with pytest.raises(ValueError, match="pass context="):
        replay.add_batch(make_batch(40, 1))
    with pytest.raises(ValueError, match="context keys"):
        replay.add_batch(make_batch(40, 1), context={"deter": np.zeros((1, 3), np.float32)})
    plain = Replay(20)
    fill(plain, 10, 1)
    with pytest.raises(ValueError, match="context="):
        plain.sample_sequences(2, 3, context=1)


def test_online_queue_serves_each_fresh_window_once_before_uniform_draws(tmp_path):
    # L = 5: the step with index n queues the window [n - 4, n] whenever n is a multiple of 5.
    replay = Replay(1000, tmp_path, chunk_size=8, seed=0, online=5)
    for t in range(16):
        replay.add_batch(make_batch(t, 2), context=_context_of(t, 2))
    # Queued: (worker 0, start 1), (1, 1), (0, 6), (1, 6), (0, 11), (1, 11).
    batch, _, _ = replay.sample_sequences(4, 4, context=1)
    starts = batch["vector"][:, 0, :2].astype(int).tolist()  # (worker, first trained step)
    assert starts == [[0, 2], [1, 2], [0, 7], [1, 7]]
    state = replay.save()
    batch, _, _ = replay.sample_sequences(3, 4, context=1)
    assert batch["vector"][:2, 0, :2].astype(int).tolist() == [[0, 12], [1, 12]]
    # The third is a uniform draw; the queue is empty now, and resumes with the saved queue.
    resumed = Replay(1000, tmp_path, chunk_size=8, seed=0, online=5)
    resumed.load(state)
    again, _, _ = resumed.sample_sequences(3, 4, context=1)
    np.testing.assert_array_equal(again["vector"], batch["vector"])
    with pytest.raises(ValueError, match="online windows of 5"):
        resumed.sample_sequences(2, 6, context=1)
