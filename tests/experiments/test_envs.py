"""Tests for experiments.envs: names, observations, action repeat, time limit, seeding, batching."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from dm_control import suite

from experiments.envs import (
    DMCEnv,
    default_action_repeat,
    dmc_tasks,
    parse_task,
)
from experiments.envs.vec import make_envs


def _flatten(observation):
    """The reference flattening: dm-control's OrderedDict order, each value raveled."""
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in observation.values()])


def _rollout(env, actions):
    """reset() then step(a) for each a; returns the list of output dicts."""
    outs = [env.reset()]
    outs.extend(env.step(a) for a in actions)
    return outs


# ---------------------------------------------------------------------------------------------
# Names and defaults


def test_unknown_task_is_value_error_naming_the_closest():
    with pytest.raises(ValueError, match=r"did you mean 'walker-walk'\?") as info:
        DMCEnv("walker-wlak")
    assert "cartpole-swingup" not in str(info.value)  # the closest, not all 52
    assert "'walker-wlak'" in str(info.value) and "dmc_tasks() lists all" in str(info.value)
    with pytest.raises(ValueError, match=r"cheetah's tasks are cheetah-run \("):
        parse_task("cheetah-backflip_twice")  # nothing close: the domain's tasks
    for bad in ("walker", "walker_walk", "walker-walk-extra", ""):
        with pytest.raises(ValueError, match="walker-walk"):
            parse_task(bad)
    # make_envs checks the name before starting any worker.
    with pytest.raises(ValueError, match="walker-walk"):
        make_envs("nope-nope", num_envs=2, parallel=True)


def test_task_names_parse_domains_and_tasks_with_underscores():
    assert parse_task("ball_in_cup-catch") == ("ball_in_cup", "catch")
    assert parse_task("point_mass-easy") == ("point_mass", "easy")
    assert parse_task("finger-turn_easy") == ("finger", "turn_easy")
    assert len(dmc_tasks()) == len(suite.ALL_TASKS) + 1
    assert all(parse_task(name) for name in dmc_tasks())


def test_the_runner_and_gymnasium_tasks_need_no_dm_control():
    # dm-control is imported when a suite task is first named, not before: the update
    # benchmark and Gymnasium runs work where MuJoCo is not installed.
    code = (
        "import sys, experiments.train, experiments.envs as e; "
        "e.make_env('gym:CartPole-v1').reset(); print('dm_control' in sys.modules); "
        "e.parse_task('walker-walk'); print('dm_control' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env=dict(os.environ, RSSM_JAX_MALLOC="system"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.split() == ["False", "True"], out.stderr[-2000:]


def test_cup_catch_alias_is_ball_in_cup_catch():
    assert parse_task("cup-catch") == ("ball_in_cup", "catch")
    alias, full = DMCEnv("cup-catch", seed=5), DMCEnv("ball_in_cup-catch", seed=5)
    assert alias.task == "ball_in_cup-catch"
    assert alias.action_repeat == full.action_repeat == 4
    np.testing.assert_array_equal(alias.reset()["vector"], full.reset()["vector"])


@pytest.mark.parametrize(
    ("task", "repeat"),
    [
        ("cartpole-swingup", 8),
        ("cartpole-balance", 8),
        ("finger-spin", 2),
        ("cheetah-run", 4),
        ("cup-catch", 4),
        ("walker-walk", 2),
        ("reacher-easy", 4),
        ("pendulum-swingup", 2),
        ("quadruped-run", 2),
    ],
)
def test_default_action_repeat_follows_planet_table(task, repeat):
    assert default_action_repeat(task) == repeat


def test_action_repeat_override_and_validation():
    # PlaNet's table (google-research/planet scripts/tasks.py) for its six domains, 2 for the rest.
    planet = {"cartpole": 8, "finger": 2, "cheetah": 4, "cup": 4, "walker": 2, "reacher": 4}
    for task in dmc_tasks():
        domain = task.split("-")[0].replace("ball_in_", "")
        assert default_action_repeat(task) == planet.get(domain, 2), task
    assert DMCEnv("cartpole-swingup").action_repeat == 8
    assert DMCEnv("cartpole-swingup", action_repeat=1).action_repeat == 1
    assert DMCEnv("cartpole-swingup", action_repeat=3).max_agent_steps == 334
    with pytest.raises(ValueError, match="action_repeat"):
        DMCEnv("cartpole-swingup", action_repeat=0)
    with pytest.raises(TypeError, match="action_repeat"):
        DMCEnv("cartpole-swingup", action_repeat=True)
    with pytest.raises(ValueError, match="obs"):
        DMCEnv("cartpole-swingup", obs="state")


# ---------------------------------------------------------------------------------------------
# Observations and actions


def test_proprio_vector_is_the_flattened_dm_control_observation():
    # Quadruped has a scalar observation (torso_upright) and asymmetric action bounds.
    env = DMCEnv("quadruped-run", seed=3, action_repeat=2)
    ref = suite.load("quadruped", "run", task_kwargs={"random": 3})
    spec = ref.action_spec()
    low, high = spec.minimum, spec.maximum
    assert not np.allclose(low, -1) or not np.allclose(high, 1)

    out = env.reset()
    expected = _flatten(ref.reset().observation)
    assert env.obs_spec == {"vector": ((expected.size,), np.dtype(np.float32))}
    assert out["vector"].shape == (expected.size,) == (78,)
    assert out["vector"].dtype == np.float32
    np.testing.assert_array_equal(out["vector"], expected.astype(np.float32))
    layout = env.vector_layout
    assert list(layout) == list(ref.observation_spec())
    assert layout["torso_upright"].stop - layout["torso_upright"].start == 1

    rng = np.random.default_rng(0)
    for _ in range(3):
        # Values outside [-1, 1] are clipped before the map onto [low, high].
        action = rng.uniform(-1.5, 1.5, env.act_dim).astype(np.float32)
        mapped = low + (np.clip(action.astype(np.float64), -1, 1) + 1) / 2 * (high - low)
        out = env.step(action)
        reward = 0.0
        for _ in range(2):
            ts = ref.step(mapped)
            reward += ts.reward
        np.testing.assert_array_equal(out["vector"], _flatten(ts.observation).astype(np.float32))
        assert out["reward"] == np.float32(reward)
        assert out["reward"].dtype == np.float32


def test_action_validation():
    env = DMCEnv("cartpole-swingup")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    env.reset()
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        env.step(np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan]))


