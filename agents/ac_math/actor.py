"""The actor's loss in imagination: REINFORCE or backpropagation through the dynamics, plus the
KL to the action prior.
"""

from __future__ import annotations

import contextlib

import distrax
import jax
import jax.numpy as jnp

from agents.ac_math.prior import UNIFORM, UniformPrior, policy_prior_kl
from agents.ac_math.retnorm import normalized_advantage

Array = jax.Array
sg = jax.lax.stop_gradient

ESTIMATORS = ("reinforce", "dynamics")


def actor_loss(
    policy: distrax.Distribution,
    actions: Array | None,
    returns: Array,
    values: Array,
    weights: Array,
    scale: Array | float,
    *,
    estimator: str = "reinforce",
    beta: float | Array = 3e-4,
    prior: UniformPrior | distrax.Distribution = UNIFORM,
    key: Array | None = None,
    kl_samples: int = 1,
    entropy_range: tuple[float, float] | None = None,
) -> tuple[Array, dict[str, Array]]:
    """Actor loss over the H imagined states s_0 .. s_{H-1}, averaged over ``[B, H]``.

        'reinforce'  l_t = -w_t sg((R_t - v_t) / S) log pi(a_t | s_t) + beta w_t KL_t
        'dynamics'   l_t = -w_t (R_t - v_t) / S + beta w_t KL_t   (backprop through R and v)

    with KL_t = KL(pi(. | s_t) || prior) (``policy_prior_kl``); w and S are stop-gradient.
    For 'reinforce' the states, actions, returns and values carry no gradient. For 'dynamics'
    the caller passes R_t and v_t with their gradients through the imagined rewards, continues
    and values into the actor's reparameterized actions (the DreamerV3 2023 code's estimator
    for continuous actions, which differentiates v_t as well); only the actor's parameters
    should be updated from it.

    With the uniform prior, beta KL_t = beta (log|box| - H(pi)): the entropy bonus of DreamerV3
    plus a constant. Its value is not a KL of two distributions on the same support (see
    ``UniformPrior``), so it is logged as the entropy, not as a KL.

    Args:
      policy: pi(. | s_t) at s_0 .. s_{H-1}, batch shape ``[B, H]``.
      actions: a_0 .. a_{H-1}, ``[B, H, *event]``; unused (may be None) for 'dynamics'.
      returns: R_0 .. R_{H-1}, ``[B, H]`` (``lambda_returns``).
      values: v_0 .. v_{H-1}, ``[B, H]`` (the critic's mean; only 'reinforce' uses it).
      weights: w_0 .. w_{H-1}, ``[B, H]`` (``discount_weights(...)[:, :-1]``).
      scale: S, ``[]`` (``returnnorm_scale``).
      estimator: 'reinforce' or 'dynamics'.
      beta: weight of the KL to the action prior (DreamerV3: 3e-4).
      prior: the action prior, ``UNIFORM`` by default.
      key, kl_samples: for a Monte Carlo KL (a prior without a closed form).
      entropy_range: (H_min, H_max) of the policy family, for the normalized entropy.

    Returns:
      (loss ``[]``, metrics): actor_loss, advantage (mean of (R - v) / S), advantage_std,
      return_scale, policy_entropy, policy_randomness = (H - H_min) / (H_max - H_min) if
      ``entropy_range`` is given (DreamerV3's normalized entropy), and prior_kl for a proper
      prior distribution (never for the uniform prior, whose "KL" can be negative).
    """
    _check_inputs(policy, actions, returns, values, weights, estimator)
    weights = sg(jnp.asarray(weights, jnp.float32))
    scale = sg(jnp.asarray(scale, jnp.float32))
    adv = normalized_advantage(returns, values, scale)
    # 'reinforce': the score function; 'dynamics': the advantage itself, differentiated.
    objective = sg(adv) * policy.log_prob(sg(actions)) if estimator == "reinforce" else adv
    kl = policy_prior_kl(policy, prior, key=key, num_samples=kl_samples)
    loss = (weights * (-objective + beta * kl)).mean()
    return loss, _metrics(policy, loss, adv, scale, kl, prior, entropy_range)


def _check_inputs(
    policy: distrax.Distribution,
    actions: Array | None,
    returns: Array,
    values: Array,
    weights: Array,
    estimator: str,
) -> None:
    """Rejects an unknown estimator, missing actions for 'reinforce', and inputs that are not
    all over the same H states ``[B, H]``."""
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"actor_loss: unknown estimator {estimator!r}; expected one of {ESTIMATORS}"
        )
    shape = tuple(returns.shape)
    for name, x in (("values", values), ("weights", weights)):
        if tuple(x.shape) != shape:
            raise ValueError(
                f"actor_loss: {name} {tuple(x.shape)} != returns {shape}; pass the H steps "
                "s_0 .. s_{H-1} (drop the last column of [B, H+1] arrays)"
            )
    if tuple(policy.batch_shape) != shape:
        raise ValueError(
            f"actor_loss: policy batch shape {tuple(policy.batch_shape)} != returns {shape}"
        )
    if estimator == "reinforce" and actions is None:
        raise ValueError("actor_loss: estimator 'reinforce' needs the actions a_0 .. a_{H-1}")


def _metrics(
    policy: distrax.Distribution,
    loss: Array,
    adv: Array,
    scale: Array,
    kl: Array,
    prior: UniformPrior | distrax.Distribution,
    entropy_range: tuple[float, float] | None,
) -> dict[str, Array]:
    """``actor_loss``'s metrics (see its docstring), all stop-gradient but the loss."""
    metrics = {
        "actor_loss": loss,
        "advantage": sg(adv).mean(),
        "advantage_std": sg(adv).std(),
        "return_scale": scale,
    }
    if not isinstance(prior, UniformPrior):
        metrics["prior_kl"] = sg(kl).mean()
    # A transformed policy may have no closed-form entropy.
    with contextlib.suppress(NotImplementedError):
        ent = sg(policy.entropy())
        metrics["policy_entropy"] = ent.mean()
        if entropy_range is not None:
            lo, hi = entropy_range
            metrics["policy_randomness"] = ((ent - lo) / (hi - lo)).mean()
    return metrics
