"""The RSSM's state and the layout of its sequences.

A state at time t is a dict ``{'deter': h_t [B, H], 'stoch': s_t [B, S], **stats}``, where the
statistics are the latent family's (``{'logits'}`` or ``{'mean', 'std'}``, see
``rssm.latent``): of the posterior q(s_t | h_t, e_t) or the prior p(s_t | h_t). Sequences of
states are the same dict with a time axis, ``[B, T, ...]``. Features for the heads are
concat(h_t, s_t), ``[..., H + S]``.

A sequence's inputs are ``embed [B, T, E]`` (the encoder's e_t), ``action [B, T, A]`` (a_{t-1},
the action that led to o_t) and ``is_first [B, T]``.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array
State = dict[str, Array]
# The entries of an RSSM state that are not the latent's statistics: h_t and the sample s_t.
STATE_KEYS = ("deter", "stoch")


def latent_stats(state: Mapping[str, Array]) -> State:
    """The latent distribution's statistics of an RSSM state: every entry but ``deter`` and
    ``stoch`` (``{'logits'}`` or ``{'mean', 'std'}``), each ``[..., ...]`` as in the state."""
    stats = {k: v for k, v in state.items() if k not in STATE_KEYS}
    if not stats:
        raise ValueError(
            f"the state has no latent statistics (keys {sorted(state)}); pass a posterior or "
            "prior state of RSSM.observe / img_step, not just its 'deter' and 'stoch'"
        )
    return stats


def features(state: State) -> Array:
    """concat(h_t, s_t): the input of every head, ``[..., H + S]``."""
    return jnp.concatenate([state["deter"], state["stoch"]], -1)


def check_sequence(embed: Array, action: Array, is_first: Array, action_dim: int) -> None:
    """Validate ``embed [B, T, E]``, ``action [B, T, A]``, ``is_first [B, T]`` with clear errors."""
    got = f"embed {embed.shape}, action {action.shape}, is_first {is_first.shape}"
    if embed.ndim != 3 or action.ndim != 3 or is_first.ndim != 2:
        raise ValueError(f"expected embed [B, T, E], action [B, T, A], is_first [B, T]; got {got}")
    if not (embed.shape[:2] == action.shape[:2] == is_first.shape):
        raise ValueError(f"batch and time axes disagree: {got}; all must share [B, T]")
    if action.shape[-1] != action_dim:
        raise ValueError(
            f"action dimension {action.shape[-1]} != the model's action_dim {action_dim} ({got})"
        )
    if not jnp.issubdtype(embed.dtype, jnp.floating):
        raise ValueError(f"embed must be floating, got dtype {embed.dtype}")
    if not jnp.issubdtype(action.dtype, jnp.floating):
        raise ValueError(
            f"action must be floating, got dtype {action.dtype}; one-hot encode discrete actions"
        )
