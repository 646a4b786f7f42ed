"""Variational primitives, exact wherever an exact answer exists.

Everything here follows one identity. For a latent variable model p(x, z) = p(x|z) p(z) and any
approximate posterior q(z|x),

    ELBO(q)          = E_q[log p(x|z)] - KL(q(z|x) || p(z))
                     = E_q[log p(x, z) - log q(z|x)],
    log p(x) - ELBO  = KL(q(z|x) || p(z|x))  >= 0.

The first half of the module holds the building blocks the world model uses: the closed-form KL
between diagonal Gaussians and between categoricals (KL within a family is never estimated by
Monte Carlo), the reparameterized Gaussian sample z = mu + sigma * eps, and the importance-weighted
bound log (1/K) sum_k p(x, z_k) / q(z_k).

The second half is the one-dimensional linear-Gaussian model in which every quantity above has a
closed form, so each estimator can be checked against the exact answer:

    p(z) = N(0, 1),   p(x|z) = N(z, 1)   =>   p(x) = N(0, 2),   p(z|x) = N(x/2, 1/2).

Its functions act elementwise: x, m, s may be arrays of any (broadcastable) shape.

All functions are pure and jit-compatible. Arguments named ``num_samples``, ``num_samples_k``,
``num_repeats`` and ``sample_shape`` fix array shapes, so they must be static under ``jax.jit``
(e.g. ``jax.jit(lg_mc_elbo, static_argnums=4)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "categorical_kl",
    "gaussian_kl",
    "iwae_bound",
    "lg_elbo",
    "lg_expected_loglik",
    "lg_iwae_bound",
    "lg_kl_posterior",
    "lg_kl_prior",
    "lg_log_evidence",
    "lg_log_joint",
    "lg_log_weights",
    "lg_mc_elbo",
    "lg_posterior",
    "reparam_sample",
]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_count(name: str, value: object) -> int:
    """Validates a static sample count: a Python int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be a Python int (it fixes an array shape, so it is static under jit); "
            f"got {value!r} of type {type(value).__name__}. Pass e.g. {name}=1000."
        )
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}. Pass a positive number of samples.")
    return value


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


def _float_dtype(*xs: Array) -> jnp.dtype:
    dtype = jnp.result_type(*xs)
    if not jnp.issubdtype(dtype, jnp.floating):
        # Integer inputs (e.g. x = 1) are promoted to the default float type.
        dtype = jnp.result_type(dtype, float)
    return dtype


def _normal_log_prob(value: ArrayLike, mean: ArrayLike, std: ArrayLike) -> Array:
    """Elementwise log N(value; mean, std^2).

    log N = -1/2 log 2pi - log std - (value - mean)^2 / (2 std^2).
    """
    value, mean, std = jnp.asarray(value), jnp.asarray(mean), jnp.asarray(std)
    return -0.5 * _LOG_2PI - jnp.log(std) - 0.5 * jnp.square((value - mean) / std)


def _normal_kl(mean_q: ArrayLike, std_q: ArrayLike, mean_p: ArrayLike, std_p: ArrayLike) -> Array:
    """Elementwise KL(N(mq, sq^2) || N(mp, sp^2)).

    KL = log(sp / sq) + (sq^2 + (mq - mp)^2) / (2 sp^2) - 1/2.
    """
    mean_q, std_q = jnp.asarray(mean_q), jnp.asarray(std_q)
    mean_p, std_p = jnp.asarray(mean_p), jnp.asarray(std_p)
    var_ratio = jnp.square(std_q / std_p)
    mean_term = jnp.square((mean_q - mean_p) / std_p)
    # -1/2 log(var_ratio) = log(sp / sq); written this way it needs one log, not two.
    return 0.5 * (var_ratio + mean_term - 1.0 - jnp.log(var_ratio))


# --------------------------------------------------------------------------------------------
# General building blocks
# --------------------------------------------------------------------------------------------


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
    return jnp.sum(_normal_kl(mean_q, std_q, mean_p, std_p), axis=-1)


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
    dtype = _float_dtype(mean, std)
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


# --------------------------------------------------------------------------------------------
# The linear-Gaussian model: p(z) = N(0, 1), p(x|z) = N(z, 1)
# --------------------------------------------------------------------------------------------


