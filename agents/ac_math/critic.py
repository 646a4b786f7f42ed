"""The critic's two-hot loss, regularized toward its slow copy, and the slow copy's EMA."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from agents.ac_math.checks import check_unit
from rssm.dists import TwoHotDist

Array = jax.Array
sg = jax.lax.stop_gradient


def critic_loss(
    value_dist: TwoHotDist,
    returns: Array,
    slow_value_mean: Array,
    weights: Array,
    slowreg: float | Array = 1.0,
) -> tuple[Array, dict[str, Array]]:
    """Two-hot critic loss over s_0 .. s_{H-1}, averaged over ``[B, H]``.

        l_t = -w_t [log p_psi(sg(R_t) | s_t) + slowreg log p_psi(sg(vslow_t) | s_t)]

    The second term regularizes the critic towards the slow (EMA) critic's prediction instead of
    bootstrapping from a target network (DreamerV3).

    Args:
      value_dist: the critic at s_0 .. s_{H-1}, logits ``[B, H, K]``.
      returns: R_0 .. R_{H-1}, ``[B, H]``; gradients are stopped.
      slow_value_mean: the slow critic's mean at s_0 .. s_{H-1}, ``[B, H]``; stopped.
      weights: w_0 .. w_{H-1}, ``[B, H]``; stopped.
      slowreg: weight of the slow-critic term.

    Returns:
      (loss ``[]``, metrics): critic_loss, value_mean, return_mean, value_error (mean |E v - R|).
    """
    if not isinstance(value_dist, TwoHotDist):
        raise TypeError(
            "critic_loss: value_dist must be a TwoHotDist (or TwoHotSymlogDist), got "
            f"{type(value_dist).__name__}"
        )
    shape = tuple(value_dist.logits.shape[:-1])
    for name, x in (
        ("returns", returns),
        ("slow_value_mean", slow_value_mean),
        ("weights", weights),
    ):
        if tuple(x.shape) != shape:
            raise ValueError(
                f"critic_loss: {name} {tuple(x.shape)} != the critic's batch shape {shape}"
            )
    returns = sg(returns)
    target_nll = -value_dist.log_prob(returns)
    slow_nll = -value_dist.log_prob(sg(slow_value_mean))
    loss = (sg(weights) * (target_nll + slowreg * slow_nll)).mean()
    mean = sg(value_dist.mean())
    metrics = {
        "critic_loss": loss,
        "value_mean": mean.mean(),
        "return_mean": returns.mean(),
        "value_error": jnp.abs(mean - returns).mean(),
    }
    return loss, metrics


def ema_update(slow_params: Any, params: Any, rate: float | Array = 0.02) -> Any:
    """psi_slow <- (1 - rate) psi_slow + rate psi, leaf by leaf (same pytree structure).

    rate = 0 keeps the slow parameters, rate = 1 copies the fast ones. Leaves keep the slow
    tree's dtypes.
    """
    check_unit("rate", rate)
    if jax.tree_util.tree_structure(slow_params) != jax.tree_util.tree_structure(params):
        raise ValueError(
            "ema_update: slow_params and params have different pytree structures: "
            f"{jax.tree_util.tree_structure(slow_params)} vs {jax.tree_util.tree_structure(params)}"
        )
    return jax.tree_util.tree_map(
        lambda s, p: ((1.0 - rate) * s + rate * sg(p)).astype(jnp.asarray(s).dtype),
        slow_params,
        params,
    )
