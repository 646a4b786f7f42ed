"""The importance-weighted bound on an RSSM's sequence likelihood, and the ELBO's gap.

With K posterior trajectories (s^k_{1:T}, h^k_{1:T}) drawn from q by ``RSSM.observe``,

    log w^k = sum_t [ log p(o_t | h^k_t, s^k_t) + log p(s^k_t | h^k_t) - log q(s^k_t | h^k_t, o_t) ]
    IWAE_K  = log (1/K) sum_k exp(log w^k)  <=  log p(o_{1:T} | a_{1:T})

(Burda et al. 2016, applied to the whole sequence: the trajectory is one latent variable). Each
w^k is p(o, s^k) / q(s^k | o) for the model's joint over the sequence, so E[IWAE_K] is a lower
bound that rises with K toward log p(o_{1:T} | a_{1:T}); E[IWAE_1] is the ELBO, and
IWAE_K - ELBO estimates (from below) the ELBO's gap KL(q(s | o) || p(s | o)). For categorical
latents the log-probabilities are those of the one-hot samples.

Every likelihood term must be a normalized density (a Normal head, not a squared error):
otherwise the weights are not density ratios and the number bounds nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from rssm.latent import Latent
from rssm.model import RSSM
from rssm.state import State, features, latent_stats
from rssm.vi import iwae_bound

Array = jax.Array
# features [K, B, T, F] -> log p(o_t | h_t, s_t) summed over all observed terms, [K, B, T].
LogLik = Callable[[Array], Array]
# (embed [N, T, E], action [N, T, A], is_first [N, T], key, state [N] or None) -> (post, prior).
Observe = Callable[..., tuple[State, State]]


def step_log_weights(
    latent: Latent, post: Mapping[str, Array], prior: Mapping[str, Array], loglik: Array
) -> Array:
    """log p(o_t | h_t, s_t) + log p(s_t | h_t) - log q(s_t | h_t, o_t) at the posterior samples.

    Args:
      latent: the latent family.
      post: posterior states (statistics and the sample ``stoch``), ``[..., T, ...]``.
      prior: prior statistics at the same h_t, ``[..., T, ...]``.
      loglik: log p(o_t | h_t, s_t), ``[..., T]``.
    Returns:
      the per-step log weights, ``[..., T]``.
    """
    stoch = jax.lax.stop_gradient(post["stoch"])
    log_prior = latent.log_prob(latent_stats(prior), stoch)
    log_post = latent.log_prob(latent_stats(post), stoch)
    if log_prior.shape != loglik.shape:
        raise ValueError(
            f"loglik has shape {loglik.shape}; expected the states' batch shape {log_prior.shape}"
        )
    return loglik + log_prior - log_post


def sequence_log_weights(
    observe: Observe,
    latent: Latent,
    loglik: LogLik,
    embed: Array,
    action: Array,
    is_first: Array,
    key: Array,
    particles: int,
    state: State | None = None,
) -> Array:
    """log w^k of K posterior trajectories per sequence (see the module doc), ``[K, B]``.

    Args:
      observe: ``RSSM.observe`` bound to its parameters (e.g. ``functools.partial(model.apply,
        params, method=RSSM.observe)``, or ``self.rssm.observe`` inside a module).
      latent: the RSSM's latent family.
      loglik: features ``[K, B, T, F]`` -> log p(o_t | h_t, s_t) ``[K, B, T]`` (a decoder's
        normalized log-density of the observations ``[B, T, ...]``, which broadcast over K).
      embed, action, is_first: as ``RSSM.observe``, ``[B, T, ...]``.
      key: PRNG key of the K trajectories.
      particles: K.
      state: the state before the sequences, ``[B]`` (``initial_state`` if None).
    """
    if particles < 1:
        raise ValueError(f"particles={particles}; need at least one trajectory per sequence")
    b = embed.shape[0]
    # K copies of the batch in one observe: each row draws its own noise, so the copies are K
    # independent trajectories of q.
    tile = lambda x: jnp.broadcast_to(x, (particles, *x.shape)).reshape(particles * b, *x.shape[1:])
    start = None if state is None else jax.tree.map(tile, dict(state))
    post, prior = observe(tile(embed), tile(action), tile(is_first), key, start)
    feat = features(post)
    ll = loglik(feat.reshape(particles, b, *feat.shape[1:]))
    terms = step_log_weights(
        latent,
        jax.tree.map(lambda x: x.reshape(particles, b, *x.shape[1:]), post),
        jax.tree.map(lambda x: x.reshape(particles, b, *x.shape[1:]), prior),
        ll,
    )
    return terms.sum(-1)


def sequence_iwae(
    model: RSSM,
    params: Any,
    loglik: LogLik,
    embed: Array,
    action: Array,
    is_first: Array,
    key: Array,
    particles: int,
    state: State | None = None,
) -> Array:
    """IWAE_K = log (1/K) sum_k w^k, a lower bound on log p(o_{1:T} | a_{1:T}) per sequence,
    ``[B]``, for ``model`` with ``params`` (other arguments as ``sequence_log_weights``)."""
    observe = functools.partial(model.apply, params, method=RSSM.observe)
    log_w = sequence_log_weights(
        observe, model.latent, loglik, embed, action, is_first, key, particles, state
    )
    return iwae_bound(log_w, axis=0)