def lg_posterior(x: ArrayLike) -> tuple[Array, Array]:
    """Exact posterior of the linear-Gaussian model.

    p(z|x) ∝ N(z; 0, 1) N(x; z, 1) = N(z; x/2, 1/2): precisions add (1 + 1 = 2), and the mean is
    the precision-weighted observation x * 1 / 2.

    Args:
      x: ``[...]`` observations.

    Returns:
      (mean, var): each ``[...]``, mean = x / 2 and var = 1 / 2 (a variance, not a std).
    """
    x = jnp.asarray(x, dtype=_float_dtype(jnp.asarray(x)))
    return 0.5 * x, jnp.full_like(x, 0.5)


def lg_log_evidence(x: ArrayLike) -> Array:
    """Exact log evidence log p(x) = log N(x; 0, 2) = -1/2 log(2pi * 2) - x^2 / 4.

    x = z + noise with z, noise ~ N(0, 1) independent, so x ~ N(0, 1 + 1).

    Args:
      x: ``[...]`` observations.

    Returns:
      ``[...]`` log p(x).
    """
    x = jnp.asarray(x, dtype=_float_dtype(jnp.asarray(x)))
    return -0.5 * (_LOG_2PI + math.log(2.0)) - 0.25 * jnp.square(x)


def lg_log_joint(x: ArrayLike, z: ArrayLike) -> Array:
    """Log joint log p(x, z) = log N(x; z, 1) + log N(z; 0, 1), elementwise.

    Args:
      x: ``[...]`` observations.
      z: ``[...]`` latents (broadcasts against x).

    Returns:
      ``[...]`` log p(x, z).
    """
    return _normal_log_prob(x, z, 1.0) + _normal_log_prob(z, 0.0, 1.0)


def lg_expected_loglik(x: ArrayLike, m: ArrayLike, s: ArrayLike) -> Array:
    """Expected log-likelihood under q = N(m, s^2), in closed form.

    E_q[log p(x|z)] = E_q[-1/2 log 2pi - (x - z)^2 / 2]
                    = -1/2 log 2pi - 1/2 ((x - m)^2 + s^2),

    since E_q[(x - z)^2] = (x - m)^2 + Var_q[z].

    Args:
      x: ``[...]`` observations.
      m, s: ``[...]`` mean and standard deviation of q (all three broadcast).

    Returns:
      ``[...]`` E_q[log p(x|z)].
    """
    x, m, s = jnp.asarray(x), jnp.asarray(m), jnp.asarray(s)
    return -0.5 * _LOG_2PI - 0.5 * (jnp.square(x - m) + jnp.square(s))


def lg_kl_prior(m: ArrayLike, s: ArrayLike) -> Array:
    """KL from q = N(m, s^2) to the prior p(z) = N(0, 1), in closed form.

    KL(q(z|x) || p(z)) = 1/2 (s^2 + m^2 - 1 - log s^2).

    Args:
      m, s: ``[...]`` mean and standard deviation of q.

    Returns:
      ``[...]`` the KL, >= 0.
    """
    return _normal_kl(m, s, 0.0, 1.0)


def lg_elbo(x: ArrayLike, m: ArrayLike, s: ArrayLike) -> Array:
    """Closed-form ELBO of the linear-Gaussian model for q(z|x) = N(m, s^2).

    ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))
         = -1/2 log 2pi - 1/2 ((x - m)^2 + s^2) - 1/2 (s^2 + m^2 - 1 - log s^2).

    Its gradients are dELBO/dm = x - 2m and dELBO/ds = 1/s - 2s; the maximum, m = x/2 and
    s^2 = 1/2, is the exact posterior, where ELBO = log p(x).

    Args:
      x: ``[...]`` observations.
      m, s: ``[...]`` mean and standard deviation of q (all three broadcast).

    Returns:
      ``[...]`` the ELBO, <= log p(x).
    """
    return lg_expected_loglik(x, m, s) - lg_kl_prior(m, s)


def lg_kl_posterior(x: ArrayLike, m: ArrayLike, s: ArrayLike) -> Array:
    """KL from q = N(m, s^2) to the exact posterior p(z|x) = N(x/2, 1/2), computed directly.

    KL(q(z|x) || p(z|x)) = log(sqrt(1/2) / s) + (s^2 + (m - x/2)^2) / (2 * 1/2) - 1/2.

    This is the gap log p(x) - ELBO, but computed from the posterior itself rather than as a
    difference, so the identity log p(x) - ELBO = KL(q(z|x) || p(z|x)) can be checked.

    Args:
      x: ``[...]`` observations.
      m, s: ``[...]`` mean and standard deviation of q (all three broadcast).

    Returns:
      ``[...]`` the KL, >= 0.
    """
    post_mean, post_var = lg_posterior(x)
    return _normal_kl(m, s, post_mean, jnp.sqrt(post_var))


