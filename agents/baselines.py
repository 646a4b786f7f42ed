"""The random-policy baseline: the world model trained alone, actions uniformly at random.

``RandomAgent`` trains the world model on the negative ELBO and acts uniformly at random in
[-1, 1]: it measures how well the model learns from exploration-free data and is the runner's
``--agent random``. The contract it keeps (``AgentState``, the carry, the modes) is
``agents/contract.py``'s; the world-model update is ``agents/model_based.py``'s.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from agents import optim
from agents.contract import AgentState, Batch, ObsShapes, check_mode, random_actions
from agents.model_based import WorldModelAgent, context_out, start_state, wm_update
from agents.world_model import WorldModel, WorldModelConfig

Array = jax.Array


class RandomAgent(WorldModelAgent):
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
        super().__init__(cfg, obs_shapes, action_dim, batch_size, discrete)
        self.cfg = cfg
        self.opt = {"wm": optim.make(opt or optim.OptimConfig(), "wm")}
        self._compile()

    def _init(self, key: Array) -> AgentState:
        k1, k2, k3 = jax.random.split(key, 3)
        wm = self.wm.init(k1, self.dummy_batch(), k2, method=WorldModel.loss)
        return AgentState(
            params={"wm": wm},
            opt_state={"wm": self.opt["wm"].init(wm)},
            aux={},
            key=k3,
            updates=jnp.zeros((), jnp.int32),
        )

    def _policy(
        self, state: AgentState, carry: dict, obs: dict, key: Array, mode: str
    ) -> tuple[Array, dict[str, Any]]:
        check_mode(mode)
        k_obs, k_act = jax.random.split(key)
        post = self.observe_step(state, carry, obs, k_obs)
        action = random_actions(k_act, obs["is_first"].shape[0], self.action_dim, self.discrete)
        return action, {"state": post, "action": action}

    def _train(self, state: AgentState, batch: Batch) -> tuple[AgentState, dict, dict]:
        key, sub = jax.random.split(state.key)
        start = start_state(self.wm_cfg, batch)
        params, opt_state, metrics, post = wm_update(
            self.wm, self.opt, state.params, state.opt_state, batch, sub, start
        )
        new = state.replace(params=params, opt_state=opt_state, key=key, updates=state.updates + 1)
        return new, metrics, context_out(self.wm_cfg, post)
