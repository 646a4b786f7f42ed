"""Collect and train in one compiled program: a chunk of agent steps as one ``lax.scan``.

Each agent step of the N environments of a JAX task (`experiments.envs.jax_envs`) does what
the host runner's iteration does (``experiments/run/loop.py``), on the device:

    policy      a_t from o_t (uniform during prefill, through the agent's recurrent state)
    store       replay <- o_t, a_{t-1}, r_t, flags and the posterior after o_t as context
    train       the updates run.train_ratio owes by now: carried credit += N / per_update,
                while credit >= 1: sample B windows, update, write the context back
    env step    o_{t+1} = step(env state, a_t), with the next-step auto-reset
    evaluate    when run.eval_every is due: run.eval_episodes episodes (``device_eval``)

The carry (``Carry``) is the whole state of a run: agent, policy carry, environment states,
the last step, replay, counters and keys; ``chunk(carry) -> (carry, steps)`` returns it with
the per-step episode outputs the host logs. The host only loops over chunks.

Counting as the host runner: one agent step is N environment decisions; ``credit`` gains
N / per_update per agent step once prefill is over and replay holds B x T windows
(``Runner.train_owed``), with per_update = B T / train_ratio. The credit is float32 here and
float64 on the host: for ratios where N / per_update is a binary fraction (e.g. 512 / 1024)
both are exact and the updates fall on the same steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agents.world_model import CONTEXT_KEYS
from experiments.envs.jax_envs import EnvState, JaxEnv
from experiments.replay import device as replay_lib
from experiments.run.device_eval import make_evaluate

FLAGS = ("is_first", "is_last", "is_terminal")


class Carry(NamedTuple):
    """Everything one run holds between chunks (a pytree; vmapped over seeds: [K, ...])."""

    state: Any  # AgentState
    policy: dict  # the agent's policy carry
    env: EnvState  # [N] environment states
    obs: dict  # the last step dict, [N, ...]
    prev_action: jax.Array  # [N, A] the action that led to ``obs`` (what replay stores)
    replay: replay_lib.DeviceReplay
    agent_steps: jax.Array  # [] int32, agent steps summed over the N environments
    updates: jax.Array  # [] int32
    credit: jax.Array  # [] float32, updates owed
    ep_return: jax.Array  # [N] float32
    ep_length: jax.Array  # [N] int32
    metric_sums: dict  # {name: []} summed over the updates since the last log
    metric_count: jax.Array  # [] int32
    policy_key: jax.Array
    sample_key: jax.Array
    next_eval: jax.Array  # [] int32, the env step of the next evaluation
    eval_key: jax.Array  # evaluation policy keys: fold_in(eval_key, env step)
    eval_env_key: jax.Array  # evaluation environments: fold_in(eval_env_key, env step)


class Settings(NamedTuple):
    """The run's numbers the program is compiled for (static)."""

    num_envs: int  # N
    batch_size: int  # B
    batch_length: int  # T
    train_ratio: float
    prefill: int  # environment steps of uniform actions
    action_repeat: int
    context: int  # steps of replay context (0 or 1)
    online: int  # the online queue's window (0: off)
    eval_every: int = 0  # environment steps between evaluations (0: never)
    eval_episodes: int = 0

    @property
    def per_update(self) -> float:
        return self.batch_size * self.batch_length / self.train_ratio


def record(obs: dict, prev_action: jax.Array, keys: tuple[str, ...]) -> dict:
    """What replay stores of step ``obs`` ([N, ...]): o_t, a_{t-1} (zeros at a reset), r_t and
    the flags, as ``loop.record``."""
    first = obs["is_first"]
    rec = {k: obs[k] for k in keys}
    rec["action"] = jnp.where(first[:, None], 0.0, prev_action).astype(jnp.float32)
    rec["reward"] = obs["reward"].astype(jnp.float32)
    rec.update({k: obs[k] for k in FLAGS})
    return rec


