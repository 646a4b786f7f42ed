"""Environments: the contract every environment keeps (``contract``), dm-control (``dmc``),
Gymnasium (``gym``), Atari (``atari``), Crafter (``crafter``) and batches of them (``vec``).

``make_env(task, ...)`` builds one by task name: ``'walker-walk'`` (dm-control),
``'gym:<id>'`` / ``'gym:<module>:<id>'`` (Gymnasium), ``'atari:<game>'`` (``'atari:pong'``,
ale-py's ROM ids), ``'crafter:reward'`` / ``'crafter:noreward'``, or a JAX environment
(``jax_envs``: ``'mjx:cartpole-swingup'``, MuJoCo Playground; ``'gymnax:CartPole-v1'``);
``check_task`` refuses an unknown name with the valid ones; ``env_kwargs(cfg.env)`` turns a
run's env section into ``make_env``'s keyword arguments.
"""

from __future__ import annotations

from typing import Any

from experiments.envs import atari, crafter, gym
from experiments.envs.contract import (
    DEFAULT_TIME_LIMIT,
    GYM_PREFIX,
    GYMNAX_PREFIX,
    MJX_PREFIX,
    OBS_MODES,
    Env,
    Spec,
    check_int,
    env_seed,
    env_seeds,
    is_gym_task,
    is_jax_task,
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
    "ATARI_PREFIX",
    "CRAFTER_PREFIX",
    "DEFAULT_ACTION_REPEAT",
    "DEFAULT_TIME_LIMIT",
    "GYMNAX_PREFIX",
    "GYM_PREFIX",
    "MJX_PREFIX",
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
    "is_jax_task",
    "make_env",
    "parse_task",
    "spec_bytes",
    "task_action_repeat",
]

ATARI_PREFIX = "atari:"  # 'atari:<game>', ale-py's ROM ids
CRAFTER_PREFIX = "crafter:"  # 'crafter:reward' or 'crafter:noreward'
ATARI_REPEAT = 4  # frames per agent step (DreamerV3's env.atari repeat, the field's frame skip)


def _image_suite(task: str) -> str | None:
    """'atari' or 'crafter' for the tasks that observe images only, else None."""
    if not isinstance(task, str):
        return None
    for suite, prefix in (("atari", ATARI_PREFIX), ("crafter", CRAFTER_PREFIX)):
        if task.startswith(prefix):
            return suite
    return None


def task_action_repeat(task: str) -> int:
    """The action repeat of ``task`` when env.action_repeat is 0: Atari 4, Crafter, Gymnasium
    and gymnax 1, dm-control (and its ``mjx:`` port) PlaNet's table (else 2)."""
    if is_jax_task(task):
        return 1 if task.startswith(GYMNAX_PREFIX) else default_action_repeat(task[4:])
    suite = _image_suite(task)
    if suite == "atari":
        return ATARI_REPEAT
    if suite == "crafter" or is_gym_task(task):
        return 1
    return default_action_repeat(task)


def check_task(name: str) -> None:
    """Raises ValueError naming the fix when ``name`` is neither a dm-control task, a
    registered Gymnasium id written ``'gym:<id>'`` (or ``'gym:<module>:<id>'``), an Atari game
    ale-py has a ROM for (``'atari:pong'``) nor a Crafter task."""
    if is_jax_task(name):
        from experiments.envs import jax_envs

        jax_envs.check_jax_task(name)
        return
    suite = _image_suite(name)
    if suite == "atari":
        atari.parse_game(name[len(ATARI_PREFIX) :])
    elif suite == "crafter":
        if name[len(CRAFTER_PREFIX) :] not in crafter.TASKS:
            raise ValueError(
                f"unknown Crafter task {name!r}; use 'crafter:reward' or 'crafter:noreward'"
            )
    elif is_gym_task(name):
        gym.check_gym_task(name)
    else:
        parse_task(name)


