"""The device loop's carry outside the loop: the program's settings from a config, the carry
as an orbax checkpoint (its zero-size arrays left out and rebuilt, shared arrays copied before
donation) and the agent state of a device-loop checkpoint (``checkpointed_state``, for
``experiments.evaluate``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from experiments.envs import jax_envs
from experiments.run import device_program as dp


def device_settings(cfg: Any, env: jax_envs.JaxEnv) -> dp.Settings:
    """The compiled program's settings of config ``cfg`` on ``env``."""
    run = cfg.run
    return dp.Settings(
        num_envs=cfg.env.envs,
        batch_size=run.batch_size,
        batch_length=run.batch_length,
        train_ratio=run.train_ratio,
        prefill=run.prefill,
        action_repeat=env.action_repeat,
        context=cfg.model.replay_context,
        online=run.batch_length + cfg.model.replay_context if run.replay_online else 0,
        eval_every=run.eval_every,
        eval_episodes=run.eval_episodes,
    )


def checkpointed_state(ckpt: Any, step: int, meta: dict, agent: Any, cfg: Any) -> Any:
    """The agent state (all K seeds' with run.seeds K) of a device-loop checkpoint (the
    whole carry, ``meta['loop'] == 'device'``): the carry's structure rebuilt from ``cfg``
    and the saved replay rows, restored, and its agent state taken."""
    env = jax_envs.make_jax_env(cfg.env.task, cfg.env.action_repeat or None, cfg.env.time_limit)
    settings = device_settings(cfg, env)
    capacity = int(meta["replay_rows"]) * settings.num_envs

    def one() -> dp.Carry:
        keys = (*jax.random.split(jax.random.key(0), 4), jax_envs.seed_key(0))
        env_keys = jnp.stack([jax_envs.seed_key(i) for i in range(settings.num_envs)])
        dtype = jnp.dtype(cfg.run.context_dtype)
        return dp.init_carry(agent, env, settings, capacity, keys, env_keys, dtype)

    abstract = jax.eval_shape(one)
    if cfg.run.seeds > 1:
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct((cfg.run.seeds, *x.shape), x.dtype), abstract
        )
    stored, _ = ckpt.restore(without_empty(abstract), step)
    return with_empty(abstract, stored).state


def without_empty(tree: Any) -> Any:
    """``tree`` with its zero-size arrays as None (MJX data holds some, e.g. ``act`` [0] of a
    model without activations; orbax refuses to save them)."""
    return jax.tree.map(lambda x: None if 0 in x.shape else x, tree)


def with_empty(abstract: Any, stored: Any) -> Any:
    """The tree of ``abstract`` (shapes and dtypes) from ``stored`` (``without_empty``'s
    tree): its arrays in order, zeros where ``abstract`` has a zero-size array."""
    leaves, treedef = jax.tree.flatten(abstract)
    it = iter(jax.tree.leaves(stored))
    filled = [jnp.zeros(x.shape, x.dtype) if 0 in x.shape else next(it) for x in leaves]
    return jax.tree.unflatten(treedef, filled)


def unshared(tree: Any) -> Any:
    """``tree`` with every array that appears in it more than once copied (an agent's target
    network starts as its network's very arrays): the chunk donates the carry, and one
    buffer cannot be donated twice."""
    seen: set[int] = set()

    def once(x: Any) -> Any:
        if not isinstance(x, jax.Array):
            return x
        try:  # two Array objects may hold one buffer (a program returning a value twice)
            where = x.unsafe_buffer_pointer()
        except Exception:  # no single buffer (sharded, PRNG keys): by identity
            where = id(x)
        if where in seen:
            return jnp.copy(x)
        seen.add(where)
        return x

    return jax.tree.map(once, tree)
