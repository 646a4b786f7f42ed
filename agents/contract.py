"""The contract every agent keeps with the runner: its functions, its state, its carry.

An agent is a bundle of pure, jit-compiled functions over one training-state pytree (``Agent``
lists what the runner uses; ``CompiledAgent`` compiles them, once for every agent):

    init(key) -> AgentState
    init_carry(num_envs) -> carry                     recurrent policy state
    policy(state, carry, obs, key, mode) -> (action [N, A], carry)
                                                      mode: 'explore', 'eval' or 'random'
    train(state, batch) -> (state, metrics, context)  one update; donates ``state``
    update(state, batch)                              ``train`` before jit, for callers that
                                                      compile it with their own shardings
    openloop(state, batch, key) -> {name: [B, T, ...]}  open-loop predictions (reports)
                                                      (None for agents without a world model)
    dummy_batch(batch, length) -> {name: [B, T, ...]}  a zero batch as replay samples it

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

``batch`` holds ``[B, T, ...]`` arrays (``dummy_batch`` lists the keys and dtypes) and, with
``model.replay_context``, ``context``: the stored ``{'deter', 'stoch'}`` of the step before each
sequence, ``[B, ...]``. ``train`` returns in ``context`` the refreshed posterior
``{'deter', 'stoch'}`` of every step, ``[B, T, ...]`` (empty without replay context), for the
runner to write back into replay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array
Batch = dict[str, Any]
# ((name, shape), ...) of the observations: 'vector' ([D]) and/or 'image' ([H, W, C], C 3 or 1).
ObsShapes = tuple[tuple[str, tuple[int, ...]], ...]


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


class Agent(Protocol):
    """What the runner (``experiments``) uses of an agent. ``CompiledAgent`` provides the
    compiled functions from an agent's pure ones."""

    action_dim: int  # A: actions are [N, A], one-hot over A classes if discrete
    discrete: bool
    wm: Any  # the world model (a flax Module), or None for an agent without one
    openloop: Callable[[AgentState, Batch, Array], dict[str, Array]] | None

    def init(self, key: Array) -> AgentState: ...
    def init_carry(self, num_envs: int) -> dict[str, Any]: ...
    def policy(
        self, state: AgentState, carry: dict, obs: dict, key: Array, mode: str
    ) -> tuple[Array, dict]: ...
    # The policy before jit, for callers that transform it themselves (SeedBatch vmaps it).
    def _policy(
        self, state: AgentState, carry: dict, obs: dict, key: Array, mode: str
    ) -> tuple[Array, dict]: ...
    def train(self, state: AgentState, batch: Batch) -> tuple[AgentState, dict, dict]: ...
    def update(self, state: AgentState, batch: Batch) -> tuple[AgentState, dict, dict]: ...
    def dummy_batch(self, batch: int = 1, length: int = 2) -> Batch: ...


class CompiledAgent:
    """The one place where an agent's pure functions become the ones the runner calls.

    A subclass sets ``action_dim``, ``discrete`` and ``obs_shapes``, defines ``_init(key)``,
    ``_policy(state, carry, obs, key, mode)``, ``_train(state, batch)`` and ``init_carry``
    (and ``_openloop(state, batch, key)`` and ``wm`` with a world model), and calls
    ``self._compile()`` at the end of its ``__init__``.
    """

    action_dim: int
    discrete: bool
    obs_shapes: ObsShapes
    wm: Any = None
    _openloop: Callable[..., dict[str, Array]] | None = None

    def _compile(self) -> None:
        # Uncompiled: the runner jits it with its shardings, and vmaps it over seeds.
        self.update = self._train
        # The state's buffers become the new state's: an update allocates no second copy.
        self.train = jax.jit(self._train, donate_argnums=0)
        # Compiled: run op by op, initialization takes about three times as long.
        self.init = jax.jit(self._init)
        # ``mode`` picks a branch while tracing: one program per mode.
        self.policy = jax.jit(self._policy, static_argnums=4)
        self.openloop = None if self._openloop is None else jax.jit(self._openloop)

    def dummy_batch(self, batch: int = 1, length: int = 2) -> Batch:
        """A zero batch ``[batch, length, ...]`` of this agent's observations and actions."""
        return dummy_batch(self.obs_shapes, self.action_dim, batch, length)


def check_mode(mode: str) -> None:
    if mode not in POLICY_MODES:
        raise ValueError(f"policy mode {mode!r}; expected one of {POLICY_MODES}")


def random_actions(key: Array, num: int, action_dim: int, discrete: bool = False) -> Array:
    """Uniform actions ``[N, A]``: in [-1, 1]^A, or one-hot over A classes if ``discrete``."""
    if discrete:
        return jax.nn.one_hot(jax.random.randint(key, (num,), 0, action_dim), action_dim)
    return jax.random.uniform(key, (num, action_dim), minval=-1.0, maxval=1.0)


def dummy_batch(
    obs_shapes: ObsShapes,
    action_dim: int,
    batch: int = 1,
    length: int = 2,
    context: Mapping[str, Array] | None = None,
) -> Batch:
    """A zero batch ``[batch, length, ...]`` with the keys and dtypes of a replayed one.

    ``context``: the stored start state's entries (``deter``, ``stoch``), whose shapes
    ``[N, ...]`` give ``batch['context']``'s, ``[batch, ...]``; none if None.
    """
    data = {
        name: jnp.zeros((batch, length, *shape), jnp.uint8 if name == "image" else jnp.float32)
        for name, shape in obs_shapes
    }
    data.update(
        action=jnp.zeros((batch, length, action_dim)),
        reward=jnp.zeros((batch, length)),
        is_first=jnp.ones((batch, length), bool),
        is_last=jnp.zeros((batch, length), bool),
        is_terminal=jnp.zeros((batch, length), bool),
    )
    if context is not None:
        data["context"] = {
            k: jnp.zeros((batch, *v.shape[1:]), jnp.float32) for k, v in context.items()
        }
    return data
