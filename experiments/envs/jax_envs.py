"""Environments written in JAX: MuJoCo Playground's dm-control suite (``mjx:<domain>-<task>``)
and gymnax (``gymnax:<id>``), as a pure ``init`` / ``step`` pair that can live inside a
compiled program, and as a host `Env` (``HostJaxEnv``: one jitted step per call).

``JaxEnv.step(state, action) -> (state, step)`` gives the step dict of ``contract``::

    'vector': [D] float32   the observation (Playground's and gymnax's flat vector)
    'reward': float32       summed over the action repeat (0.0 on a reset)
    'is_first', 'is_last', 'is_terminal': bool

with the host `VecEnv`'s auto-reset: the step after an ``is_last`` one ignores its action and
returns the first observation of a new episode, so the last observation of every episode is
kept (Playground's own training wrapper overwrites it with the reset's). ``is_terminal`` is a
true terminal state (gymnax's termination, Playground's NaN guard); the episode's length cap
ends an episode with ``is_last`` only. Every random draw comes from the state's key: one
``init`` key gives the whole stream of episodes, whichever loop steps it.

Playground's dm-control port differs from dm-control in ways this adapter keeps (measured on
cartpole, tests/experiments/test_jax_envs.py): its XML files may integrate differently
(cartpole: Euler, where dm-control's says RK4), and its observation and reward read the
kinematics computed before a step's integration, so orientation features (the pole's cos and
sin) are one simulation step behind dm-control's, which refreshes the kinematics after each
step. Curves on ``mjx:`` tasks are Playground's, not dm-control's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments.envs.contract import GYMNAX_PREFIX, MJX_PREFIX, Spec, check_int, is_jax_task
from experiments.envs.dmc import default_action_repeat

# Playground's names whose dm-control name is not its domain and task in CamelCase.
_PLAYGROUND_NAMES = {"ball_in_cup-catch": "BallInCup", "point_mass-easy": "PointMass"}


def playground_name(task: str) -> str:
    """Playground's registry name of the dm-control task ``task`` ('cartpole-swingup' ->
    'CartpoleSwingup', 'finger-turn_easy' -> 'FingerTurnEasy')."""
    if task in _PLAYGROUND_NAMES:
        return _PLAYGROUND_NAMES[task]
    return "".join(part.capitalize() for part in task.replace("-", "_").split("_"))


def jax_tasks(prefix: str) -> list[str]:
    """The task names under ``prefix`` the installed package provides."""
    if prefix == MJX_PREFIX:
        from mujoco_playground import registry

        names = set(registry.dm_control_suite.ALL_ENVS)
        known = {playground_name(t): t for t in _dmc_task_names()}
        return sorted(MJX_PREFIX + known[n] for n in names if n in known)
    import gymnax

    return sorted(GYMNAX_PREFIX + n for n in gymnax.registered_envs)


def check_jax_task(task: str) -> None:
    """ValueError naming the valid tasks when ``task`` is no ``mjx:`` or ``gymnax:`` task the
    installed packages provide."""
    if not is_jax_task(task):
        raise ValueError(f"{task!r} is no JAX task: expected {MJX_PREFIX}... or {GYMNAX_PREFIX}...")
    prefix = MJX_PREFIX if task.startswith(MJX_PREFIX) else GYMNAX_PREFIX
    try:
        valid = jax_tasks(prefix)
    except ImportError as err:
        package = "playground" if prefix == MJX_PREFIX else "gymnax"
        raise ValueError(
            f"{task}: {err}; install the {package} package (pip install -e '.[experiments]')"
        ) from None
    if task not in valid:
        raise ValueError(f"unknown task {task!r}; expected one of {valid}")


def _dmc_task_names() -> list[str]:
    from experiments.envs.dmc import dmc_tasks

    return list(dmc_tasks())


class Core(NamedTuple):
    """One environment step without repeat, time limit or reset logic.

    reset(key) -> (inner, obs [D]); step(inner, action [A], key) -> (inner, obs [D],
    reward [], terminal []). ``action`` is the agent's: one-hot for a discrete task, in
    [-1, 1]^A otherwise (mapped onto the task's bounds here)."""

    reset: Callable[[jax.Array], tuple[Any, jax.Array]]
    step: Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array, jax.Array, jax.Array]]
    obs_dim: int
    act_dim: int
    discrete: bool
    episode_length: int  # the task's own cap, in environment steps
    native: Any = None  # the wrapped environment (gymnax's or Playground's object)


def _to_box(action: jax.Array, low: Any, high: Any) -> jax.Array:
    """[-1, 1]^A -> [low, high]^A, linearly, after clipping (as ``dmc.to_box``)."""
    a = jnp.clip(action, -1.0, 1.0)
    return jnp.asarray(low) + (a + 1.0) * 0.5 * (jnp.asarray(high) - jnp.asarray(low))


