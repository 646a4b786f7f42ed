"""Gymnasium environments behind the runner's environment interface (``contract.Env``).

``from_gymnasium(env)`` wraps any ``gymnasium.Env``; task names ``gym:<id>`` (``gym:CartPole-v1``,
``gym:Pendulum-v1``) make one from Gymnasium's registry. The wrapper returns the same step
dicts as ``DMCEnv``:

- observations: a ``Box`` of ``uint8`` shaped ``[H, W, 3]`` (or ``[H, W, 1]``) becomes
  ``image``, resized to ``size`` where given (Pillow, bilinear: ``images.resize``, as DreamerV3
  does) and made gray with ``gray`` (``images.to_gray``): ``[*size, 1 if gray else C]``; any
  other ``Box`` becomes ``vector`` (flattened, float32); a ``Discrete(n)`` observation becomes
  a one-hot ``vector``; a ``Dict`` maps by key: its one image-like entry becomes ``image``,
  every other entry is flattened into ``vector`` in the Dict's key order (``vector_layout``
  names the slices).
- actions: the agent acts in [-1, 1]^A for a ``Box`` (rescaled linearly onto the box's bounds
  where they are finite, clipped to them) and with a one-hot vector over n classes for
  ``Discrete(n)`` (``discrete`` is then True and ``act_dim`` is n; the class is its argmax).
- episode ends: ``terminated`` sets ``is_last`` and ``is_terminal`` (the value after it is 0),
  ``truncated`` (the env's time limit) sets ``is_last`` only; ``time_limit`` (in environment
  steps) can cut episodes shorter still. ``make`` with ``time_limit`` 0 keeps the registered
  limit, or ends episodes after 1000 steps where the env registers none (an evaluation must
  end).
- seeding: the first ``reset`` passes ``seed`` to the env (later resets continue its RNG), so
  one seed gives one sequence of episodes.
"""

from __future__ import annotations

import difflib
import importlib
import math
from typing import Any

import numpy as np

from experiments.envs.contract import (
    DEFAULT_TIME_LIMIT,
    GYM_PREFIX,
    Spec,
    check_int,
    to_box,
)
from experiments.envs.images import resize, to_gray
from experiments.errors import ConfigError


def check_gym_task(task: str) -> str:
    """The Gymnasium id of ``'gym:<id>'`` or ``'gym:<module>:<id>'`` (Gymnasium's form for an
    env a package registers when imported: the module is imported first, as
    ``gymnasium.make`` does); ValueError naming the fix if it is not registered."""
    import gymnasium

    env_id = task[len(GYM_PREFIX) :]
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"task {task!r}: module {module!r}, which should register {name!r}, does not "
                f"import ({err}); install the package that provides it"
            ) from None
    try:
        gymnasium.spec(name)
    except Exception as err:  # gymnasium raises its own NameNotFound / VersionNotFound
        raise ValueError(_unknown_env(task, name, err, list(gymnasium.registry))) from None
    return env_id


def _unknown_env(task: str, name: str, err: Exception, registered: list[str]) -> str:
    """The message for an id Gymnasium does not know: the closest registered ids (compared
    without case), else Gymnasium's own reason."""
    by_lower = {r.lower(): r for r in registered}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    if close:
        quoted = [repr(f"{GYM_PREFIX}{by_lower[c]}") for c in close]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        hint = f"did you mean {listed}?"
    else:
        reason = str(err).rstrip(". ")
        hint = f"{reason}; use a registered id such as 'gym:CartPole-v1' or 'gym:Pendulum-v1'"
    return (
        f"unknown Gymnasium environment {name!r} in task {task!r}; {hint} "
        "(gymnasium.pprint_registry() lists every id; 'gym:<module>:<id>' names an env that a "
        "package registers when its module is imported)"
    )


def _is_image(space: Any) -> bool:
    return (
        getattr(space, "dtype", None) == np.uint8
        and len(getattr(space, "shape", ()) or ()) == 3
        and space.shape[-1] in (1, 3)
    )


def _check_size(size: Any) -> tuple[int, int] | None:
    """``size`` as (height, width) of positive ints (None stays None: images keep theirs)."""
    if size is None:
        return None
    if len(tuple(size)) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = (check_int("size", s, 1) for s in size)
    return height, width


