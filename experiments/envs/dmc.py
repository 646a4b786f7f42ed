"""DeepMind Control Suite environments with the conventions of PlaNet and Dreamer.

One environment (`DMCEnv`) returns the step dicts of ``contract`` with either ``vector`` (the
task's state) or ``image`` (rendered pixels). Batches of them, stepped in-process or one
process per environment, are in `experiments.envs.vec`.

Conventions:

- Task names are ``'domain-task'`` (``'walker-walk'``, ``'ball_in_cup-catch'``); ``'cup-catch'``
  is accepted as PlaNet's and DreamerV3's name for ``'ball_in_cup-catch'``.
- Actions are float32 in [-1, 1]; they are clipped, then mapped linearly onto the task's action
  bounds: ``a_env = low + (a + 1) / 2 * (high - low)``.
- An episode lasts ``time_limit`` (default 1000) environment steps, i.e.
  ``ceil(time_limit / action_repeat)`` agent steps. The last agent step repeats the action only as
  often as the limit allows, so an episode never runs past ``time_limit`` environment steps.
  Reaching the limit sets ``is_last=True, is_terminal=False``; dm-control's own time limit is
  switched off so this module alone decides where episodes end.
- ``'proprio'`` observations concatenate the task's state observations in dm-control's own
  (``OrderedDict``) order, which is fixed per task; `DMCEnv.vector_layout` names the slices.
- Pixels come from MuJoCo's OpenGL renderer. ``MUJOCO_GL`` defaults to ``egl`` (set below, before
  dm_control is imported, because dm_control picks its backend at import time).
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from collections.abc import Sequence
from typing import Any

# dm_control chooses (and initialises) its OpenGL backend when it is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from experiments.envs.contract import DEFAULT_TIME_LIMIT, OBS_MODES, Spec, check_int, to_box
from experiments.envs.images import to_gray

_PACKAGES_HELP = (
    "Headless rendering needs an OpenGL backend. For EGL (MUJOCO_GL=egl, the default) install "
    "the Debian packages `libegl1 libegl-mesa0 libgl1-mesa-dri`; or install `libosmesa6` and "
    "set MUJOCO_GL=osmesa. State-only ('proprio') use can set MUJOCO_GL=disable."
)


@functools.cache
def _suite() -> Any:
    """dm-control's suite, imported on first use: a Gymnasium task, the update benchmark and
    everything else that steps no dm-control environment runs without dm-control installed."""
    try:
        from dm_control import suite
    except ImportError as err:
        raise ImportError(
            f"dm_control failed to import with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: "
            f"{err!r}. If this is a rendering backend error: {_PACKAGES_HELP}"
        ) from err
    return suite


# Names used by PlaNet and DreamerV3 that differ from dm-control's.
TASK_ALIASES: dict[str, tuple[str, str]] = {"cup-catch": ("ball_in_cup", "catch")}


def dmc_tasks() -> tuple[str, ...]:
    """Every valid dm-control name: the suite's as 'domain-task', then the aliases."""
    return tuple(f"{d}-{t}" for d, t in _suite().ALL_TASKS) + tuple(TASK_ALIASES)


def __getattr__(name: str) -> Any:
    # ``TASKS`` (= dmc_tasks()) is computed on first access: importing this module needs no
    # dm-control.
    if name == "TASKS":
        return dmc_tasks()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# PlaNet's action repeats (Hafner et al. 2019, Table 1); other domains use DreamerV3's 2.
DEFAULT_ACTION_REPEAT: dict[str, int] = {
    "cartpole": 8,
    "finger": 2,
    "cheetah": 4,
    "ball_in_cup": 4,
    "walker": 2,
    "reacher": 4,
}
FALLBACK_ACTION_REPEAT = 2

# Camera 0 of these domains shows little of the body; DreamerV3 renders quadruped from camera 2.
DEFAULT_CAMERA: dict[str, int] = {"quadruped": 2}


def parse_task(name: str) -> tuple[str, str]:
    """Split ``'domain-task'`` into dm-control's ``(domain, task)``, resolving aliases.

    Raises ValueError, naming the closest valid names, when ``name`` is not a suite task.
    """
    if not isinstance(name, str):
        raise TypeError(f"task must be a str like 'walker-walk', got {type(name).__name__}")
    if name in TASK_ALIASES:
        return TASK_ALIASES[name]
    domain, sep, task = name.partition("-")
    if not sep or (domain, task) not in _suite().ALL_TASKS:
        raise ValueError(_unknown_task(name))
    return domain, task


