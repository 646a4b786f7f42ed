"""Many seeds in one process: K independent agents trained together with ``vmap``.

``--run.seeds K`` trains K agents that share nothing but the program: seed k has its own
parameters, optimizer state and RNG (``jax.random.key(run.seed + k)``), its own environments
(seeded as a single run with seed ``run.seed + k``), its own replay and its own logs. Seed k of
a K-seed run is the run ``--seed run.seed + k`` would be, computed in one program with the
others: every update is one ``vmap``-ed update over a leading seed axis ``[K, ...]``, so on an
accelerator (or a CPU whose cores a single small update leaves idle) K seeds cost far less
than K runs.

The three wrappers give the runner one agent, one replay and one logger with the interfaces of
a single seed:

- ``SeedBatch``: an agent over states ``[K, ...]``; the policy takes the ``K x n`` environments
  as one batch ``[K * n, ...]`` (seed-major) and keys ``[K]``.
- ``ReplaySet``: K replays (``replay/seed{k}``), batches stacked to ``[K, B, T, ...]``.
- ``LoggerSet``: K loggers (``seed{k}/metrics.jsonl``; with wandb, one run per seed named
  ``<name>-seed{k}``, grouped under the run's group or its logdir name, so the wandb UI shows
  them as one curve with a spread); metrics ``[K]`` are split per seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.replay import Replay
from experiments.run.logging import Logger


def take(tree: Any, k: int) -> Any:
    """Seed k's slice of a tree with a leading seed axis."""
    return jax.tree.map(lambda x: x[k], tree)


def fold_in(key: jax.Array, data: int) -> jax.Array:
    """``jax.random.fold_in`` for one key ``[]`` or a key per seed ``[K]``."""
    if key.shape:
        return jax.vmap(jax.random.fold_in, (0, None))(key, data)
    return jax.random.fold_in(key, data)


class SeedBatch:
    """K copies of ``agent`` as one agent over a leading seed axis (see the module doc)."""

    def __init__(self, agent: Any, seeds: int):
        if seeds < 2:
            raise ValueError(f"SeedBatch needs at least 2 seeds, got {seeds}")
        self.inner, self.seeds = agent, seeds
        self.action_dim = agent.action_dim
        self.update = jax.vmap(agent.update)
        self.train = jax.jit(self.update, donate_argnums=0)
        self.policy = jax.jit(self._policy, static_argnums=4)

    def init(self, keys: jax.Array) -> Any:
        """States ``[K, ...]`` from keys ``[K]``."""
        return jax.vmap(self.inner.init)(keys)

    def init_carry(self, num_envs: int) -> Any:
        """Carries ``[K, n, ...]`` for ``num_envs = K * n`` environments."""
        carry = self.inner.init_carry(num_envs // self.seeds)
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (self.seeds, *x.shape)), carry)

    def _policy(self, state, carry, obs, keys, mode: str):
        k = self.seeds
        obs = jax.tree.map(lambda x: x.reshape(k, x.shape[0] // k, *x.shape[1:]), obs)
        action, carry = jax.vmap(lambda s, c, o, key: self.inner._policy(s, c, o, key, mode))(
            state, carry, obs, keys
        )
        return action.reshape(-1, action.shape[-1]), carry

    def openloop(self, state: Any, batch: dict, key: jax.Array) -> dict:
        """Seed 0's open-loop predictions on its batch ``[B, T, ...]``."""
        return self.inner.openloop(take(state, 0), batch, key)


class ReplaySet:
    """One replay per seed behind the interface of one (see the module doc)."""

    def __init__(self, replays: Sequence[Replay]):
        self.replays = list(replays)

    def __len__(self) -> int:
        return min(len(r) for r in self.replays)

    def add_batch(self, steps: Mapping[str, Any], context: Mapping[str, Any] | None = None):
        """``steps[key]`` ``[K * n, ...]`` (seed-major); ``context[key]`` ``[K, n, ...]``."""
        k = len(self.replays)
        for i, replay in enumerate(self.replays):
            part = {name: np.split(np.asarray(v), k)[i] for name, v in steps.items()}
            ctx = None if context is None else {name: v[i] for name, v in context.items()}
            replay.add_batch(part, context=ctx)

    def windows(self, length: int) -> int:
        """The fewest windows of ``length`` steps any seed's replay holds."""
        return min(r.windows(length) for r in self.replays)

    def sample_sequences(self, batch_size: int, length: int, context: int = 0):
        """Batches ``[K, B, T, ...]`` with rows and stamps ``[K, B, T]``."""
        out = [r.sample_sequences(batch_size, length, context) for r in self.replays]
        batch = jax.tree.map(lambda *xs: np.stack(xs), *[o[0] for o in out])
        return batch, np.stack([o[1] for o in out]), np.stack([o[2] for o in out])

    def update_context(self, rows: np.ndarray, stamps: np.ndarray, values: Mapping[str, Any]):
        return sum(
            r.update_context(rows[i], stamps[i], {name: v[i] for name, v in values.items()})
            for i, r in enumerate(self.replays)
        )

    def save(self) -> list[dict]:
        return [r.save() for r in self.replays]

    def load(self, states: Sequence[Mapping[str, Any]]) -> None:
        if len(states) != len(self.replays):
            raise ValueError(
                f"the checkpoint holds {len(states)} replays, this run has {len(self.replays)} "
                "seeds"
            )
        for replay, state in zip(self.replays, states, strict=True):
            replay.load(state)


class LoggerSet:
    """One logger per seed behind the interface of one (see the module doc)."""

    def __init__(
        self,
        logdir: Path,
        config: dict,
        seeds: int,
        first_seed: int,
        run_ids: Sequence[str | None] | None,
        make: Callable[..., Logger],
        name: str,
        group: str,
    ):
        run_ids = list(run_ids) if run_ids else [None] * seeds
        self.loggers = []
        for k in range(seeds):
            cfg = {**config, "run": {**config["run"], "seed": first_seed + k, "seeds": 1}}
            self.loggers.append(
                make(
                    logdir / f"seed{k}",
                    cfg,
                    name=f"{name}-seed{k}",
                    group=group,
                    run_id=run_ids[k],
                )
            )

    @property
    def run_id(self) -> list[str]:
        return [lg.run_id for lg in self.loggers]

    def scalars(self, step: int, metrics: Mapping[str, Any], seed: int | None = None) -> None:
        """Values ``[K]`` go to their seeds, scalars to every seed; ``seed``: only that one."""
        if seed is not None:
            self.loggers[seed].scalars(step, metrics)
            return
        for k, logger in enumerate(self.loggers):
            row = {
                name: (np.asarray(v)[k] if np.ndim(v) else v)
                for name, v in metrics.items()
                if np.ndim(v) <= 1
            }
            logger.scalars(step, row)

    def video(self, step: int, name: str, frames: np.ndarray, fps: int = 10, seed: int = 0) -> str:
        """A video in seed ``seed``'s logs."""
        return self.loggers[seed].video(step, name, frames, fps)

    def artifact(self, directory: Any, step: int) -> None:
        """The checkpoint (all seeds' states in one) goes with seed 0's run."""
        self.loggers[0].artifact(directory, step)

    def image(self, step: int, name: str, image: np.ndarray, seed: int = 0) -> str:
        """An image in seed ``seed``'s logs."""
        return self.loggers[seed].image(step, name, image)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
