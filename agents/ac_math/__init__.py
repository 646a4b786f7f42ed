"""The mathematics of a DreamerV3 actor-critic trained in imagination.

Pure functions of arrays (plus one small Flax module for the policy head); no optimizer, no
world model. ``agents/dreamer.py`` wires them together. One module per concept:

    returns   lambda-returns (imagined, replayed) and the weights of imagined states
    retnorm   the return scale S (EMA of percentiles) and the normalized advantage
    prior     the action prior and KL(pi || prior)
    actor     the actor loss
    critic    the critic loss and the slow critic's EMA
    policy    the policy distributions and the actor head

Time alignment (DreamerV3 imagination). An imagined trajectory has states s_0 .. s_H: s_0 is a
posterior state from replay, and s_{t+1} follows from s_t and the action a_t ~ pi(. | s_t).

    t          0     1     2    ...   H
    state      s_0   s_1   s_2  ...   s_H
    action     a_0   a_1   a_2  ...   (a_H unused)
    reward           r_1   r_2  ...   r_H      r_t: reward for arriving in s_t
    continue   c_0   c_1   c_2  ...   c_H      c_t: the continue head at s_t (1 - is_terminal)
    value      v_0   v_1   v_2  ...   v_H      v_t: critic at s_t

The actor and the critic are trained at s_0 .. s_{H-1}: the H states that have a return. c_0
comes from the continue head at s_0 like the others (2024; with the discount inside the head,
about 1 - 1/333 for a live state), or from the data, 1 - is_terminal of the replayed s_0 (the
2023 code).

    lambda-return    R_t = r_{t+1} + gamma c_{t+1} ((1 - lambda) v_{t+1} + lambda R_{t+1}),
                     R_H = v_H                                              (t = 0 .. H-1)
    weights          w_t = gamma^t prod_{i=0..t} c_i  (gamma = 1 by default)
    normalization    S = max(L, EMA[Per(R, 95)] - EMA[Per(R, 5)])
    actor            l_t = -w_t sg((R_t - v_t) / S) log pi(a_t | s_t)
                           + beta w_t KL(pi(. | s_t) || prior)              ('reinforce')
                     l_t = -w_t (R_t - v_t) / S + beta w_t KL(pi(. | s_t) || prior)
                                                                            ('dynamics')
    critic           l_t = -w_t [log p_psi(sg R_t | s_t) + slowreg log p_psi(sg vslow_t | s_t)]
    slow critic      psi_slow <- (1 - rate) psi_slow + rate psi

Replay-value loss (DreamerV3 2024): the critic is also trained on the replayed posterior states
x_1 .. x_T of the batch, toward lambda-returns over the real rewards and flags, bootstrapped at
every step with b_t, the imagined return R_0 of the trajectory started from x_t
(``replay_returns``), weighted by 1 - is_last_t.

sg is ``jax.lax.stop_gradient``.
"""

from agents.ac_math.actor import ESTIMATORS, actor_loss
from agents.ac_math.critic import critic_loss, ema_update
from agents.ac_math.policy import (
    ActorHead,
    bounded_normal,
    mode_action,
    sample_action,
    unimix_categorical,
)
from agents.ac_math.prior import UNIFORM, UniformPrior, policy_prior_kl
from agents.ac_math.retnorm import (
    ReturnNorm,
    normalized_advantage,
    returnnorm_init,
    returnnorm_scale,
    returnnorm_update,
)
from agents.ac_math.returns import discount_weights, lambda_returns, replay_returns

__all__ = [
    "ESTIMATORS",
    "UNIFORM",
    "ActorHead",
    "ReturnNorm",
    "UniformPrior",
    "actor_loss",
    "bounded_normal",
    "critic_loss",
    "discount_weights",
    "ema_update",
    "lambda_returns",
    "mode_action",
    "normalized_advantage",
    "policy_prior_kl",
    "replay_returns",
    "returnnorm_init",
    "returnnorm_scale",
    "returnnorm_update",
    "sample_action",
    "unimix_categorical",
]
