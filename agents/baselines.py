"""The random-policy baseline and the world-model update the model-based agents share.

``RandomAgent`` trains the world model alone (the negative ELBO) and acts uniformly at random
in [-1, 1]: it measures how well the model learns from exploration-free data and is the
runner's ``--agent random``. The contract it keeps (``AgentState``, the carry, the modes) is
``agents/contract.py``'s.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from agents import optim
from agents.contract import AgentState, check_mode, random_actions
from agents.world_model import (
    CONTEXT_KEYS,
    ObsShapes,
    WorldModel,
    WorldModelConfig,
    dummy_batch,
    zero_carry,
)

Array = jax.Array


def start_state(cfg: WorldModelConfig, batch: dict) -> Any:
    """The state each sequence starts from: the replay context, or None (h_0)."""
    if cfg.replay_context:
        if "context" not in batch:
            raise ValueError(
                "model.replay_context=1 but the batch has no 'context' (the stored state of the "
                "step before each sequence); sample sequences one step longer and pass it, or "
                "set model.replay_context=0"
            )
        return batch["context"]
    return None


def context_out(cfg: WorldModelConfig, post: dict) -> dict:
    """The refreshed per-step states for replay (``[B, T, ...]``), or {} without context."""
    if not cfg.replay_context:
        return {}
    return {k: jax.lax.stop_gradient(post[k]) for k in CONTEXT_KEYS}


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
        # Compiled: run op by op, initialization takes about three times as long.
        self.init = jax.jit(self._init)
        self.policy = jax.jit(self._policy, static_argnums=4)
        self.openloop = jax.jit(self._openloop)

    def dummy_batch(self, batch: int = 1, length: int = 2) -> dict[str, Array]:
        context = zero_carry(self.wm, 1)["state"] if self.wm_cfg.replay_context else None
        return dummy_batch(self.obs_shapes, self.action_dim, batch, length, context)

    def _init(self, key: Array) -> AgentState:
        k1, k2, k3 = jax.random.split(key, 3)
        wm = self.wm.init(k1, self.dummy_batch(), k2, method=WorldModel.loss)
        return AgentState(
            params={"wm": wm},
            opt_state={"wm": self.opt.init(wm)},
            aux={},
            key=k3,
            updates=jnp.zeros((), jnp.int32),
        )

    def init_carry(self, num_envs: int) -> Any:
        return zero_carry(self.wm, num_envs)

    def observe_step(self, state: AgentState, carry: dict, obs: dict, key: Array) -> dict:
        """The posterior after o_t, from the carried state and previous action (reset where
        ``obs['is_first']``): the policy's first step, and what replay stores as context."""
        wm = state.params["wm"]
        return self.wm.apply(
            wm, carry["state"], carry["action"], obs, key, method=WorldModel.obs_step
        )

    def _policy(self, state, carry, obs, key, mode: str):
        check_mode(mode)
        k_obs, k_act = jax.random.split(key)
        post = self.observe_step(state, carry, obs, k_obs)
        action = random_actions(k_act, obs["is_first"].shape[0], self.action_dim, self.discrete)
        return action, {"state": post, "action": action}

    def _train(self, state: AgentState, batch: dict):
        key, sub = jax.random.split(state.key)
        start = start_state(self.wm_cfg, batch)
        params, opt_state, metrics, post = wm_update(
            self.wm, self.opt, state.params["wm"], state.opt_state["wm"], batch, sub, start
        )
        new = state.replace(
            params={"wm": params},
            opt_state={"wm": opt_state},
            key=key,
            updates=state.updates + 1,
        )
        return new, metrics, context_out(self.wm_cfg, post)

    def _openloop(self, state, batch, key):
        return self.wm.apply(state.params["wm"], batch, key, method=WorldModel.openloop)


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
