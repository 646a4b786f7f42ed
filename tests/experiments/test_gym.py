"""Gymnasium environments (experiments/gym_env.py) and discrete actions end to end."""

from __future__ import annotations

import gymnasium
import jax
import numpy as np
import pytest
from gymnasium import spaces

from experiments import config as config_lib
from experiments import envs
from experiments.config import make_agent
from experiments.envs.gym import from_gymnasium
from experiments.run.logging import read_jsonl
from experiments.run.loop import train


class Recorder(gymnasium.Env):
    """A Dict-observation env that records the actions it receives: x starts at ``x0`` (or a
    seeded draw from {0, 1}) and grows by 1 per step; terminates when x reaches 3, truncates
    after ``limit`` steps; reward 0.5 per step."""

    def __init__(self, action_space, limit: int = 50, x0: int | None = None):
        self.observation_space = spaces.Dict(
            {
                "pos": spaces.Box(-10, 10, (2,), np.float32),
                "cam": spaces.Box(0, 255, (8, 8, 3), np.uint8),
                "mode": spaces.Discrete(3),
            }
        )
        self.action_space = action_space
        self.limit, self.x0, self.actions = limit, x0, []

    def _obs(self):
        cam = np.full((8, 8, 3), self.t, np.uint8)
        return {"pos": np.array([self.x, -self.x], np.float32), "cam": cam, "mode": self.t % 3}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.integers(0, 2) if self.x0 is None else self.x0)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.actions.append(action)
        self.t += 1
        self.x += 1.0
        return self._obs(), 0.5, self.x >= 3, self.t >= self.limit, {}


BOX = spaces.Box(-2.0, 4.0, (2,), np.float32)


def test_dict_observations_box_actions_and_termination():
    env = from_gymnasium(Recorder(BOX, x0=0), seed=1)
    assert env.obs_spec["vector"][0] == (2 + 3,) and env.obs_spec["image"][0] == (8, 8, 3)
    assert env.act_dim == 2 and not env.discrete
    obs = env.reset()
    # Dict entries in the space's key order (gymnasium sorts them): 'mode' one-hot (3), then
    # 'pos' (2); the image apart.
    assert list(env.vector_layout) == ["mode", "pos"]
    np.testing.assert_array_equal(obs["vector"], [1, 0, 0, 0, 0])
    assert obs["is_first"] and obs["image"].shape == (8, 8, 3) and obs["image"].dtype == np.uint8
    # [-1, 1] maps linearly onto [low, high]: -1 -> -2, 1 -> 4, 0 -> 1; beyond 1 is clipped.
    steps = [env.step(np.array(a)) for a in ([-1.0, 1.0], [0.0, 7.0], [1.0, -1.0])]
    np.testing.assert_allclose(env.gym_env.actions, [[-2, 4], [1, 4], [4, -2]])
    np.testing.assert_array_equal(steps[1]["vector"], [0, 0, 1, 2, -2])
    assert int(steps[1]["image"][0, 0, 0]) == 2
    # x reaches 3 on the third step: terminated is is_last and is_terminal.
    assert [(s["is_last"], s["is_terminal"]) for s in steps] == [(0, 0), (0, 0), (1, 1)]
    assert all(s["reward"] == 0.5 for s in steps)
    with pytest.raises(RuntimeError, match="after is_last"):
        env.step(np.zeros(2))
    # The first reset is seeded: the same seed, the same start; different seeds differ.
    start = lambda s: from_gymnasium(Recorder(BOX), seed=s).reset()["vector"][3]  # pos[0]
    starts = [start(s) for s in range(12)]
    assert starts == [start(s) for s in range(12)]
    assert set(starts) == {0.0, 1.0}


def test_discrete_actions_repeat_and_truncation():
    env = from_gymnasium(Recorder(spaces.Discrete(3, start=1), limit=2, x0=0), action_repeat=2)
    assert env.discrete and env.act_dim == 3 and env.max_agent_steps is None  # not declared
    env.reset()
    obs = env.step(np.array([0.0, 0.0, 1.0]))  # one-hot class 2 -> the env's action 1 + 2
    assert env.gym_env.actions == [3, 3]  # repeated twice
    # The env's own limit of 2 steps ended the episode: truncated, not terminal; rewards add.
    assert obs["is_last"] and not obs["is_terminal"] and obs["reward"] == pytest.approx(1.0)
    # run's env.time_limit (env steps) cuts episodes too, within an action repeat.
    cut = from_gymnasium(Recorder(BOX, x0=-10), action_repeat=3, time_limit=4)
    assert cut.max_agent_steps == 2
    cut.reset()
    ends = [cut.step(np.zeros(2)) for _ in range(2)]
    assert len(cut.gym_env.actions) == 4 and [e["is_last"] for e in ends] == [False, True]
    assert ends[1]["reward"] == pytest.approx(0.5) and not ends[1]["is_terminal"]
    env.reset()
    with pytest.raises(ValueError, match="3 finite numbers"):
        env.step(np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"MultiDiscrete.*not supported"):
        from_gymnasium(Recorder(spaces.MultiDiscrete([2, 2])))