def _observation_layout(space: Any, task: str):
    """(obs_spec, vector_layout, image keys, one-hot entries) of an observation space: its one
    image-like entry is 'image'; every other Box or Discrete entry, flattened (Discrete n as a
    one-hot over n classes), goes into 'vector' in the Dict's key order."""
    from gymnasium import spaces

    parts = dict(space.spaces) if isinstance(space, spaces.Dict) else {None: space}
    images = [k for k, s in parts.items() if _is_image(s)]
    if len(images) > 1:
        raise ValueError(
            f"{task}: {len(images)} image observations {images}; the world model takes "
            "one image: wrap the env to keep one (or stack them along channels)"
        )
    layout: dict[Any, slice] = {}
    one_hot: dict[Any, tuple[int, int]] = {}  # key -> (classes, first class)
    start = 0
    for k, s in parts.items():
        if k in images:
            continue
        if isinstance(s, spaces.Discrete):
            n = int(s.n)
            one_hot[k] = (n, int(s.start))
        elif isinstance(s, spaces.Box):
            n = int(np.prod(s.shape, dtype=np.int64))
        else:
            raise ValueError(
                f"{task}: observation {k!r} is a {type(s).__name__}; supported are "
                "Box, Discrete and a Dict of them"
            )
        layout[k] = slice(start, start + n)
        start += n
    spec: Spec = {}
    if start:
        spec["vector"] = ((start,), np.dtype(np.float32))
    if images:
        spec["image"] = (tuple(parts[images[0]].shape), np.dtype(np.uint8))
    return spec, layout, images, one_hot


