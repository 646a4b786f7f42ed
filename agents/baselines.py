"""The agent interface the runner uses, and the random-policy baseline.

An agent is a bundle of pure, jit-compiled functions over one training-state pytree:

    init(key) -> state
    init_carry(num_envs) -> carry                     recurrent policy state
    policy(state, carry, obs, key, mode) -> (action [N, A], carry)
                                                      mode: 'explore', 'eval' or 'random'
    train(state, batch) -> (state, metrics)           one update; donates ``state``
    openloop(state, batch, key) -> {name: [B, T, ...]}  world-model predictions for videos

``obs`` holds ``[N, ...]`` observation arrays and ``is_first [N]``. ``mode`` is static: 'explore'
while collecting, 'eval' for the deterministic policy, 'random' for uniform actions in [-1, 1]
that still advance the recurrent state (prefill), so the carried previous action is always
the action that was executed. ``RandomAgent`` trains the
world model alone (the negative ELBO) and acts uniformly at random in [-1, 1]: it measures how
well the model learns from exploration-free data and is the runner's ``--agent random``.
"""

from __future__ import annotations

from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax

from agents.world_model import ObsShapes, WorldModel, WorldModelConfig, dummy_batch

Array = jax.Array


class Agent(Protocol):
    def init(self, key: Array) -> Any: ...
    def init_carry(self, num_envs: int) -> Any: ...
    def policy(self, state: Any, carry: Any, obs: dict, key: Array, mode: str): ...
    def train(self, state: Any, batch: dict) -> tuple[Any, dict]: ...
    def openloop(self, state: Any, batch: dict, key: Array) -> dict: ...


def adam_chain(lr: float, eps: float, clip: float) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (DreamerV3, 2023 paper)."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, eps=eps))


@flax.struct.dataclass
class WorldModelState:
    params: Any  # world-model parameters
    opt_state: Any  # optimizer state
    key: Array  # RNG key, split once per update
    updates: Array  # number of updates done, int32 scalar


POLICY_MODES = ("explore", "eval", "random")


def check_mode(mode: str) -> None:
    if mode not in POLICY_MODES:
        raise ValueError(f"policy mode {mode!r}; expected one of {POLICY_MODES}")


def random_actions(key: Array, num: int, action_dim: int) -> Array:
    """Uniform actions in [-1, 1], ``[N, A]``."""
    return jax.random.uniform(key, (num, action_dim), minval=-1.0, maxval=1.0)


class RandomAgent:
    """World model trained on the negative ELBO; actions uniform in [-1, 1]."""

    def __init__(self, cfg: WorldModelConfig, obs_shapes: ObsShapes, action_dim: int):
        self.cfg = cfg
        self.action_dim = action_dim
        self.wm = WorldModel(cfg, obs_shapes, action_dim)
        self.opt = adam_chain(cfg.lr, cfg.eps, cfg.clip)
        self.obs_shapes = obs_shapes
        self.train = jax.jit(self._train, donate_argnums=0)
        self.policy = jax.jit(self._policy, static_argnums=4)
        self.openloop = jax.jit(self._openloop)

    def dummy_batch(self, batch: int = 1, length: int = 2) -> dict[str, Array]:
        return dummy_batch(self.obs_shapes, self.action_dim, batch, length)

    def init(self, key: Array) -> WorldModelState:
        k1, k2, k3 = jax.random.split(key, 3)
        params = self.wm.init(k1, self.dummy_batch(), k2, method=WorldModel.loss)
        return WorldModelState(params, self.opt.init(params), k3, jnp.zeros((), jnp.int32))

    def init_carry(self, num_envs: int) -> Any:
        return jnp.zeros((num_envs,), jnp.float32)

    def _policy(self, state, carry, obs, key, mode: str):
        check_mode(mode)
        del state
        return random_actions(key, obs["is_first"].shape[0], self.action_dim), carry

    def _train(self, state: WorldModelState, batch: dict) -> tuple[WorldModelState, dict]:
        key, sub = jax.random.split(state.key)
        params, opt_state, metrics = wm_update(
            self.wm, self.opt, state.params, state.opt_state, batch, sub
        )
        return state.replace(
            params=params, opt_state=opt_state, key=key, updates=state.updates + 1
        ), metrics

    def _openloop(self, state, batch, key):
        return self.wm.apply(state.params, batch, key, method=WorldModel.openloop)


def wm_update(wm: WorldModel, opt: optax.GradientTransformation, params, opt_state, batch, key):
    """One optimizer step on the negative ELBO. Returns (params, opt_state, metrics)."""

    def loss_fn(p):
        loss, (metrics, _) = wm.apply(p, batch, key, method=WorldModel.loss)
        return loss, metrics

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {f"wm/{k}": v for k, v in metrics.items()}
    metrics.update({"wm/loss": loss, "wm/grad_norm": optax.tree.norm(grads)})
    return params, opt_state, metrics