def test_time_limit_zero_keeps_each_tasks_own_limit(cartpole_limits):
    # The default env.time_limit (0) leaves a Gymnasium env its registered limit, even one
    # past dm-control's 1000 steps; a positive limit caps it; dm-control's own is 1000 steps.
    long, endless = cartpole_limits["long"], cartpole_limits["endless"]
    default = config_lib.Config().env.time_limit
    assert envs.make_env(long, time_limit=default).max_agent_steps == 1600
    # Without a registered limit episodes still end (an evaluation waits for one): at 1000.
    assert envs.make_env(endless, time_limit=default).max_agent_steps == 1000
    assert envs.make_env(long, time_limit=1000).max_agent_steps == 1000
    dmc = envs.make_env("cartpole-swingup", action_repeat=2, time_limit=default)
    assert dmc.time_limit == 1000 and dmc.max_agent_steps == 500


def test_task_names_and_errors():
    env = envs.make_env("gym:CartPole-v1", seed=3)
    assert env.obs_spec == {"vector": ((4,), np.dtype(np.float32))}
    assert env.discrete and env.act_dim == 2 and env.max_agent_steps == 500
    first = env.reset()["vector"]
    assert np.array_equal(envs.make_env("gym:CartPole-v1", seed=3).reset()["vector"], first)
    assert not np.array_equal(envs.make_env("gym:CartPole-v1", seed=4).reset()["vector"], first)
    with pytest.raises(ValueError, match=r"unknown Gymnasium environment 'CartPol-v1'"):
        config_lib.parse_args(["--logdir", "x", "--task", "gym:CartPol-v1"])
    with pytest.raises(ValueError, match=r"leave env\.obs at 'proprio'"):
        config_lib.parse_args(["--logdir", "x", "--task", "gym:CartPole-v1", "--obs", "pixels"])
    # Agents without a discrete policy say so and name the one that has it.
    for preset in ("planet", "sac"):
        cfg, _ = config_lib.parse_args(["--logdir", "x", "--preset", preset])
        with pytest.raises(ValueError, match="discrete actions: use --agent dreamer"):
            make_agent(cfg, (("vector", (4,)),), 2, discrete=True)
    cfg, _ = config_lib.parse_args(["--logdir", "x", "--dreamer.estimator", "dynamics"])
    with pytest.raises(ValueError, match="estimator reinforce"):
        make_agent(cfg, (("vector", (4,)),), 2, discrete=True)


def test_dreamer_acts_one_hot_and_prefills_uniformly():
    cfg, _ = config_lib.parse_args(["--logdir", "x"])
    agent = make_agent(cfg, (("vector", (4,)),), 3, discrete=True)
    state = agent.init(jax.random.key(0))
    obs = {"vector": np.zeros((2000, 4), np.float32), "is_first": np.ones(2000, bool)}
    for mode in ("random", "explore", "eval"):
        action, _ = agent.policy(state, agent.init_carry(2000), obs, jax.random.key(1), mode)
        action = np.asarray(action)
        assert set(np.unique(action)) <= {0.0, 1.0} and np.all(action.sum(-1) == 1.0), mode
        if mode == "random":  # uniform over the 3 classes: 2000/3 each, within 5 sigma
            counts = action.sum(0)
            assert np.all(np.abs(counts - 2000 / 3) < 5 * np.sqrt(2000 * 2 / 9)), counts


@pytest.mark.slow
def test_dreamer_trains_on_gymnasium_cartpole(tmp_path):
    cfg, _ = config_lib.parse_args(
        ["--logdir", "x", "--task", "gym:CartPole-v1", "--steps", "800", "--run.prefill", "400"]
    )
    overrides = {"run.eval_every": 800, "run.log_every": 800, "run.train_ratio": 16.0}
    summary = train(config_lib.replace(cfg, overrides), tmp_path)
    assert summary["env_steps"] == 800 and summary["counters"]["updates"] > 50
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    logged = {k: v for r in rows for k, v in r.items()}
    # The entropy of a 2-class policy: between 0 and log 2.
    assert 0.0 < logged["actor/policy_entropy"] <= np.log(2) + 1e-6
    assert "eval/return" in logged and logged["episode/length"] <= 500
    # Replay holds one-hot actions (zeros at each episode's first step).
    from experiments.replay import Replay

    replay = Replay(10_000, tmp_path / "replay", cfg.run.replay_chunk)
    import json

    from experiments.run.checkpoint import Checkpointer

    with Checkpointer(tmp_path / "checkpoints") as ck:
        replay.load(ck.restore_meta()["replay"])
    batch = replay.sample(8, 16)  # the flags as stored (not a sequence's first step)
    sums = batch["action"].sum(-1)
    assert set(np.unique(batch["action"])) <= {0.0, 1.0}
    first = batch["is_first"].astype(bool)
    assert np.all(sums[~first] == 1.0) and np.all(sums[first] == 0.0), json.dumps(sums.tolist())
