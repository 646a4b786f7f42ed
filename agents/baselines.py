"""The agent interface the runner uses, and the random-policy baseline.

An agent is a bundle of pure, jit-compiled functions over one training-state pytree:

    init(key) -> state
    init_carry(num_envs) -> carry                     recurrent policy state
    policy(state, carry, obs, key, mode) -> (action [N, A], carry)
                                                      mode: 'explore', 'eval' or 'random'
    train(state, batch) -> (state, metrics, context)  one update; donates ``state``
    update(state, batch)                              ``train`` before jit, for callers that
                                                      compile it with their own shardings
    openloop(state, batch, key) -> {name: [B, T, ...]}  world-model predictions for videos

``obs`` holds ``[N, ...]`` observation arrays and ``is_first [N]``. ``mode`` is static: 'explore'
while collecting, 'eval' for the evaluation policy, 'random' for uniform actions in [-1, 1]
that still advance the recurrent state (prefill), so the carried previous action is always
the action that was executed. The carry's ``state`` is the posterior after the observation;
its ``deter`` and ``stoch`` are what replay stores as the context of that step.

``batch`` holds ``[B, T, ...]`` arrays and, with ``model.replay_context``, ``context``: the
stored ``{'deter', 'stoch'}`` of the step before each sequence, ``[B, ...]``. ``train`` returns
in ``context`` the refreshed posterior ``{'deter', 'stoch'}`` of every step, ``[B, T, ...]`` (empty
without replay context), for the runner to write back into replay.

``RandomAgent`` trains the world model alone (the negative ELBO) and acts uniformly at random
in [-1, 1]: it measures how well the model learns from exploration-free data and is the
runner's ``--agent random``.
"""

from __future__ import annotations

from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp
import optax

from agents import optim
from agents.world_model import (
    CONTEXT_KEYS,
    ObsShapes,
    WorldModel,
    WorldModelConfig,
    dummy_batch,
    zero_carry,
)

Array = jax.Array


class Agent(Protocol):
    def init(self, key: Array) -> Any: ...
    def init_carry(self, num_envs: int) -> Any: ...
    def policy(self, state: Any, carry: Any, obs: dict, key: Array, mode: str): ...
    def train(self, state: Any, batch: dict) -> tuple[Any, dict, dict]: ...
    def update(self, state: Any, batch: dict) -> tuple[Any, dict, dict]: ...
    def openloop(self, state: Any, batch: dict, key: Array) -> dict: ...


@flax.struct.dataclass
class WorldModelState:
    params: Any  # world-model parameters
    opt_state: Any  # optimizer state
    key: Array  # RNG key, split once per update
    updates: Array  # number of updates done, int32 scalar
    train_carry: Any = None  # last posterior of the previous batch (model.carry_state)


POLICY_MODES = ("explore", "eval", "random")


def check_mode(mode: str) -> None:
    if mode not in POLICY_MODES:
        raise ValueError(f"policy mode {mode!r}; expected one of {POLICY_MODES}")


def random_actions(key: Array, num: int, action_dim: int, discrete: bool = False) -> Array:
    """Uniform actions ``[N, A]``: in [-1, 1]^A, or one-hot over A classes if ``discrete``."""
    if discrete:
        return jax.nn.one_hot(jax.random.randint(key, (num,), 0, action_dim), action_dim)
    return jax.random.uniform(key, (num, action_dim), minval=-1.0, maxval=1.0)


def start_state(cfg: WorldModelConfig, batch: dict, carry: Any) -> Any:
    """The state each sequence starts from: replay context, the carried state, or None (h_0)."""
    if cfg.replay_context:
        if "context" not in batch:
            raise ValueError(
                "model.replay_context=1 but the batch has no 'context' (the stored state of the "
                "step before each sequence); sample sequences one step longer and pass it, or "
                "set model.replay_context=0"
            )
        return batch["context"]
    if cfg.carry_state:
        return carry
    return None


def context_out(cfg: WorldModelConfig, post: dict) -> dict:
    """The refreshed per-step states for replay (``[B, T, ...]``), or {} without context."""
    if not cfg.replay_context:
        return {}
    return {k: jax.lax.stop_gradient(post[k]) for k in CONTEXT_KEYS}