def check_obs(task: str, obs: str) -> None:
    """A Gymnasium task observes what its observation space holds (images become 'image'):
    ``obs`` must stay 'proprio' for it. Atari and Crafter tasks observe images only: ``obs``
    must be 'pixels'."""
    if is_jax_task(task) and obs != "proprio":
        raise ValueError(
            f"env.obs={obs!r} with {task}: JAX tasks observe their state vector only (no "
            "renderer runs inside the compiled step); leave env.obs at 'proprio'"
        )
    if is_gym_task(task) and obs != "proprio":
        raise ValueError(
            f"env.obs={obs!r} with {task}: a Gymnasium task observes what its observation "
            "space holds (images become 'image'); leave env.obs at 'proprio'"
        )
    suite = _image_suite(task)
    if suite is not None and obs != "pixels":
        preset = "dreamerv3-atari100k" if suite == "atari" else "dreamerv3-crafter"
        raise ValueError(
            f"env.obs={obs!r} with {task}: {suite.capitalize()} tasks observe images only; set "
            f"--env.obs pixels (the preset {preset} does)"
        )


def _make_image_task(task: str, obs: str, seed: int, kwargs: dict[str, Any]) -> Env:
    """An Atari or Crafter env from ``make_env``'s arguments (``kwargs['atari']``: the Atari
    options sticky, actions, lives, noops, clip_reward)."""
    check_obs(task, obs)
    size, gray = tuple(kwargs.get("size") or (64, 64)), bool(kwargs.get("gray", False))
    length = kwargs.get("time_limit") or None
    repeat = kwargs.get("action_repeat")
    if task.startswith(ATARI_PREFIX):
        return atari.AtariEnv(
            task[len(ATARI_PREFIX) :],
            repeat=repeat or ATARI_REPEAT,
            size=size,
            gray=gray,
            length=length or atari.DEFAULT_LENGTH,
            seed=seed,
            **(kwargs.get("atari") or {}),
        )
    if repeat not in (None, 1):
        raise ValueError(
            f"env.action_repeat={repeat} with {task}: Crafter steps once per action; use 0 or 1"
        )
    name, length = task[len(CRAFTER_PREFIX) :], length or crafter.LENGTH
    return crafter.CrafterEnv(name, size=size, seed=seed, gray=gray, length=length)


def make_env(
    task: str, obs: str = "proprio", seed: int = 0, render: bool = False, **kwargs: Any
) -> Env:
    """A dm-control task (``'walker-walk'``; ``kwargs`` are `DMCEnv`'s: ``action_repeat``,
    ``size``, ``camera``, ``fast_render``, ``time_limit``, ``gray``; it always renders on
    request) or a Gymnasium one (``'gym:CartPole-v1'``, whose observations follow its
    observation space, an image resized to ``size`` and made gray with ``gray``; it takes
    ``action_repeat`` and ``time_limit``, ignores the other rendering arguments and with
    ``render`` is made to render frames), an Atari game (``'atari:pong'``: ``action_repeat``
    frames per step, 4 when None, ``size``, ``gray``, ``time_limit`` in frames, 0 for 108,000,
    and ``atari``, a dict of `AtariEnv`'s sticky, actions, lives, noops and clip_reward) or a
    Crafter task (``'crafter:reward'``: ``size``, ``gray``, ``time_limit`` in steps, 0 for
    10,000). Atari and Crafter envs always render on request."""
    if _image_suite(task) is not None:
        return _make_image_task(task, obs, seed, kwargs)
    kwargs.pop("atari", None)
    if is_jax_task(task):
        from experiments.envs import jax_envs

        check_obs(task, obs)
        env = jax_envs.make_jax_env(task, kwargs.get("action_repeat"), kwargs.get("time_limit", 0))
        return jax_envs.HostJaxEnv(env, seed, task)
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
        atari=dict(
            sticky=e.atari_sticky,
            actions=e.atari_actions,
            lives=e.atari_lives,
            noops=e.atari_noops,
            clip_reward=e.atari_clip_reward,
        ),
    )
