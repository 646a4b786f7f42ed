"""The recurrent state-space model (RSSM) of PlaNet and Dreamer.

State at time t: a deterministic part h_t (a GRU state) and a stochastic part s_t.

    h_t = f(h_{t-1}, s_{t-1}, a_{t-1})          deterministic path (block GRU)
    p(s_t | h_t)                                 prior (transition), used to imagine
    q(s_t | h_t, e_t),  e_t = enc(o_t)           posterior (representation), used to observe

A state is a dict ``{'deter': [B, H], 'stoch': [B, S], **latent stats}`` (``rssm.state``).

Action convention: in ``observe``, ``action[:, t]`` is a_{t-1}, the action that led to o_t
(zeros where ``is_first``). In ``imagine``, ``actions[:, t]`` is the action taken in
``states[:, t]``, and ``states[:, t + 1]`` is the prior step from both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rssm import blocks
from rssm.blocks import BlockDense
from rssm.latent import CategoricalLatent, Latent
from rssm.nets import DenseNormAct, Norm, get_act, gru_update, kernel_init
from rssm.reference import reference_active
from rssm.state import STATE_KEYS, State, check_sequence

Array = jax.Array
CORES = ("block", "gru", "planet")
INITIALS = ("learned", "zeros")
Policy = Callable[[State, Array], Array]


class RSSM(nn.Module):
    """Recurrent state-space model with a pluggable latent family.

    Methods (call through ``apply(..., method=...)``):
      initial_state(batch) -> State [B]
      img_step(prev, prev_action, key) -> prior State [B]
      obs_step(prev, prev_action, embed, is_first, key) -> (posterior, prior) [B]
      observe(embed [B,T,E], action [B,T,A], is_first [B,T], key, state=None) -> (post, prior) [B,T]
      imagine(policy, start [B], horizon, key) -> (states [B,H+1], actions [B,H+1,A])

    Deterministic transition h_t = f(h_{t-1}, s_{t-1}, a_{t-1}), by ``core``:

    - 'block' (DreamerV3, 2024 release): h, s and a each pass a dense layer (``hidden``, norm,
      act); their concatenation is broadcast to ``blocks`` groups, each group joined with its
      slice of h, then ``dyn_layers`` block-diagonal layers and block-diagonal GRU gates. The
      recurrent weights shrink by ``blocks`` while every block still sees the full input.
    - 'gru' (DreamerV2 / DreamerV3 2023 code): x = act(norm(W [s, a])), gates = norm(W' [h, x]),
      one dense GRU.
    - 'planet' (PlaNet): x = act(norm(W [s, a])), then TensorFlow's GRUBlockCell: r, u =
      sigmoid(W_ru [x, h]) with biases starting at 1, c = tanh(W_c [x, r h]), h' = u h + (1 - u) c.

    'block' and 'gru' use reset r, candidate c = tanh(r * c~), update u = sigmoid(u~ - 1) and
    h' = u * c + (1 - u) * h.

    Actions enter the transition bounded to the box: a / max(1, |a| / clip) per component (the
    divisor behind stop-gradient, as DreamerV3), which equals clip(a, -clip, clip) in value.
    A policy whose samples leave the box (a Normal) is thus imagined with the actions the
    environment would execute, in ``observe`` and ``imagine`` alike. ``action_clip=0`` turns the
    bound off (one-hot actions never exceed it).
    """

    latent: Latent = dataclasses.field(default_factory=CategoricalLatent)
    action_dim: int = 1  # size of the action vector (one-hot for discrete actions)
    deter: int = 512  # size of h_t
    hidden: int = 64  # width of the input and head layers
    blocks: int = 8  # GRU blocks ('block' core); must divide deter
    img_layers: int = 2  # layers of the prior head p(s_t | h_t)
    obs_layers: int = 1  # layers of the posterior head q(s_t | h_t, e_t)
    dyn_layers: int = 1  # block layers before the GRU gates ('block' core)
    norm: str = "rms"
    act: str = "silu"
    # Deterministic transition: 'block' (DreamerV3 2024), 'gru' (2023 code, DreamerV2) or
    # 'planet' (PlaNet's GRUBlockCell on a ReLU embedding of (s, a))
    core: str = "block"
    initial: str = (
        "learned"  # h_0: 'learned' (tanh(w), s_0 = prior mode) or 'zeros' (h_0 = s_0 = 0)
    )
    action_clip: float = 1.0  # actions are bounded to [-clip, clip] in the transition; 0: off
    bias: bool = True  # biases in front of norms (DreamerV3 2024); False drops them (2023)
    winit: str = "fan_in"  # weight init: truncated normal over fan_in (2024) or fan_avg (2023)
    dtype: Any = jnp.float32  # compute dtype; latent statistics stay float32
    # Steps per iteration of the observe and imagine scans (the same results). 1 on a CPU,
    # where unrolling changed nothing; on a GPU each step's kernels otherwise launch one loop
    # iteration at a time.
    unroll: int = 1

    def setup(self) -> None:
        if not isinstance(self.unroll, int) or self.unroll < 1:
            raise ValueError(f"unroll={self.unroll!r}; expected a positive int (1: no unrolling)")
        if self.core not in CORES:
            raise ValueError(f"core={self.core!r}; expected one of {CORES}")
        if self.initial not in INITIALS:
            raise ValueError(f"initial={self.initial!r}; expected one of {INITIALS}")
        if self.action_clip < 0:
            raise ValueError(f"action_clip={self.action_clip}; use 0 to turn the bound off")
        if self.core == "block" and self.deter % self.blocks:
            raise ValueError(f"deter={self.deter} must be divisible by blocks={self.blocks}")
        mk = lambda: DenseNormAct(
            self.hidden, self.norm, self.act, self.dtype, self.bias, self.winit
        )
        if self.core == "block":
            self.in_deter, self.in_stoch, self.in_action = mk(), mk(), mk()
            self.dyn = [
                BlockDense(self.deter, self.blocks, self.dtype, self.winit)
                for _ in range(self.dyn_layers)
            ]
            self.dyn_norm = [Norm(self.norm) for _ in range(self.dyn_layers)]
            self.gates = BlockDense(3 * self.deter, self.blocks, self.dtype, self.winit)
        elif self.core == "planet":
            self.in_joint = mk()
            dense = lambda n, bias: nn.Dense(
                n,
                dtype=self.dtype,
                kernel_init=kernel_init(self.winit),
                bias_init=nn.initializers.constant(bias),
            )
            # TensorFlow's GRUBlockCell, which PlaNet uses: reset and update gates (biases
            # start at 1), then the candidate from the reset state.
            self.gates_ru, self.gates_c = dense(2 * self.deter, 1.0), dense(self.deter, 0.0)
        else:
            self.in_joint = mk()
            self.gates = nn.Dense(
                3 * self.deter,
                use_bias=self.bias or self.norm == "none",
                dtype=self.dtype,
                kernel_init=kernel_init(self.winit),
            )
            self.gates_norm = Norm(self.norm)
        self.img_net = [mk() for _ in range(self.img_layers)]
        self.img_out = nn.Dense(
            self.latent.param_size, dtype=self.dtype, kernel_init=kernel_init(self.winit)
        )
        self.obs_net = [mk() for _ in range(self.obs_layers)]
        self.obs_out = nn.Dense(
            self.latent.param_size, dtype=self.dtype, kernel_init=kernel_init(self.winit)
        )
        if self.initial == "learned":
            self.init_deter = self.param("init_deter", nn.initializers.zeros, (self.deter,))

    # --- single steps -------------------------------------------------------------------------

    def initial_state(self, batch_size: int) -> State:
        """The state before the first observation, ``[B]``.

        'learned': h_0 = tanh(w) and s_0 the prior's mode at h_0 (DreamerV2, DreamerV3 2023).
        'zeros': h_0 = 0 and s_0 = 0 (DreamerV3 2024). The statistics are the prior's at h_0.
        """
        if self.initial == "learned":
            deter = jnp.tanh(self.init_deter).astype(jnp.float32)
        else:
            deter = jnp.zeros((self.deter,), jnp.float32)
        deter = jnp.broadcast_to(deter, (batch_size, self.deter))
        stats = self._prior_stats(deter)
        if self.initial == "zeros":
            return {"deter": deter, "stoch": jnp.zeros_like(self.latent.mode(stats)), **stats}
        # s_0 is a constant given h_0: without stop_gradient the representation loss would
        # reach the prior head through s_0, blurring the split that KL balancing relies on.
        return {"deter": deter, "stoch": jax.lax.stop_gradient(self.latent.mode(stats)), **stats}

    def img_step(self, prev: State, prev_action: Array, key: Array) -> State:
        """Prior step: h_t = f(h_{t-1}, s_{t-1}, a_{t-1}); s_t ~ p(s_t | h_t)."""
        self._check_action(prev_action, prev["deter"].shape[:-1])
        # Prior steps are mostly run forward only (imagination, planning): block by block.
        deter = self._gru(prev["deter"], prev["stoch"], prev_action, per_block=True)
        stats = self._prior_stats(deter)
        return {"deter": deter, "stoch": self.latent.sample(stats, key), **stats}

    def obs_step(
        self,
        prev: State,
        prev_action: Array,
        embed: Array,
        is_first: Array,
        key: Array,
        init: State | None = None,
    ) -> tuple[State, State]:
        """Posterior step from o_t: reset where ``is_first``, then prior and posterior at t.

        Shapes: prev [B], prev_action [B, A], embed [B, E], is_first [B]. ``init`` is the state
        to reset to (``initial_state(B)`` if None; ``observe`` computes it once per sequence).
        Returns (posterior state with s_t ~ q(s_t | h_t, e_t), prior state at the same h_t).
        Both share h_t; the prior's ``stoch`` is its mode (it is only used for its statistics).
        """
        post = self.post_step(prev, prev_action, embed, is_first, key, init)
        return post, self.prior_state(post["deter"])

    def post_step(
        self,
        prev: State,
        prev_action: Array,
        embed: Array,
        is_first: Array,
        key: Array,
        init: State | None = None,
    ) -> State:
        """The posterior half of ``obs_step`` (acting needs no prior): h_t and s_t ~ q."""
        batch = embed.shape[:-1]
        if len(batch) != 1:
            raise ValueError(f"obs_step expects embed [B, E], got {embed.shape}")
        if tuple(is_first.shape) != batch:
            raise ValueError(
                f"is_first has shape {tuple(is_first.shape)}; expected {batch}, one flag per row "
                f"of embed {tuple(embed.shape)}"
            )
        if tuple(prev["deter"].shape[:-1]) != batch:
            raise ValueError(
                f"the previous state's deter has shape {tuple(prev['deter'].shape)}; expected "
                f"{(*batch, self.deter)} for embed {tuple(embed.shape)}"
            )
        self._check_action(prev_action, batch)
        first = is_first.astype(bool)
        if init is None:
            init = self.initial_state(batch[0])
        # Only h and s enter the transition, so a carried state needs no latent statistics (a
        # state stored in replay holds just these two).
        prev = {k: jnp.where(first[:, None], init[k], prev[k]) for k in STATE_KEYS}
        prev_action = jnp.where(first[:, None], 0.0, prev_action)
        deter = self._gru(prev["deter"], prev["stoch"], prev_action)
        x = jnp.concatenate([deter.astype(self.dtype), embed.astype(self.dtype)], -1)
        for layer in self.obs_net:
            x = layer(x)
        post_stats = self.latent.stats(self.obs_out(x))
        return {"deter": deter, "stoch": self.latent.sample(post_stats, key), **post_stats}

    def prior_state(self, deter: Array) -> State:
        """p(s_t | h_t) at ``deter [..., H]``: the statistics, and ``stoch`` as its mode."""
        stats = self._prior_stats(deter)
        return {"deter": deter, "stoch": self.latent.mode(stats), **stats}

    # --- sequences ----------------------------------------------------------------------------

    def observe(
        self,
        embed: Array,
        action: Array,
        is_first: Array,
        key: Array,
        state: State | None = None,
    ) -> tuple[State, State]:
        """Posterior over a sequence, by ``lax.scan`` over ``obs_step``.

        Args:
          embed: ``[B, T, E]`` encoder outputs e_t.
          action: ``[B, T, A]`` a_{t-1}, the action that led to o_t.
          is_first: ``[B, T]`` True where an episode starts; the state resets there.
          key: PRNG key for the posterior samples.
          state: state before the sequence, ``[B]`` (``deter`` and ``stoch`` are enough);
            defaults to ``initial_state``. Rows whose first step is ``is_first`` reset anyway.
        Returns:
          (posterior, prior), each a State ``[B, T, ...]``.
        """
        check_sequence(embed, action, is_first, self.action_dim)
        b, t = is_first.shape
        init = self.initial_state(b)
        state = init if state is None else state
        state = {k: state[k] for k in STATE_KEYS}
        keys = jax.random.split(key, t)
        xs = (jnp.swapaxes(embed, 0, 1), jnp.swapaxes(action, 0, 1), is_first.T, keys)

        swap = lambda x: jnp.swapaxes(x, 0, 1)
        if reference_active():  # the prior of every step inside the scan

            def ref_step(mdl: RSSM, carry: State, x):
                e, a, f, k = x
                post, prior = mdl.obs_step(carry, a, e, f, k, init)
                return {k: post[k] for k in STATE_KEYS}, (post, prior)

            scan = nn.scan(ref_step, variable_broadcast="params", split_rngs={"params": False})
            _, (post, prior) = scan(self, state, xs)
            return jax.tree.map(swap, post), jax.tree.map(swap, prior)

        def step(mdl: RSSM, carry: State, x):
            e, a, f, k = x
            post = mdl.post_step(carry, a, e, f, k, init)
            return {k: post[k] for k in STATE_KEYS}, post

        scan = nn.scan(
            step, variable_broadcast="params", split_rngs={"params": False}, unroll=self.unroll
        )
        _, post = scan(self, state, xs)
        post = jax.tree.map(swap, post)
        # The prior head needs no recurrence: one batched pass over all [B, T] steps after the
        # scan instead of T small ones inside it.
        return post, self.prior_state(post["deter"])

    def imagine(
        self, policy: Policy, start: State, horizon: int, key: Array
    ) -> tuple[State, Array]:
        """Roll the prior forward from ``start`` with actions from ``policy``.

        policy(state [B], key) -> action [B, A] must be a pure function (it may close over its
        own parameters). Returns states ``[B, H + 1]`` with states[:, 0] = start, and actions
        ``[B, H + 1, A]`` where actions[:, t] = policy(states[:, t]) and
        states[:, t + 1] = img_step(states[:, t], actions[:, t]).
        """
        keys = jax.random.split(key, horizon + 1)

        def step(mdl: RSSM, carry: tuple[State, Array], k: Array):
            state, action = carry
            k1, k2 = jax.random.split(k)
            nxt = mdl.img_step(state, action, k1)
            act = policy(nxt, k2)
            return (nxt, act), (nxt, act)

        first_action = policy(start, keys[0])
        scan = nn.scan(
            step, variable_broadcast="params", split_rngs={"params": False}, unroll=self.unroll
        )
        _, (states, actions) = scan(self, (start, first_action), keys[1:])
        swap = lambda x: jnp.swapaxes(x, 0, 1)
        states = jax.tree.map(lambda s, x: jnp.concatenate([s[:, None], swap(x)], 1), start, states)
        actions = jnp.concatenate([first_action[:, None], swap(actions)], 1)
        return states, actions

    # --- helpers ------------------------------------------------------------------------------

    def bound_action(self, action: Array) -> Array:
        """a * sg(clip / max(clip, |a|)): clip(a, -clip, clip) in value, with the gradient
        1 / max(1, |a| / clip) (DreamerV3); the identity when ``action_clip`` is 0."""
        if not self.action_clip:
            return action
        scale = self.action_clip / jnp.maximum(self.action_clip, jnp.abs(action))
        return action * jax.lax.stop_gradient(scale)

    def _gru(self, deter: Array, stoch: Array, action: Array, per_block: bool = False) -> Array:
        """h' = u * c + (1 - u) * h with reset r, candidate c and update u (see the class).

        The block GRU runs in the layouts of ``rssm.blocks`` unless ``reference_impl`` is
        active: block by block with ``per_block`` (faster without a backward pass: imagination
        and planning), otherwise with the blocks as a batch axis (faster with one).
        """
        action = self.bound_action(action)
        if self.core == "planet":
            # r, u = sigmoid(W_ru [x, h]), c = tanh(W_c [x, r h]), h' = u h + (1 - u) c.
            x = self.in_joint(jnp.concatenate([stoch, action], -1).astype(self.dtype))
            h = deter.astype(self.dtype)
            ru = jax.nn.sigmoid(self.gates_ru(jnp.concatenate([x, h], -1)).astype(jnp.float32))
            r, u = jnp.split(ru, 2, -1)
            c = jnp.tanh(self.gates_c(jnp.concatenate([x, (r * h).astype(self.dtype)], -1)))
            return u * deter.astype(jnp.float32) + (1 - u) * c.astype(jnp.float32)
        if self.core == "block":
            if not reference_active():
                return blocks.block_gru(self, deter, stoch, action, per_block)
            parts = self._block_gates(deter, stoch, action)
        else:
            x = self.in_joint(jnp.concatenate([stoch, action], -1).astype(self.dtype))
            x = jnp.concatenate([deter.astype(self.dtype), x], -1)
            parts = self.gates_norm(self.gates(x)).astype(jnp.float32)
            parts = parts.reshape(*parts.shape[:-1], 1, parts.shape[-1])
        reset, cand, update = [p.reshape(*p.shape[:-2], -1) for p in jnp.split(parts, 3, -1)]
        return gru_update(reset, cand, update, deter.astype(jnp.float32))

    def block_input(self, deter: Array, stoch: Array, action: Array) -> Array:
        """x = concat(in(h), in(s), in(a)), ``[..., 3 * hidden]``: the block GRU's input, which
        every block sees beside its own slice of h."""
        return jnp.concatenate(
            [self.in_deter(deter), self.in_stoch(stoch), self.in_action(action)], -1
        )

    def _block_gates(self, deter: Array, stoch: Array, action: Array) -> Array:
        """Gate pre-activations of the block GRU, ``[..., G, 3 * deter / G]``.

        Block g of the first layer sees [h_g, x] with x = ``block_input`` shared by all blocks
        (``BlockDense``'s ``shared`` input); each hidden layer is act(norm(.)) over all blocks.
        """
        g, d = self.blocks, self.deter // self.blocks
        x = self.block_input(deter, stoch, action)
        h = deter.astype(x.dtype)
        if not self.dyn:  # no block layer: the gates see [h_g, x] themselves
            parts = self.gates(h, x)
        else:
            for i, (layer, norm) in enumerate(zip(self.dyn, self.dyn_norm, strict=True)):
                h = get_act(self.act)(norm(layer(h, x) if i == 0 else layer(h)))
            parts = self.gates(h)
        return parts.astype(jnp.float32).reshape(*parts.shape[:-1], g, 3 * d)

    def _prior_stats(self, deter: Array) -> dict[str, Array]:
        x = deter.astype(self.dtype)
        for layer in self.img_net:
            x = layer(x)
        return self.latent.stats(self.img_out(x))

    def _check_action(self, action: Array, batch: tuple[int, ...]) -> None:
        if action.shape != (*batch, self.action_dim):
            raise ValueError(
                f"action has shape {action.shape}; expected {(*batch, self.action_dim)} "
                f"(batch {batch}, action_dim={self.action_dim})"
            )
