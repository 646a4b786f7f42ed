"""The action prior of the entropy bonus, and the KL of a policy to it.

The actor's bonus is -beta KL(pi(. | s) || prior); with the uniform prior it is the entropy
bonus -beta H(pi) up to a constant (``UniformPrior``).
"""

from __future__ import annotations

import dataclasses
import math

import distrax
import jax
import jax.numpy as jnp

Array = jax.Array


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
        base = base_distribution(policy)
        event_size = math.prod(policy.event_shape)
        if isinstance(base, distrax.Categorical):
            classes = base.num_categories
            # A one-hot event holds its classes in the last axis; an index event does not.
            one_hot = isinstance(base, distrax.OneHotCategorical)
            variables = event_size // classes if one_hot else event_size
            return variables * math.log(classes)
        return event_size * math.log(self.high - self.low)


UNIFORM = UniformPrior()


def base_distribution(dist: distrax.Distribution) -> distrax.Distribution:
    """The distribution inside any ``distrax.Independent`` wrappers."""
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
        if isinstance(base_distribution(policy), distrax.Categorical):
            raise TypeError(
                "policy_prior_kl: the Monte Carlo estimate needs reparameterized samples, which "
                f"a discrete policy ({type(policy).__name__}) does not have; use a categorical "
                "prior (closed form)"
            ) from err
        samples = policy.sample(seed=key, sample_shape=(num_samples,))
        kl = (policy.log_prob(samples) - prior.log_prob(samples)).mean(0)
    return jnp.broadcast_to(kl, batch)
