"""The sequential ELBO of an RSSM, with free nats and KL balancing.

For one sequence, with posterior states s_t ~ q(s_t | h_t, o_t) and prior p(s_t | h_t):

    ELBO = sum_t E_q[ log p(o_t | h_t, s_t) + log p(r_t | h_t, s_t) + log p(c_t | h_t, s_t) ]
           - sum_t KL( q(s_t | h_t, o_t) || p(s_t | h_t) )

which is the single-latent bound ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)) applied step by
step, with the prior conditioned on the past; its gap to log p(o_{1:T}) is the KL from q to the
true posterior, log p(x) - ELBO = KL(q(z|x) || p(z|x)).

Training follows the gradient of a surrogate that replaces the KL by two terms with the same
value but routed gradients (KL balancing, DreamerV2/V3), each clipped from below by
``free_nats`` per step:

    dyn = KL( sg(q) || p )   trains the prior toward the posterior
    rep = KL( q || sg(p) )   trains the posterior (and encoder) toward the prior
    surrogate_t = -sum_k scale_k log p_k(t) + beta_dyn max(free, dyn_t) + beta_rep max(free, rep_t)

Since d/dq KL(q || sg(p)) + d/dp KL(sg(q) || p) = grad KL(q || p), beta_dyn = beta_rep = 1 with
free_nats = 0 and unit scales (the defaults) make the surrogate's gradient exactly the plain
-ELBO's, while its value counts the KL twice. The returned loss therefore takes its value and
its gradient apart with a stop-gradient identity,

    loss = sg(-ELBO) + surrogate - sg(surrogate)      (means over the [B, T] batch)

whose value is -ELBO per step and whose gradient is the surrogate's: at the defaults it is
-ELBO in value and gradient alike. The surrogate's value is reported as the metric
'surrogate' (the number a published loss would print). Published losses are asked for by
name: ``sequential_elbo(..., **rssm.DREAMERV3_KL)`` (free nats 1, beta_dyn 1, beta_rep 0.1),
``DREAMERV3_2023_KL`` (0.5 / 0.1) or ``PLANET_KL`` (free nats 3).

'elbo' is a bound on log p(o_{1:T}) only when every ``log_probs`` term is a normalized
log-density (a Normal or Bernoulli head on hard targets); a squared error or a two-hot
cross-entropy in its place gives a number of the same form that bounds nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from rssm.latent import Latent
from rssm.state import latent_stats

Array = jax.Array
sg = jax.lax.stop_gradient

# KL settings of published losses (free nats per step, beta_dyn, beta_rep), by name.
DREAMERV3_KL = {"free_nats": 1.0, "beta_dyn": 1.0, "beta_rep": 0.1}  # 2024 configs.yaml
DREAMERV3_2023_KL = {"free_nats": 1.0, "beta_dyn": 0.5, "beta_rep": 0.1}  # arXiv v1, 2023 code
PLANET_KL = {"free_nats": 3.0, "beta_dyn": 1.0, "beta_rep": 1.0}  # PlaNet: free nats on the KL


def kl_loss(
    latent: Latent,
    post: Mapping[str, Array],
    prior: Mapping[str, Array],
    free_nats: float = 0.0,
    beta_dyn: float = 1.0,
    beta_rep: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
    """Balanced, free-nats-clipped KL loss per step, ``[B, T]``, and its parts.

    post/prior: latent statistics (and possibly other state entries, ignored), ``[B, T, ...]``.
    KL is closed-form and already summed over latent dimensions or groups, so free nats apply to
    the whole per-step KL, as in DreamerV3.
    """
    q, p = latent_stats(post), latent_stats(prior)
    dyn = latent.kl(jax.tree.map(sg, q), p)
    rep = latent.kl(q, jax.tree.map(sg, p))
    loss = beta_dyn * jnp.maximum(free_nats, dyn) + beta_rep * jnp.maximum(free_nats, rep)
    return loss, {"dyn": dyn, "rep": rep}


@functools.partial(jax.jit, static_argnames=("latent",))
def sequential_elbo(
    latent: Latent,
    post: Mapping[str, Array],
    prior: Mapping[str, Array],
    log_probs: Mapping[str, Array],
    scales: Mapping[str, float] | None = None,
    free_nats: float = 0.0,
    beta_dyn: float = 1.0,
    beta_rep: float = 1.0,
) -> tuple[Array, dict[str, Array]]:
    """The negative ELBO per step in value, with the gradient of the scaled, balanced surrogate
    (see the module docstring); means over [B, T].

    At the defaults (no free nats, unit betas and scales) the loss is -ELBO in value and
    gradient: the surrogate's balanced KL has the plain KL's gradient.

    Args:
      latent: the latent family of the RSSM (static under jit).
      post, prior: State sequences from ``RSSM.observe``, ``[B, T, ...]``.
      log_probs: name -> log p(x_t | h_t, s_t), each ``[B, T]`` (e.g. 'image', 'reward', 'cont').
      scales: name -> weight of that term (default 1 each).
      free_nats, beta_dyn, beta_rep: see the module docstring.
    Returns:
      (loss scalar, metrics) with metrics: 'loglik/<name>' for each term, 'kl' = KL(q || p),
      'dyn', 'rep', 'prior_ent', 'post_ent', 'elbo' = the unscaled, unclipped per-step ELBO
      sum_k log p_k - KL (the loss's value is -elbo) and 'surrogate' = the value of the
      surrogate whose gradient the loss carries, all means over [B, T].
    """
    scales = dict(scales or {})
    shape = _check_terms(log_probs, scales)
    kl_part, kls = kl_loss(latent, post, prior, free_nats, beta_dyn, beta_rep)
    if shape is not None and kl_part.shape != shape:
        raise ValueError(f"KL has shape {kl_part.shape} but log_probs have {shape}")
    rec = sum(scales.get(k, 1.0) * lp for k, lp in log_probs.items())
    surrogate = (kl_part - rec).mean()
    kl = kls["dyn"]  # same value as rep and as KL(q || p)
    elbo = (sum(log_probs.values()) - kl).mean()
    loss = sg(-elbo) + (surrogate - sg(surrogate))
    q, p = latent_stats(post), latent_stats(prior)
    metrics = {f"loglik/{k}": lp.mean() for k, lp in log_probs.items()}
    metrics.update(
        kl=kl.mean(),
        dyn=kls["dyn"].mean(),
        rep=kls["rep"].mean(),
        prior_ent=latent.entropy(p).mean(),
        post_ent=latent.entropy(q).mean(),
        elbo=elbo,
        surrogate=surrogate,
    )
    return loss, metrics


def _check_terms(
    log_probs: Mapping[str, Array], scales: Mapping[str, float]
) -> tuple[int, ...] | None:
    """Rejects scales of terms that do not exist and terms that are not all ``[B, T]``; returns
    their shape (None without terms)."""
    unknown = set(scales) - set(log_probs)
    if unknown:
        raise ValueError(
            f"scales name terms {sorted(unknown)} that are not in log_probs {sorted(log_probs)}"
        )
    shape = None
    for name, lp in log_probs.items():
        if shape is None:
            shape = lp.shape
        if lp.shape != shape or lp.ndim != 2:
            raise ValueError(
                f"log_probs[{name!r}] has shape {lp.shape}; every term must be "
                f"[B, T] (first term: {shape})"
            )
    return shape