def _unknown_task(name: str) -> str:
    """The message for a name that is no dm-control task: the closest task names, else the
    tasks of its domain, else the domains."""
    tasks = dmc_tasks()
    close = difflib.get_close_matches(name, tasks, n=3, cutoff=0.6)
    ratio = {t: difflib.SequenceMatcher(None, name, t).ratio() for t in close}
    close = [t for t in close if ratio[t] >= ratio[close[0]] - 0.05]  # the closest, and ties
    domain = name.partition("-")[0]
    of_domain = [t for t in tasks if t.startswith(f"{domain}-")]
    if close:
        quoted = [repr(t) for t in close]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        hint = f"did you mean {listed}?"
    elif of_domain:
        hint = f"{domain}'s tasks are {', '.join(of_domain)}"
    else:
        domains = ", ".join(sorted({d for d, _ in _suite().ALL_TASKS}))
        hint = f"expected 'domain-task' such as 'walker-walk', with a domain of {domains}"
    return (
        f"unknown dm-control task {name!r}; {hint} (experiments.envs.dmc_tasks() lists all "
        f"{len(tasks)}; a Gymnasium task is 'gym:<id>')"
    )


def default_action_repeat(task: str) -> int:
    """PlaNet's action repeat for the task's domain (cartpole 8, cheetah 4, ...), else 2."""
    domain, _ = parse_task(task)
    return DEFAULT_ACTION_REPEAT.get(domain, FALLBACK_ACTION_REPEAT)


def _action_box(env: Any, task: str) -> tuple[int, np.ndarray, np.ndarray]:
    """(A, low [A], high [A]) of a suite environment's flat action spec."""
    spec = env.action_spec()
    if len(spec.shape) != 1:
        raise ValueError(f"{task}: expected a flat action spec, got {spec.shape}")
    low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)
    high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)
    return int(spec.shape[0]), low, high


def _vector_layout(env: Any) -> tuple[dict[str, slice], int]:
    """The slices of the flat state vector by observation key, in dm-control's (fixed)
    observation order, and its length."""
    layout, start = {}, 0
    for key, spec in env.observation_spec().items():
        n = int(np.prod(spec.shape, dtype=np.int64))
        layout[key] = slice(start, start + n)
        start += n
    return layout, start


