"""The one-dimensional linear-Gaussian model, in which every variational quantity is exact.

    p(z) = N(0, 1),   p(x|z) = N(z, 1)   =>   p(x) = N(0, 2),   p(z|x) = N(x/2, 1/2).

Every estimator of ``rssm.vi.primitives`` (the reparameterized ELBO, the importance-weighted
bound) is checked here against its closed form, as is the identity
log p(x) - ELBO = KL(q(z|x) || p(z|x)). Functions act elementwise: x, m, s may be arrays of any
(broadcastable) shape; q = N(m, s^2) is the approximate posterior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from rssm.vi.primitives import float_dtype, iwae_bound, normal_kl, reparam_sample

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_LOG_2PI = math.log(2.0 * math.pi)


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


def _normal_log_prob(value: ArrayLike, mean: ArrayLike, std: ArrayLike) -> Array:
    """Elementwise log N(value; mean, std^2).

    log N = -1/2 log 2pi - log std - (value - mean)^2 / (2 std^2).
    """
    value, mean, std = jnp.asarray(value), jnp.asarray(mean), jnp.asarray(std)
    return -0.5 * _LOG_2PI - jnp.log(std) - 0.5 * jnp.square((value - mean) / std)


def lg_posterior(x: ArrayLike) -> tuple[Array, Array]:
    """Exact posterior of the linear-Gaussian model.

    p(z|x) ∝ N(z; 0, 1) N(x; z, 1) = N(z; x/2, 1/2): precisions add (1 + 1 = 2), and the mean is
    the precision-weighted observation x * 1 / 2.

    Args:
      x: ``[...]`` observations.

    Returns:
      (mean, var): each ``[...]``, mean = x / 2 and var = 1 / 2 (a variance, not a std).
    """
    x = jnp.asarray(x, dtype=float_dtype(jnp.asarray(x)))
    return 0.5 * x, jnp.full_like(x, 0.5)


def lg_log_evidence(x: ArrayLike) -> Array:
    """Exact log evidence log p(x) = log N(x; 0, 2) = -1/2 log(2pi * 2) - x^2 / 4.

    x = z + noise with z, noise ~ N(0, 1) independent, so x ~ N(0, 1 + 1).

    Args:
      x: ``[...]`` observations.

    Returns:
      ``[...]`` log p(x).
    """
    x = jnp.asarray(x, dtype=float_dtype(jnp.asarray(x)))
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
    return normal_kl(m, s, 0.0, 1.0)


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
    return normal_kl(m, s, post_mean, jnp.sqrt(post_var))


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
    dtype = float_dtype(x, m, s)
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