def gymnax_core(env_id: str) -> Core:
    """A gymnax environment (``gymnax.make(env_id)`` at its default parameters); observations
    flattened to a float32 vector (MinAtar's [10, 10, C] grids too)."""
    import gymnax
    from gymnax.environments import spaces

    if env_id not in gymnax.registered_envs:
        raise ValueError(
            f"unknown gymnax environment {env_id!r}; expected one of {gymnax.registered_envs}"
        )
    env, params = gymnax.make(env_id)
    space = env.action_space(params)
    discrete = isinstance(space, spaces.Discrete)
    act_dim = int(space.n) if discrete else int(np.prod(space.shape))

    def flat(obs: jax.Array) -> jax.Array:
        return jnp.asarray(obs, jnp.float32).reshape(-1)

    def reset(key: jax.Array) -> tuple[Any, jax.Array]:
        obs, inner = env.reset_env(key, params)
        return inner, flat(obs)

    def step(inner: Any, action: jax.Array, key: jax.Array):
        if discrete:
            a = jnp.argmax(action, -1).astype(jnp.int32)
        else:
            a = _to_box(action, space.low, space.high).reshape(space.shape)
        obs, inner, reward, terminal, _ = env.step_env(key, inner, a, params)
        return inner, flat(obs), jnp.asarray(reward, jnp.float32), jnp.asarray(terminal, bool)

    obs_dim = int(np.prod(env.observation_space(params).shape))
    episode_length = int(params.max_steps_in_episode)
    return Core(reset, step, obs_dim, act_dim, discrete, episode_length, env)


def playground_core(task: str, impl: str | None = None) -> Core:
    """MuJoCo Playground's port of the dm-control task ``task`` ('cartpole-swingup'), stepped
    once per control step (its own action repeat 1; ours is `JaxEnv`'s). ``impl``: MJX's
    backend, 'jax' on a CPU and Playground's default elsewhere when None."""
    from mujoco_playground import registry

    name = playground_name(task)
    if name not in registry.dm_control_suite.ALL_ENVS:
        raise ValueError(
            f"mjx:{task}: MuJoCo Playground has no dm-control task {name!r}; expected one of "
            f"{jax_tasks(MJX_PREFIX)}"
        )
    config = registry.get_default_config(name)
    config.action_repeat = 1
    if impl is None and jax.default_backend() == "cpu":
        impl = "jax"  # the 'warp' default needs a GPU
    if impl is not None:
        config.impl = impl
    env = registry.load(name, config=config)
    low, high = (np.asarray(x, np.float32) for x in env.mj_model.actuator_ctrlrange.T)

    def reset(key: jax.Array) -> tuple[Any, jax.Array]:
        inner = env.reset(key)
        return inner, jnp.asarray(inner.obs, jnp.float32)

    def step(inner: Any, action: jax.Array, key: jax.Array):
        del key  # the suite's dynamics are deterministic
        inner = env.step(inner, _to_box(action, low, high))
        obs = jnp.asarray(inner.obs, jnp.float32)
        return inner, obs, jnp.asarray(inner.reward, jnp.float32), inner.done > 0

    probe = jax.eval_shape(env.reset, jax.random.key(0))
    obs_dim = int(np.prod(probe.obs.shape))
    return Core(reset, step, obs_dim, env.action_size, False, int(config.episode_length), env)


class EnvState(NamedTuple):
    """The carry of one environment: its simulator state, the key of every later draw, the
    environment steps of this episode and whether the last step ended it."""

    inner: Any
    key: jax.Array
    t: jax.Array  # [] int32
    last: jax.Array  # [] bool