def replay_spec(env: JaxEnv, act_dim: int) -> dict:
    spec = {k: v for k, v in env.obs_spec.items()}
    spec.update(action=((act_dim,), jnp.float32), reward=((), jnp.float32))
    spec.update({k: ((), jnp.bool_) for k in FLAGS})
    return spec


def init_carry(
    agent: Any,
    env: JaxEnv,
    settings: Settings,
    capacity: int,
    keys: tuple[jax.Array, ...],
    env_keys: jax.Array,
    context_dtype: Any = jnp.float16,
) -> Carry:
    """A fresh run: the agent from ``keys[0]``; policy, sampling, evaluation-policy and
    evaluation-environment keys ``keys[1:]``; environment i started from ``env_keys[i]``."""
    init_key, policy_key, sample_key, eval_key, eval_env_key = keys
    state = agent.init(init_key)
    policy = agent.init_carry(settings.num_envs)
    env_state, obs = jax.vmap(env.init)(env_keys)
    ctx_spec = None
    if settings.context:
        ctx_spec = {k: (policy["state"][k].shape[1:], context_dtype) for k in CONTEXT_KEYS}
    replay = replay_lib.init(
        replay_spec(env, agent.action_dim), settings.num_envs, capacity, ctx_spec, settings.online
    )
    metrics = jax.eval_shape(agent.update, state, _dummy(agent, settings))[1]
    n = settings.num_envs
    return Carry(
        state=state,
        policy=policy,
        env=env_state,
        obs=obs,
        prev_action=jnp.zeros((n, agent.action_dim), jnp.float32),
        replay=replay,
        agent_steps=jnp.int32(0),
        updates=jnp.int32(0),
        credit=jnp.float32(0.0),
        ep_return=jnp.zeros(n, jnp.float32),
        ep_length=jnp.zeros(n, jnp.int32),
        metric_sums={k: jnp.zeros(v.shape, jnp.float32) for k, v in metrics.items()},
        metric_count=jnp.int32(0),
        policy_key=policy_key,
        sample_key=sample_key,
        next_eval=jnp.int32(settings.eval_every),
        eval_key=eval_key,
        eval_env_key=eval_env_key,
    )


def _dummy(agent: Any, s: Settings) -> dict:
    batch = agent.dummy_batch(s.batch_size, s.batch_length)
    if s.context:
        carry = agent.init_carry(s.batch_size)
        batch["context"] = {k: carry["state"][k].astype(jnp.float32) for k in CONTEXT_KEYS}
    return batch


def make_train_owed(agent: Any, settings: Settings) -> Callable[[Carry], Carry]:
    """``train_owed(carry)``: the updates owed after this agent step (``Runner.train_owed``):
    once prefill is over and replay holds B x T windows, credit += N / per_update, then one
    update (sample, train, write the context back) while credit >= 1."""
    s = settings

    def one_update(c: Carry) -> Carry:
        key = jax.random.fold_in(c.sample_key, c.updates)
        replay, sampled = replay_lib.sample(
            c.replay, key, s.batch_size, s.batch_length, s.context, bool(s.online)
        )
        state, metrics, context = agent.update(c.state, sampled.batch)
        replay = replay_lib.write_context(replay, sampled, context)
        sums = {k: c.metric_sums[k] + metrics[k].astype(jnp.float32) for k in c.metric_sums}
        return c._replace(
            state=state,
            replay=replay,
            updates=c.updates + 1,
            credit=c.credit - 1.0,
            metric_sums=sums,
            metric_count=c.metric_count + 1,
        )

    def train_owed(c: Carry) -> Carry:
        window = s.batch_length + s.context
        windows = s.num_envs * jnp.maximum(replay_lib.stored(c.replay) - window + 1, 0)
        ready = windows >= s.batch_size * s.batch_length
        prefill = c.agent_steps * s.action_repeat < s.prefill
        owed = jnp.where(ready & ~prefill, s.num_envs / s.per_update, 0.0).astype(jnp.float32)
        c = c._replace(credit=c.credit + owed)
        return jax.lax.while_loop(lambda c: c.credit >= 1.0, one_update, c)

    return train_owed


