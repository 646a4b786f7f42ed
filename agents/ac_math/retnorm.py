"""Return normalization: the advantages are divided by a scale from percentiles of the
returns (DreamerV3),

    S = max(L, EMA[Per(R, 95)] - EMA[Per(R, 5)]).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from agents.ac_math.checks import check_unit, is_concrete

Array = jax.Array
sg = jax.lax.stop_gradient


@flax.struct.dataclass
class ReturnNorm:
    """EMA of the 5th and 95th percentiles of the lambda-returns (DreamerV3).

    lo, hi: float32 scalars ``[]``. Start from ``returnnorm_init()`` (both zero, as DreamerV3:
    the EMA is not bias-corrected, so early scales lean towards ``limit``).
    """

    lo: Array
    hi: Array


def returnnorm_init() -> ReturnNorm:
    """The initial state: lo = hi = 0."""
    return ReturnNorm(lo=jnp.zeros((), jnp.float32), hi=jnp.zeros((), jnp.float32))


def returnnorm_update(
    state: ReturnNorm,
    returns: Array,
    decay: float | Array = 0.99,
    perc_lo: float = 5.0,
    perc_hi: float = 95.0,
) -> ReturnNorm:
    """lo <- decay lo + (1 - decay) Per(R, perc_lo);  hi <- decay hi + (1 - decay) Per(R, perc_hi).

    Per is the percentile over every element of ``returns`` with linear interpolation (numpy's
    default). Under jit with sharded inputs it is the percentile of the global batch.

    Args:
      state: the current ``ReturnNorm``.
      returns: lambda-returns of any shape, e.g. ``[B, H]``; gradients are stopped.
      decay: EMA decay in [0, 1]; 0 replaces the state with this batch's percentiles.
      perc_lo, perc_hi: percentiles in [0, 100], perc_lo < perc_hi.

    Returns:
      The updated ``ReturnNorm``.
    """
    if not 0.0 <= perc_lo < perc_hi <= 100.0:
        raise ValueError(
            f"returnnorm_update: need 0 <= perc_lo < perc_hi <= 100, got {perc_lo}, {perc_hi}"
        )
    check_unit("decay", decay)
    flat = sg(jnp.asarray(returns, jnp.float32)).reshape(-1)
    if flat.size == 0:
        raise ValueError("returnnorm_update: returns is empty")
    lo = jnp.percentile(flat, perc_lo)
    hi = jnp.percentile(flat, perc_hi)
    return ReturnNorm(
        lo=decay * state.lo + (1.0 - decay) * lo,
        hi=decay * state.hi + (1.0 - decay) * hi,
    )


def returnnorm_scale(state: ReturnNorm, limit: float = 1.0) -> Array:
    """S = max(limit, hi - lo), stop-gradient ``[]``.

    Returns spread over less than ``limit`` are not scaled up, so that the small noise of
    sparse-reward tasks is not amplified into large advantages.
    """
    if is_concrete(limit) and not float(limit) > 0.0:
        raise ValueError(f"returnnorm_scale: limit must be positive, got {limit}")
    return sg(jnp.maximum(limit, state.hi - state.lo))


def normalized_advantage(returns: Array, values: Array, scale: Array | float) -> Array:
    """A_t = (R_t - v_t) / S, ``[B, H]`` (no stop-gradient here)."""
    if returns.shape != values.shape:
        raise ValueError(
            f"normalized_advantage: returns {returns.shape} != values {values.shape}; "
            "pass values v_0 .. v_{H-1}, i.e. values[:, :-1]"
        )
    return (returns - values) / scale
