"""The contract every agent keeps with the runner: its functions, its state, its carry.

An agent is a bundle of pure, jit-compiled functions over one training-state pytree:

    init(key) -> AgentState
    init_carry(num_envs) -> carry                     recurrent policy state
    policy(state, carry, obs, key, mode) -> (action [N, A], carry)
                                                      mode: 'explore', 'eval' or 'random'
    train(state, batch) -> (state, metrics, context)  one update; donates ``state``
    update(state, batch)                              ``train`` before jit, for callers that
                                                      compile it with their own shardings
    openloop(state, batch, key) -> {name: [B, T, ...]}  world-model predictions for videos
                                                      (agents with a world model)

**State.** Every agent's state is an ``AgentState`` with the same fields, so that code over
agents (checkpoints, sharding, parameter counts, evaluation) reads them by name:

    params      {component: parameters}, what gradients train: 'wm' (the world model),
                'actor', 'critic', 'alpha' (SAC's log temperature, a scalar)
    opt_state   {component: optimizer state}, the same keys as ``params``
    aux         {name: pytree}, state besides parameters that an update changes: target
                networks ('slow_critic', 'target_critic') and running statistics ('retnorm')
    key         the RNG key, split once per update
    updates     the number of updates done, int32 ``[]``

**Carry.** Every agent's policy carry is ``{'state': ..., 'action': [N, A]}``: the posterior
after the last observation (``{}`` for agents without a world model) and the action executed
after it. ``carry['state']['deter']`` and ``['stoch']`` are what replay stores as the context of
that step.

``obs`` holds ``[N, ...]`` observation arrays and ``is_first [N]``. ``mode`` is static: 'explore'
while collecting, 'eval' for the evaluation policy, 'random' for uniform actions (prefill) that
still advance the recurrent state, so the carried previous action is always the action that was
executed.

``batch`` holds ``[B, T, ...]`` arrays and, with ``model.replay_context``, ``context``: the
stored ``{'deter', 'stoch'}`` of the step before each sequence, ``[B, ...]``. ``train`` returns
in ``context`` the refreshed posterior ``{'deter', 'stoch'}`` of every step, ``[B, T, ...]``
(empty without replay context), for the runner to write back into replay.
"""

from __future__ import annotations

from typing import Any, Protocol

import flax.struct
import jax

Array = jax.Array


class Agent(Protocol):
    action_dim: int
    discrete: bool

    def init(self, key: Array) -> AgentState: ...
    def init_carry(self, num_envs: int) -> dict[str, Any]: ...
    def policy(self, state: AgentState, carry: Any, obs: dict, key: Array, mode: str): ...
    def train(self, state: AgentState, batch: dict) -> tuple[AgentState, dict, dict]: ...
    def update(self, state: AgentState, batch: dict) -> tuple[AgentState, dict, dict]: ...


@flax.struct.dataclass
class AgentState:
    """The training state of every agent (fields described in the module docstring)."""

    params: dict[str, Any]
    opt_state: dict[str, Any]
    aux: dict[str, Any]
    key: Array
    updates: Array


# The version of this layout, recorded with every checkpoint: states saved before AgentState
# (per-agent fields such as 'slow_critic' or 'log_alpha' at the top level) are layout 1;
# layout 2 had one more field, 'train_carry' (the previous batch's last posterior, None unless
# the since dropped model.carry_state), and restores as this layout where it is None.
STATE_LAYOUT = 3
STATE_FIELDS = ("params", "opt_state", "aux", "key", "updates")
CARRY_KEYS = ("state", "action")
POLICY_MODES = ("explore", "eval", "random")


def check_mode(mode: str) -> None:
    if mode not in POLICY_MODES:
        raise ValueError(f"policy mode {mode!r}; expected one of {POLICY_MODES}")


def random_actions(key: Array, num: int, action_dim: int, discrete: bool = False) -> Array:
    """Uniform actions ``[N, A]``: in [-1, 1]^A, or one-hot over A classes if ``discrete``."""
    if discrete:
        return jax.nn.one_hot(jax.random.randint(key, (num,), 0, action_dim), action_dim)
    return jax.random.uniform(key, (num, action_dim), minval=-1.0, maxval=1.0)