def make_eval_when_due(
    agent: Any, env: JaxEnv, settings: Settings
) -> Callable[[Carry], tuple[Carry, jax.Array, jax.Array]]:
    """``eval_when_due(carry) -> (carry, due, mean return)``: once the run's environment steps
    reach ``next_eval``, ``run.eval_episodes`` evaluation episodes (``device_eval``) with
    keys folded with the env step, and next_eval += eval_every, as the host runner does
    after an iteration (mean 0 when none was due). A ``while_loop`` of at most one iteration
    gates it: a ``cond`` under a vmap over seeds would run the evaluation at every step."""
    s = settings
    evaluate = make_evaluate(agent, env, s.eval_episodes)

    def eval_when_due(c: Carry) -> tuple[Carry, jax.Array, jax.Array]:
        env_steps = c.agent_steps * s.action_repeat
        due = env_steps >= c.next_eval

        def body(loop: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
            policy_key = jax.random.fold_in(c.eval_key, env_steps)
            env_key = jax.random.fold_in(c.eval_env_key, env_steps)
            returns, _ = evaluate(c.state, policy_key, env_key)
            return jnp.bool_(False), jnp.mean(returns)

        _, mean = jax.lax.while_loop(lambda loop: loop[0], body, (due, jnp.float32(0.0)))
        next_eval = jnp.where(due, c.next_eval + s.eval_every, c.next_eval)
        return c._replace(next_eval=next_eval), due, mean

    return eval_when_due


def make_chunk(
    agent: Any, env: JaxEnv, settings: Settings, steps: int
) -> Callable[[Carry], tuple[Carry, dict]]:
    """``chunk(carry) -> (carry, outputs)``: ``steps`` agent steps as one scan (not jitted:
    the caller jits or vmaps it). ``outputs`` holds, per agent step, ``is_last`` ``[steps,
    N]``, the episode's ``return`` and ``length`` (agent steps) at that step and, with
    evaluations on, ``evaluated`` and ``eval_return`` ``[steps]`` (where one ran, its mean
    return)."""
    s, keys = settings, tuple(env.obs_spec)
    train_owed = make_train_owed(agent, settings)
    evaluating = s.eval_every > 0 and s.eval_episodes > 0
    eval_when_due = make_eval_when_due(agent, env, settings) if evaluating else None

    def act(c: Carry) -> tuple[jax.Array, dict]:
        key = jax.random.fold_in(c.policy_key, c.agent_steps)
        obs = {k: c.obs[k] for k in (*keys, "is_first")}
        prefill = c.agent_steps * s.action_repeat < s.prefill

        def policy(mode: str) -> Callable[[], tuple[jax.Array, dict]]:
            return lambda: agent._policy(c.state, c.policy, obs, key, mode)

        return jax.lax.cond(prefill, policy("random"), policy("explore"))

    def agent_step(c: Carry, _: None) -> tuple[Carry, dict]:
        action, policy = act(c)
        action = action.astype(jnp.float32)
        context = {k: policy["state"][k] for k in CONTEXT_KEYS} if s.context else None
        replay = replay_lib.add(c.replay, record(c.obs, c.prev_action, keys), context, s.online)
        c = train_owed(c._replace(policy=policy, replay=replay))
        env_state, obs = jax.vmap(env.step)(c.env, action)
        ret = jnp.where(obs["is_first"], 0.0, c.ep_return + obs["reward"])
        length = jnp.where(obs["is_first"], 0, c.ep_length + 1)
        c = c._replace(
            env=env_state,
            obs=obs,
            prev_action=action,
            agent_steps=c.agent_steps + s.num_envs,
            ep_return=ret,
            ep_length=length,
        )
        out = {"is_last": obs["is_last"], "return": ret, "length": length}
        if eval_when_due is not None:
            c, out["evaluated"], out["eval_return"] = eval_when_due(c)
        return c, out

    def chunk(carry: Carry) -> tuple[Carry, dict]:
        return jax.lax.scan(agent_step, carry, None, length=steps)

    return chunk
