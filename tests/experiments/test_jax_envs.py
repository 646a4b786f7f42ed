"""JAX environments (experiments/envs/jax_envs.py): the repeat, length cap, terminal flags and
next-step auto-reset on gymnax's CartPole, whose dynamics are written out here; Playground's
cartpole against dm-control's on the same physics state; the host `Env` against the pure pair."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.envs import jax_envs

pytest.importorskip("gymnax")

RIGHT, LEFT = np.array([0.0, 1.0], np.float32), np.array([1.0, 0.0], np.float32)


def cartpole_euler(s: np.ndarray, push: int) -> np.ndarray:
    """One step of the classic cart-pole (Barto, Sutton & Anderson 1983; gym's CartPole-v1
    constants: g 9.8, cart 1.0, pole 0.1, half length 0.5, force 10, tau 0.02, explicit Euler)
    in float64: the reference the gymnax environment is held to."""
    x, x_dot, th, th_dot = s
    force = 10.0 if push == 1 else -10.0
    total, pml = 1.1, 0.05
    temp = (force + pml * th_dot**2 * np.sin(th)) / total
    th_acc = (9.8 * np.sin(th) - np.cos(th) * temp) / (
        0.5 * (4 / 3 - 0.1 * np.cos(th) ** 2 / total)
    )
    x_acc = temp - pml * th_acc * np.cos(th) / total
    return np.array([x + 0.02 * x_dot, x_dot + 0.02 * x_acc, th + 0.02 * th_dot,
                     th_dot + 0.02 * th_acc])  # fmt: skip


def _roll(env: jax_envs.JaxEnv, actions: list[np.ndarray], seed: int = 0):
    init, step = jax.jit(env.init), jax.jit(env.step)
    state, out = init(jax_envs.seed_key(seed))
    outs = [jax.device_get(out)]
    for a in actions:
        state, out = step(state, a)
        outs.append(jax.device_get(out))
    return outs


def test_gymnax_cartpole_repeat_sums_rewards_and_follows_the_dynamics():
    env = jax_envs.make_jax_env("gymnax:CartPole-v1", action_repeat=3)
    assert (env.act_dim, env.discrete, env.time_limit, env.max_agent_steps) == (2, True, 500, 167)
    assert env.obs_spec["vector"][0] == (4,)
    outs = _roll(env, [RIGHT, LEFT, RIGHT])
    s = outs[0]["vector"].astype(np.float64)
    assert outs[0]["is_first"] and outs[0]["reward"] == 0.0
    for out, push in zip(outs[1:], (1, 0, 1), strict=True):
        for _ in range(3):
            s = cartpole_euler(s, push)
        np.testing.assert_allclose(out["vector"], s, rtol=1e-4, atol=1e-5)
        assert out["reward"] == 3.0  # 1 per environment step, 3 steps, the pole still up
        assert not (out["is_first"] or out["is_last"] or out["is_terminal"])


def test_termination_ends_the_repeat_keeps_the_last_observation_and_resets_next():
    """Pushing right until the pole falls: the terminating agent step sums only the steps up
    to the fall, is terminal, shows the fallen state; the next step is a fresh episode."""
    env = jax_envs.make_jax_env("gymnax:CartPole-v1", action_repeat=4)
    outs = _roll(env, [RIGHT] * 40)
    end = next(i for i, o in enumerate(outs) if o["is_last"])
    s = outs[0]["vector"].astype(np.float64)
    steps = 0
    while abs(s[2]) <= 12 * 2 * np.pi / 360 and abs(s[0]) <= 2.4:
        s, steps = cartpole_euler(s, 1), steps + 1
    assert end == -(-steps // 4)  # the agent step holding the falling environment step
    assert outs[end]["is_terminal"] and outs[end]["reward"] == steps - 4 * (end - 1)
    np.testing.assert_allclose(outs[end]["vector"], s, rtol=1e-4, atol=1e-5)
    nxt = outs[end + 1]
    assert nxt["is_first"] and not nxt["is_last"] and nxt["reward"] == 0.0
    assert np.all(np.abs(nxt["vector"]) <= 0.05)  # gymnax's reset: uniform in [-0.05, 0.05]


def test_the_length_cap_ends_an_episode_without_a_terminal():
    env = jax_envs.make_jax_env("gymnax:CartPole-v1", action_repeat=3, time_limit=10)
    assert env.max_agent_steps == 4
    outs = _roll(env, [RIGHT, LEFT, RIGHT, LEFT, RIGHT])
    assert [o["reward"] for o in outs[1:5]] == [3.0, 3.0, 3.0, 1.0]  # 3 + 3 + 3 + 1 = 10
    assert [bool(o["is_last"]) for o in outs[1:6]] == [False, False, False, True, False]
    assert not any(o["is_terminal"] for o in outs)
    assert outs[5]["is_first"]


def test_one_key_gives_one_stream_and_seeds_differ():
    env = jax_envs.make_jax_env("gymnax:CartPole-v1", time_limit=5)
    acts = [RIGHT, LEFT] * 8
    a, b, c = _roll(env, acts, 7), _roll(env, acts, 7), _roll(env, acts, 8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["vector"], y["vector"])
    firsts = [o["vector"] for o in a if o["is_first"]]
    assert len(firsts) == 3 and not np.array_equal(firsts[0], firsts[1])  # new draws per reset
    assert not np.array_equal(a[0]["vector"], c[0]["vector"])


def test_host_env_walks_the_same_stream_as_the_pure_pair():
    """The host `Env` (reset after is_last, as `VecEnv` does) equals the compiled pair's
    stream: the host runner and a device loop see the same episodes."""
    env = jax_envs.make_jax_env("gymnax:CartPole-v1", time_limit=6, action_repeat=2)
    acts = ([RIGHT, LEFT, LEFT] * 4)[:11]  # 3 agent steps an episode: ends on an is_last
    pure = _roll(env, acts, 3)
    host = jax_envs.HostJaxEnv(env, seed=3)
    got = [host.reset()]
    for a in acts:
        got.append(host.reset() if got[-1]["is_last"] else host.step(a))
    for x, y in zip(pure, got, strict=True):
        np.testing.assert_array_equal(x["vector"], y["vector"])
        assert (x["reward"], bool(x["is_last"])) == (y["reward"], y["is_last"])
    assert isinstance(got[1]["reward"], np.float32) and got[1]["vector"].dtype == np.float32
    assert got[-1]["is_last"] and got[4]["is_first"]
    with pytest.raises(RuntimeError, match="after is_last"):
        host.step(RIGHT)


def test_continuous_gymnax_actions_map_onto_the_box():
    env = jax_envs.make_jax_env("gymnax:Pendulum-v1")
    assert (env.act_dim, env.discrete) == (1, False)
    core = env.core
    inner, _ = core.reset(jax.random.key(0))
    # Pendulum's torque bound is 2: +1 and +5 (clipped) give the same step, -1 its mirror.
    up = core.step(inner, jnp.array([1.0]), jax.random.key(1))[1]
    clipped = core.step(inner, jnp.array([5.0]), jax.random.key(1))[1]
    np.testing.assert_array_equal(up, clipped)
    assert jax_envs._to_box(jnp.array([-1.0, 0.0, 1.0]), -2.0, 2.0).tolist() == [-2.0, 0.0, 2.0]


def test_unknown_tasks_name_the_valid_ones():
    with pytest.raises(ValueError, match="CartPole-v1"):
        jax_envs.make_jax_env("gymnax:CartPole-v9")
    with pytest.raises(ValueError, match="no JAX task"):
        jax_envs.make_jax_env("cartpole-swingup")
    assert jax_envs.playground_name("finger-turn_easy") == "FingerTurnEasy"
    assert jax_envs.playground_name("ball_in_cup-catch") == "BallInCup"


@pytest.mark.slow
def test_playground_cartpole_steps_as_dm_control_from_the_same_state():
    """``mjx:cartpole-swingup`` against dm-control's cartpole-swingup (`DMCEnv`, the host
    runner's env) from the same physics state under the same actions: the same physics, the
    same observation layout ('vector': cart position, pole cos, sin, velocities) and length cap.

    Two differences of Playground's port, pinned here: its cartpole.xml integrates with Euler
    where dm-control's says RK4 (dm-control is set to Euler for the comparison), and its
    observation reads the pole's orientation from the kinematics computed before the step's
    integration, so cos and sin are one simulation step behind dm-control's (which refreshes
    kinematics after each step); position and velocities are current. Tolerance: MJX computes
    in float32, MuJoCo in float64."""
    pytest.importorskip("mujoco_playground")
    import mujoco
    from mujoco import mjx

    from experiments.envs.dmc import DMCEnv

    # Every dm-control task Playground ports has its dm-control name (25 in playground 0.2).
    assert len(jax_envs.jax_tasks("mjx:")) == 25
    env = jax_envs.make_jax_env("mjx:cartpole-swingup", action_repeat=1)
    assert (env.act_dim, env.discrete, env.time_limit, env.max_agent_steps) == (
        1,
        False,
        1000,
        1000,
    )
    # Unset, the action repeat is the dm-control task's default (PlaNet's table: 8 for cartpole).
    assert jax_envs.make_jax_env("mjx:cartpole-swingup").action_repeat == 8
    dmc = DMCEnv("cartpole-swingup", "proprio", seed=0, action_repeat=1)
    assert dmc.obs_spec["vector"][0] == env.obs_spec["vector"][0] == (5,)
    prev = dmc.reset()["vector"]
    physics = dmc._env.physics
    physics.model.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    inner, _ = env.core.reset(jax.random.key(0))
    data = inner.data.replace(
        qpos=jnp.asarray(physics.data.qpos), qvel=jnp.asarray(physics.data.qvel)
    )
    inner = inner.replace(data=mjx.forward(env.core.native.mjx_model, data))
    state = jax_envs.EnvState(inner, jax.random.key(1), jnp.int32(0), jnp.bool_(False))
    step = jax.jit(env.step)
    for a in np.sin(np.arange(30) / 3.0)[:, None].astype(np.float32):  # within [-1, 1]
        state, out = step(state, a)
        ref = dmc.step(a)["vector"]
        got = np.asarray(out["vector"])
        np.testing.assert_allclose(got[[0, 3, 4]], ref[[0, 3, 4]], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[1:3], prev[1:3], rtol=1e-4, atol=1e-5)
        assert 0.0 <= out["reward"] <= 1.0 and not out["is_last"]
        prev = ref
    dmc.close()


@pytest.mark.slow
def test_the_runner_takes_jax_tasks_by_name(tmp_path):
    """The host runner steps ``gymnax:`` tasks through `HostJaxEnv`: episodes of CartPole under
    a random agent end by the pole's fall or the 20-step cap, and the config refuses images."""
    from experiments import config as config_lib
    from experiments import envs as envs_lib
    from experiments.run.logging import read_jsonl
    from experiments.run.loop import train

    with pytest.raises(ValueError, match="observe their state vector only"):
        envs_lib.check_obs("gymnax:CartPole-v1", "pixels")
    with pytest.raises(ValueError, match="gymnax:CartPole-v1"):
        envs_lib.check_task("gymnax:CartPole-v2")
    assert envs_lib.task_action_repeat("gymnax:CartPole-v1") == 1
    assert envs_lib.task_action_repeat("mjx:cartpole-swingup") == 8
    args = ["--preset", "debug", "--agent", "random", "--task", "gymnax:CartPole-v1"]
    args += ["--logdir", str(tmp_path), "--steps", "200", "--run.prefill", "0"]
    args += ["--env.time_limit", "20", "--run.eval_every", "0", "--run.loop", "host"]
    summary = train(config_lib.parse_args(args)[0], tmp_path)
    rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "episode/return" in r]
    assert summary["env_steps"] == 200 and len(rows) >= 10
    for row in rows:
        # CartPole pays 1 per step before the fall; an episode is at most 20 steps long.
        assert row["episode/return"] == row["episode/length"] <= 20