def lg_log_weights(
    key: Array,
    x: ArrayLike,
    m: ArrayLike,
    s: ArrayLike,
    sample_shape: int | Sequence[int],
) -> Array:
    """Log importance weights log p(x, z) - log q(z) at reparameterized draws from q = N(m, s^2).

    z = m + s * eps with eps ~ N(0, 1), and

        log w(z) = log p(x|z) + log p(z) - log q(z).

    E_q[log w] = ELBO and log E_q[w] = log p(x). The result is differentiable in m and s: log q is
    evaluated at z = z(m, s) as a function of (m, s), i.e. the full reparameterized gradient.

    Args:
      key: a PRNG key.
      x: ``[...]`` observations.
      m, s: ``[...]`` mean and standard deviation of q (all three broadcast).
      sample_shape: leading shape of independent draws (static under jit).

    Returns:
      ``[*sample_shape, ...]`` log weights.
    """
    x, m, s = jnp.asarray(x), jnp.asarray(m), jnp.asarray(s)
    dtype = _float_dtype(x, m, s)
    x, m, s = x.astype(dtype), m.astype(dtype), s.astype(dtype)
    m_b, s_b = jnp.broadcast_arrays(m, s, x)[:2]
    z = reparam_sample(key, m_b, s_b, sample_shape)
    return lg_log_joint(x, z) - _normal_log_prob(z, m, s)


def lg_mc_elbo(
    key: Array,
    x: ArrayLike,
    m: ArrayLike,
    log_s: ArrayLike,
    num_samples: int,
) -> tuple[Array, Array]:
    """Monte-Carlo ELBO with reparameterized samples, and its standard error.

    With z_n = m + exp(log_s) eps_n, eps_n ~ N(0, 1), n = 1..N,

        ELBO_hat = (1/N) sum_n [log p(x|z_n) + log p(z_n) - log q(z_n)],
        SE       = std_n[log p(x|z_n) + log p(z_n) - log q(z_n)] / sqrt(N)   (ddof = 1).

    E[ELBO_hat] = E_q[log p(x|z)] - KL(q(z|x) || p(z)) = ELBO, and d ELBO_hat / d(m, log_s) is an
    unbiased estimate of the gradient of the ELBO (the reparameterization gradient).

    Args:
      key: a PRNG key.
      x: ``[...]`` observations.
      m: ``[...]`` mean of q.
      log_s: ``[...]`` log standard deviation of q (all three broadcast).
      num_samples: N, the number of draws per element (static under jit).

    Returns:
      (estimate, standard_error): each ``[...]``. The standard error is a diagnostic: it carries
      no gradient, and it is NaN when N = 1.
    """
    num_samples = _check_count("num_samples", num_samples)
    log_s = jnp.asarray(log_s)
    log_w = lg_log_weights(key, x, m, jnp.exp(log_s), (num_samples,))
    estimate = jnp.mean(log_w, axis=0)
    if num_samples == 1:
        stderr = jnp.full_like(estimate, jnp.nan)
    else:
        stderr = jnp.std(log_w, axis=0, ddof=1) / math.sqrt(num_samples)
    return estimate, jax.lax.stop_gradient(stderr)


def lg_iwae_bound(
    key: Array,
    x: ArrayLike,
    m: ArrayLike,
    s: ArrayLike,
    num_samples_k: int,
    num_repeats: int = 1,
) -> Array:
    """Importance-weighted bound of the linear-Gaussian model, averaged over independent repeats.

    For each repeat r, draw z_{r,1..K} ~ q = N(m, s^2) and compute

        L_K^(r) = log (1/K) sum_k p(x, z_{r,k}) / q(z_{r,k})   (via logsumexp),

    and return (1/R) sum_r L_K^(r). Its expectation satisfies
    ELBO = E[L_1] <= E[L_K] <= E[L_{K+1}] <= log p(x). The draws are those of
    ``lg_log_weights(key, x, m, s, (num_repeats, num_samples_k))``.

    Args:
      key: a PRNG key.
      x: ``[...]`` observations.
      m, s: ``[...]`` mean and standard deviation of q (all three broadcast).
      num_samples_k: K, samples inside the log (static under jit).
      num_repeats: R, independent bounds to average, which reduces the variance only (static).

    Returns:
      ``[...]`` the averaged bound.
    """
    num_samples_k = _check_count("num_samples_k", num_samples_k)
    num_repeats = _check_count("num_repeats", num_repeats)
    log_w = lg_log_weights(key, x, m, s, (num_repeats, num_samples_k))
    return jnp.mean(iwae_bound(log_w, axis=1), axis=0)
