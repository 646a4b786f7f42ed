"""Evaluation inside a training run: evaluation episodes and the held-out ELBO gap."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.config import Config


def policy_obs(obs: dict[str, np.ndarray], keys: tuple[str, ...]) -> dict[str, jax.Array]:
    """What the policy reads of a step ``[N, ...]``: the observation ``keys`` and is_first."""
    return {k: jnp.asarray(obs[k]) for k in (*keys, "is_first")}


def evaluate(
    agent,
    state,
    cfg: Config,
    env,
    key: jax.Array,
    keys: tuple[str, ...],
    record: bool = False,
    seed: int | None = None,
) -> tuple[float, dict[str, np.ndarray] | None]:
    """Mean return of ``cfg.run.eval_episodes`` episodes with the policy's 'eval' mode, and with
    ``record`` the first episode's steps as replay stores them (``[T, ...]`` per key, action
    a_{t-1} at step t), data no update ever trains on. ``seed`` re-seeds the environment before
    the first episode, so an evaluation does not depend on the ones before it."""
    returns, episode = [], None
    for ep in range(cfg.run.eval_episodes):
        first = env.reset(seed) if ep == 0 and seed is not None else env.reset()
        obs = {k: np.asarray(v)[None] for k, v in first.items()}
        carry = agent.init_carry(1)
        total, t = 0.0, 0
        steps = []
        if record and ep == 0:
            steps.append(
                {**{k: v[0] for k, v in obs.items()}, "action": np.zeros(agent.action_dim)}
            )
        while True:
            act, carry = agent.policy(
                state,
                carry,
                policy_obs(obs, keys),
                jax.random.fold_in(key, ep * 100_000 + t),
                "eval",
            )
            obs = {k: np.asarray(v)[None] for k, v in env.step(np.asarray(act)[0]).items()}
            if steps:
                steps.append({**{k: v[0] for k, v in obs.items()}, "action": np.asarray(act)[0]})
            total += float(obs["reward"][0])
            t += 1
            if obs["is_last"][0]:
                break
        returns.append(total)
        if steps:
            episode = {k: np.stack([step[k] for step in steps]) for k in steps[0]}
    return float(np.mean(returns)), episode


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
