"""Environments: the contract every environment keeps (``contract``), dm-control (``dmc``),
Gymnasium (``gym``) and batches of them (``vec``).

``make_env(task, ...)`` builds one by task name: ``'walker-walk'`` (dm-control) or
``'gym:<id>'`` / ``'gym:<module>:<id>'`` (Gymnasium); ``check_task`` refuses an unknown name
with the valid ones; ``env_kwargs(cfg.env)`` turns a run's env section into ``make_env``'s
keyword arguments.
"""

from __future__ import annotations

from typing import Any

from experiments.envs import gym
from experiments.envs.contract import (
    DEFAULT_TIME_LIMIT,
    GYM_PREFIX,
    OBS_MODES,
    Env,
    Spec,
    check_int,
    env_seed,
    env_seeds,
    is_gym_task,
    spec_bytes,
)
from experiments.envs.dmc import (
    DEFAULT_ACTION_REPEAT,
    DMCEnv,
    default_action_repeat,
    dmc_tasks,
    parse_task,
)

__all__ = [
    "DEFAULT_ACTION_REPEAT",
    "DEFAULT_TIME_LIMIT",
    "GYM_PREFIX",
    "OBS_MODES",
    "DMCEnv",
    "Env",
    "Spec",
    "check_int",
    "check_obs",
    "check_task",
    "default_action_repeat",
    "dmc_tasks",
    "env_kwargs",
    "env_seed",
    "env_seeds",
    "is_gym_task",
    "make_env",
    "parse_task",
    "spec_bytes",
]


def check_task(name: str) -> None:
    """Raises ValueError naming the fix when ``name`` is neither a dm-control task nor a
    registered Gymnasium id written ``'gym:<id>'`` (or ``'gym:<module>:<id>'``)."""
    if is_gym_task(name):
        gym.check_gym_task(name)
    else:
        parse_task(name)


def check_obs(task: str, obs: str) -> None:
    """A Gymnasium task observes what its observation space holds (images become 'image'):
    ``obs`` must stay 'proprio' for it."""
    if is_gym_task(task) and obs != "proprio":
        raise ValueError(
            f"env.obs={obs!r} with {task}: a Gymnasium task observes what its observation "
            "space holds (images become 'image'); leave env.obs at 'proprio'"
        )


def make_env(
    task: str, obs: str = "proprio", seed: int = 0, render: bool = False, **kwargs: Any
) -> Env:
    """A dm-control task (``'walker-walk'``; ``kwargs`` are `DMCEnv`'s: ``action_repeat``,
    ``size``, ``camera``, ``fast_render``, ``time_limit``, ``gray``; it always renders on
    request) or a Gymnasium one (``'gym:CartPole-v1'``, whose observations follow its
    observation space, an image resized to ``size`` and made gray with ``gray``; it takes
    ``action_repeat`` and ``time_limit``, ignores the other rendering arguments and with
    ``render`` is made to render frames)."""
    if is_gym_task(task):
        check_obs(task, obs)
        return gym.make(
            task,
            seed=seed,
            action_repeat=kwargs.get("action_repeat"),
            time_limit=kwargs.get("time_limit", 0),
            render=render,
            size=kwargs.get("size"),
            gray=kwargs.get("gray", False),
        )
    return DMCEnv(task, obs, seed, **kwargs)


def env_kwargs(env_cfg: Any) -> dict[str, Any]:
    """``make_env``'s (and ``vec.make_envs``'s) keyword arguments from a config's env section
    (``cfg.env``): action repeat, image size (height, width) and colour, camera, rendering,
    episode length."""
    e = env_cfg
    return dict(
        action_repeat=e.action_repeat or None,
        size=tuple(e.size),
        gray=e.gray,
        camera=None if e.camera < 0 else e.camera,
        fast_render=e.fast_render,
        time_limit=e.time_limit,
    )
