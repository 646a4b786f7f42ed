"""Evaluation inside a training run: evaluation episodes and the held-out ELBO gap."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from agents.contract import Agent, AgentState
from experiments.config import Config
from experiments.envs import Env


def policy_obs(obs: dict[str, np.ndarray], keys: tuple[str, ...]) -> dict[str, jax.Array]:
    """What the policy reads of a step ``[N, ...]``: the observation ``keys`` and is_first."""
    return {k: jnp.asarray(obs[k]) for k in (*keys, "is_first")}


# Evaluation environments are seeded run.seed + k + EVAL_SEED_OFFSET (agent k): apart from
# every training environment's seed (env_seed hashes of the run seed) and from other runs'.
EVAL_SEED_OFFSET = 1_000_000
# The policy key of step t of evaluation episode ep is fold_in(key, ep * EPISODE_KEYS + t):
# distinct for episodes shorter than EPISODE_KEYS agent steps (far beyond any time limit).
EPISODE_KEYS = 100_000


def run_episode(
    env: Env,
    act: Callable[[dict[str, Any], int], np.ndarray],
    seed: int | None = None,
    watch: Callable[[dict[str, Any], np.ndarray | None], None] | None = None,
) -> float:
    """One episode: reset (re-seeded with ``seed`` if given), then a_t = act(o_t, t) and
    o_{t+1} = env.step(a_t) until is_last. ``watch(o_t, a_{t-1})`` sees every observation with
    the action that led to it (None after the reset). Returns the sum of the rewards."""
    obs = env.reset(seed) if seed is not None else env.reset()
    action, total, t = None, 0.0, 0
    while True:
        if watch is not None:
            watch(obs, action)
        if obs["is_last"]:
            return total
        action = np.asarray(act(obs, t))
        t += 1
        obs = env.step(action)
        total += float(obs["reward"])


def evaluate(
    agent: Agent,
    state: AgentState,
    cfg: Config,
    env: Env,
    key: jax.Array,
    keys: tuple[str, ...],
    record: bool = False,
    seed: int | None = None,
    camera: Camera | None = None,
) -> tuple[float, dict[str, np.ndarray] | None, np.ndarray | None]:
    """Mean return of ``cfg.run.eval_episodes`` episodes with the policy's 'eval' mode; with
    ``record`` the first episode's steps as replay stores them (``[T, ...]`` per key, action
    a_{t-1} at step t), data no update ever trains on; with a ``camera`` the first episode's
    frames ``[T, H, W, 3]`` uint8 (None where the env cannot render). ``seed`` re-seeds
    the environment before the first episode, so an evaluation does not depend on the ones
    before it."""
    returns, steps, frames = [], [], []
    for ep in range(cfg.run.eval_episodes):
        carry = agent.init_carry(1)

        def act(obs: dict[str, Any], t: int, ep: int = ep) -> np.ndarray:
            nonlocal carry
            batch = policy_obs({k: np.asarray(v)[None] for k, v in obs.items()}, keys)
            step_key = jax.random.fold_in(key, ep * EPISODE_KEYS + t)
            action, carry = agent.policy(state, carry, batch, step_key, "eval")
            return np.asarray(action)[0]

        def keep(obs: dict[str, Any], action: np.ndarray | None) -> None:
            if record:
                prev = np.zeros(agent.action_dim) if action is None else action
                steps.append({**{k: np.asarray(v) for k, v in obs.items()}, "action": prev})
            if camera is not None:
                frames.append(camera.frame(obs))

        watch = keep if (record or camera is not None) and ep == 0 else None
        returns.append(run_episode(env, act, seed if ep == 0 else None, watch))
    episode = {k: np.stack([step[k] for step in steps]) for k in steps[0]} if steps else None
    video = np.stack(frames) if frames and all(f is not None for f in frames) else None
    return float(np.mean(returns)), episode, video


class Camera:
    """The frames of an evaluation video: the observed image where the agent sees pixels, else
    the environment's ``render()`` (dm-control: the task's camera at env.size; Gymnasium: its
    ``rgb_array`` rendering). An env that cannot render gives None, with one warning."""

    def __init__(self, env: Env):
        self.env = env
        self.render = getattr(env, "render", None)

    def frame(self, obs: dict[str, Any]) -> np.ndarray | None:
        if "image" in obs:
            return np.asarray(obs["image"], np.uint8)
        if self.render is None:
            return None
        try:
            frame = self.render()
        except Exception as err:  # a missing renderer (pygame, OpenGL) costs the video only
            print(
                f"warning: {getattr(self.env, 'task', 'the environment')} cannot render "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); evaluation videos "
                "are off for this run",
                file=sys.stderr,
            )
            self.render = None
            return None
        if frame is None:  # a Gymnasium env made without render_mode='rgb_array'
            self.render = None
        return None if frame is None else np.asarray(frame, np.uint8)


def heldout_windows(
    episode: dict[str, np.ndarray], length: int, count: int
) -> dict[str, np.ndarray] | None:
    """Up to ``count`` non-overlapping windows ``[B, length, ...]`` of an episode, each starting
    from h_0 (``is_first`` at its first step); None if the episode is shorter than one."""
    n = min(count, len(episode["reward"]) // length)
    if n == 0:
        return None
    out = {k: v[: n * length].reshape(n, length, *v.shape[1:]) for k, v in episode.items()}
    out["is_first"] = np.zeros((n, length), bool)
    out["is_first"][:, 0] = True
    out["action"] = out["action"].astype(np.float32)
    out["action"][:, 0] = 0.0
    return out


def heldout_gap(agent, state, episode, run, key: jax.Array, fn) -> dict[str, float]:
    """Per-step held-out ELBO, IWAE_K and their difference (a lower estimate of the ELBO's gap
    KL(q || p(s | o))) on windows of an evaluation episode, and the seconds it took."""
    start = time.perf_counter()
    batch = heldout_windows(episode, run.batch_length, run.gap_sequences)
    if batch is None:
        return {}
    params = state.params["wm"]
    elbo, iwae = jax.device_get(fn(params, {k: jnp.asarray(v) for k, v in batch.items()}, key))
    t = run.batch_length
    return {
        "heldout/elbo": float(elbo.mean()) / t,
        "heldout/iwae": float(iwae.mean()) / t,
        "heldout/gap": float((iwae - elbo).mean()) / t,
        "heldout/seconds": time.perf_counter() - start,
    }