def _frame_distance(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_pixels_are_rendered_and_move():
    env = DMCEnv("cartpole-swingup", obs="pixels", seed=0)
    assert env.obs_spec == {"image": ((64, 64, 3), np.dtype(np.uint8))}
    first = env.reset()
    assert set(first) == {"image", "reward", "is_first", "is_last", "is_terminal"}
    image = first["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 10.0, "blank frame"
    for _ in range(5):
        out = env.step(np.ones(1, np.float32))
    assert _frame_distance(out["image"], image) > 1.0, "pushing the cart did not change the frame"

    # A different camera sees a different picture of the same state.
    other = DMCEnv("cartpole-swingup", obs="pixels", seed=0, camera=1, size=(32, 48))
    assert other.obs_spec["image"][0] == (32, 48, 3)
    assert other.reset()["image"].shape == (32, 48, 3)
    with pytest.raises(ValueError, match="camera"):
        DMCEnv("cartpole-swingup", obs="pixels", camera=99)


def test_default_camera_is_two_for_quadruped():
    assert DMCEnv("quadruped-run", obs="pixels").camera == 2
    assert DMCEnv("walker-walk", obs="pixels").camera == 0
    assert DMCEnv("quadruped-run", obs="pixels", camera=0).camera == 0


def test_fast_render_changes_the_look_but_not_the_content():
    default = DMCEnv("walker-walk", obs="pixels", seed=1)
    fast = DMCEnv("walker-walk", obs="pixels", seed=1, fast_render=True)
    a, b = default.reset()["image"], fast.reset()["image"]
    assert b.shape == a.shape == (64, 64, 3) and b.dtype == np.uint8
    assert b.std() > 10.0, "blank fast-render frame"
    # Same state, other visuals (no shadows, no multisampling): the settings took effect.
    assert _frame_distance(a, b) > 0.5
    vis = fast.dm_env.physics.model.vis
    assert (vis.global_.offwidth, vis.global_.offheight) == (64, 64)
    assert vis.quality.shadowsize == 0 and vis.quality.offsamples == 0
    # Same physics underneath.
    np.testing.assert_array_equal(default.dm_env.physics.state(), fast.dm_env.physics.state())


# ---------------------------------------------------------------------------------------------
# Action repeat, time limit, termination


def test_action_repeat_sums_rewards_of_single_steps():
    k = 4
    repeated = DMCEnv("cartpole-swingup", seed=7, action_repeat=k)
    single = DMCEnv("cartpole-swingup", seed=7, action_repeat=1)
    np.testing.assert_array_equal(repeated.reset()["vector"], single.reset()["vector"])
    rng = np.random.default_rng(1)
    for _ in range(5):
        action = rng.uniform(-1, 1, 1).astype(np.float32)
        out = repeated.step(action)
        singles = [single.step(action) for _ in range(k)]
        total = sum(float(s["reward"]) for s in singles)
        assert total > 0
        np.testing.assert_allclose(out["reward"], total, rtol=1e-6)
        np.testing.assert_array_equal(out["vector"], singles[-1]["vector"])


def test_time_limit_ends_cartpole_after_125_steps_of_8():
    env = DMCEnv("cartpole-swingup", seed=0)
    assert env.action_repeat == 8 and env.max_agent_steps == 125
    out = env.reset()
    assert (out["is_first"], out["is_last"], out["is_terminal"]) == (True, False, False)
    assert out["reward"] == 0.0
    action = np.zeros(1, np.float32)
    for t in range(1, 126):
        out = env.step(action)
        assert out["is_first"] is False
        assert out["is_last"] is (t == 125), t
        assert out["is_terminal"] is False
    assert env.dm_env.physics.data.time == pytest.approx(1000 * env.dm_env.control_timestep())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)
    assert env.reset()["is_first"] is True


def test_time_limit_cuts_the_last_repeat_short():
    env = DMCEnv("walker-walk", action_repeat=4, time_limit=10)
    assert env.max_agent_steps == 3
    env.reset()
    flags = [env.step(np.zeros(env.act_dim))["is_last"] for _ in range(3)]
    assert flags == [False, False, True]
    dt = env.dm_env.control_timestep()
    assert env.dm_env.physics.data.time == pytest.approx(10 * dt)


def test_termination_sets_is_terminal_and_stops_the_repeat():
    env = DMCEnv("walker-walk", seed=0, action_repeat=4)
    env.reset()
    calls = []

    def terminate_on_sixth(physics):
        calls.append(1)
        return 0.0 if len(calls) == 6 else None

    env.dm_env.task.get_termination = terminate_on_sixth
    action = np.zeros(env.act_dim)
    out = env.step(action)
    assert (out["is_last"], out["is_terminal"]) == (False, False)
    out = env.step(action)
    assert (out["is_last"], out["is_terminal"]) == (True, True)
    # Termination on the sixth environment step: the second repeat stopped after two steps.
    assert env.dm_env.physics.data.time == pytest.approx(6 * env.dm_env.control_timestep())


# ---------------------------------------------------------------------------------------------
# Seeding


def test_same_seed_same_trajectory_different_seed_different_start():
    actions = np.random.default_rng(2).uniform(-1, 1, (6, 6)).astype(np.float32)
    a = _rollout(DMCEnv("walker-walk", seed=11), actions)
    b = _rollout(DMCEnv("walker-walk", seed=11), actions)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["vector"], y["vector"])
        assert x["reward"] == y["reward"]
    c = DMCEnv("walker-walk", seed=12).reset()
    assert not np.array_equal(a[0]["vector"], c["vector"])
    # Pixel observations are seeded the same way.
    p = DMCEnv("cartpole-swingup", obs="pixels", seed=3, fast_render=True).reset()["image"]
    q = DMCEnv("cartpole-swingup", obs="pixels", seed=3, fast_render=True).reset()["image"]
    np.testing.assert_array_equal(p, q)


