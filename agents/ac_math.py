"""The mathematics of a DreamerV3 actor-critic trained in imagination.

Pure functions of arrays (plus one small Flax module for the policy head); no optimizer, no
world model. ``agents/dreamer.py`` wires them together.

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

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import distrax
import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rssm.dists import TwoHotDist, TwoHotSymlogDist
from rssm.nets import MLP, kernel_init

Array = jax.Array
sg = jax.lax.stop_gradient

ESTIMATORS = ("reinforce", "dynamics")


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_unit(name: str, value: Any) -> None:
    """Rejects a Python (untraced) hyperparameter outside [0, 1]."""
    if _is_concrete(value) and jnp.ndim(value) == 0 and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


# ---------------------------------------------------------------------------------------------
# Returns and weights
# ---------------------------------------------------------------------------------------------


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
    _check_unit("gamma", gamma)
    _check_unit("lam", lam)
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
    _check_unit("gamma", gamma)
    _check_unit("lam", lam)
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
    if _is_concrete(gamma) and jnp.ndim(gamma) == 0 and not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f"discount_weights: gamma must lie in (0, 1], got {gamma}")
    # gamma^t without a division by gamma at t = 0 (exact even for gamma near 0).
    steps = jnp.arange(conts.shape[-1], dtype=jnp.float32)
    return sg(jnp.cumprod(conts, axis=-1) * jnp.power(gamma, steps))


# ---------------------------------------------------------------------------------------------
# Return normalization
# ---------------------------------------------------------------------------------------------


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
    _check_unit("decay", decay)
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
    if _is_concrete(limit) and not float(limit) > 0.0:
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


# ---------------------------------------------------------------------------------------------
# Action prior and its KL
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UniformPrior:
    """The uniform action prior: over the K classes of a discrete policy, over [low, high]^A
    for a continuous one.

    Discrete: KL(pi || U_K) = log K - H(pi), exact (summed over independent categoricals).

    Continuous: the bounded-normal policy is a Normal on R^A, whose support is not the box, so
    the KL to the proper uniform on [low, high]^A is infinite. The prior used instead is the
    flat (improper) density u(a) = (high - low)^-A on all of R^A, which equals the uniform
    density on the box. Then, exactly,

        KL(pi || u) = E_pi[log pi(a) - log u(a)] = -H(pi) + A log(high - low),

    i.e. beta * KL is the entropy bonus -beta H(pi) plus a constant. Being a KL to an improper
    density it can be negative: for a Normal, once std exceeds (high - low) / sqrt(2 pi e)
    (about 0.48 on [-1, 1]) in every dimension.
    """

    low: float = -1.0  # continuous: lower bound of every action dimension
    high: float = 1.0  # continuous: upper bound of every action dimension

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"UniformPrior: need high > low, got low={self.low} high={self.high}")

    def log_volume(self, policy: distrax.Distribution) -> float:
        """log K (per categorical) for discrete policies, A log(high - low) for continuous."""
        base = _base_distribution(policy)
        event_size = math.prod(policy.event_shape)
        if isinstance(base, distrax.Categorical):
            classes = base.num_categories
            # A one-hot event holds its classes in the last axis; an index event does not.
            one_hot = isinstance(base, distrax.OneHotCategorical)
            variables = event_size // classes if one_hot else event_size
            return variables * math.log(classes)
        return event_size * math.log(self.high - self.low)


UNIFORM = UniformPrior()


def _base_distribution(dist: distrax.Distribution) -> distrax.Distribution:
    while isinstance(dist, distrax.Independent):
        dist = dist.distribution
    return dist


def policy_prior_kl(
    policy: distrax.Distribution,
    prior: UniformPrior | distrax.Distribution = UNIFORM,
    key: Array | None = None,
    num_samples: int = 1,
) -> Array:
    """KL(pi(. | s) || prior) per state, ``[*batch]`` (the policy's batch shape, e.g. ``[B, H]``).

    - ``UniformPrior``: log_volume - H(pi), exact (see ``UniformPrior`` for the continuous case).
    - a distrax distribution with a registered closed form (same family, e.g. Normal vs Normal,
      Categorical vs Categorical): ``policy.kl_divergence(prior)``, exact.
    - any other distrax distribution with the policy's event shape: the Monte Carlo estimate
      (1/S) sum_s [log pi(a_s) - log prior(a_s)] with reparameterized samples a_s ~ pi (needs
      ``key``; continuous policies only). Its gradient is unbiased: the score term
      E[grad log pi] vanishes in expectation.

    Args:
      policy: pi, batch shape ``[*batch]``, event shape ``[A]`` or ``[K]``.
      prior: ``UniformPrior`` or a distrax distribution with the same event shape; its batch
        shape must broadcast against the policy's.
      key: PRNG key, used only by the Monte Carlo estimate.
      num_samples: S, samples per state for the Monte Carlo estimate.
    """
    if isinstance(prior, UniformPrior):
        return prior.log_volume(policy) - policy.entropy()
    if not isinstance(prior, distrax.Distribution):
        raise TypeError(
            f"policy_prior_kl: prior must be a UniformPrior or a distrax.Distribution, "
            f"got {type(prior).__name__}"
        )
    if tuple(prior.event_shape) != tuple(policy.event_shape):
        raise ValueError(
            f"policy_prior_kl: prior event shape {tuple(prior.event_shape)} != policy event "
            f"shape {tuple(policy.event_shape)}; build the prior over the same action space"
        )
    if num_samples < 1:
        raise ValueError(f"policy_prior_kl: num_samples must be >= 1, got {num_samples}")
    batch = tuple(policy.batch_shape)
    try:
        kl = policy.kl_divergence(prior)
    except NotImplementedError as err:
        if key is None:
            raise TypeError(
                f"policy_prior_kl: no closed-form KL between {type(policy).__name__} and "
                f"{type(prior).__name__}; pass key= for a Monte Carlo estimate"
            ) from err
        if isinstance(_base_distribution(policy), distrax.Categorical):
            raise TypeError(
                "policy_prior_kl: the Monte Carlo estimate needs reparameterized samples, which "
                f"a discrete policy ({type(policy).__name__}) does not have; use a categorical "
                "prior (closed form)"
            ) from err
        samples = policy.sample(seed=key, sample_shape=(num_samples,))
        kl = (policy.log_prob(samples) - prior.log_prob(samples)).mean(0)
    return jnp.broadcast_to(kl, batch)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


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
    weights = sg(jnp.asarray(weights, jnp.float32))
    scale = sg(jnp.asarray(scale, jnp.float32))
    adv = normalized_advantage(returns, values, scale)
    if estimator == "reinforce":
        if actions is None:
            raise ValueError("actor_loss: estimator 'reinforce' needs the actions a_0 .. a_{H-1}")
        logp = policy.log_prob(sg(actions))
        objective = sg(adv) * logp
    else:
        objective = adv
    kl = policy_prior_kl(policy, prior, key=key, num_samples=kl_samples)
    loss = (weights * (-objective + beta * kl)).mean()
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
    return loss, metrics


def critic_loss(
    value_dist: TwoHotDist | TwoHotSymlogDist,
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
    if not isinstance(value_dist, TwoHotDist | TwoHotSymlogDist):
        raise TypeError(
            "critic_loss: value_dist must be a TwoHotDist or TwoHotSymlogDist, got "
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
    _check_unit("rate", rate)
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


# ---------------------------------------------------------------------------------------------
# Policy distributions
# ---------------------------------------------------------------------------------------------


def bounded_normal(
    mean_raw: Array, std_raw: Array, minstd: float = 0.1, maxstd: float = 1.0
) -> distrax.Distribution:
    """DreamerV3's continuous policy: Independent(Normal(mu, sigma), 1) over ``[..., A]``.

        mu = tanh(mean_raw),  sigma = (maxstd - minstd) sigmoid(std_raw + 2) + minstd

    The mean lies in (-1, 1) and sigma in (minstd, maxstd), but the distribution itself is an
    ordinary Normal on R^A: samples may leave [-1, 1] (the environment clips them), log_prob
    and entropy are the Normal's, and samples are reparameterized (mu + sigma eps).
    """
    if not 0.0 < minstd < maxstd:
        raise ValueError(f"bounded_normal: need 0 < minstd < maxstd, got {minstd}, {maxstd}")
    if mean_raw.shape != std_raw.shape:
        raise ValueError(f"bounded_normal: mean {mean_raw.shape} != std {std_raw.shape}")
    mean = jnp.tanh(mean_raw.astype(jnp.float32))
    std = (maxstd - minstd) * jax.nn.sigmoid(std_raw.astype(jnp.float32) + 2.0) + minstd
    return distrax.Independent(distrax.Normal(mean, std), reinterpreted_batch_ndims=1)


def unimix_categorical(logits: Array, unimix: float = 0.01) -> distrax.OneHotCategorical:
    """One-hot categorical over ``[..., K]`` with p = (1 - unimix) softmax(logits) + unimix / K.

    Samples and modes are float32 one-hot vectors. The mixture bounds log p(a) >= log(unimix / K),
    which keeps the REINFORCE term and the KL finite; with unimix 0 it is the plain softmax.
    """
    if not 0.0 <= unimix < 1.0:
        raise ValueError(f"unimix_categorical: unimix must lie in [0, 1), got {unimix}")
    logits = logits.astype(jnp.float32)
    if unimix == 0:
        return distrax.OneHotCategorical(logits=jax.nn.log_softmax(logits, -1), dtype=jnp.float32)
    probs = (1.0 - unimix) * jax.nn.softmax(logits, -1) + unimix / logits.shape[-1]
    return distrax.OneHotCategorical(logits=jnp.log(probs), dtype=jnp.float32)


def sample_action(policy: distrax.Distribution, key: Array) -> Array:
    """a ~ pi, float32 ``[*batch, *event]`` (one-hot for discrete policies, unclipped otherwise)."""
    return policy.sample(seed=key).astype(jnp.float32)


def mode_action(policy: distrax.Distribution) -> Array:
    """The deterministic evaluation action: tanh(mean) for the bounded normal, the one-hot
    argmax for a categorical; float32 ``[*batch, *event]``."""
    return policy.mode().astype(jnp.float32)


class ActorHead(nn.Module):
    """features ``[..., F]`` -> pi(. | s): a bounded normal over ``[..., A]`` (continuous) or a
    one-hot categorical over ``[..., A]`` classes mixed with ``unimix`` of the uniform
    (discrete).

    The MLP is ``rssm.nets.MLP``; one linear layer gives the distribution's parameters.
    """

    action_dim: int
    discrete: bool = False  # categorical over action_dim classes instead of a bounded normal
    layers: int = 2  # hidden layers of the MLP
    units: int = 256  # width of the hidden layers
    norm: str = "rms"  # 'rms', 'layer' or 'none'
    act: str = "silu"  # hidden activation
    minstd: float = 0.1  # continuous: lower bound of the standard deviation
    maxstd: float = 1.0  # continuous: upper bound of the standard deviation
    unimix: float = 0.0  # discrete: weight of the uniform mixture (DreamerV3 2023: 0.01)
    dtype: Any = jnp.float32  # compute dtype; the distribution is float32
    outscale: float = 1.0  # scale of the output layer's initial weights (DreamerV3 2024: 0.01)
    bias: bool = True  # biases in front of norms (DreamerV3 2024); False drops them (2023)
    winit: str = "fan_in"  # weight init: truncated normal over fan_in (2024) or fan_avg (2023)

    @nn.compact
    def __call__(self, feat: Array) -> distrax.Distribution:
        if self.action_dim < 1:
            raise ValueError(f"ActorHead: action_dim must be >= 1, got {self.action_dim}")
        x = MLP(
            self.layers, self.units, self.norm, self.act, False, self.dtype, self.bias, self.winit
        )(feat)
        init = kernel_init(self.winit, self.outscale)
        if self.discrete:
            logits = nn.Dense(self.action_dim, dtype=self.dtype, kernel_init=init)(x)
            return unimix_categorical(logits.astype(jnp.float32), self.unimix)
        # Mean and std from two output layers, as DreamerV3 (one layer of 2A is the same map).
        mean_raw = nn.Dense(self.action_dim, dtype=self.dtype, kernel_init=init)(x)
        std_raw = nn.Dense(self.action_dim, dtype=self.dtype, kernel_init=init)(x)
        return bounded_normal(
            mean_raw.astype(jnp.float32), std_raw.astype(jnp.float32), self.minstd, self.maxstd
        )

    def entropy_range(self) -> tuple[float, float]:
        """(H_min, H_max) of the policy family: A entropies of N(0, minstd) .. N(0, maxstd), or
        0 .. log K for the categorical."""
        if self.discrete:
            return 0.0, math.log(self.action_dim)
        per_dim = lambda std: 0.5 * math.log(2 * math.pi * math.e * std**2)
        return self.action_dim * per_dim(self.minstd), self.action_dim * per_dim(self.maxstd)
