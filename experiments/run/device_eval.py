"""Evaluation episodes inside the device loop's compiled program.

``evaluate(state, policy_key, env_key) -> (returns [E], lengths [E])`` plays E episodes of a
`JaxEnv` with the agent's 'eval' policy, side by side (one program, E environments), as the
host runner's ``experiments.run.eval.evaluate`` plays them one after the other:

    episode e     its environment starts from fold_in(env_key, e)
    step t of e   a_t = policy(o_t; key fold_in(policy_key, e * EPISODE_KEYS + t)), batch 1
    return        sum of the rewards r_1 .. r_L up to the step that is_last marks

Each episode has its own policy carry and its own key stream, so its return is the one the
host loop gives for that episode (``HostJaxEnv`` reset to the same key, the same keys per step;
tested). The loop runs until every episode has ended (a ``while_loop``: a vmap over seeds runs
it until every seed's have), and steps after an episode's end change nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from experiments.envs.jax_envs import JaxEnv
from experiments.run.eval import EPISODE_KEYS


def make_evaluate(
    agent: Any, env: JaxEnv, episodes: int
) -> Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """``evaluate(state, policy_key, env_key) -> (returns [E], lengths [E])`` for E =
    ``episodes``: lengths in agent steps. Not jitted (it runs inside the chunk)."""
    keys = tuple(env.obs_spec)

    def act(state: Any, carry: dict, obs: dict, key: jax.Array) -> tuple[jax.Array, dict]:
        # One episode's policy at batch 1, as the host's evaluation calls it.
        batch = {k: obs[k][None] for k in (*keys, "is_first")}
        action, carry = agent._policy(state, carry, batch, key, "eval")
        return action[0].astype(jnp.float32), carry

    def evaluate(state: Any, policy_key: jax.Array, env_key: jax.Array):
        ep = jnp.arange(episodes)
        env_state, obs = jax.vmap(env.init)(jax.vmap(lambda e: jax.random.fold_in(env_key, e))(ep))
        carry = jax.vmap(lambda _: agent.init_carry(1))(ep)
        zeros = jnp.zeros(episodes, jnp.float32)
        done = jnp.zeros(episodes, bool)

        def running(loop: tuple) -> jax.Array:
            return ~jnp.all(loop[4])

        def body(loop: tuple) -> tuple:
            t, env_state, obs, carry, done, ret, length = loop
            step_keys = jax.vmap(lambda e: jax.random.fold_in(policy_key, e * EPISODE_KEYS + t))
            action, carry = jax.vmap(act, in_axes=(None, 0, 0, 0))(state, carry, obs, step_keys(ep))
            env_state, obs = jax.vmap(env.step)(env_state, action)
            ret = ret + jnp.where(done, 0.0, obs["reward"])
            length = length + (~done).astype(jnp.int32)
            return t + 1, env_state, obs, carry, done | obs["is_last"], ret, length

        start = (jnp.int32(0), env_state, obs, carry, done, zeros, jnp.zeros(episodes, jnp.int32))
        _, _, _, _, _, ret, length = jax.lax.while_loop(running, body, start)
        return ret, length

    return evaluate
