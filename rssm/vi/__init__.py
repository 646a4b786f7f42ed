"""Variational inference, exact wherever an exact answer exists.

Everything here follows one identity. For a latent variable model p(x, z) = p(x|z) p(z) and any
approximate posterior q(z|x),

    ELBO(q)          = E_q[log p(x|z)] - KL(q(z|x) || p(z))
                     = E_q[log p(x, z) - log q(z|x)],
    log p(x) - ELBO  = KL(q(z|x) || p(z|x))  >= 0.

``rssm.vi.primitives`` holds the building blocks the world model uses: the closed-form KL
between diagonal Gaussians and between categoricals (KL within a family is never estimated by
Monte Carlo), the reparameterized Gaussian sample z = mu + sigma * eps, and the importance-weighted
bound log (1/K) sum_k p(x, z_k) / q(z_k).

``rssm.vi.linear_gaussian`` is the one-dimensional linear-Gaussian model in which every quantity
above has a closed form, so each estimator can be checked against the exact answer:

    p(z) = N(0, 1),   p(x|z) = N(z, 1)   =>   p(x) = N(0, 2),   p(z|x) = N(x/2, 1/2).

Its functions act elementwise: x, m, s may be arrays of any (broadcastable) shape.

All functions are pure and jit-compatible. Arguments named ``num_samples``, ``num_samples_k``,
``num_repeats`` and ``sample_shape`` fix array shapes, so they must be static under ``jax.jit``
(e.g. ``jax.jit(lg_mc_elbo, static_argnums=4)``).
"""

from rssm.vi.linear_gaussian import (
    lg_elbo,
    lg_expected_loglik,
    lg_iwae_bound,
    lg_kl_posterior,
    lg_kl_prior,
    lg_log_evidence,
    lg_log_joint,
    lg_log_weights,
    lg_mc_elbo,
    lg_posterior,
)
from rssm.vi.primitives import categorical_kl, gaussian_kl, iwae_bound, reparam_sample

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
