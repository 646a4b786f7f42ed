"""CrafterEnv: the contract's step dicts on crafter.Env, its log keys (the true reward and each
achievement's rise), seeding, episode ends and image options. A crafter reset generates a
world (about a second), so each test makes few."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("crafter")

from experiments.envs.crafter import ACTIONS, CrafterEnv, achievement_names
from experiments.envs.images import to_gray

DO, NOOP = np.eye(ACTIONS)[5], np.eye(ACTIONS)[0]


def _facing(env: CrafterEnv) -> tuple[int, int]:
    """The cell the player faces (crafter's internals: the test scripts the world)."""
    player = env._env._player
    return tuple(int(x) for x in np.add(player.pos, player.facing))


def _collect_wood_twice(env: CrafterEnv) -> list[dict]:
    """A tree is put in front of the player, who hits it ('do'): crafter gives one wood and
    turns the tree into grass; then once more. Returns the reset step and the two steps."""
    steps = [env.reset()]
    world, target = env._env._world, _facing(env)
    assert world[target][1] is None  # no creature in the way
    for _ in range(2):
        world[target] = "tree"
        steps.append(env.step(DO))
        assert world[target][0] == "grass"
    return steps


def test_collect_wood_reward_and_log_keys():
    env = CrafterEnv("reward", seed=1)
    steps = _collect_wood_twice(env)
    names = achievement_names()
    assert len(names) == 22 and "collect_wood" in names
    for obs in steps:
        assert set(obs) == {
            "image",
            "reward",
            "is_first",
            "is_last",
            "is_terminal",
            "log_reward",
            *(f"log_achievement_{n}" for n in names),
        }
    assert steps[0]["is_first"] and not steps[1]["is_first"]
    assert all(s["log_achievement_collect_wood"] == 0.0 for s in steps[:1])
    # The first unlock: reward +1 (no health change in 2 steps); the second collection is no
    # new unlock (reward 0) but crafter counts it, and so does the log key.
    assert [s["reward"] for s in steps[1:]] == [1.0, 0.0]
    assert [s["log_reward"] for s in steps[1:]] == [1.0, 0.0]
    assert [s["log_achievement_collect_wood"] for s in steps[1:]] == [1.0, 1.0]
    count = env._env._player.achievements["collect_wood"]
    assert count == 2 == sum(s["log_achievement_collect_wood"] for s in steps)
    for s in steps:
        assert s["reward"].dtype == np.float32 and s["log_reward"].dtype == np.float32
        assert sum(s[f"log_achievement_{n}"] for n in names) == s["log_achievement_collect_wood"]
    # 300 random steps: every achievement's log sums to crafter's own count.
    rng = np.random.default_rng(0)
    totals = dict.fromkeys(names, 0.0)
    for a in rng.integers(0, ACTIONS, 300):
        obs = env.step(np.eye(ACTIONS)[a])
        for n in names:
            totals[n] += obs[f"log_achievement_{n}"]
        if obs["is_last"]:
            break
    assert sum(totals.values()) >= 1  # random actions unlocked something (e.g. a sapling)
    for n in names:
        assert totals[n] + (2 if n == "collect_wood" else 0) == env._env._player.achievements[n]


def test_noreward_logs_the_true_reward():
    env = CrafterEnv("noreward", seed=1)
    steps = _collect_wood_twice(env)
    assert [s["reward"] for s in steps] == [0.0, 0.0, 0.0]
    assert [s["log_reward"] for s in steps] == [0.0, 1.0, 0.0]
    assert [s["log_achievement_collect_wood"] for s in steps] == [0.0, 1.0, 1.0]


def test_same_seed_same_world_and_reset_reseeds():
    a, b, c = CrafterEnv(seed=3), CrafterEnv(seed=3), CrafterEnv(seed=4)
    first_a, first_b, first_c = a.reset()["image"], b.reset()["image"], c.reset()["image"]
    assert first_a.shape == (64, 64, 3) and first_a.dtype == np.uint8
    assert np.array_equal(first_a, first_b)
    assert not np.array_equal(first_a, first_c)
    # reset(seed) starts seed 4's sequence of worlds, as a fresh env seeded 4 does.
    assert np.array_equal(a.reset(seed=4)["image"], first_c)
    # A plain reset goes on to the next world of the sequence.
    assert not np.array_equal(b.reset()["image"], first_b)


def test_death_is_terminal_and_the_time_limit_is_not():
    env = CrafterEnv(seed=2, length=3)
    assert env.max_agent_steps == 3 and CrafterEnv.act_dim == 17 and env.discrete
    assert env.action_repeat == 1 and CrafterEnv(seed=0).max_agent_steps == 10_000
    env.reset()
    flags = [(s["is_last"], s["is_terminal"]) for s in (env.step(NOOP) for _ in range(3))]
    assert flags == [(False, False), (False, False), (True, False)]
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(NOOP)
    env.reset()
    env._env._player.health = 0  # dies on the next step
    obs = env.step(NOOP)
    assert obs["is_last"] and obs["is_terminal"]
    assert obs["reward"] == pytest.approx(-0.9)  # 9 health points lost, 0.1 each


def test_gray_size_render_and_bad_input():
    env = CrafterEnv(seed=0, size=(48, 32), gray=True)
    assert env.render() is None  # no world yet
    assert env.obs_spec == {"image": ((48, 32, 1), np.dtype(np.uint8))}
    obs = env.reset()
    assert obs["image"].shape == (48, 32, 1) and obs["image"].dtype == np.uint8
    frame = env.render()
    assert frame.shape == (48, 32, 3) and frame.dtype == np.uint8
    assert np.array_equal(obs["image"], to_gray(frame))  # render() shows the colors
    with pytest.raises(ValueError, match="one-hot"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="'reward', 'noreward'"):
        CrafterEnv("score")
    env.close()


def test_the_env_is_a_context_manager_as_evaluation_enters_it():
    """The runner's evaluation enters its env (``stack.enter_context``) like every other."""
    from experiments import envs as envs_lib

    with envs_lib.make_env("crafter:reward", "pixels", seed=0) as env:
        assert env.reset()["image"].shape == (64, 64, 3)
