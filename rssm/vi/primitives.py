"""Variational building blocks: closed-form KLs, the reparameterized sample, the IWAE bound.

With q(z|x) an approximate posterior of p(x, z) = p(x|z) p(z) (see ``rssm.vi``):

- ``gaussian_kl`` and ``categorical_kl``: KL(q || p) within one family, in closed form (KL
  within a family is never estimated by Monte Carlo).
- ``reparam_sample``: z = mu + sigma * eps, eps ~ N(0, I), differentiable in (mu, sigma).
- ``iwae_bound``: log (1/K) sum_k w_k with w_k = p(x, z_k) / q(z_k | x), z_k ~ q.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _normalize_sample_shape(sample_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(sample_shape, int) and not isinstance(sample_shape, bool):
        sample_shape = (sample_shape,)
    try:
        shape = tuple(int(d) for d in sample_shape)
    except TypeError as err:
        raise TypeError(
            f"sample_shape must be an int or a sequence of ints; got {sample_shape!r}."
        ) from err
    if any(d < 0 for d in shape):
        raise ValueError(f"sample_shape must have non-negative entries; got {shape}.")
    return shape


def float_dtype(*xs: Array) -> jnp.dtype:
    dtype = jnp.result_type(*xs)
    if not jnp.issubdtype(dtype, jnp.floating):
        # Integer inputs (e.g. x = 1) are promoted to the default float type.
        dtype = jnp.result_type(dtype, float)
    return dtype


def normal_kl(mean_q: ArrayLike, std_q: ArrayLike, mean_p: ArrayLike, std_p: ArrayLike) -> Array:
    """Elementwise KL(N(mq, sq^2) || N(mp, sp^2)).

    KL = log(sp / sq) + (sq^2 + (mq - mp)^2) / (2 sp^2) - 1/2.
    """
    mean_q, std_q = jnp.asarray(mean_q), jnp.asarray(std_q)
    mean_p, std_p = jnp.asarray(mean_p), jnp.asarray(std_p)
    var_ratio = jnp.square(std_q / std_p)
    mean_term = jnp.square((mean_q - mean_p) / std_p)
    # -1/2 log(var_ratio) = log(sp / sq); written this way it needs one log, not two.
    return 0.5 * (var_ratio + mean_term - 1.0 - jnp.log(var_ratio))


def gaussian_kl(mean_q: ArrayLike, std_q: ArrayLike, mean_p: ArrayLike, std_p: ArrayLike) -> Array:
    """Closed-form KL between diagonal Gaussians, summed over the last (event) axis.

    KL(N(mq, diag sq^2) || N(mp, diag sp^2))
        = sum_d [ log(sp_d / sq_d) + (sq_d^2 + (mq_d - mp_d)^2) / (2 sp_d^2) - 1/2 ].

    This equals ``distrax.MultivariateNormalDiag(mq, sq).kl_divergence(
    distrax.MultivariateNormalDiag(mp, sp))``.

    Args:
      mean_q, std_q: the first distribution q, ``[..., D]``; std_q > 0.
      mean_p, std_p: the second distribution p, ``[..., D]``; std_p > 0.
        All four broadcast against each other.

    Returns:
      ``[...]``: the KL for each batch element, >= 0, and 0 exactly when q = p.
    """
    shape = jnp.broadcast_shapes(*(jnp.shape(a) for a in (mean_q, std_q, mean_p, std_p)))
    if len(shape) == 0:
        raise ValueError(
            "gaussian_kl sums over the last (event) axis, but all inputs are scalars (shape ()). "
            "For a univariate Gaussian add an event axis, e.g. mean[..., None]."
        )
    return jnp.sum(normal_kl(mean_q, std_q, mean_p, std_p), axis=-1)


def categorical_kl(logits_q: ArrayLike, logits_p: ArrayLike) -> Array:
    """Closed-form KL between categoricals over the last (class) axis.

    With log q = log_softmax(logits_q) and log p = log_softmax(logits_p),

        KL(q || p) = sum_k q_k (log q_k - log p_k),

    where classes with q_k = 0 contribute 0 (the limit of q log q). This equals
    ``distrax.Categorical(logits=logits_q).kl_divergence(distrax.Categorical(logits=logits_p))``.
    The logits need not be normalized.

    Args:
      logits_q: ``[..., K]`` unnormalized log-probabilities of q.
      logits_p: ``[..., K]`` unnormalized log-probabilities of p (broadcasts against logits_q).

    Returns:
      ``[...]``: the KL for each batch element, >= 0.
    """
    logits_q, logits_p = jnp.asarray(logits_q), jnp.asarray(logits_p)
    if logits_q.ndim == 0 or logits_p.ndim == 0:
        raise ValueError(
            f"categorical_kl needs a class axis (the last one); got logits of shapes "
            f"{logits_q.shape} and {logits_p.shape}. Pass logits of shape [..., K]."
        )
    if logits_q.shape[-1] != logits_p.shape[-1]:
        raise ValueError(
            f"logits_q and logits_p must have the same number of classes (last axis); got "
            f"{logits_q.shape[-1]} and {logits_p.shape[-1]}."
        )
    log_q = jax.nn.log_softmax(logits_q, axis=-1)
    log_p = jax.nn.log_softmax(logits_p, axis=-1)
    q = jnp.exp(log_q)
    # Mask the log-ratio (not the product) so that q_k = 0 with log q_k = -inf gives 0, and the
    # gradient stays finite as well.
    log_ratio = jnp.where(q > 0, log_q - log_p, 0.0)
    return jnp.sum(q * log_ratio, axis=-1)


def reparam_sample(
    key: Array,
    mean: ArrayLike,
    std: ArrayLike,
    sample_shape: int | Sequence[int] = (),
) -> Array:
    """Reparameterized Gaussian sample z = mean + std * eps, eps ~ N(0, I).

    Because the noise eps does not depend on (mean, std), gradients of any f(z) flow to both:
    dz/dmean = 1, dz/dstd = eps, and d/dtheta E[f(z)] = E[f'(z) dz/dtheta].

    Args:
      key: a PRNG key.
      mean: ``[...]`` mean.
      std: ``[...]`` standard deviation (broadcasts against mean), >= 0.
      sample_shape: leading shape of independent draws (static under jit).

    Returns:
      ``[*sample_shape, ...]`` samples with the broadcast shape of (mean, std) as trailing axes.
    """
    sample_shape = _normalize_sample_shape(sample_shape)
    mean, std = jnp.asarray(mean), jnp.asarray(std)
    dtype = float_dtype(mean, std)
    shape = sample_shape + jnp.broadcast_shapes(mean.shape, std.shape)
    eps = jax.random.normal(key, shape, dtype=dtype)
    return mean + std * eps


def iwae_bound(log_weights: ArrayLike, axis: int = -1) -> Array:
    """Importance-weighted bound from K log-weights, computed stably.

    With log w_k = log p(x, z_k) - log q(z_k|x) for z_1..z_K ~ q independently,

        L_K = log (1/K) sum_k w_k = logsumexp_k(log w_k) - log K.

    E[L_K] <= log p(x) for every K, E[L_1] = ELBO, and E[L_K] increases with K towards log p(x).

    Args:
      log_weights: ``[..., K, ...]`` log importance weights, K along ``axis``.
      axis: the sample axis (default the last).

    Returns:
      ``[...]``: the bound, with ``axis`` removed.
    """
    log_weights = jnp.asarray(log_weights)
    if log_weights.ndim == 0:
        raise ValueError("iwae_bound needs a sample axis; got a scalar. Pass shape [..., K].")
    num = log_weights.shape[axis]
    if num == 0:
        raise ValueError(f"iwae_bound needs at least one sample along axis {axis}; got 0.")
    return jax.nn.logsumexp(log_weights, axis=axis) - math.log(num)
