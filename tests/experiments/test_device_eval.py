"""Evaluation inside the compiled program (experiments/run/device_eval.py): its episodes are
the ones a host loop plays, one step at a time, from the same environment keys with the same
policy keys, and they start when run.eval_every says."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gymnax")

from experiments import config as config_lib
from experiments.envs import jax_envs
from experiments.run import device_program as dp
from experiments.run.device_eval import make_evaluate
from experiments.run.eval import EPISODE_KEYS

EPISODES = 3


def _agent_and_env():
    cfg = config_lib.parse_args(
        ["--preset", "debug", "--task", "gymnax:CartPole-v1", "--logdir", "x"]
    )[0]
    env = jax_envs.make_jax_env("gymnax:CartPole-v1", 1, 0)
    agent = config_lib.make_agent(cfg, (("vector", (4,)),), env.act_dim, env.discrete)
    return agent, env


def _host_episode(agent, state, env, env_key, policy_key, e: int) -> tuple[float, int]:
    """Episode e as a host loop plays it: the environment from fold_in(env_key, e), one jitted
    policy call (batch 1) and one jitted env step per agent step."""
    init, step = jax.jit(env.init), jax.jit(env.step)
    env_state, obs = init(jax.random.fold_in(env_key, e))
    carry, total, t = agent.init_carry(1), 0.0, 0
    while not bool(obs["is_last"]):
        batch = {k: obs[k][None] for k in ("vector", "is_first")}
        key = jax.random.fold_in(policy_key, e * EPISODE_KEYS + t)
        action, carry = agent.policy(state, carry, batch, key, "eval")
        env_state, obs = step(env_state, jnp.asarray(action[0], jnp.float32))
        total += float(obs["reward"])
        t += 1
    return total, t


@pytest.mark.slow
def test_episodes_side_by_side_equal_the_host_loops_episodes():
    agent, env = _agent_and_env()
    state = agent.init(jax.random.key(1))
    policy_key, env_key = jax.random.key(2), jax.random.key(3)
    returns, lengths = jax.jit(make_evaluate(agent, env, EPISODES))(state, policy_key, env_key)
    host = [_host_episode(agent, state, env, env_key, policy_key, e) for e in range(EPISODES)]
    # CartPole pays 1 per step: return == length, and the episodes differ (own keys).
    np.testing.assert_array_equal(lengths, [n for _, n in host])
    np.testing.assert_array_equal(returns, [r for r, _ in host])
    assert len(set(lengths.tolist())) > 1


@pytest.mark.slow
def test_evaluations_run_when_due_and_log_their_mean():
    """N = 2 environments, eval_every 40 env steps: agent step i ends at env step 2 (i + 1),
    so evaluations run after steps 19, 39 and 59, each the mean of its episodes, played
    with keys folded with the env step."""
    agent, env = _agent_and_env()
    settings = dp.Settings(2, 4, 16, 32.0, 200, 1, 1, 0, eval_every=40, eval_episodes=2)
    keys = tuple(jax.random.split(jax.random.key(0), 5))
    env_keys = jnp.stack([jax_envs.seed_key(i) for i in range(2)])
    carry = dp.init_carry(agent, env, settings, 1000, keys, env_keys)
    carry, out = jax.jit(dp.make_chunk(agent, env, settings, 60))(carry)
    assert np.flatnonzero(out["evaluated"]).tolist() == [19, 39, 59]
    assert int(carry.next_eval) == 160
    # Prefill lasts the whole chunk: no update, so every evaluation sees the initial agent.
    assert int(carry.updates) == 0
    for i in (19, 59):
        steps = 2 * (i + 1)
        policy_key, env_key = (jax.random.fold_in(k, steps) for k in keys[3:])
        host = [_host_episode(agent, carry.state, env, env_key, policy_key, e) for e in (0, 1)]
        assert float(out["eval_return"][i]) == np.mean([r for r, _ in host])