def last_state(post: dict) -> dict:
    """``{'deter', 'stoch'}`` of the last step, ``[B, ...]`` (the 2023 carried train state)."""
    return {k: jax.lax.stop_gradient(post[k][:, -1]) for k in CONTEXT_KEYS}


def initial_train_carry(wm: WorldModel, params: Any, batch_size: int) -> Any:
    """The carried train state before the first update, h_0 and s_0 ``[B]`` when
    ``carry_state`` (as the 2023 code's ``train_initial``), else None."""
    if not wm.cfg.carry_state:
        return None
    init = wm.apply(params, batch_size, method=WorldModel.initial_state)
    return {k: init[k] for k in CONTEXT_KEYS}


class RandomAgent:
    """World model trained on the negative ELBO; actions uniform in [-1, 1].

    The policy still runs the posterior on every observation, so replay stores each step's
    state for the replay context exactly as with a learning agent.
    """

    def __init__(
        self,
        cfg: WorldModelConfig,
        obs_shapes: ObsShapes,
        action_dim: int,
        opt: optim.OptimConfig | None = None,
        batch_size: int = 16,
        discrete: bool = False,
    ):
        cfg.validate()
        self.cfg = self.wm_cfg = cfg
        self.action_dim = action_dim
        self.discrete = discrete  # one-hot actions over action_dim classes
        self.wm = WorldModel(cfg, obs_shapes, action_dim)
        self.opt = optim.make(opt or optim.OptimConfig(), "wm")
        self.obs_shapes = obs_shapes
        self.batch_size = batch_size
        self.update = self._train  # uncompiled: the runner jits it with its shardings
        self.train = jax.jit(self._train, donate_argnums=0)
        self.policy = jax.jit(self._policy, static_argnums=4)
        self.openloop = jax.jit(self._openloop)

    def dummy_batch(self, batch: int = 1, length: int = 2) -> dict[str, Array]:
        context = zero_carry(self.wm, 1)["state"] if self.wm_cfg.replay_context else None
        return dummy_batch(self.obs_shapes, self.action_dim, batch, length, context)

    def init(self, key: Array) -> WorldModelState:
        k1, k2, k3 = jax.random.split(key, 3)
        params = self.wm.init(k1, self.dummy_batch(), k2, method=WorldModel.loss)
        return WorldModelState(
            params,
            self.opt.init(params),
            k3,
            jnp.zeros((), jnp.int32),
            initial_train_carry(self.wm, params, self.batch_size),
        )

    def init_carry(self, num_envs: int) -> Any:
        return zero_carry(self.wm, num_envs)

    def _policy(self, state, carry, obs, key, mode: str):
        check_mode(mode)
        k_obs, k_act = jax.random.split(key)
        post = self.wm.apply(
            state.params, carry["state"], carry["action"], obs, k_obs, method=WorldModel.obs_step
        )
        action = random_actions(k_act, obs["is_first"].shape[0], self.action_dim, self.discrete)
        return action, {"state": post, "action": action}

    def _train(self, state: WorldModelState, batch: dict):
        key, sub = jax.random.split(state.key)
        start = start_state(self.wm_cfg, batch, state.train_carry)
        params, opt_state, metrics, post = wm_update(
            self.wm, self.opt, state.params, state.opt_state, batch, sub, start
        )
        carry = last_state(post) if self.wm_cfg.carry_state else None
        new = state.replace(
            params=params,
            opt_state=opt_state,
            key=key,
            updates=state.updates + 1,
            train_carry=carry,
        )
        return new, metrics, context_out(self.wm_cfg, post)

    def _openloop(self, state, batch, key):
        return self.wm.apply(state.params, batch, key, method=WorldModel.openloop)


def wm_update(
    wm: WorldModel,
    opt: optax.GradientTransformation,
    params,
    opt_state,
    batch,
    key,
    start=None,
):
    """One optimizer step on the negative ELBO. Returns (params, opt_state, metrics, post)."""

    def loss_fn(p):
        loss, (metrics, post) = wm.apply(p, batch, key, start, method=WorldModel.loss)
        return loss, (metrics, post)

    (loss, (metrics, post)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {f"wm/{k}": v for k, v in metrics.items()}
    metrics.update({"wm/loss": loss, "wm/grad_norm": optax.tree.norm(grads)})
    return params, opt_state, metrics, post