# ---------------------------------------------------------------------------------------------
# Batches


def _alive(pid):
    """True for a live or zombie process (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _drive(envs, actions):
    outs = [envs.reset()]
    outs.extend(envs.step(a) for a in actions)
    return outs


def test_parallel_equals_sequential_across_auto_reset_and_closes_cleanly():
    # 20 environment steps at repeat 2: episodes of 10 agent steps, two auto-resets in 23 steps.
    kwargs = dict(task="cartpole-swingup", num_envs=2, seed=4, action_repeat=2, time_limit=20)
    actions = np.random.default_rng(3).uniform(-1, 1, (23, 2, 1)).astype(np.float32)
    with make_envs(parallel=False, **kwargs) as envs:
        assert envs.worker_pids == []
        sequential = _drive(envs, actions)
    envs = make_envs(parallel=True, **kwargs)
    pids = envs.worker_pids
    assert len(pids) == 2 and os.getpid() not in pids
    assert envs.obs_spec == {"vector": ((5,), np.dtype(np.float32))}
    assert (envs.act_dim, envs.num_envs, envs.max_agent_steps) == (1, 2, 10)
    parallel = _drive(envs, actions)

    for step, (s, p) in enumerate(zip(sequential, parallel, strict=True)):
        assert s.keys() == p.keys() == {"vector", "reward", "is_first", "is_last", "is_terminal"}
        for key in s:
            assert s[key].shape[0] == 2
            assert s[key].dtype == p[key].dtype
            np.testing.assert_array_equal(s[key], p[key], err_msg=f"{key} at step {step}")
        assert s["reward"].dtype == np.float32 and s["is_last"].dtype == bool
        # Steps 0, 11, 22 are (auto-)resets; 10 and 21 end episodes at the time limit.
        assert s["is_first"].tolist() == [step in (0, 11, 22)] * 2
        assert s["is_last"].tolist() == [step in (10, 21)] * 2
        assert not s["is_terminal"].any()
        if step in (0, 11, 22):
            assert (s["reward"] == 0).all()

    # Environment i is seeded seed + i; auto-reset starts its next episode from its own RNG.
    for i in range(2):
        single = DMCEnv("cartpole-swingup", seed=4 + i, action_repeat=2, time_limit=20)
        expected = _rollout(single, actions[:10, i]) + _rollout(single, actions[11:21, i])
        got = parallel[:11] + parallel[11:22]
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(g["vector"][i], e["vector"])
            assert g["reward"][i] == e["reward"]
    assert not np.array_equal(parallel[0]["vector"][0], parallel[11]["vector"][0])

    # A worker's exception comes back with its type and the worker's traceback.
    bad = np.full((2, 1), np.nan, np.float32)
    with pytest.raises(ValueError, match="finite") as info:
        envs.step(bad)
    assert "in the worker process" in str(info.value.__cause__)
    with pytest.raises(ValueError, match=r"\[num_envs, act_dim\]"):
        envs.step(np.zeros((3, 1)))

    envs.close()
    envs.close()  # idempotent
    assert not any(_alive(pid) for pid in pids)
    with pytest.raises(RuntimeError, match="closed"):
        envs.reset()


def test_auto_reset_ignores_the_action():
    kwargs = dict(task="pendulum-swingup", num_envs=1, seed=0, action_repeat=2, time_limit=4)
    outs = []
    for final in (-1.0, 1.0):
        with make_envs(parallel=False, **kwargs) as envs:
            envs.reset()
            envs.step(np.zeros((1, 1)))
            last = envs.step(np.zeros((1, 1)))
            assert last["is_last"].tolist() == [True]
            outs.append(envs.step(np.full((1, 1), final)))
    assert outs[0]["is_first"].tolist() == [True]
    np.testing.assert_array_equal(outs[0]["vector"], outs[1]["vector"])
    assert outs[0]["reward"].tolist() == [0.0]


def test_first_render_failure_names_the_packages(monkeypatch):
    env = DMCEnv("cartpole-swingup", obs="pixels")

    def broken(*args, **kwargs):
        raise OSError("eglInitialize failed")

    monkeypatch.setattr(env.dm_env.physics, "render", broken)
    with pytest.raises(RuntimeError, match="libegl1 libegl-mesa0 libgl1-mesa-dri") as info:
        env.reset()
    message = str(info.value)
    assert "libosmesa6" in message and "MUJOCO_GL=osmesa" in message
    assert "eglInitialize failed" in message
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize("task", ["cartpole-swingup", "gym:Pendulum-v1"])
def test_reset_with_a_seed_is_a_fresh_environment_with_that_seed(task):
    """reset(seed=s) of a used environment continues exactly as a new one seeded s (what
    run.exact_resume and per-evaluation seeds rely on), through vecenv as well."""
    from experiments.envs import make_env

    rng = np.random.default_rng(0)
    fresh, used = make_env(task, seed=5), make_env(task, seed=99)
    used.reset()
    for _ in range(30):
        used.step(rng.uniform(-1, 1, used.act_dim))
    runs = [[fresh.reset()], [used.reset(seed=5)]]
    for _ in range(20):
        action = rng.uniform(-1, 1, fresh.act_dim)
        runs[0].append(fresh.step(action))
        runs[1].append(used.step(action))
    for a, b in zip(*runs, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    fresh.close()
    used.close()
    with make_envs(task, num_envs=2, seeds=[7, 8]) as vec:
        first = vec.reset()
        vec.step(np.zeros((2, vec.act_dim)))
        again = vec.reset(seeds=[7, 8])
        assert all(np.array_equal(first[k], again[k]) for k in first)
        with pytest.raises(ValueError, match="1 seeds for 2 environments"):
            vec.reset(seeds=[1])
