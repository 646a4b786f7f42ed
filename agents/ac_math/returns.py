"""Lambda-returns of imagined and replayed trajectories, and the weights of imagined states.

Time alignment as in ``agents.ac_math``: rewards r_1 .. r_H, continues c_0 .. c_H, values
v_0 .. v_H of the imagined states s_0 .. s_H.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agents.ac_math.checks import check_unit, is_concrete

Array = jax.Array
sg = jax.lax.stop_gradient


def lambda_returns(
    rewards: Array, conts: Array, values: Array, gamma: float | Array, lam: float | Array
) -> Array:
    """TD(lambda) returns of an imagined trajectory, bootstrapped with v_H at the horizon.

        R_t = r_{t+1} + gamma c_{t+1} ((1 - lambda) v_{t+1} + lambda R_{t+1}),   R_H = v_H

    for t = 0 .. H-1, computed by a reverse ``jax.lax.scan`` over time. lambda = 0 gives the
    one-step TD targets r_{t+1} + gamma c_{t+1} v_{t+1}; lambda = 1 the discounted Monte Carlo
    return sum_k gamma^k (prod c) r, bootstrapped with v_H. A terminal c_{t+1} = 0 cuts every
    term after r_{t+1} (the reward for reaching the terminal state is kept).

    Gradients flow through every input (the 'dynamics' actor needs them); stop them in the
    caller where the returns serve as targets.

    Args:
      rewards: ``[B, H]``, column t holds r_{t+1} (r_1 .. r_H).
      conts: ``[B, H]``, column t holds c_{t+1} (c_1 .. c_H), in [0, 1].
      values: ``[B, H+1]``, column t holds v_t (v_0 .. v_H).
      gamma: discount, in [0, 1].
      lam: lambda, in [0, 1].

    Returns:
      ``[B, H]`` float32, column t holds R_t (R_0 .. R_{H-1}). Any leading batch dimensions are
      allowed; time is the last axis.
    """
    rewards, conts, values = (jnp.asarray(x, jnp.float32) for x in (rewards, conts, values))
    if rewards.ndim < 1 or rewards.shape != conts.shape:
        raise ValueError(
            f"lambda_returns: rewards {rewards.shape} and conts {conts.shape} must both be [B, H]"
        )
    if values.shape != (*rewards.shape[:-1], rewards.shape[-1] + 1):
        raise ValueError(
            f"lambda_returns: values {values.shape} must be [B, H+1] = "
            f"{(*rewards.shape[:-1], rewards.shape[-1] + 1)} (v_0 .. v_H for rewards r_1 .. r_H)"
        )
    check_unit("gamma", gamma)
    check_unit("lam", lam)
    return _td_lambda(rewards, gamma * conts, lam, values[..., 1:], values[..., -1])


def _td_lambda(rewards: Array, live: Array, lam: Array | float, boot: Array, last: Array) -> Array:
    """R_t = r_{t+1} + live_{t+1} ((1 - lam_{t+1}) b_{t+1} + lam_{t+1} R_{t+1}), R_H = ``last``.

    All of rewards, live, boot (and lam if an array) hold the column for t + 1 at t: ``[..., H]``.
    """
    # The part of R_t that does not depend on R_{t+1}; the scan adds live lam R_{t+1}.
    base = rewards + live * (1.0 - lam) * boot
    decay = live * lam * jnp.ones_like(rewards)

    def step(nxt: Array, inp: tuple[Array, Array]) -> tuple[Array, Array]:
        b, d = inp
        ret = b + d * nxt
        return ret, ret

    time_major = (jnp.moveaxis(base, -1, 0), jnp.moveaxis(decay, -1, 0))
    _, rets = jax.lax.scan(step, last, time_major, reverse=True)
    return jnp.moveaxis(rets, 0, -1)


def replay_returns(
    rewards: Array,
    is_last: Array,
    is_terminal: Array,
    boot: Array,
    gamma: float | Array,
    lam: float | Array,
) -> Array:
    """Lambda-returns along a replayed sequence, bootstrapped with imagined returns (DreamerV3).

        R_t = r_{t+1} + gamma (1 - term_{t+1}) ((1 - lam_{t+1}) b_{t+1} + lam_{t+1} R_{t+1}),
        lam_{t+1} = lam (1 - last_{t+1}),   R_{T-1} = b_{T-1},            t = 0 .. T-2

    A terminal step t+1 keeps its reward r_{t+1} and cuts everything after it; a step t+1 that
    ends the episode without terminating (``is_last``, a time limit) bootstraps fully with
    b_{t+1}, so no return reaches across into the next episode. Returns of ``is_last`` steps
    themselves do cross it: weight them by 1 - is_last.

    Args:
      rewards: ``[B, T]``, r_t is the reward received on arriving at step t.
      is_last, is_terminal: ``[B, T]`` flags of each step.
      boot: ``[B, T]``, b_t, e.g. the imagined lambda-return R_0 from the posterior state x_t.
      gamma: discount in [0, 1]; lam: lambda in [0, 1].

    Returns:
      ``[B, T - 1]`` float32, R_0 .. R_{T-2}.
    """
    rewards, boot = (jnp.asarray(x, jnp.float32) for x in (rewards, boot))
    last = jnp.asarray(is_last, jnp.float32)
    term = jnp.asarray(is_terminal, jnp.float32)
    if not (rewards.shape == last.shape == term.shape == boot.shape) or rewards.ndim < 1:
        raise ValueError(
            f"replay_returns: rewards {rewards.shape}, is_last {last.shape}, is_terminal "
            f"{term.shape} and boot {boot.shape} must all be [B, T]"
        )
    if rewards.shape[-1] < 2:
        raise ValueError(f"replay_returns: need T >= 2 steps, got shape {rewards.shape}")
    check_unit("gamma", gamma)
    check_unit("lam", lam)
    live = gamma * (1.0 - term[..., 1:])
    lams = lam * (1.0 - last[..., 1:])
    return _td_lambda(rewards[..., 1:], live, lams, boot[..., 1:], boot[..., -1])


def discount_weights(conts: Array, gamma: float | Array = 1.0) -> Array:
    """Loss weight of each imagined state: the probability that the trajectory is still alive.

        w_t = gamma^t prod_{i=0..t} c_i = cumprod(gamma c)_t / gamma

    With c_0 = 1 this is w_0 = 1 and w_t = gamma^t c_1 ... c_t, zero from the first terminal
    state on (a terminal state's action changes nothing); a c_0 below 1 scales the whole
    trajectory. The result is stop-gradient.

    Choice of gamma: the default gamma = 1 weights states by survival alone. The lambda-return
    already discounts what follows each state; an extra gamma^t on the state itself would be
    the discounted state distribution of the policy-gradient theorem seen from s_0, but s_0 is
    a replay state, not the start of an episode, so the imagined states are as much visited as
    s_0 is. DreamerV3 (2023) uses cumprod(gamma c) / gamma: pass ``gamma`` to reproduce it. With
    H = 15 and gamma = 0.997, gamma^t >= 0.957, so the two choices are numerically close.

    Args:
      conts: ``[B, H+1]``, column t holds c_t (c_0 .. c_H). c_0 is the continue head's value
        at the start state, or 1 - is_terminal of the replayed start state (a terminal start
        zeroes the whole trajectory).
      gamma: discount applied per step, in (0, 1].

    Returns:
      ``[B, H+1]`` float32 weights w_0 .. w_H. The actor and critic use ``[:, :-1]``.
    """
    conts = jnp.asarray(conts, jnp.float32)
    if conts.ndim < 1:
        raise ValueError(f"discount_weights: conts must be [B, H+1], got shape {conts.shape}")
    if is_concrete(gamma) and jnp.ndim(gamma) == 0 and not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f"discount_weights: gamma must lie in (0, 1], got {gamma}")
    # gamma^t without a division by gamma at t = 0 (exact even for gamma near 0).
    steps = jnp.arange(conts.shape[-1], dtype=jnp.float32)
    return sg(jnp.cumprod(conts, axis=-1) * jnp.power(gamma, steps))
