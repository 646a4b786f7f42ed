"""Crafter (Hafner, "Benchmarking the Spectrum of Agent Capabilities", ICLR 2022) behind the
runner's environment interface (``contract.Env``).

``CrafterEnv('reward' | 'noreward', size, seed)`` wraps ``crafter.Env``:

- observation: ``image [H, W, 3] uint8`` (``[H, W, 1]`` with ``gray``), the agent's local view
  and inventory as crafter renders it at ``size``;
- action: one-hot over crafter's 17 actions (``discrete``), the action is its argmax;
- reward: crafter's, +1 for each achievement first unlocked in the episode plus 0.1 per
  health point gained (-0.1 per point lost); always 0 for 'noreward';
- episode ends: death (``info['discount'] == 0``) sets ``is_last`` and ``is_terminal``; the time
  limit (crafter's ``length``, 10000 steps) sets ``is_last`` only;
- seeding: crafter generates the world of episode e from ``hash((seed, e))``, its seed fixed at
  construction, so ``reset(seed)`` builds a fresh ``crafter.Env(seed=seed)``: the same seed gives
  the same sequence of worlds. A plain ``reset()`` goes on to the next world.

Every step also carries the runner's log keys (float32 scalars, see
``experiments/run/episodes.py``): ``log_reward``, the true reward (also for 'noreward'), and
``log_achievement_<name>`` for each of crafter's 22 achievements, 1.0 on a step where its
count rose (crafter counts every unlock, ``info['achievements']``), else 0.0, so that an
episode's sum is its count. DreamerV3's wrapper (f8817c4 ``embodied/envs/crafter.py``) logs the
same true reward and the cumulative counts instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.envs.contract import Spec, check_int
from experiments.envs.images import to_gray

TASKS = ("reward", "noreward")
ACTIONS = 17  # len(crafter.constants.actions)
LENGTH = 10_000  # crafter.Env's default episode length, in agent steps


def achievement_names() -> tuple[str, ...]:
    """Crafter's 22 achievements, in its own order (``crafter.constants.achievements``)."""
    import crafter

    return tuple(crafter.constants.achievements)


class CrafterEnv:
    """One Crafter world with the step dicts of the contract plus ``log_*`` keys (module doc).

    Args:
      task: 'reward' (crafter's reward) or 'noreward' (reward 0; ``log_reward`` keeps it).
      size: ``(H, W)`` of the rendered image.
      seed: the seed of the first world (and of the worlds after it).
      gray: observe ``[H, W, 1]`` gray frames (``images.to_gray``).
      length: agent steps of an episode (crafter's time limit).
    """

    discrete = True
    action_repeat = 1
    act_dim = ACTIONS

    def __init__(
        self,
        task: str = "reward",
        size: tuple[int, int] = (64, 64),
        seed: int = 0,
        gray: bool = False,
        length: int = LENGTH,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"crafter task must be one of {TASKS}, got {task!r}")
        h, w = (check_int("size", s, 1) for s in size)
        self.task = f"crafter:{task}"  # its name in messages
        self.reward, self.size, self.gray = task == "reward", (h, w), bool(gray)
        self.seed = check_int("seed", seed, 0, 2**32)
        self.length = check_int("length", length, 1)
        self.achievements = achievement_names()
        self.obs_spec: Spec = {"image": ((h, w, 1 if self.gray else 3), np.dtype(np.uint8))}
        self._env = self._make(self.seed)
        self._counts: dict[str, int] = {}
        self._started = False  # a step may follow: reset, and not ended since
        self._has_world = False  # reset at least once: there is a view to render

    @property
    def max_agent_steps(self) -> int:
        return self.length

    def _make(self, seed: int) -> Any:
        import crafter

        # crafter's size is (W, H) of its canvas: it renders [W, H] and transposes to [H, W].
        return crafter.Env(
            size=(self.size[1], self.size[0]),
            reward=self.reward,
            length=self.length,
            seed=seed,
        )

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """The first step of a new world; ``seed`` (if given) restarts crafter's sequence of
        worlds from it."""
        if seed is not None:
            self._env = self._make(check_int("seed", seed, 0, 2**32))
        image = self._env.reset()
        self._counts = dict.fromkeys(self.achievements, 0)
        self._started = self._has_world = True
        return self._obs(image, 0.0, 0.0, dict(self._counts), first=True)

    def step(self, action: Any) -> dict[str, Any]:
        """One crafter step with action ``argmax(action)``; ``action``: one-hot ``[17]``."""
        if not self._started:
            raise RuntimeError("CrafterEnv.step before reset() or after is_last; reset() first")
        action = np.asarray(action)
        if action.shape != (ACTIONS,):
            raise ValueError(f"action must be one-hot of shape ({ACTIONS},), got {action.shape}")
        image, reward, done, info = self._env.step(int(np.argmax(action)))
        counts = {k: int(info["achievements"][k]) for k in self.achievements}
        obs = self._obs(image, reward, info["reward"], counts, last=bool(done))
        obs["is_terminal"] = bool(info["discount"] == 0)
        self._started = not done
        return obs

    def _obs(
        self,
        image: np.ndarray,
        reward: float,
        true_reward: float,
        counts: dict[str, int],
        first: bool = False,
        last: bool = False,
    ) -> dict[str, Any]:
        """The step dict: image, reward, flags and the log keys; ``counts`` are crafter's
        cumulative achievement counts after this step (their rise is logged)."""
        image = np.asarray(image, np.uint8)
        obs: dict[str, Any] = {
            "image": to_gray(image) if self.gray else image,
            "reward": np.float32(reward),
            "is_first": first,
            "is_last": last,
            "is_terminal": False,
            "log_reward": np.float32(true_reward),
        }
        for name in self.achievements:
            obs[f"log_achievement_{name}"] = np.float32(counts[name] - self._counts[name])
        self._counts = counts
        return obs

    def render(self) -> np.ndarray | None:
        """The current view ``[H, W, 3] uint8`` in color (None before the first reset)."""
        if not self._has_world:
            return None
        return np.asarray(self._env.render(), np.uint8)

    def close(self) -> None:
        self._started = False

    def __enter__(self) -> CrafterEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
