"""Atari and Crafter through the runner's task names, config and presets: the env a config
builds, and short runs that log the benchmarks' own metrics."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import config as config_lib
from experiments import envs as envs_lib
from experiments.envs.crafter import achievement_names
from experiments.run.logging import read_jsonl
from experiments.run.loop import train


def _env(preset: str, task: str, *extra: str):
    cfg = config_lib.parse_args(["--preset", preset, "--task", task, "--logdir", "x", *extra])[0]
    return envs_lib.make_env(cfg.env.task, cfg.env.obs, 0, **envs_lib.env_kwargs(cfg.env))


@pytest.mark.parametrize(
    ("preset", "image", "actions", "sticky"),
    [
        ("dreamerv3-atari100k", (64, 64, 3), 6, False),  # Pong's minimal action set
        ("dreamerv3-atari", (96, 96, 1), 18, True),
    ],
)
def test_atari_presets_build_the_env_they_name(preset, image, actions, sticky):
    env = _env(preset, "atari:pong")
    try:
        assert env.obs_spec["image"][0] == image
        assert (env.act_dim, env.action_repeat, env.sticky) == (actions, 4, sticky)
        assert env.max_agent_steps == 108_000 // 4  # the 30-minute cap, in agent steps
        assert env.reset()["image"].shape == image
    finally:
        env.close()


def test_atari_options_reach_the_env():
    extra = ["--env.atari_lives", "reset", "--env.atari_noops", "0", "--env.time_limit", "400"]
    env = _env("dreamerv3-atari100k", "atari:breakout", *extra, "--env.atari_clip_reward", "true")
    try:
        assert (env.lives, env.noops, env.clip_reward, env.max_agent_steps) == (
            "reset",
            0,
            True,
            100,
        )
    finally:
        env.close()


def test_crafter_preset_builds_its_env():
    env = _env("dreamerv3-crafter", "crafter:noreward", "--env.gray", "true")
    try:
        assert env.obs_spec["image"][0] == (64, 64, 1)
        assert (env.act_dim, env.action_repeat, env.reward) == (17, 1, False)
    finally:
        env.close()


def _run(tmp_path, task: str, steps: int, time_limit: int):
    args = ["--preset", "debug", "--agent", "random", "--task", task, "--obs", "pixels"]
    args += ["--logdir", str(tmp_path), "--steps", str(steps), "--run.prefill", "0"]
    args += ["--env.time_limit", str(time_limit), "--run.eval_every", "0"]
    summary = train(config_lib.parse_args(args)[0], tmp_path)
    rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "episode/return" in r]
    return summary, rows


@pytest.mark.slow
def test_atari_run_logs_the_unclipped_score(tmp_path):
    # Episodes of 40 frames = 10 agent steps; rewards are unclipped, so score = return.
    summary, rows = _run(tmp_path, "atari:pong", 400, 40)
    assert summary["counters"]["episodes"] == len(rows) >= 3
    for row in rows:
        assert row["episode/length"] == 40
        assert row["episode/score"] == row["episode/return"]


@pytest.mark.slow
def test_crafter_run_logs_achievements_and_the_score(tmp_path):
    summary, rows = _run(tmp_path, "crafter:reward", 90, 25)
    assert summary["counters"]["episodes"] == len(rows) >= 3
    last = rows[-1]
    rates = np.array([last[f"achievements/{name}"] for name in achievement_names()])
    assert np.all((rates >= 0) & (rates <= 100))
    # Rates are multiples of 100 / episodes; the score is their offset geometric mean.
    episodes = summary["counters"]["episodes"]
    assert np.allclose(rates * episodes / 100, np.round(rates * episodes / 100))
    expected = np.exp(np.mean(np.log(1 + rates))) - 1
    assert last["achievements/crafter_score"] == pytest.approx(expected)


def test_learning_benchmark_recovers_window_rates_from_running_rates():
    """benchmarks/learning.py's Crafter summary: the rows carry rates over every episode so
    far; the last quarter's rates come from the counts those imply. Hand-computed: 2 episodes
    by step 100 unlocked a once, b never; 6 by step 800 unlocked a 3 times and b 3 times, so
    the 4 episodes after step 750 unlocked a twice (50%) and b three times (75%)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("learning_bench", bench / "learning.py")
        learning = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(learning)
    finally:
        sys.path.remove(str(bench))
    rows = [
        {"step": 50, "wm/loss": 1.0},
        {"step": 100, "episode/count": 2, "achievements/a": 50.0, "achievements/b": 0.0,
         "achievements/crafter_score": 6.14},
        {"step": 800, "episode/count": 6, "achievements/a": 50.0, "achievements/b": 50.0,
         "achievements/crafter_score": 50.0},
    ]  # fmt: skip
    out = learning.achievement_summary(rows, steps=1000)
    assert out["episodes"] == 6 and out["tail_episodes"] == 4
    assert out["achievement_rates"] == {"a": 50.0, "b": 50.0}
    assert out["tail_achievement_rates"] == {"a": 50.0, "b": 75.0}
    assert out["tail_crafter_score"] == pytest.approx(np.sqrt(51 * 76) - 1, abs=1e-3)
    assert learning.achievement_summary([{"step": 1, "episode/return": 3.0}], 10) == {}
