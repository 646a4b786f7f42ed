"""Episode metrics from the envs' log_* keys: sums per episode, achievement success rates over
episodes (per seed, across a resume) and the Crafter score; the runner keeps the keys out of
replay and runs without them exactly as before."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from experiments import config as config_lib
from experiments.envs import vec as vec_lib
from experiments.replay import Replay
from experiments.run.checkpoint import Checkpointer
from experiments.run.episodes import COUNTS_KEY, EpisodeLogs, crafter_score, without_logs
from experiments.run.logging import read_jsonl
from experiments.run.loop import record, train


def test_crafter_score_is_the_geometric_mean_offset_by_one():
    # exp((ln 101 + ln 1) / 2) - 1 = sqrt(101) - 1.
    assert crafter_score([100.0, 0.0]) == pytest.approx(math.sqrt(101) - 1, rel=1e-12)
    # exp((ln 2 + ln 4 + ln 8) / 3) - 1 = (64)^(1/3) - 1 = 3.
    assert crafter_score([1.0, 3.0, 7.0]) == pytest.approx(3.0, rel=1e-12)
    assert crafter_score([25.0] * 22) == pytest.approx(25.0, rel=1e-12)
    assert crafter_score([0.0] * 22) == 0.0
    assert crafter_score([100.0] * 22) == pytest.approx(100.0, rel=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        crafter_score([0.5, 101.0])
    with pytest.raises(ValueError, match="non-empty"):
        crafter_score([])


def _step(first, last, score, wood, stone=(0.0, 0.0)) -> dict[str, np.ndarray]:
    """One step of 2 environments with a score and two achievements."""
    return {
        "vector": np.zeros((2, 3), np.float32),
        "reward": np.zeros(2, np.float32),
        "is_first": np.array(first, bool),
        "is_last": np.array(last, bool),
        "is_terminal": np.zeros(2, bool),
        "log_score": np.array(score, np.float32),
        "log_achievement_wood": np.array(wood, np.float32),
        "log_achievement_stone": np.array(stone, np.float32),
    }


def test_sums_reset_at_is_first_and_rates_count_episodes_with_an_unlock():
    counters: dict[str, Any] = {}
    logs = EpisodeLogs(2, 1, counters)
    # env 0: episode A (score 1 + 2 + 4, wood twice) ends at step 3;
    # env 1: episode B (score 10 + 20 + 30 + 40, no wood, stone once) ends at step 4.
    logs.add(_step([0, 0], [0, 0], [1, 10], [0, 0], [0, 0]))
    logs.add(_step([0, 0], [0, 0], [2, 20], [1, 0], [0, 1]))
    logs.add(_step([0, 0], [1, 0], [4, 30], [1, 0]))
    row = logs.fields(np.array([0]))
    assert row["episode/score"] == 7.0
    assert "episode/achievement_wood" not in row  # achievements are rates, not sums
    assert row["achievements/wood"] == 100.0 and row["achievements/stone"] == 0.0
    assert row["achievements/crafter_score"] == pytest.approx(math.sqrt(101) - 1)
    # env 0 auto-resets (its reset step's values are not counted, as for the return).
    logs.add(_step([1, 0], [0, 1], [100, 40], [1, 0]))
    row = logs.fields(np.array([1]))
    assert row["episode/score"] == 100.0
    # 2 episodes: wood in 1 of them (50 %), stone in 1 of them (50 %).
    assert row["achievements/wood"] == 50.0 and row["achievements/stone"] == 50.0
    assert row["achievements/crafter_score"] == pytest.approx(50.0)
    # Both end together next: episode C of env 0 (score 5, wood), D of env 1 (score 3).
    logs.add(_step([0, 1], [0, 0], [5, 0], [1, 0]))
    logs.add(_step([0, 0], [1, 1], [0, 3], [0, 0]))
    row = logs.fields(np.array([0, 1]))
    assert row["episode/score"] == 4.0  # mean of 5 and 3
    assert row["achievements/wood"] == 50.0  # 2 of 4
    assert row["achievements/stone"] == 25.0  # 1 of 4
    assert counters[COUNTS_KEY] == [{"episodes": 4, "unlocked": {"wood": 2, "stone": 1}}]
    assert row["achievements/crafter_score"] == pytest.approx(math.sqrt(51 * 26) - 1)
    assert logs.fields(np.array([], np.int64)) == {}


def test_counts_per_seed_and_through_a_json_round_trip():
    # 4 environments of 2 seeds (seed-major): 0, 1 are seed 0's; 2, 3 seed 1's.
    counters: dict[str, Any] = {}
    logs = EpisodeLogs(4, 2, counters)
    step = {
        "is_first": np.zeros(4, bool),
        "log_achievement_wood": np.array([1, 0, 0, 0], np.float32),
    }
    logs.add(step)
    assert logs.fields(np.array([0, 1]), 0) == {
        "achievements/wood": 50.0,
        "achievements/crafter_score": pytest.approx(50.0),  # one rate: the score is the rate
    }
    assert logs.fields(np.array([3]), 1)["achievements/wood"] == 0.0
    # A checkpoint stores the counters as JSON; a resumed run goes on counting from them.
    restored = json.loads(json.dumps(counters))
    again = EpisodeLogs(4, 2, restored)
    again.add({"is_first": np.zeros(4, bool), "log_achievement_wood": np.ones(4, np.float32)})
    assert again.fields(np.array([3]), 1)["achievements/wood"] == 50.0
    assert restored[COUNTS_KEY][0] == {"episodes": 2, "unlocked": {"wood": 1}}
    # After a cut (exact resume) the open episodes count nothing they did before.
    again.clear()
    assert again.fields(np.array([0]), 0)["achievements/wood"] == pytest.approx(100 / 3)
    with pytest.raises(ValueError, match="split"):
        EpisodeLogs(3, 2, {})
    with pytest.raises(ValueError, match="'log_return' would replace"):
        logs.add({"is_first": np.zeros(4, bool), "log_return": np.zeros(4, np.float32)})


def test_no_log_keys_no_fields_and_none_in_replay():
    counters: dict[str, Any] = {}
    logs = EpisodeLogs(2, 1, counters)
    step = _step([0, 0], [1, 1], [1, 2], [1, 1])
    plain = without_logs(step)
    logs.add(plain)
    assert logs.fields(np.array([0, 1])) == {} and counters == {}
    rec = record(step, np.ones((2, 4), np.float32))
    assert set(rec) == {"vector", "reward", "is_first", "is_last", "is_terminal", "action"}


class _Logged:
    """An env that adds log keys: log_score = 2 r_t, and the achievement 'odd' (also as the
    sum log_odd) unlocked at the 3rd step of every other episode; log_achievement_never is 0."""

    def __init__(self, env: Any) -> None:
        self.env, self.episodes, self.t = env, 0, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def _logs(self, obs: dict[str, Any]) -> dict[str, Any]:
        odd = float(self.episodes % 2 == 1 and self.t == 3)
        extra = {"log_score": np.float32(2.0 * obs["reward"]), "log_odd": np.float32(odd)}
        extra.update(log_achievement_odd=np.float32(odd), log_achievement_never=np.float32(0))
        return {**obs, **extra}

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        self.episodes, self.t = self.episodes + 1, 0
        return self._logs(self.env.reset(seed))

    def step(self, action: Any) -> dict[str, Any]:
        self.t += 1
        return self._logs(self.env.step(action))


def _cfg(logdir, steps: int, *extra: str):
    args = ["--preset", "debug", "--logdir", str(logdir), "--steps", str(steps)]
    args += ["--env.time_limit", "80", "--run.eval_every", "0", "--run.log_every", "400"]
    return config_lib.parse_args([*args, *extra])[0]


def _inject(monkeypatch) -> None:
    make = vec_lib.make_env
    monkeypatch.setattr(vec_lib, "make_env", lambda **kw: _Logged(make(**kw)))


def _check_rows(rows: list[dict]) -> None:
    """Each row is one episode (1 env per seed): the rates are those of the log_odd sums."""
    unlocked = 0
    for n, row in enumerate(rows, 1):
        assert row["episode/score"] == pytest.approx(2 * row["episode/return"], rel=1e-5)
        unlocked += row["episode/odd"] >= 1
        assert row["achievements/odd"] == pytest.approx(100 * unlocked / n)
        assert row["achievements/never"] == 0.0
        rate = row["achievements/odd"]
        assert row["achievements/crafter_score"] == pytest.approx(math.sqrt(1 + rate) - 1)


@pytest.mark.slow
def test_runner_rows_per_seed_and_a_resume_continues_the_rates(tmp_path, monkeypatch):
    # The random agent, 2 seeds of 1 env, 10 agent steps per episode (80 env steps at repeat
    # 8) and its reset step: 3 episodes each in 33 agent steps (264 env steps), then 3 more
    # after a resume from the final checkpoint.
    _inject(monkeypatch)
    extra = ("--agent", "random", "--run.seeds", "2", "--run.prefill", "0")
    extra += ("--run.batch_size", "1", "--run.batch_length", "4", "--run.train_ratio", "1")
    first = train(_cfg(tmp_path, 264, *extra), tmp_path)
    assert first["counters"][COUNTS_KEY] == [
        {"episodes": 3, "unlocked": {"odd": 2, "never": 0}} for _ in range(2)
    ]
    second = train(_cfg(tmp_path, 528, *extra), tmp_path)
    # After the resume the envs start over (episode 1 again: unlocked), the counts go on.
    assert second["counters"][COUNTS_KEY] == [
        {"episodes": 6, "unlocked": {"odd": 4, "never": 0}} for _ in range(2)
    ]
    for k in range(2):
        rows = [
            r for r in read_jsonl(tmp_path / f"seed{k}" / "metrics.jsonl") if "episode/odd" in r
        ]
        assert len(rows) == 6
        _check_rows(rows)
        assert rows[-1]["achievements/odd"] == pytest.approx(400 / 6)


@pytest.mark.slow
def test_log_keys_change_nothing_else_in_a_training_run(tmp_path, monkeypatch):
    # The same dreamer run with and without log keys: the same parameters at the end, the
    # same rows but for the new fields, and no log key in replay.
    def run(name: str) -> tuple[dict, list[dict]]:
        summary = train(_cfg(tmp_path / name, 1040, "--run.prefill", "400"), tmp_path / name)
        return summary, read_jsonl(tmp_path / name / "metrics.jsonl")

    plain, plain_rows = run("plain")
    _inject(monkeypatch)
    logged, logged_rows = run("logged")
    assert plain["counters"]["updates"] > 0
    assert logged["params_sha256"] == plain["params_sha256"]
    assert COUNTS_KEY not in plain["counters"]
    assert {k: v for k, v in logged["counters"].items() if k != COUNTS_KEY} == plain["counters"]
    new = ("episode/score", "episode/odd", "achievements/")
    timing = ("run/env_steps_per_s", "run/updates_per_s")
    assert len(plain_rows) == len(logged_rows)
    for a, b in zip(plain_rows, logged_rows, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if not k.startswith(new) and k not in timing
        }
    episodes = [r for r in logged_rows if "episode/odd" in r]
    assert len(episodes) == 130 // 11  # episodes of 10 steps and a reset step in 130 steps
    _check_rows(episodes)
    with Checkpointer(tmp_path / "logged" / "checkpoints") as ck:
        meta = ck.restore_meta()
    replay = Replay(100_000, tmp_path / "logged" / "replay", 128, 0)
    replay.load(meta["replay"])
    assert set(replay.stream_steps(0)) == set(record(_step([0, 0], [0, 0], 0, 0), 0))