class GymEnv:
    """One Gymnasium env with action repeat and the step dicts of ``DMCEnv`` (see the module)."""

    def __init__(
        self,
        env: Any,
        seed: int = 0,
        action_repeat: int = 1,
        time_limit: int | None = None,
        name: str | None = None,
        size: tuple[int, int] | None = None,
        gray: bool = False,
    ) -> None:
        self._env = env
        self.task = name or f"{GYM_PREFIX}{getattr(env.spec, 'id', type(env).__name__)}"
        self.seed = check_int("seed", seed, 0, 2**32)
        self.action_repeat = check_int("action_repeat", action_repeat, 1)
        own = getattr(env.spec, "max_episode_steps", None) if env.spec is not None else None
        limits = [x for x in (own, time_limit) if x]
        self.time_limit = min(limits) if limits else None
        self._seeded = False
        self._needs_reset = True
        self._steps = 0

        self.size, self.gray = _check_size(size), bool(gray)
        self.obs_spec, self.vector_layout, self._images, self._one_hot = _observation_layout(
            env.observation_space, self.task
        )
        if "image" in self.obs_spec:  # what _image delivers
            (height, width, channels), dtype = self.obs_spec["image"]
            height, width = self.size or (height, width)
            self.obs_spec["image"] = ((height, width, 1 if self.gray else channels), dtype)
        self._set_actions(env.action_space)

    def _set_actions(self, act: Any) -> None:
        """act_dim, discrete and the box bounds of a Discrete or Box action space."""
        from gymnasium import spaces

        if isinstance(act, spaces.Discrete):
            self.discrete = True
            self.act_dim = int(act.n)
            self._start = int(act.start)
        elif isinstance(act, spaces.Box):
            self.discrete = False
            self._shape = act.shape
            self.act_dim = int(np.prod(act.shape, dtype=np.int64))
            low = np.broadcast_to(act.low, act.shape).astype(np.float64).ravel()
            high = np.broadcast_to(act.high, act.shape).astype(np.float64).ravel()
            bounded = np.isfinite(low) & np.isfinite(high)
            self._low, self._high, self._bounded = low, high, bounded
            self._dtype = act.dtype
        else:
            raise ValueError(
                f"{self.task}: action space {act} is not supported; use a Box (continuous) or a "
                "Discrete (one-hot) action space"
            )

    @property
    def max_agent_steps(self) -> int | None:
        """Agent steps per episode without termination, if the episode length is bounded."""
        return None if self.time_limit is None else math.ceil(self.time_limit / self.action_repeat)

    @property
    def gym_env(self) -> Any:
        return self._env

    def _observe(self, obs: Any) -> dict[str, np.ndarray]:
        parts = obs if isinstance(obs, dict) else {None: obs}
        out: dict[str, np.ndarray] = {}
        if self.vector_layout:
            chunks = []
            for k in self.vector_layout:
                if k in self._one_hot:
                    n, first = self._one_hot[k]
                    one_hot = np.zeros(n, np.float32)
                    one_hot[int(parts[k]) - first] = 1.0
                    chunks.append(one_hot)
                else:
                    chunks.append(np.asarray(parts[k], np.float32).ravel())
            out["vector"] = np.concatenate(chunks).astype(np.float32)
        for k in self._images:
            out["image"] = self._image(parts[k])
        return out

    def _image(self, frame: Any) -> np.ndarray:
        """``[H, W, C]`` uint8 -> ``[*size, C]`` (bilinear, Pillow), then ``[*size, 1]`` gray
        where asked (``images.to_gray``), in the order of DreamerV3's Atari wrapper."""
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if self.size is not None:
            frame = resize(frame, self.size)
        if self.gray and frame.shape[-1] == 3:
            frame = to_gray(frame)
        return frame

    def _env_action(self, action: np.ndarray) -> Any:
        if self.discrete:
            return self._start + int(np.argmax(action))
        a = np.where(self._bounded, to_box(action, self._low, self._high), action)
        return a.reshape(self._shape).astype(self._dtype)

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Start an episode (its RNG re-seeded with ``seed``, if given; the first reset uses the
        construction seed): the observation with reward 0 and is_first=True."""
        if seed is None and not self._seeded:
            seed = self.seed
        obs, _ = self._env.reset(seed=seed) if seed is not None else self._env.reset()
        self._seeded = True
        self._needs_reset, self._steps = False, 0
        out: dict[str, Any] = self._observe(obs)
        out.update(reward=np.float32(0.0), is_first=True, is_last=False, is_terminal=False)
        return out

    def step(self, action: Any) -> dict[str, Any]:
        """Apply ``action`` (``[A]``: in [-1, 1], or one-hot for a discrete env) for up to
        ``action_repeat`` env steps; reward is their sum."""
        if self._needs_reset:
            raise RuntimeError(f"{self.task}: step() before reset() or after is_last")
        action = np.asarray(action, np.float64).ravel()
        if action.shape != (self.act_dim,) or not np.all(np.isfinite(action)):
            raise ValueError(
                f"{self.task}: action must be {self.act_dim} finite numbers, got {action}"
            )
        env_action = self._env_action(action)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            obs, r, terminated, truncated, _ = self._env.step(env_action)
            reward += float(r)
            self._steps += 1
            if self.time_limit is not None and self._steps >= self.time_limit:
                truncated = True
            if terminated or truncated:
                break
        is_last = bool(terminated or truncated)
        self._needs_reset = is_last
        out: dict[str, Any] = self._observe(obs)
        out.update(
            reward=np.float32(reward),
            is_first=False,
            is_last=is_last,
            is_terminal=bool(terminated),
        )
        return out

    def render(self) -> np.ndarray | None:
        """The env's current frame ``[H, W, 3]`` uint8 where it was made with
        ``render_mode='rgb_array'`` (``make(..., render=True)``), else None."""
        if getattr(self._env, "render_mode", None) != "rgb_array":
            return None
        frame = self._env.render()
        return None if frame is None else np.ascontiguousarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self._env.close()

    def __enter__(self) -> GymEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def from_gymnasium(
    env: Any,
    seed: int = 0,
    action_repeat: int = 1,
    time_limit: int | None = None,
    size: tuple[int, int] | None = None,
    gray: bool = False,
) -> GymEnv:
    """Wrap a ``gymnasium.Env`` instance for the runner (see the module doc): its image
    observation, if any, resized to ``size`` (None: kept) and made gray with ``gray``."""
    return GymEnv(
        env,
        seed=seed,
        action_repeat=action_repeat,
        time_limit=time_limit,
        size=size,
        gray=gray,
    )


def make(
    task: str,
    seed: int = 0,
    action_repeat: int | None = None,
    time_limit: int = 0,
    render: bool = False,
    size: tuple[int, int] | None = None,
    gray: bool = False,
) -> GymEnv:
    """``'gym:<id>'`` -> a wrapped ``gymnasium.make(id)``; action repeat defaults to 1. With
    ``render`` the env is made with ``render_mode='rgb_array'`` where its metadata offers it
    (``GymEnv.render``); rendering does not change its steps. An image observation is
    delivered at ``size`` (None: its own) and gray with ``gray``, as ``GymEnv`` does."""
    import gymnasium

    env_id = check_gym_task(task)
    try:
        env = gymnasium.make(env_id)
        if render and "rgb_array" in env.metadata.get("render_modes", ()):
            env.close()
            env = gymnasium.make(env_id, render_mode="rgb_array")
    except gymnasium.error.DependencyNotInstalled as err:
        raise ConfigError(f"task {task!r} cannot be built, a package is missing: {err}") from None
    if not time_limit and getattr(env.spec, "max_episode_steps", None) is None:
        time_limit = DEFAULT_TIME_LIMIT  # no registered limit: episodes must still end
    return GymEnv(
        env,
        seed=seed,
        action_repeat=action_repeat or 1,
        time_limit=time_limit or None,
        name=task,
        size=size,
        gray=gray,
    )
