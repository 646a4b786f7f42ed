"""What every agent with a world model shares: the world model's update on the negative ELBO,
the replay context in and out, the recurrent carry, the posterior step on an observation and
the open-loop predictions (``WorldModelAgent``).
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from agents import optim
from agents.contract import Batch, CompiledAgent, ObsShapes, dummy_batch
from agents.world_model import CONTEXT_KEYS, WorldModel, WorldModelConfig, zero_carry

Array = jax.Array


def start_state(cfg: WorldModelConfig, batch: Batch) -> Any:
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


def wm_update(
    wm: WorldModel,
    opts: dict[str, optax.GradientTransformation],
    params: dict[str, Any],
    opt_state: dict[str, Any],
    batch: Batch,
    key: Array,
    start: Any = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Array], dict[str, Array]]:
    """One optimizer step of the world model, ``params['wm']``, on the negative ELBO of
    ``batch`` from ``start`` (``WorldModel.loss``).

    ``opts``, ``params`` and ``opt_state`` are an agent's, by component. Returns the stepped
    ``{'wm': params}`` and ``{'wm': optimizer state}``, the metrics ('wm/...', with the loss and
    the gradient's norm) and the posterior states ``[B, T]``.
    """

    def loss_fn(p):
        return wm.apply(p, batch, key, start, method=WorldModel.loss)

    (loss, (metrics, post)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params["wm"])
    new_params, new_opt = optim.step(opts, {"wm": grads}, opt_state, params)
    metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
    return new_params, new_opt, {f"wm/{k}": v for k, v in metrics.items()}, post


class WorldModelAgent(CompiledAgent):
    """An agent that learns a world model (``wm``) and acts from its posterior.

    The carry holds the posterior after the last observation and the action executed after it;
    ``observe_step`` advances it, resetting to h_0 where ``obs['is_first']``.
    """

    def __init__(
        self,
        wm_cfg: WorldModelConfig,
        obs_shapes: ObsShapes,
        action_dim: int,
        batch_size: int,
        discrete: bool,
        cont_target: float = 1.0,
    ):
        wm_cfg.validate()
        self.wm_cfg = wm_cfg
        self.obs_shapes = obs_shapes
        self.action_dim = action_dim
        self.discrete = discrete  # one-hot actions over action_dim classes
        self.batch_size = batch_size
        self.wm = WorldModel(wm_cfg, obs_shapes, action_dim, cont_target)

    def dummy_batch(self, batch: int = 1, length: int = 2) -> Batch:
        """A zero batch ``[batch, length, ...]``, with ``context`` when the model takes one."""
        context = None
        if self.wm_cfg.replay_context:
            state = zero_carry(self.wm, 1)["state"]
            context = {k: state[k] for k in CONTEXT_KEYS}
        return dummy_batch(self.obs_shapes, self.action_dim, batch, length, context)

    def init_carry(self, num_envs: int) -> dict[str, Any]:
        return zero_carry(self.wm, num_envs)

    def observe_step(self, state: Any, carry: dict, obs: dict, key: Array) -> dict:
        """The posterior after o_t, from the carried state and previous action (reset where
        ``obs['is_first']``): the policy's first step, and what replay stores as context."""
        return self.wm.apply(
            state.params["wm"],
            carry["state"],
            carry["action"],
            obs,
            key,
            method=WorldModel.obs_step,
        )

    def _openloop(self, state: Any, batch: Batch, key: Array) -> dict[str, Array]:
        return self.wm.apply(state.params["wm"], batch, key, method=WorldModel.openloop)