class JaxEnv:
    """A `Core` with the runner's semantics: action repeat (rewards summed, stopping at the
    episode's end), the episode's length cap and the next-step auto-reset.

    Args:
      core: the environment.
      action_repeat: environment steps per agent step (>= 1).
      time_limit: environment steps of an episode; 0 for the task's own (``core``).
    """

    def __init__(self, core: Core, action_repeat: int = 1, time_limit: int = 0) -> None:
        self.core = core
        self.action_repeat = check_int("action_repeat", action_repeat, 1)
        self.time_limit = check_int("time_limit", time_limit, 0) or core.episode_length
        self.act_dim, self.discrete = core.act_dim, core.discrete
        self.obs_spec: Spec = {"vector": ((core.obs_dim,), np.dtype(np.float32))}

    @property
    def max_agent_steps(self) -> int:
        return -(-self.time_limit // self.action_repeat)

    def init(self, key: jax.Array) -> tuple[EnvState, dict[str, jax.Array]]:
        """The first episode's first step, from ``key`` (a typed or raw PRNG key)."""
        key, k_reset = jax.random.split(key)
        inner, obs = self.core.reset(k_reset)
        state = EnvState(inner, key, jnp.int32(0), jnp.bool_(False))
        return state, self._out(obs, 0.0, True, False, False)

    def step(self, state: EnvState, action: jax.Array) -> tuple[EnvState, dict[str, jax.Array]]:
        """One agent step of ``action`` ([A]); a reset instead if the last step ended an
        episode. Both branches are computed (under ``vmap`` a ``cond`` is a select anyway)."""
        key, k_reset, k_steps = jax.random.split(state.key, 3)
        fresh, fresh_obs = self.core.reset(k_reset)
        inner, obs, reward, terminal, t = self._repeat(state.inner, action, k_steps, state.t)
        last = terminal | (t >= self.time_limit)
        reset = state.last

        def pick(a: Any, b: Any) -> Any:
            return jax.tree.map(lambda x, y: jnp.where(reset, x, y), a, b)

        new = EnvState(pick(fresh, inner), key, jnp.where(reset, 0, t), ~reset & last)
        out = self._out(
            pick(fresh_obs, obs),
            jnp.where(reset, 0.0, reward),
            reset,
            ~reset & last,
            ~reset & terminal,
        )
        return new, out

    def _repeat(self, inner: Any, action: jax.Array, key: jax.Array, t: jax.Array):
        """Up to ``action_repeat`` steps of ``action``; a step after the episode's end (its
        termination or its length cap) changes nothing."""

        def one(carry, k):
            inner, obs, reward, terminal, t = carry
            alive = ~terminal & (t < self.time_limit)
            n_inner, n_obs, r, term = self.core.step(inner, action, k)
            inner = jax.tree.map(lambda x, y: jnp.where(alive, x, y), n_inner, inner)
            obs = jnp.where(alive, n_obs, obs)
            return (inner, obs, reward + jnp.where(alive, r, 0.0), terminal | (alive & term),
                    t + alive.astype(jnp.int32)), None  # fmt: skip

        obs0 = jnp.zeros((self.core.obs_dim,), jnp.float32)
        carry = (inner, obs0, jnp.float32(0.0), jnp.bool_(False), t)
        keys = jax.random.split(key, self.action_repeat)
        (inner, obs, reward, terminal, t), _ = jax.lax.scan(one, carry, keys)
        return inner, obs, reward, terminal, t

    @staticmethod
    def _out(obs, reward, first, last, terminal) -> dict[str, jax.Array]:
        return {
            "vector": obs,
            "reward": jnp.asarray(reward, jnp.float32),
            "is_first": jnp.asarray(first, bool),
            "is_last": jnp.asarray(last, bool),
            "is_terminal": jnp.asarray(terminal, bool),
        }


def make_jax_env(task: str, action_repeat: int | None = None, time_limit: int = 0) -> JaxEnv:
    """``mjx:<domain>-<task>`` (action repeat: dm-control's default for the task when None or
    0) or ``gymnax:<id>`` (1 when None or 0)."""
    check_jax_task(task)
    if task.startswith(MJX_PREFIX):
        name = task[len(MJX_PREFIX) :]
        core = playground_core(name)
        repeat = action_repeat or default_action_repeat(name)
    else:
        core, repeat = gymnax_core(task[len(GYMNAX_PREFIX) :]), action_repeat or 1
    return JaxEnv(core, repeat, time_limit)


def seed_key(seed: int) -> jax.Array:
    """The key of an environment seeded ``seed`` (the runner's ``env_seed``, < 2^32)."""
    return jax.random.key(int(seed) % (1 << 32))


class HostJaxEnv:
    """A `JaxEnv` as the host runner's `Env`: ``reset(seed)`` starts from ``seed_key(seed)``,
    ``reset()`` and ``step`` go on along the state's keys (the same stream a compiled loop
    draws), one jitted call each, returning numpy."""

    def __init__(self, env: JaxEnv, seed: int = 0, task: str = "a JAX task") -> None:
        self.env, self.task = env, task  # the task's name in messages
        self.obs_spec, self.act_dim, self.discrete = env.obs_spec, env.act_dim, env.discrete
        self.action_repeat = env.action_repeat
        self._seed = seed
        self._state: EnvState | None = None
        self._init = jax.jit(env.init)
        self._step = jax.jit(env.step)
        self._act = np.zeros(env.act_dim, np.float32)

    @property
    def max_agent_steps(self) -> int:
        return self.env.max_agent_steps

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        if seed is not None or self._state is None:
            self._seed = self._seed if seed is None else seed
            self._state, out = self._init(seed_key(self._seed))
        else:  # the next episode along the state's keys: the step that resets
            last = self._state._replace(last=jnp.bool_(True))
            self._state, out = self._step(last, self._act)
        return _numpy(out)

    def step(self, action: Any) -> dict[str, Any]:
        if self._state is None or bool(self._state.last):
            raise RuntimeError("step() called before reset() or after is_last; call reset()")
        action = np.asarray(action, np.float32)
        if action.shape != (self.act_dim,):
            raise ValueError(f"action must have shape ({self.act_dim},), got {action.shape}")
        self._state, out = self._step(self._state, action)
        return _numpy(out)

    def close(self) -> None:
        self._state = None

    def __enter__(self) -> HostJaxEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _numpy(out: dict[str, jax.Array]) -> dict[str, Any]:
    """A step dict on the host, typed as `DMCEnv`'s: float32 reward, bool flags."""
    host = jax.device_get(out)
    flags = {k: bool(host[k]) for k in ("is_first", "is_last", "is_terminal")}
    return {"vector": np.asarray(host["vector"]), "reward": np.float32(host["reward"]), **flags}
