"""The environment contract: what the runner steps, and the helpers every environment shares.

An environment returns a dict per step::

    {'vector': [D] float32}  and/or  {'image': [H, W, C] uint8}   the observation, C 3
                            (RGB) or 1 (gray: env.gray); H, W = env.size
    'reward': float32       summed over the action repeat (0.0 on reset)
    'is_first': bool        True only on the observation returned by reset
    'is_last': bool         the episode ended (time limit or termination)
    'is_terminal': bool     the episode ended with discount 0 (a true terminal state)

Continuous actions are float32 in [-1, 1]^A, clipped and mapped linearly onto the task's
bounds (``to_box``); discrete ones are one-hot over A classes.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

Spec = dict[str, tuple[tuple[int, ...], np.dtype]]
GYM_PREFIX = "gym:"  # tasks 'gym:<id>' are Gymnasium environments
MJX_PREFIX = "mjx:"  # 'mjx:cartpole-swingup': MuJoCo Playground's dm-control suite (jax_envs)
GYMNAX_PREFIX = "gymnax:"  # 'gymnax:CartPole-v1' (jax_envs)
OBS_MODES = ("proprio", "pixels")
DEFAULT_TIME_LIMIT = 1000  # environment steps of an episode (dm-control's suite convention)


class Env(Protocol):
    """What the runner steps: ``dmc.DMCEnv``, ``gym.GymEnv`` (``gym.from_gymnasium``), or your
    own.

    ``reset()`` and ``step(action [act_dim])`` return the step dict of this module's doc;
    ``discrete`` means the action is one-hot over ``act_dim`` classes; ``max_agent_steps``
    bounds an episode (None: unbounded). An env may also have ``render() -> [H, W, 3] uint8``
    (or None), the frames of evaluation videos of an env without images.
    """

    obs_spec: Spec
    act_dim: int
    discrete: bool
    action_repeat: int

    @property
    def max_agent_steps(self) -> int | None: ...
    def reset(self, seed: int | None = None) -> dict[str, Any]: ...
    def step(self, action: Any) -> dict[str, Any]: ...
    def close(self) -> None: ...


def is_gym_task(task: str) -> bool:
    return isinstance(task, str) and task.startswith(GYM_PREFIX)


def is_jax_task(task: str) -> bool:
    """Tasks whose environment is written in JAX (`jax_envs`): ``mjx:`` and ``gymnax:``."""
    return isinstance(task, str) and task.startswith((MJX_PREFIX, GYMNAX_PREFIX))


def spec_bytes(spec: Spec) -> int:
    """Bytes of one step of ``spec``: sum over keys of prod(shape) * itemsize."""
    return sum(int(np.prod(s, dtype=np.int64)) * np.dtype(d).itemsize for s, d in spec.values())


def check_int(name: str, value: Any, low: int, high: int | None = None, fix: str = "") -> int:
    """``value`` as an int in [low, high) (high None: no bound); TypeError or ValueError naming
    ``name``, the value, the bound and ``fix`` otherwise."""
    tail = f"; {fix}" if fix else ""
    # bool is an int subclass; `action_repeat=True` is a mistake, not a repeat of 1.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__}){tail}")
    if value < low or (high is not None and value >= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {bound}, got {value}{tail}")
    return int(value)


def env_seed(run_seed: int, index: int, epoch: int = 0) -> int:
    """The seed of environment ``index`` of a run seeded ``run_seed``: a hash of both (numpy's
    ``SeedSequence``), so runs with nearby seeds share no environment (``seed + index`` would
    give the runs with seeds 0 and 1 all but one environment seed in common). ``epoch`` > 0
    gives the seeds environments restart from after a cut at that step (exact resume)."""
    entropy = (run_seed, index) if epoch == 0 else (run_seed, index, epoch)
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def env_seeds(run_seed: int, envs: int, seeds: int = 1, process: int = 0, epoch: int = 0):
    """The seeds of a process's ``seeds x envs`` environments, seed-major: environment i of
    process p and agent k gets env_seed(run_seed + k, p * envs + i, epoch), one numbering over
    the run's processes, so agent k has the environments of the run seeded run_seed + k."""
    return [
        env_seed(run_seed + k, process * envs + i, epoch) for k in range(seeds) for i in range(envs)
    ]


def to_box(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """a in [-1, 1]^A (clipped first) onto the box [low, high]: low + (a + 1) / 2 (high - low),
    float64 ``[A]``."""
    a = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
    return low + (a + 1.0) * 0.5 * (high - low)