class DMCEnv:
    """One dm-control suite task with action repeat, a time limit and dict observations.

    Args:
        task: ``'domain-task'`` name, e.g. ``'walker-walk'`` (see `dmc_tasks`).
        obs: ``'proprio'`` -> ``{'vector': [D] float32}``; ``'pixels'`` -> ``{'image': [H, W, 3]
            uint8}`` (``[H, W, 1]`` with ``gray``).
        seed: seeds dm-control's task (``task_kwargs={'random': seed}``): the same seed gives
            the same initial states and, for the same actions, identical trajectories.
        action_repeat: environment steps per agent step; None means `default_action_repeat`.
        size: ``(height, width)`` of rendered images.
        camera: MuJoCo camera id for pixels; None means `DEFAULT_CAMERA` or 0 (-1 is the free
            camera).
        fast_render: render through a framebuffer of exactly ``size``, without multisampling
            and without shadows (about 6x faster pixel steps on a CPU's software renderer).
            The images look different from dm-control's defaults, so results are not
            comparable with published pixel results; the default keeps dm-control's look.
        time_limit: episode length in environment steps (the agent sees
            ``ceil(time_limit / action_repeat)`` steps); 0 means the suite's 1000.
        gray: pixels as one gray channel, ``images.to_gray`` of the frame rendered at ``size``
            (``render()`` stays in colour).
    """

    def __init__(
        self,
        task: str,
        obs: str = "proprio",
        seed: int = 0,
        action_repeat: int | None = None,
        size: tuple[int, int] = (64, 64),
        camera: int | None = None,
        fast_render: bool = False,
        time_limit: int = DEFAULT_TIME_LIMIT,
        gray: bool = False,
    ) -> None:
        domain, task_name = parse_task(task)
        if obs not in OBS_MODES:
            raise ValueError(f"obs must be one of {OBS_MODES}, got {obs!r}")
        seed = check_int("seed", seed, 0, 2**32)
        if action_repeat is None:
            action_repeat = DEFAULT_ACTION_REPEAT.get(domain, FALLBACK_ACTION_REPEAT)
        self.action_repeat = check_int("action_repeat", action_repeat, 1)
        # 0 means the task's own limit, which for the suite is DEFAULT_TIME_LIMIT.
        self.time_limit = check_int("time_limit", time_limit or DEFAULT_TIME_LIMIT, 1)
        if len(tuple(size)) != 2:
            raise ValueError(f"size must be (height, width), got {size!r}")
        height, width = (check_int("size", s, 1) for s in size)

        self.task = f"{domain}-{task_name}"
        self.discrete = False  # actions in [-1, 1]^act_dim
        self.domain = domain
        self.obs_mode = obs
        self.seed = seed
        self.size = (height, width)
        self.fast_render = bool(fast_render)
        self.gray = bool(gray)
        # dm-control's limit is off: this class ends episodes after `time_limit` steps.
        self._env = _suite().load(
            domain, task_name, task_kwargs={"random": seed, "time_limit": float("inf")}
        )

        self.act_dim, self._act_low, self._act_high = _action_box(self._env, self.task)
        self.vector_layout, start = _vector_layout(self._env)

        ncam = int(self._env.physics.model.ncam)
        if camera is None:
            camera = DEFAULT_CAMERA.get(domain, 0)
        self.camera = check_int("camera", camera, -1, ncam)

        if obs == "proprio":
            self.obs_spec: Spec = {"vector": ((start,), np.dtype(np.float32))}
        else:
            channels = 1 if self.gray else 3
            self.obs_spec = {"image": ((height, width, channels), np.dtype(np.uint8))}
            self._configure_rendering()

        self._env_steps = 0
        self._needs_reset = True
        self._rendered = False

    @property
    def max_agent_steps(self) -> int:
        """Agent steps per episode without termination: ceil(time_limit / action_repeat)."""
        return math.ceil(self.time_limit / self.action_repeat)

    @property
    def dm_env(self) -> Any:
        """The wrapped `dm_control.rl.control.Environment`."""
        return self._env

    def _configure_rendering(self, fast: bool | None = None) -> None:
        # The OpenGL and MuJoCo render contexts are created on the first render from these
        # fields, so they must be set before anything renders.
        vis = self._env.physics.model.vis
        height, width = self.size
        if self.fast_render if fast is None else fast:
            vis.global_.offwidth = width
            vis.global_.offheight = height
            vis.quality.offsamples = 0
            vis.quality.shadowsize = 0
        else:
            # A larger framebuffer than the model's renders the same scene; only a smaller one
            # would fail, so grow it for sizes beyond it.
            vis.global_.offwidth = max(int(vis.global_.offwidth), width)
            vis.global_.offheight = max(int(vis.global_.offheight), height)

    def _render(self) -> np.ndarray:
        height, width = self.size
        try:
            frame = self._env.physics.render(height=height, width=width, camera_id=self.camera)
        except Exception as err:
            if self._rendered:
                raise
            raise RuntimeError(
                f"rendering {self.task} failed with MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL')!r}: {err!r}. {_PACKAGES_HELP}"
            ) from err
        self._rendered = True
        # dm-control returns a flipped view; a contiguous copy is safe to keep and to send.
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def render(self) -> np.ndarray:
        """The current frame ``[H, W, 3]`` uint8 from the task's camera at ``size``: what a pixel
        run observes. A proprio env renders only when asked (evaluation videos), through the
        fast path (a framebuffer of ``size``, no shadows or multisampling: about 6x faster on
        a CPU's software renderer), since its frames are watched, never observed."""
        if self.obs_mode == "proprio" and not self._rendered:
            self._configure_rendering(fast=True)
        return self._render()

    def _observe(self, observation: dict[str, Any]) -> dict[str, np.ndarray]:
        if self.obs_mode == "pixels":
            frame = self._render()
            return {"image": to_gray(frame) if self.gray else frame}
        parts = [np.asarray(observation[key], np.float64).ravel() for key in self.vector_layout]
        return {"vector": np.concatenate(parts).astype(np.float32)}

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Start an episode (from the task's RNG re-seeded with ``seed``, if given). Returns the
        observation with reward 0 and is_first=True."""
        if seed is not None:
            self._env.task.random.seed(check_int("seed", seed, 0, 2**32))
        time_step = self._env.reset()
        self._env_steps = 0
        self._needs_reset = False
        out: dict[str, Any] = self._observe(time_step.observation)
        out.update(reward=np.float32(0.0), is_first=True, is_last=False, is_terminal=False)
        return out

    def step(self, action: np.ndarray | Sequence[float]) -> dict[str, Any]:
        """Apply ``action`` ([A] in [-1, 1]) for up to `action_repeat` environment steps.

        reward = sum of the per-step rewards r_1 + ... + r_k, where k = action_repeat unless the
        episode ends earlier (termination, or the time limit cutting the last repeat short).
        """
        if self._needs_reset:
            raise RuntimeError(
                f"{self.task}: step() called before reset() or after is_last; call reset()"
            )
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.act_dim,):
            raise ValueError(
                f"{self.task}: action must have shape ({self.act_dim},), got {action.shape}"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.task}: action must be finite, got {action}")
        env_action = to_box(action, self._act_low, self._act_high)

        reward = 0.0
        is_last = is_terminal = False
        repeats = min(self.action_repeat, self.time_limit - self._env_steps)
        for _ in range(repeats):
            time_step = self._env.step(env_action)
            self._env_steps += 1
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                # With dm-control's time limit off, LAST means the task terminated.
                is_last = True
                is_terminal = time_step.discount == 0.0
                break
        is_last = is_last or self._env_steps >= self.time_limit
        self._needs_reset = is_last
        out: dict[str, Any] = self._observe(time_step.observation)
        out.update(
            reward=np.float32(reward), is_first=False, is_last=is_last, is_terminal=is_terminal
        )
        return out

    def close(self) -> None:
        """Free dm-control's resources (its render contexts)."""
        self._env.close()

    def __enter__(self) -> DMCEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
